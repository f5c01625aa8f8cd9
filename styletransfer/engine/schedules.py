"""Learning-rate schedules as Lightning's ``lr_scheduler`` entries."""

from __future__ import annotations

import torch
from pytorch_lightning.utilities.types import LRSchedulerConfigType


def inverse_time_decay(optimizer: torch.optim.Optimizer, decay: float) -> LRSchedulerConfigType:
    """lr / (1 + ``decay`` x step), updated every step: the AdaIN reference's ``adjust_learning_rate``, which the
    methods trained behind a frozen encoder share."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + decay * step))
    return {"scheduler": scheduler, "interval": "step"}
