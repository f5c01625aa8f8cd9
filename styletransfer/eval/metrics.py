"""Style-transfer metrics as pure functions of tensors (images in [0, 1] or feature maps).

Every per-image metric returns one value per sample, shaped (N,), so a batch of pairs is scored at once and
the runner can aggregate however it likes. Reductions are explicit:

* content distance: MSE between the feature maps of result and content at one layer (relu4_1, relu4_2);
* mean/std style distance: the AdaIN style loss (MSE of channel means + MSE of channel stds, summed over layers);
* Gram style distance: MSE of Gram matrices normalised per element (``losses.gram_matrix``: divided by
  C x H x W), summed over layers, so it does not depend on the image size;
* SSIM of the luminance (ITU-R BT.601 Y) of content and result, Gaussian window 11, sigma 1.5, data range 1;
* CFSD (StyleID, CVPR 2024): KL(P_content || P_result) summed over the rows of the softmax self-similarity maps
  of the relu3_1 features (features divided by the channel count before the dot products, as in StyleID's code);
* Frechet distance between two sets of feature vectors (FID) and ArtFID = (1 + LPIPS) x (1 + FID).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer.nn.colour import luminance
from styletransfer.nn.stats import gram_matrix, mean_std, sym_matrix_power

#: Default bound on the number of relu3_1 positions used by CFSD: 128 x 128, i.e. a 512 x 512 image exactly as
#: StyleID scores it; larger maps are area-downsampled to this many positions to bound time.
CFSD_MAX_POSITIONS = 128 * 128
#: Rows of the (positions x positions) self-similarity map computed at once; bounds memory to rows x positions.
CFSD_CHUNK_ROWS = 1024


def _per_sample_mse(a: Tensor, b: Tensor) -> Tensor:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.float() - b.float()).pow(2).flatten(1).mean(dim=1)


def content_distance(result_features: Tensor, content_features: Tensor) -> Tensor:
    """Per-sample MSE between feature maps of the result and of the content at one layer, shaped (N,)."""
    return _per_sample_mse(result_features, content_features)


def mean_std_distance(result_features: Tensor, style_features: Tensor) -> Tensor:
    """Per-sample AdaIN style distance at one layer: MSE of channel means + MSE of channel stds, shaped (N,).

    The style may have batch size 1 (broadcast to every result) and any spatial size.
    """
    r_mean, r_std = mean_std(result_features)
    s_mean, s_std = mean_std(style_features)
    s_mean, s_std = s_mean.expand_as(r_mean), s_std.expand_as(r_std)
    return _per_sample_mse(r_mean, s_mean) + _per_sample_mse(r_std, s_std)


def gram_distance(result_features: Tensor, style_features: Tensor) -> Tensor:
    """Per-sample MSE between the Gram matrices of result and style at one layer, shaped (N,)."""
    g_result = gram_matrix(result_features)
    g_style = gram_matrix(style_features).expand_as(g_result)
    return _per_sample_mse(g_result, g_style)


def summed_over_layers(
    fn, result_features: Mapping[str, Tensor], target_features: Mapping[str, Tensor], layers: Sequence[str]
) -> Tensor:
    """Sum of ``fn(result[layer], target[layer])`` over ``layers`` (each shaped (N,)); names missing layers."""
    if not layers:
        raise ValueError("at least one layer is needed")
    missing = [name for name in layers if name not in result_features or name not in target_features]
    if missing:
        raise ValueError(f"features for layer(s) {missing} were not computed")
    return torch.stack([fn(result_features[name], target_features[name]) for name in layers]).sum(dim=0)


def ssim_luminance(result: Tensor, content: Tensor) -> Tensor:
    """Per-sample SSIM between the luminance of result and content (torchmetrics, data range 1), shaped (N,).

    Images smaller than the 11-pixel Gaussian window use the largest odd window that fits.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    if result.shape != content.shape:
        raise ValueError(f"result {tuple(result.shape)} and content {tuple(content.shape)} must have the same shape")
    side = min(result.shape[-2:])
    kernel = 11 if side >= 11 else max(3, side - (1 - side % 2))
    ssim = structural_similarity_index_measure(
        luminance(result.float().clamp(0, 1)),
        luminance(content.float().clamp(0, 1)),
        data_range=1.0,
        kernel_size=kernel,
        sigma=1.5 * kernel / 11,
        reduction="none",
    )
    return cast(Tensor, ssim).reshape(-1)  # one tensor: no full image or contrast-sensitivity maps are asked for


