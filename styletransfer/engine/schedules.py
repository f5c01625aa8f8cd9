"""Learning-rate schedules as Lightning's ``lr_scheduler`` entries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from pytorch_lightning.utilities.types import LRSchedulerConfigType, OptimizerLRSchedulerConfig
from torch import Tensor


def inverse_time_decay(optimizer: torch.optim.Optimizer, decay: float) -> LRSchedulerConfigType:
    """lr / (1 + ``decay`` x step), updated every step: the AdaIN reference's ``adjust_learning_rate``, which the
    methods trained behind a frozen encoder share."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + decay * step))
    return {"scheduler": scheduler, "interval": "step"}


def decaying_adam(
    parameters: Iterable[Tensor], lr: float, decay: float, device: torch.device, betas: Sequence[float] = (0.9, 0.999)
) -> OptimizerLRSchedulerConfig:
    """Adam (fused on CUDA: one kernel for all parameters instead of a dozen per tensor group) with lr / (1 +
    ``decay`` x step) per step (:func:`inverse_time_decay`)."""
    optimizer = torch.optim.Adam(parameters, lr=lr, betas=(betas[0], betas[1]), fused=device.type == "cuda")
    return {"optimizer": optimizer, "lr_scheduler": inverse_time_decay(optimizer, decay)}
