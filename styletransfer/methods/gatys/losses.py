"""Neural Style (Gatys) losses: one style-loss module per style statistic, total variation, per-layer weights.

Style statistics are computed in float32 (Gram, mean/std) or float64 (Wasserstein-2) whatever the autocast dtype.
Every reduction is per element, so a loss weight means the same at any image size and channel count.

A style loss (in the manner of pystiche and crowsonkb's style-transfer-pytorch) is a ``torch.nn.Module`` that
holds one layer's target as buffers and maps that layer's features to a scalar. Its ``statistics`` are in a form
that blends linearly, so the target of several weighted style images is built from the blend of theirs
(``StyleLoss.blended``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from styletransfer.nn.stats import gaussian_moments, gram_matrix, mean_std, moments_to_covariance, sqrtm_psd
from styletransfer.runtime.errors import ConfigError


def gram_loss(features: Tensor, target_gram: Tensor) -> Tensor:
    """MSE (mean over the N x C x C entries) between the Gram matrix of ``features`` and ``target_gram``.

    ``target_gram`` is (C, C), (1, C, C) or (N, C, C); batch 1 is broadcast over the features' batch.
    """
    gram = gram_matrix(features)
    return (gram - target_gram.float()).pow(2).mean()


def wasserstein2_loss(
    features: Tensor, target_mean: Tensor, target_cov: Tensor, target_cov_sqrt: Tensor | None = None, eps: float = 1e-4
) -> Tensor:
    """Squared Wasserstein-2 distance between Gaussian fits of ``features`` and of the target, per channel.

    W2^2 = |mu - mu_t|^2 + tr(S + S_t - 2 (S_t^(1/2) S S_t^(1/2))^(1/2)), divided by C and averaged over the batch
    (as crowsonkb's style-transfer-pytorch). Targets are (C,), (C, C) or batched (1 or N, ...);
    ``target_cov_sqrt`` (S_t^(1/2)) can be passed precomputed since the target is fixed. Computed in float64
    and returned as float32: with fewer feature positions than channels (deep layers, small images) the
    covariances are nearly singular, and float32 rounding in S_t^(1/2) S S_t^(1/2) ruins the gradient.
    """
    mean, second = gaussian_moments(features)
    cov = moments_to_covariance(mean, second, eps)
    t_mean, t_cov = target_mean.double(), target_cov.double()
    t_sqrt = sqrtm_psd(t_cov) if target_cov_sqrt is None else target_cov_sqrt.double()
    c = mean.shape[-1]
    mean_term = (mean - t_mean).pow(2).sum(-1) / c
    cross = sqrtm_psd(t_sqrt @ cov @ t_sqrt)
    cov_term = torch.diagonal(cov + t_cov - 2 * cross, dim1=-2, dim2=-1).sum(-1) / c
    return (mean_term + cov_term).mean().float()


def normalise_layer_weights(weights: str | Sequence[float], layers: Sequence[str]) -> list[float]:
    """Per-layer style weights summing to 1: ``"equal"`` or one non-negative number per layer (e.g. 256:64:16:4:1)."""
    if isinstance(weights, str):
        if weights != "equal":
            raise ConfigError(f"style layer weights {weights!r}: use 'equal' or a list with one number per layer")
        return [1.0 / len(layers)] * len(layers)
    values = [float(w) for w in weights]
    if len(values) != len(layers):
        raise ConfigError(
            f"style layer weights {values} have {len(values)} entries for {len(layers)} style layers {list(layers)}"
        )
    if any(w < 0 for w in values) or sum(values) <= 0:
        raise ConfigError(f"style layer weights {values} must be >= 0 with a positive sum")
    total = sum(values)
    return [w / total for w in values]


def weighted_style_loss(
    per_layer: Mapping[str, Tensor], layer_weights: Sequence[float], layers: Sequence[str]
) -> Tensor:
    """Sum over ``layers`` of weight * per-layer style loss (weights as from ``normalise_layer_weights``)."""
    if len(layer_weights) != len(layers):
        raise ConfigError(f"{len(layer_weights)} weights for {len(layers)} layers")
    return torch.stack([w * per_layer[name] for name, w in zip(layers, layer_weights)]).sum()


def blend_statistics(statistics: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> dict[str, Tensor]:
    """The weighted sum, key by key, of several styles' statistics (weights as given, not renormalised)."""
    if not statistics or len(statistics) != len(weights):
        raise ValueError(f"{len(statistics)} sets of statistics for {len(weights)} weights")
    blended: dict[str, Tensor] = {}
    for weight, stats in zip(weights, statistics):
        for key, value in stats.items():
            blended[key] = blended[key] + weight * value if key in blended else weight * value
    return blended


class StyleLoss(nn.Module):
    """One layer's style loss against a fixed target held as buffers: ``forward(features) -> loss`` (a scalar).

    A subclass gives ``statistics`` (features -> the statistics it compares, in a form that blends linearly
    across styles) and an ``__init__`` taking those statistics by name, which finishes the target once.
    ``positions`` is how many feature positions per side the statistic needs at the deepest style layer.
    """

    positions: ClassVar[int] = 1

    @staticmethod
    def statistics(features: Tensor) -> dict[str, Tensor]:
        """The blendable statistics of ``features`` (N, C, H, W), keyed as ``__init__``'s arguments."""
        raise NotImplementedError

    @classmethod
    def from_features(cls, features: Tensor) -> StyleLoss:
        """The loss whose target is the statistics of ``features`` (one style image)."""
        return cls(**cls.statistics(features))

    @classmethod
    def blended(cls, statistics: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> StyleLoss:
        """The loss whose target is the weighted blend of several styles' ``statistics``."""
        return cls(**blend_statistics(statistics, weights))


class GramStyleLoss(StyleLoss):
    """Gatys et al. 2016: MSE between Gram matrices, L = mean over (N, C, C) of (G(F) - G_t)^2 with
    G(F) = F F^T / (C H W) (``nn.stats.gram_matrix``). Blends Gram matrices: G_t = sum_i w_i G(F_i)."""

    gram: Tensor

    def __init__(self, gram: Tensor) -> None:
        super().__init__()
        self.register_buffer("gram", gram.detach())

    @staticmethod
    def statistics(features: Tensor) -> dict[str, Tensor]:
        return {"gram": gram_matrix(features)}

    def forward(self, features: Tensor) -> Tensor:
        return gram_loss(features, self.gram)


class MeanStdStyleLoss(StyleLoss):
    """AdaIN's statistic: L = mean over (N, C) of (mu - mu_t)^2 + mean over (N, C) of (sigma - sigma_t)^2, with
    the channel mean mu and standard deviation sigma over space (``nn.stats.mean_std``: unbiased, eps).
    Blends means and standard deviations separately. The unbiased variance needs two positions per side."""

    positions: ClassVar[int] = 2
    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach())
        self.register_buffer("std", std.detach())

    @staticmethod
    def statistics(features: Tensor) -> dict[str, Tensor]:
        mean, std = mean_std(features)
        return {"mean": mean, "std": std}

    def forward(self, features: Tensor) -> Tensor:
        mean, std = mean_std(features)
        return (mean - self.mean).pow(2).mean() + (std - self.std).pow(2).mean()


class Wasserstein2StyleLoss(StyleLoss):
    """crowsonkb's statistic: squared Wasserstein-2 distance between Gaussian fits (``wasserstein2_loss``),
    W2^2 = (|mu - mu_t|^2 + tr(S + S_t - 2 (S_t^(1/2) S S_t^(1/2))^(1/2))) / C.

    Blends the raw moments mu and M = F F^T / (H W) (those of the mixture of the styles), then builds the target
    covariance S_t = M - mu mu^T + eps I and its square root once, in float64.
    """

    mean: Tensor
    cov: Tensor
    cov_sqrt: Tensor

    def __init__(self, mean: Tensor, second: Tensor) -> None:
        super().__init__()
        mean, second = mean.detach(), second.detach()
        cov = moments_to_covariance(mean, second)
        self.register_buffer("mean", mean)
        self.register_buffer("cov", cov)
        self.register_buffer("cov_sqrt", sqrtm_psd(cov))

    @staticmethod
    def statistics(features: Tensor) -> dict[str, Tensor]:
        mean, second = gaussian_moments(features)
        return {"mean": mean, "second": second}

    def forward(self, features: Tensor) -> Tensor:
        return wasserstein2_loss(features, self.mean, self.cov, self.cov_sqrt)


#: ``method.style_statistic`` -> its style loss.
STYLE_LOSSES: dict[str, type[StyleLoss]] = {
    "gram": GramStyleLoss,
    "mean_std": MeanStdStyleLoss,
    "wasserstein2": Wasserstein2StyleLoss,
}
STYLE_STATISTICS = tuple(STYLE_LOSSES)
