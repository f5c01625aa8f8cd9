"""Finite or stop: a NaN or infinite training loss ends the run before anything non-finite is saved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from styletransfer.runtime.errors import NonFiniteLossError


class StopOnNonFiniteLoss(pl.Callback):
    """Stop training when the training loss is NaN or infinite, naming the first bad step and the last good
    checkpoint, before any checkpoint or ``decoder.pth`` is written from the broken weights.

    The first bad step is recorded on the device at every step (no host-device sync); it is read every
    ``check_every`` steps, before every checkpoint save and at the end of training. So a run stops at most
    ``check_every`` steps after its loss broke, and every file it left holds finite weights.
    """

    def __init__(self, check_every: int = 10) -> None:
        self.check_every = max(1, int(check_every))
        self._first_bad: Tensor | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            return
        loss = loss.detach().reshape(())
        # The step this batch trained: Lightning has already counted it in global_step.
        step = torch.full((), trainer.global_step - 1, dtype=torch.long, device=loss.device)
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        broke = ~torch.isfinite(loss) & (self._first_bad < 0)
        self._first_bad = torch.where(broke, step, self._first_bad)
        if trainer.global_step % self.check_every == 0:
            self._check(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._check(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        if self._first_bad is None:
            return
        step = int(self._first_bad)
        if step < 0:
            return
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none was written"
        raise NonFiniteLossError(
            f"training loss is not finite from step {step}; the run stopped without saving the broken weights. "
            f"Last good checkpoint: {last}. Lower method.lr or the loss weights, or use trainer.precision=32-true"
        )
