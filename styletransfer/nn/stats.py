"""Feature statistics shared by the methods and the metrics: channel mean/std, Gram matrices, Gaussian moments
and the one symmetric matrix power (square root, inverse square root) with its gradient."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: Added to the variance before the square root, as in the reference AdaIN code; keeps gradients finite on flat maps.
STD_EPS = 1e-5


def _check_4d(features: Tensor) -> None:
    if features.dim() != 4:
        raise ValueError(f"expected features shaped (N, C, H, W), got {tuple(features.shape)}")


def mean_std(features: Tensor, eps: float = STD_EPS) -> tuple[Tensor, Tensor]:
    """Channel mean and standard deviation over space, shaped (N, C, 1, 1).

    The variance is unbiased (as in the reference PyTorch code) with ``eps`` added before the square root.
    Computed in float32 whatever the input dtype, so bf16 autocast does not lose the statistics.
    Reduced over dims (2, 3) in place, never reshaped: a reshape of a channels_last map would copy it. A
    contiguous map takes two passes (``var``, ``mean``: bitwise what the reference code computes); any other
    layout (channels_last, the speed path) one ``var_mean`` pass, whose mean may differ in the last bit.
    """
    _check_4d(features)
    if features.shape[2] * features.shape[3] < 2:
        raise ValueError(
            f"feature map of {tuple(features.shape[2:])} has fewer than 2 positions: the image is too small for this "
            "layer"
        )
    x = features.float()
    if x.is_contiguous():
        var, mean = x.var(dim=(2, 3), unbiased=True, keepdim=True), x.mean(dim=(2, 3), keepdim=True)
    else:
        var, mean = torch.var_mean(x, dim=(2, 3), unbiased=True, keepdim=True)
    return mean, (var + eps).sqrt()


def gram_matrix(features: Tensor) -> Tensor:
    """Gram matrix normalised per element: G = F F^T / (C * H * W), shaped (N, C, C), in float32.

    This is neural-style's normalisation (Gatys' notebook and pystiche divide by H * W only; the PyTorch tutorial
    by N * C * H * W). Dividing by the number of feature elements keeps a style weight meaningful across image
    sizes and layers.
    """
    _check_4d(features)
    n, c, h, w = features.shape
    flat = features.float().reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def gaussian_moments(features: Tensor) -> tuple[Tensor, Tensor]:
    """Channel mean (N, C) and raw second moment F F^T / (H * W) (N, C, C) of features, in float64.

    Raw moments blend linearly (a weighted mix of styles is the moments of the mixture), so targets of several
    styles are blended in this form and turned into a covariance by ``moments_to_covariance``.
    """
    _check_4d(features)
    n, c, h, w = features.shape
    flat = features.double().reshape(n, c, h * w)
    return flat.mean(-1), flat @ flat.transpose(1, 2) / (h * w)


def moments_to_covariance(mean: Tensor, second: Tensor, eps: float = 1e-4) -> Tensor:
    """Covariance from mean and raw second moment, with ``eps`` on the diagonal (keeps the square root stable)."""
    eye = torch.eye(mean.shape[-1], device=mean.device, dtype=second.dtype)
    return second - mean.unsqueeze(-1) * mean.unsqueeze(-2) + eps * eye


def _eigen_power(matrix: Tensor, power: float, floor: float) -> tuple[Tensor, Tensor]:
    """Eigenvalues of a symmetric matrix floored at ``floor`` and raised to ``power``, and the eigenvectors."""
    vals, vecs = torch.linalg.eigh(matrix)
    return vals.clamp_min(floor).pow(power), vecs


def _from_eigen(vals: Tensor, vecs: Tensor) -> Tensor:
    return vecs @ torch.diag_embed(vals) @ vecs.transpose(-1, -2)


def sym_matrix_power(matrix: Tensor, power: float, floor: float = 0.0) -> Tensor:
    """``matrix ** power`` for symmetric PSD matrices (..., C, C) by eigh, eigenvalues floored at ``floor`` first
    (0 turns negative rounding noise into 0; a positive floor keeps inverse powers of singular matrices finite).
    The matrix is symmetrised first; computed in its dtype, without a gradient formula (``sqrtm_psd`` has one)."""
    return _from_eigen(*_eigen_power((matrix + matrix.transpose(-1, -2)) / 2, power, floor))


class _SqrtmPSD(torch.autograd.Function):
    """Square root of a symmetric positive semi-definite matrix by eigh, with the analytic gradient.

    Computed in float64: the Wasserstein-2 term takes square roots of products of nearly singular covariances
    (fewer positions than channels, dead ReLU channels: eps-sized eigenvalues), whose tiny eigenvalues float32
    gets wrong, and the gradient divides by their square roots. The backward pass solves the Sylvester equation
    S X + X S = G in the eigenbasis (divided differences 1 / (sqrt(l_i) + sqrt(l_j))), which stays finite for
    repeated eigenvalues unlike autograd through eigh.
    """

    @staticmethod
    def forward(ctx, matrix: Tensor) -> Tensor:
        roots, vecs = _eigen_power(matrix.double(), 0.5, 0.0)
        ctx.save_for_backward(roots, vecs)
        return _from_eigen(roots, vecs).to(matrix.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        roots, vecs = ctx.saved_tensors
        denom = (roots.unsqueeze(-1) + roots.unsqueeze(-2)).clamp_min(1e-12)
        inner = vecs.transpose(-1, -2) @ grad.double() @ vecs / denom
        return (vecs @ inner @ vecs.transpose(-1, -2)).to(grad.dtype)


def sqrtm_psd(matrix: Tensor) -> Tensor:
    """Matrix square root of symmetric PSD matrices (..., C, C) with a gradient, in the input's dtype, float64
    inside (negative eigenvalues, rounding noise, are set to 0). Without a gradient use ``sym_matrix_power``."""
    return _SqrtmPSD.apply(matrix)


def merge_moments(
    count_a: int,
    mean_a: Tensor | None,
    moment_a: Tensor | None,
    count_b: int,
    mean_b: Tensor,
    moment_b: Tensor,
    outer: Callable[[Tensor, Tensor], Tensor],
) -> tuple[int, Tensor, Tensor]:
    """The count, mean and central moment (the sum of squared deviations per channel, or the co-moment matrix) of two
    blocks' positions together, by Chan et al.'s pairwise update; ``outer(delta, delta)`` is that moment of the
    means' difference (its square, or delta delta^T). The first block may be empty (``mean_a`` None)."""
    if mean_a is None or moment_a is None:
        return count_b, mean_b, moment_b
    total = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / total)
    return total, mean, moment_a + moment_b + outer(delta, delta) * (count_a * count_b / total)


