"""Feature-statistics operations shared by the methods: channel mean/std and AdaIN."""

from __future__ import annotations

import torch
from torch import Tensor

#: Added to the variance before the square root, as in the reference AdaIN code; keeps gradients finite on flat maps.
STD_EPS = 1e-5


def mean_std(features: Tensor, eps: float = STD_EPS) -> tuple[Tensor, Tensor]:
    """Channel mean and standard deviation over space, shaped (N, C, 1, 1).

    The variance is unbiased (as in the reference PyTorch code) with ``eps`` added before the square root.
    Computed in float32 whatever the input dtype, so bf16 autocast does not lose the statistics.
    """
    if features.dim() != 4:
        raise ValueError(f"expected features shaped (N, C, H, W), got {tuple(features.shape)}")
    n, c = features.shape[:2]
    flat = features.float().reshape(n, c, -1)
    if flat.shape[-1] < 2:
        raise ValueError(
            f"feature map of {tuple(features.shape[2:])} has fewer than 2 positions: the image is too small for this layer"
        )
    var = flat.var(dim=2, unbiased=True) + eps
    return flat.mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def adain(content: Tensor, style: Tensor, eps: float = STD_EPS) -> Tensor:
    """Adaptive instance normalisation: give ``content`` the channel mean and std of ``style``.

    AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y), statistics per sample and channel.
    ``style`` may have batch size 1 (broadcast over the content batch) or the content's batch size.
    """
    if content.shape[1] != style.shape[1]:
        raise ValueError(f"content has {content.shape[1]} channels, style has {style.shape[1]}")
    c_mean, c_std = mean_std(content, eps)
    s_mean, s_std = mean_std(style, eps)
    out = (content.float() - c_mean) / c_std * s_std + s_mean
    return out.to(content.dtype)
