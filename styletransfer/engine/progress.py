"""A progress bar that counts optimiser steps towards ``trainer.max_steps``, not batches of an epoch, and shows the
loss without making the training loop wait for the GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf
from torch import Tensor


class StepProgressBar(TQDMProgressBar):
    """One bar for the whole run, ``step N/max_steps`` with the rate (it/s), the time left and the logged loss.

    Training lengths here are steps (AdaIN 160,000, Gatys 500); epochs of a folder are an accident of its size, so
    Lightning's per-epoch bar (``Epoch 9: 6/6``) says nothing about how far a run is. A resumed run starts the bar at
    its step. The bar refreshes every ``refresh_rate`` steps.

    ``shown`` names the logged metrics the bar displays. Modules log them without ``prog_bar=True`` on purpose:
    Lightning turns every progress-bar metric into a Python number after *every* step (its logger connector's
    ``on_batch_end``), and each such ``.item()`` waits for all the GPU work queued so far. The bar instead starts
    an asynchronous copy of the values at a refresh and shows them at a later refresh, once the copy is done.
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        shown: Sequence[str] = ("loss/total",),
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.shown = tuple(shown)
        self.values: dict[str, float] = {}
        self._copies: dict[str, Tensor] = {}
        self._copied: torch.cuda.Event | None = None

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Lightning's (version number, any progress-bar metrics) and the latest ``shown`` values read so far."""
        return {**super().get_metrics(trainer, pl_module), **self.values}

    def read_shown(self, trainer: pl.Trainer) -> None:
        """Take the values whose copy to the host has finished, then start copying the current ones (CPU values are
        read at once: nothing to wait for)."""
        if self._copies and (self._copied is None or self._copied.query()):
            self.values.update({name: float(value) for name, value in self._copies.items()})
            self._copies, self._copied = {}, None
        if self._copies:
            return
        current = {
            name: value.detach()
            for name, value in trainer.callback_metrics.items()
            if name in self.shown and isinstance(value, Tensor)
        }
        on_device = {name: value for name, value in current.items() if value.is_cuda}
        self.values.update({name: float(value) for name, value in current.items() if name not in on_device})
        if on_device:
            self._copies = {name: value.to("cpu", non_blocking=True) for name, value in on_device.items()}
            self._copied = torch.cuda.Event()
            self._copied.record()

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        if bar.total is None or bar.n == 0:
            bar.reset(total=convert_inf(trainer.max_steps if trainer.max_steps > 0 else None))
            bar.initial = trainer.global_step
            bar.n = trainer.global_step
            bar.set_description("step")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self._should_update(step, self.train_progress_bar.total):
            self.train_progress_bar.n = step
            self.read_shown(trainer)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the one bar open across epochs (Lightning's closes or resets it at every epoch)."""
