"""Loss functions as pure functions of feature tensors.

Reductions are explicit: every loss is a mean over its elements (MSE), so weights carry over between
batch sizes and, for statistics, between image sizes. The AdaIN reductions equal the reference PyTorch code
(MSE over N x C per layer for the statistics; per-element MSE for the content).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer.ops import mean_std


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


# ---- Neural Style (Gatys) losses ---------------------------------------------------------------------------------
# Style statistics are computed in float32 whatever the autocast dtype. Every reduction is per element, so a loss
# weight means the same at any image size and channel count.

STYLE_STATISTICS = ("gram", "mean_std", "wasserstein2")


def gram_matrix(features: Tensor) -> Tensor:
    """Gram matrix normalised per element: G = F F^T / (C * H * W), shaped (N, C, C), in float32.

    This is neural-style's normalisation (Gatys' notebook and pystiche divide by H * W only; the PyTorch tutorial
    by N * C * H * W). Dividing by the number of feature elements keeps a style weight meaningful across image
    sizes and layers.
    """
    if features.dim() != 4:
        raise ValueError(f"expected features shaped (N, C, H, W), got {tuple(features.shape)}")
    n, c, h, w = features.shape
    flat = features.float().reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


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
        raise ValueError(f"tv power must be 1 or 2, got {power}")
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    if power == 2:
        total = dx.float().pow(2).sum() + dy.float().pow(2).sum()
    else:
        total = dx.float().abs().sum() + dy.float().abs().sum()
    return total / image.numel()


class _SqrtmPSD(torch.autograd.Function):
    """Square root of a symmetric positive semi-definite matrix by eigh, with the analytic gradient.

    Computed in float64: the Wasserstein-2 term takes square roots of products of nearly singular covariances
    (fewer positions than channels, dead ReLU channels: eps-sized eigenvalues), whose tiny eigenvalues float32
    gets wrong, and the gradient divides by their square roots. The backward pass solves the Sylvester equation S X + X S = G in the eigenbasis
    (divided differences 1 / (sqrt(l_i) + sqrt(l_j))), which stays finite for repeated eigenvalues unlike
    autograd through eigh.
    """

    @staticmethod
    def forward(ctx, matrix: Tensor) -> Tensor:  # type: ignore[override]
        vals, vecs = torch.linalg.eigh(matrix.double())
        roots = vals.clamp_min(0).sqrt()
        ctx.save_for_backward(roots, vecs)
        return (vecs @ torch.diag_embed(roots) @ vecs.transpose(-1, -2)).to(matrix.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        roots, vecs = ctx.saved_tensors
        denom = (roots.unsqueeze(-1) + roots.unsqueeze(-2)).clamp_min(1e-12)
        inner = vecs.transpose(-1, -2) @ grad.double() @ vecs / denom
        return (vecs @ inner @ vecs.transpose(-1, -2)).to(grad.dtype)


def sqrtm_psd(matrix: Tensor) -> Tensor:
    """Matrix square root of symmetric PSD matrices (..., C, C), in the input's dtype, float64 inside
    (negative eigenvalues, rounding noise, are set to 0)."""
    return _SqrtmPSD.apply(matrix)


def gaussian_moments(features: Tensor) -> tuple[Tensor, Tensor]:
    """Channel mean (N, C) and raw second moment F F^T / (H * W) (N, C, C) of features, in float64.

    Raw moments blend linearly (a weighted mix of styles is the moments of the mixture), so targets of several
    styles are blended in this form and turned into a covariance by ``moments_to_covariance``.
    """
    if features.dim() != 4:
        raise ValueError(f"expected features shaped (N, C, H, W), got {tuple(features.shape)}")
    n, c, h, w = features.shape
    flat = features.double().reshape(n, c, h * w)
    return flat.mean(-1), flat @ flat.transpose(1, 2) / (h * w)


def moments_to_covariance(mean: Tensor, second: Tensor, eps: float = 1e-4) -> Tensor:
    """Covariance from mean and raw second moment, with ``eps`` on the diagonal (keeps the square root stable)."""
    eye = torch.eye(mean.shape[-1], device=mean.device, dtype=second.dtype)
    return second - mean.unsqueeze(-1) * mean.unsqueeze(-2) + eps * eye


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
            raise ValueError(f"style layer weights {weights!r}: use 'equal' or a list with one number per layer")
        return [1.0 / len(layers)] * len(layers)
    values = [float(w) for w in weights]
    if len(values) != len(layers):
        raise ValueError(
            f"style layer weights {values} have {len(values)} entries for {len(layers)} style layers {list(layers)}"
        )
    if any(w < 0 for w in values) or sum(values) <= 0:
        raise ValueError(f"style layer weights {values} must be >= 0 with a positive sum")
    total = sum(values)
    return [w / total for w in values]


def weighted_style_loss(
    per_layer: Mapping[str, Tensor], layer_weights: Sequence[float], layers: Sequence[str]
) -> Tensor:
    """Sum over ``layers`` of weight * per-layer style loss (weights as from ``normalise_layer_weights``)."""
    if len(layer_weights) != len(layers):
        raise ValueError(f"{len(layer_weights)} weights for {len(layers)} layers")
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
    raise ValueError(f"unknown style statistic {kind!r}: use one of {STYLE_STATISTICS}")


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
    raise ValueError(f"unknown style statistic {kind!r}: use one of {STYLE_STATISTICS}")
