"""Sending images to whichever Lightning loggers a run has, and failures to the run's log file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # log_to_files serves the entry points before they import Lightning (``--help`` stays light)
    from lightning_fabric.loggers import Logger
    from torch import Tensor


def log_image(logger: Logger, key: str, image: Tensor, path: Path, step: int) -> None:
    """Send an image (3, H, W) in [0, 1], already saved at ``path``, to a logger that takes images (any of a
    module's ``loggers``: Lightning's loggers derive from Fabric's ``Logger``).

    wandb gets the file, TensorBoard the tensor; loggers without images (CSV) keep the file only.
    """
    import pytorch_lightning as pl

    if isinstance(logger, pl.loggers.WandbLogger):
        logger.log_image(key=key, images=[str(path)], step=step)
    elif isinstance(logger, pl.loggers.TensorBoardLogger):
        logger.experiment.add_image(key, image, global_step=step)


def log_to_files(name: str, level: int, message: str) -> None:
    """Write ``message`` to the log files only (Hydra's ``<job>.log``), not to the console.

    The command lines print a failure once, as plain text on stderr; the run's log file must say so too (a
    failed start otherwise leaves a log that ends without the reason), but logging it normally would print it
    twice on the console.
    """
    record = logging.getLogger(name).makeRecord(name, level, __file__, 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
