"""Sending images to whichever Lightning loggers a run has."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from torch import Tensor


def log_image(logger: pl.loggers.Logger, key: str, image: Tensor, path: Path, step: int) -> None:
    """Send an image (3, H, W) in [0, 1], already saved at ``path``, to a logger that takes images.

    wandb gets the file, TensorBoard the tensor; loggers without images (CSV) keep the file only.
    """
    if isinstance(logger, pl.loggers.WandbLogger):
        logger.log_image(key=key, images=[str(path)], step=step)
    elif isinstance(logger, pl.loggers.TensorBoardLogger):
        logger.experiment.add_image(key, image, global_step=step)
