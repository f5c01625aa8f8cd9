"""Whitening and colouring of feature maps (Li et al., NeurIPS 2017; sunshineatnoon/PytorchWCT ``util.py``
``whiten_and_color``), in float64: Cs^1/2 Cc^-1/2 (c - mu_c) + mu_s, with Cc the content's unbiased covariance plus
the identity, Cs the style's, and each power taken over the eigen-components of at least ``EIGEN_FLOOR`` (the
others dropped, as the authors' loop over the singular values does).

Shared by ``transform=wct`` (one level behind an AdaIN-trained decoder) and ``method=wct`` (the authors'
coarse-to-fine cascade of reconstruction decoders). Decomposed with ``torch.linalg.eigh`` (the authors' ``torch.svd``
of the same symmetric matrices is 10 times slower on a CPU): the results agree to float64 rounding, not bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: WCT's floor on eigenvalues: components below it are dropped (PytorchWCT's ``0.00001``).
EIGEN_FLOOR = 1e-5


def covariance(features: Tensor, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """(channel mean (N, C, 1, 1), unbiased covariance (N, C, C)) of features (N, C, H, W), in ``dtype``."""
    flat = features.to(dtype).flatten(2)
    mean = flat.mean(-1, keepdim=True)
    centred = flat - mean
    return mean[..., None], centred @ centred.mT / (flat.shape[-1] - 1)


def _power(matrix: Tensor, exponent: float) -> Tensor:
    """``matrix ** exponent`` of symmetric positive semi-definite matrices (N, C, C) over their eigen-components of
    at least ``EIGEN_FLOOR`` (the others dropped)."""
    values, vectors = torch.linalg.eigh(matrix)
    kept = values >= EIGEN_FLOOR
    scale = torch.where(kept, values.clamp_min(EIGEN_FLOOR).pow(exponent), torch.zeros_like(values))
    return (vectors * scale[..., None, :]) @ vectors.mT


def wct_map(content: tuple[Tensor, Tensor], style: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """WCT as an affine map of the content's features: (matrix (N, C, C), offset (N, C, 1)) with target = matrix @ x
    + offset, from the content's (mean, covariance) and the style's (batch 1 or N), float64."""
    (c_mean, c_cov), (s_mean, s_cov) = content, style
    eye = torch.eye(c_cov.shape[-1], dtype=c_cov.dtype, device=c_cov.device)
    matrix = _power(s_cov, 0.5) @ _power(c_cov + eye, -0.5)
    return matrix, s_mean.flatten(2) - matrix @ c_mean.flatten(2)


def apply_map(features: Tensor, affine: tuple[Tensor, Tensor]) -> Tensor:
    """``matrix @ x + offset`` at every position of features (N, C, H, W), float64."""
    matrix, offset = affine
    return (matrix @ features.double().flatten(2) + offset).view(features.shape)


def whiten_colour(content: Tensor, style: tuple[Tensor, Tensor]) -> Tensor:
    """WCT's target for content features (N, C, H, W) and a style's (mean, covariance) (batch 1 or N), float64."""
    return apply_map(content, wct_map(covariance(content), style))
