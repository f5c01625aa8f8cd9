"""Feature losses shared by the methods and the metrics, as pure functions of feature tensors.

Reductions are explicit: every loss is a mean over its elements (MSE), so weights carry over between
batch sizes and, for statistics, between image sizes. The AdaIN reductions equal the reference PyTorch code
(MSE over N x C per layer for the statistics; per-element MSE for the content).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer.nn.stats import mean_std
from styletransfer.runtime.errors import ConfigError


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between feature maps (AdaIN: decoded image's relu4_1 vs. the AdaIN target)."""
    return F.mse_loss(features.float(), target.float())


def mean_std_loss(features: Tensor, target: Tensor) -> Tensor:
    """MSE of channel means plus MSE of channel standard deviations (one layer of the AdaIN style loss)."""
    f_mean, f_std = mean_std(features)
    t_mean, t_std = mean_std(target)
    return F.mse_loss(f_mean, t_mean) + F.mse_loss(f_std, t_std)


def mean_std_style_loss(
    features: Mapping[str, Tensor], targets: Mapping[str, Tensor], layers: Sequence[str]
) -> tuple[Tensor, dict[str, Tensor]]:
    """AdaIN style loss: ``mean_std_loss`` summed over ``layers``; returns (total, per-layer losses)."""
    if not layers:
        raise ValueError("style loss needs at least one layer")
    per_layer = {name: mean_std_loss(features[name], targets[name]) for name in layers}
    return torch.stack(list(per_layer.values())).sum(), per_layer


def tv_loss(image: Tensor, power: int = 2) -> Tensor:
    """Total variation of an image batch (N, C, H, W), a mean over the N x C x H x W elements.

    power 2: mean of (dx^2 + dy^2) as in crowsonkb's style-transfer-pytorch; power 1: mean of (|dx| + |dy|),
    the anisotropic TV of neural-style-pt. dx and dy are forward differences; the last column's dx and the last
    row's dy are zero (replicate padding), so the divisor is the number of pixels.
    """
    if power not in (1, 2):
        raise ConfigError(f"tv power must be 1 or 2, got {power}")
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    if power == 2:
        total = dx.float().pow(2).sum() + dy.float().pow(2).sum()
    else:
        total = dx.float().abs().sum() + dy.float().abs().sum()
    return total / image.numel()
