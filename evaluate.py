"""Evaluate style-transfer checkpoints on a benchmark: `python evaluate.py ckpt=PATH` (see README.md)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
log = logging.getLogger("evaluate")


@hydra.main(config_path="configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from styletransfer.data.images import DataDirError, ImageLoadError
    from styletransfer.encoder import EncoderWeightsError
    from styletransfer.evaluation import run
    from styletransfer.stylize import CheckpointError

    try:
        run(cfg)
    except (CheckpointError, EncoderWeightsError, DataDirError, ImageLoadError, ValueError) as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
