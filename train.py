"""Train a style-transfer model: `python train.py method=adain data=coco_wikiart` (see README.md)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from styletransfer.engine.instantiate import is_multirun  # importing it registers ${sweep_name:}
from styletransfer.engine.loggers import log_to_files
from styletransfer.engine.overrides import explain_unknown_key
from styletransfer.runtime.errors import RunInterrupted, StyleTransferError
from styletransfer.sweeps.trial import run_trial
from styletransfer.training import run

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
composed = False  # set once Hydra has composed the config and called main


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    global composed
    composed = True
    try:
        if is_multirun():  # a sweep's trial: its objective is returned, a failed trial is recorded, not raised
            return run_trial(cfg, run)
        run(cfg)
        return None
    except StyleTransferError as exc:  # a bad setting or file, or an interrupt: one readable line, no traceback
        line = f"{'interrupted' if isinstance(exc, RunInterrupted) else 'error'}: {exc}"
        log_to_files("train", logging.ERROR, line)
        print(line, file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 1))


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exc:
        # Hydra could not compose the command line (it printed why and exits 1): name the key probably meant.
        if exc.code == 1 and not composed:
            hint = explain_unknown_key(Path(__file__).resolve().parent / "configs", "train", sys.argv[1:])
            if hint:
                print(f"hint: {hint}", file=sys.stderr)
        raise
