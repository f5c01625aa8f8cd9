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
from styletransfer.engine.overrides import run_with_hint
from styletransfer.runtime.errors import RunInterrupted, StyleTransferError

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Imported once Hydra has composed: `--help`, `--cfg job` and a refused override answer without loading Lightning.
    from styletransfer.sweeps.trial import run_trial
    from styletransfer.training import run

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
    run_with_hint(main, Path(__file__).resolve().parent / "configs", "train")