class RunningStats:
    """Channel mean and variance of feature blocks, merged block by block (Chan et al.'s pairwise update) in
    float64 on the host, so many blocks lose no precision (tiled stylisation's global statistics)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, block: Tensor) -> None:
        """Merge a (N, C, h, w) block."""
        count = block.shape[2] * block.shape[3]
        var, mean = torch.var_mean(block.float(), dim=(2, 3), unbiased=False, keepdim=True)
        mean, m2 = mean.double().cpu(), var.double().cpu() * count
        self.count, self.mean, self.m2 = merge_moments(self.count, self.mean, self.m2, count, mean, m2, torch.mul)

    def mean_variance(self, unbiased: bool = True) -> tuple[Tensor, Tensor]:
        """(mean, variance) (N, C, 1, 1) in float64 on the host: the unbiased variance, or with ``unbiased=False``
        the population variance (instance normalisation's)."""
        if self.mean is None or self.m2 is None or self.count < 2:
            raise ValueError("the content's feature map has fewer than 2 positions: the image is too small")
        return self.mean, self.m2 / (self.count - int(unbiased))

    def mean_std(self, device: torch.device, eps: float = STD_EPS) -> tuple[Tensor, Tensor]:
        """(mean, std) as :func:`mean_std` gives them: unbiased variance plus ``eps``, float32 (N, C, 1, 1)."""
        mean, variance = self.mean_variance()
        return mean.float().to(device), (variance + eps).sqrt().float().to(device)


class RunningCovariance:
    """Channel mean and unbiased covariance of feature blocks, merged block by block (the pairwise update of the
    co-moment matrix) in float64 on the block's device: WCT's global content statistics for tiled stylisation."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.comoment: Tensor | None = None

    def add(self, block: Tensor) -> None:
        """Merge a (N, C, h, w) block."""
        flat = block.double().flatten(2)
        count = flat.shape[-1]
        mean = flat.mean(-1, keepdim=True)
        centred = flat - mean
        comoment = centred @ centred.mT
        merged = merge_moments(self.count, self.mean, self.comoment, count, mean, comoment, lambda a, b: a @ b.mT)
        self.count, self.mean, self.comoment = merged

    def mean_covariance(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(mean (N, C, 1, 1), unbiased covariance (N, C, C)) in float64, as ``covariance`` of the whole map."""
        if self.mean is None or self.comoment is None or self.count < 2:
            raise ValueError("the content's feature map has fewer than 2 positions: the image is too small")
        return self.mean[..., None].to(device), (self.comoment / (self.count - 1)).to(device)
