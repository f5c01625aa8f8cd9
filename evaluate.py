"""Evaluate style-transfer checkpoints on a benchmark: `python evaluate.py ckpt=PATH` (see README.md)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from styletransfer.engine.loggers import log_to_files
from styletransfer.engine.overrides import run_with_hint
from styletransfer.runtime.errors import StyleTransferError

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(config_path="configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from styletransfer.eval.run import run  # once Hydra has composed: `--help` answers without loading Lightning

    try:
        run(cfg)
    except StyleTransferError as exc:
        log_to_files("evaluate", logging.ERROR, f"error: {exc}")
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_with_hint(main, Path(__file__).resolve().parent / "configs", "evaluate")
