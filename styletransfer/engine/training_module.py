"""What the LightningModules of the methods trained behind a frozen encoder share: their number settings checked
alike, a training step's metrics logged alike, and the files they export with every checkpoint and at the end."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch import Tensor

from styletransfer.engine.logging_steps import device_scalar, logs_this_step
from styletransfer.runtime.errors import ConfigError


def check_settings(numbers: Mapping[str, Any]) -> None:
    """A ConfigError naming ``method.<name>`` for a setting of ``numbers`` that is not a finite number >= 0."""
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise ConfigError(f"method.{name}={value!r} must be a finite number >= 0")


def trainer_datamodule(trainer: pl.Trainer) -> pl.LightningDataModule | None:
    """The data module ``trainer`` runs with, None without one (Lightning sets ``trainer.datamodule`` when a run
    starts; its type annotations do not declare the attribute)."""
    return getattr(trainer, "datamodule", None)


def log_training_step(
    module: pl.LightningModule, losses: Mapping[str, Tensor], batch_size: int, lr: bool = True
) -> None:
    """On the steps that log (``logs_this_step``): ``losses``, the learning rate (with ``lr``) and the data module's
    count of skipped images when it keeps one (``data/skipped``)."""
    if not logs_this_step(module.trainer):  # host time: only the steps the loggers get, and the last
        return
    module.log_dict(dict(losses), batch_size=batch_size)  # the progress bar shows loss/total (engine/progress.py)
    if lr:
        rate = float(module.trainer.optimizers[0].param_groups[0]["lr"])
        module.log("lr", device_scalar(rate, module.device), batch_size=batch_size)
    skipped = getattr(trainer_datamodule(module.trainer), "num_skipped", None)
    if skipped is not None:
        module.log("data/skipped", device_scalar(skipped, module.device), batch_size=batch_size)


class ExportingModule(pl.LightningModule):
    """A LightningModule that writes its model file (:meth:`export`) with every Lightning checkpoint and when
    training ends."""

    def export(self) -> None:
        raise NotImplementedError

    def export_path(self, enabled: bool, name: str) -> Path | None:
        """``<run>/checkpoints/<name>`` where the file is written: None unless the export is ``enabled`` and this is
        the main process of a trainer."""
        if not enabled or self._trainer is None or not self.trainer.is_global_zero:
            return None
        return Path(self.trainer.default_root_dir) / "checkpoints" / name

    def on_train_end(self) -> None:
        self.export()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.export()
