"""Which training steps log their metrics (the ones Lightning sends to the loggers, and the run's last), and how a
host number is logged without waiting for the GPU."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor


def logs_this_step(trainer: pl.Trainer, steps: int = 1, end: int | None = None) -> bool:
    """Whether the training step now running should ``self.log`` its metrics.

    True when Lightning sends this step's metrics to the loggers (every ``trainer.log_every_n_steps`` Lightning
    steps, as it counts them; Lightning drops the values logged in between) and when this step ends the run, so
    that the run's final metrics (``trainer.callback_metrics``) are the last step's: ``trainer.should_stop``, or
    ``trainer.global_step + steps`` (the optimiser steps this Lightning step takes) reaching ``trainer.max_steps``
    or ``end`` (a module's own last step, e.g. Neural Style's iteration count when ``max_steps`` is -1).

    Each ``self.log`` costs about half a millisecond of host time (a third of an AdaIN step on a GPU), so the
    other steps skip it. ``trainer._logger_connector.should_update_logs`` is Lightning's own test, the one its
    callbacks (LearningRateMonitor, DeviceStatsMonitor) use.
    """
    done = trainer.global_step + steps
    ends = trainer.should_stop or 0 < trainer.max_steps <= done or (end is not None and done >= end)
    return ends or trainer._logger_connector.should_update_logs


def device_scalar(value: float, device: torch.device) -> Tensor:
    """A host number as a tensor on ``device``, made by a fill kernel (the number travels as its argument) without
    waiting for the GPU: ``self.log`` of a Python number copies it from pageable host memory, which waits for every
    queued kernel (one host-device sync per logged number)."""
    return torch.full((), float(value), device=device)
