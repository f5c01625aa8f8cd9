"""Neural Style (Gatys) losses: style statistics and their losses, total variation, per-layer weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from styletransfer.runtime.errors import ConfigError
from styletransfer.nn.stats import gaussian_moments, gram_matrix, mean_std, moments_to_covariance, sqrtm_psd


# ---- Neural Style (Gatys) losses ---------------------------------------------------------------------------------
# Style statistics are computed in float32 whatever the autocast dtype. Every reduction is per element, so a loss
# weight means the same at any image size and channel count.

STYLE_STATISTICS = ("gram", "mean_std", "wasserstein2")


def gram_loss(features: Tensor, target_gram: Tensor) -> Tensor:
    """MSE (mean over the N x C x C entries) between the Gram matrix of ``features`` and ``target_gram``.

    ``target_gram`` is (C, C), (1, C, C) or (N, C, C); batch 1 is broadcast over the features' batch.
    """
    gram = gram_matrix(features)
    return (gram - target_gram.float()).pow(2).mean()


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


def style_statistics(features: Tensor, kind: str) -> dict[str, Tensor]:
    """The statistics a style loss of ``kind`` compares, in a form that blends linearly across styles.

    gram: {"gram"}; mean_std: {"mean", "std"} (``ops.mean_std``: unbiased, eps); wasserstein2: {"mean", "second"}
    (raw moments; ``prepare_style_target`` turns them into a covariance and its square root once).
    """
    if kind == "gram":
        return {"gram": gram_matrix(features)}
    if kind == "mean_std":
        mean, std = mean_std(features)
        return {"mean": mean, "std": std}
    if kind == "wasserstein2":
        mean, second = gaussian_moments(features)
        return {"mean": mean, "second": second}
    raise ConfigError(f"unknown style statistic {kind!r}: use one of {STYLE_STATISTICS}")


def prepare_style_target(stats: Mapping[str, Tensor], kind: str) -> dict[str, Tensor]:
    """Finish a (blended) target once: for wasserstein2 add its covariance and the covariance's square root."""
    target = dict(stats)
    if kind == "wasserstein2":
        target["cov"] = moments_to_covariance(stats["mean"], stats["second"])
        target["cov_sqrt"] = sqrtm_psd(target["cov"])
    return target


def style_statistic_loss(features: Tensor, target: Mapping[str, Tensor], kind: str) -> Tensor:
    """One layer's style loss between ``features`` and a target from ``prepare_style_target``."""
    if kind == "gram":
        return gram_loss(features, target["gram"])
    if kind == "mean_std":
        mean, std = mean_std(features)
        return (mean - target["mean"]).pow(2).mean() + (std - target["std"]).pow(2).mean()
    if kind == "wasserstein2":
        return wasserstein2_loss(features, target["mean"], target["cov"], target["cov_sqrt"])
    raise ConfigError(f"unknown style statistic {kind!r}: use one of {STYLE_STATISTICS}")
