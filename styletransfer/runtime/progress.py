"""A progress bar that counts optimiser steps towards ``trainer.max_steps``, not batches of an epoch."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf


class StepProgressBar(TQDMProgressBar):
    """One bar for the whole run, ``step N/max_steps`` with the rate (it/s), the time left and the logged loss.

    Training lengths here are steps (AdaIN 160,000, Gatys 500); epochs of a folder are an accident of its size, so
    Lightning's per-epoch bar (``Epoch 9: 6/6``) says nothing about how far a run is. A resumed run starts the bar at
    its step. The bar refreshes every ``refresh_rate`` steps (metrics are read from the device only then).
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        if bar.total is None or bar.n == 0:
            bar.reset(total=convert_inf(trainer.max_steps if trainer.max_steps > 0 else None))
            bar.initial = trainer.global_step
            bar.n = trainer.global_step
            bar.set_description("step")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self._should_update(step, self.train_progress_bar.total):
            self.train_progress_bar.n = step
            self.train_progress_bar.refresh()
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the one bar open across epochs (Lightning's closes or resets it at every epoch)."""