def _bounded(features: Tensor, max_positions: int | None) -> Tensor:
    """Area-downsample a feature map so that it has at most ``max_positions`` positions (aspect ratio kept)."""
    h, w = features.shape[-2:]
    if max_positions is None or h * w <= max_positions:
        return features
    scale = math.sqrt(max_positions / (h * w))
    size = (max(1, int(h * scale)), max(1, int(w * scale)))
    return F.adaptive_avg_pool2d(features, size)


def cfsd(
    content_features: Tensor,
    result_features: Tensor,
    max_positions: int | None = CFSD_MAX_POSITIONS,
    chunk_rows: int = CFSD_CHUNK_ROWS,
) -> Tensor:
    """Content feature structural distance per sample, shaped (N,), from relu3_1 features of content and result.

    As in StyleID's evaluation: features (positions x C) divided by C, self-similarity S = F F^T, each row turned
    into a distribution with a softmax, and KL(P_content || P_result) summed over the rows. The rows are processed
    ``chunk_rows`` at a time (memory rows x positions instead of positions^2); maps with more than
    ``max_positions`` positions are area-downsampled first (None: never).
    """
    if content_features.shape != result_features.shape:
        raise ValueError(
            f"content {tuple(content_features.shape)} and result {tuple(result_features.shape)} features differ in "
            "shape"
        )
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    c = content_features.shape[1]
    flats = []
    for features in (content_features, result_features):
        features = _bounded(features.float(), max_positions)
        flats.append(features.double().flatten(2).transpose(1, 2) / c)  # (N, P, C), float64: KL of near-uniform rows
    content_flat, result_flat = flats
    total = torch.zeros(content_flat.shape[0], dtype=torch.float64, device=content_flat.device)
    for start in range(0, content_flat.shape[1], chunk_rows):
        rows = slice(start, start + chunk_rows)
        log_p = F.log_softmax(torch.bmm(content_flat[:, rows], content_flat.transpose(1, 2)), dim=-1)
        log_q = F.log_softmax(torch.bmm(result_flat[:, rows], result_flat.transpose(1, 2)), dim=-1)
        total += (log_p.exp() * (log_p - log_q)).sum(dim=(1, 2))
    return total.float()


def frechet_distance(features_a: np.ndarray | Tensor, features_b: np.ndarray | Tensor) -> float:
    """Frechet distance between Gaussians fitted to two sets of feature vectors (rows), as FID computes it.

    ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)), where the last trace is taken as
    tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)) through two symmetric eigendecompositions (the same value as scipy's sqrtm
    of the product, seconds instead of a minute for 2048-d features, and stable with singular covariances).
    With no more vectors in both sets together than dimensions (a small benchmark's 2048-d Inception features),
    the same trace is taken in the vectors' space instead: with the centred rows A and B, S_a S_b has the nonzero
    eigenvalues of (A B^T)(A B^T)^T / ((n_a - 1)(n_b - 1)), so the trace is the sum of the singular values of
    A B^T / sqrt((n_a - 1)(n_b - 1)), an n_a x n_b matrix, instead of two d x d eigendecompositions.
    Needs at least two vectors per set.
    """
    a, b = (
        torch.as_tensor(np.asarray(f.detach().cpu() if isinstance(f, Tensor) else f), dtype=torch.float64)
        for f in (features_a, features_b)
    )
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (n, d) feature arrays with the same d, got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {a.shape[0]} and {b.shape[0]}")
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)
    diff = mu_a - mu_b
    if a.shape[0] + b.shape[0] <= a.shape[1]:  # fewer vectors than dimensions: the trace in the vectors' space
        centred_a, centred_b = a - mu_a, b - mu_b
        scale_a, scale_b = a.shape[0] - 1, b.shape[0] - 1
        tr_covmean = float(torch.linalg.svdvals(centred_a @ centred_b.T).sum()) / (scale_a * scale_b) ** 0.5
        traces = float(centred_a.square().sum()) / scale_a + float(centred_b.square().sum()) / scale_b
        return float(diff @ diff) + traces - 2.0 * tr_covmean
    sigma_a, sigma_b = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))
    root_a = sym_matrix_power(sigma_a, 0.5)
    tr_covmean = float(sym_matrix_power(root_a @ sigma_b @ root_a, 0.5).trace())
    return float(diff @ diff + sigma_a.trace() + sigma_b.trace() - 2.0 * tr_covmean)


def art_fid(lpips: float, fid: float) -> float:
    """ArtFID (Wright & Ommer 2022) = (1 + LPIPS) x (1 + FID); lower is better."""
    return (1.0 + float(lpips)) * (1.0 + float(fid))
