"""Evaluate style-transfer checkpoints on a benchmark: `python evaluate.py ckpt=PATH` (see README.md)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from styletransfer.engine.loggers import log_to_files
from styletransfer.engine.overrides import explain_unknown_key
from styletransfer.eval.run import run
from styletransfer.runtime.errors import StyleTransferError

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
composed = False  # set once Hydra has composed the config and called main


@hydra.main(config_path="configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    global composed
    composed = True
    try:
        run(cfg)
    except StyleTransferError as exc:
        log_to_files("evaluate", logging.ERROR, f"error: {exc}")
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exc:
        # Hydra could not compose the command line (it printed why and exits 1): name the key probably meant.
        if exc.code == 1 and not composed:
            hint = explain_unknown_key(Path(__file__).resolve().parent / "configs", "evaluate", sys.argv[1:])
            if hint:
                print(f"hint: {hint}", file=sys.stderr)
        raise
