"""Finite or stop: a NaN or infinite training loss ends the run before anything non-finite is saved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from styletransfer.runtime.errors import NonFiniteLossError


class FirstNonFinite:
    """The first step whose loss was NaN or infinite, kept on the device: ``record`` updates it in place without a
    host-device sync (so it may run every step, or inside a CUDA graph); ``step()`` reads it, the one sync."""

    def __init__(self, device: torch.device | str) -> None:
        self.first = torch.full((), -1, dtype=torch.long, device=device)  # -1: every loss so far was finite

    def record(self, loss: Tensor, step: Tensor | int) -> Tensor:
        """Note ``loss`` (one value) as step ``step``'s; returns, on the device, whether every loss so far was
        finite (this one included)."""
        broke = ~torch.isfinite(loss.detach().reshape(())) & (self.first < 0)
        self.first.copy_(torch.where(broke, step, self.first))
        return self.first < 0

    def step(self) -> int | None:
        """The first non-finite step, or None while every loss was finite (reads the device: one sync)."""
        first = int(self.first)
        return None if first < 0 else first


class StopOnNonFiniteLoss(pl.Callback):
    """Stop training when the training loss is NaN or infinite, naming the first bad step and the last good
    checkpoint, before any checkpoint or ``decoder.pth`` is written from the broken weights.

    The first bad step is recorded on the device at every step (no host-device sync); it is read every
    ``check_every`` steps, before every checkpoint save and at the end of training. So a run stops at most
    ``check_every`` steps after its loss broke, and every file it left holds finite weights.
    """

    def __init__(self, check_every: int = 10) -> None:
        self.check_every = max(1, int(check_every))
        self._first_bad: FirstNonFinite | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            return
        if self._first_bad is None:
            self._first_bad = FirstNonFinite(loss.device)
        self._first_bad.record(loss, trainer.global_step - 1)  # the step this batch trained (already counted)
        if trainer.global_step % self.check_every == 0:
            self._check(trainer)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._check(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        step = None if self._first_bad is None else self._first_bad.step()
        if step is None:
            return
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none was written"
        raise NonFiniteLossError(
            f"training loss is not finite from step {step}; the run stopped without saving the broken weights. "
            f"Last good checkpoint: {last}. Lower method.lr or the loss weights, or use trainer.precision=32-true"
        )
