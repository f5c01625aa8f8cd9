"""Colour preservation for style transfer (Gatys et al. 2017, "Preserving colour in neural artistic style transfer").

Two methods, both pure functions on RGB tensors in [0, 1] shaped (3, H, W) or (N, 3, H, W):

- luminance-only transfer: stylise the luminance channel only, then put the content's chroma back
  (``luminance``, ``match_luminance``, ``with_chroma``; YIQ or full-range YCbCr);
- colour histogram matching: give one image the colour mean and covariance of another before transfer
  (``match_colour``).

Statistics are computed in float64 (3x3 matrices, cheap) so the matched moments are exact to float32 precision.
"""

from __future__ import annotations

import torch
from torch import Tensor

from styletransfer.nn.stats import sym_matrix_power

#: RGB -> YIQ (NTSC). Y is the Rec. 601 luma; I and Q are centred on 0.
_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    dtype=torch.float64,
)
#: RGB -> full-range YCbCr (JPEG), before adding 0.5 to Cb and Cr.
_YCBCR = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=torch.float64,
)
_CHROMA_OFFSET = {"yiq": 0.0, "ycbcr": 0.5}
COLOUR_SPACES = ("yiq", "ycbcr")


def _matrix(space: str) -> Tensor:
    if space == "yiq":
        return _YIQ
    if space == "ycbcr":
        return _YCBCR
    raise ValueError(f"unknown colour space {space!r}: use one of {COLOUR_SPACES}")


def _offset(space: str) -> Tensor:
    """Per-channel offset added after the matrix (0.5 on YCbCr's chroma)."""
    chroma = _CHROMA_OFFSET[space] if space in _CHROMA_OFFSET else 0.0
    return torch.tensor([0.0, chroma, chroma], dtype=torch.float64)


def _check_rgb(image: Tensor, name: str = "image") -> None:
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"{name} must be RGB shaped (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")


def _apply(matrix: Tensor, image: Tensor, offset: Tensor | None = None) -> Tensor:
    """Apply a 3x3 colour matrix over the channel dimension (-3), then add a per-channel offset."""
    m = matrix.to(device=image.device, dtype=image.dtype)
    out = torch.einsum("ij,...jhw->...ihw", m, image)
    if offset is not None:
        out = out + offset.to(device=image.device, dtype=image.dtype).view(3, 1, 1)
    return out


def rgb_to_luma_chroma(image: Tensor, space: str = "yiq") -> Tensor:
    """RGB -> (Y, chroma1, chroma2) in ``space`` ('yiq' or 'ycbcr', full range with chroma centred on 0.5)."""
    _check_rgb(image)
    return _apply(_matrix(space), image, _offset(space))


def luma_chroma_to_rgb(image: Tensor, space: str = "yiq") -> Tensor:
    """Inverse of ``rgb_to_luma_chroma`` (not clamped)."""
    _check_rgb(image)
    inverse = torch.linalg.inv(_matrix(space))
    return _apply(inverse, image - _offset(space).to(device=image.device, dtype=image.dtype).view(3, 1, 1))


def luminance(image: Tensor, space: str = "yiq") -> Tensor:
    """Luminance (Rec. 601 luma, the same in YIQ and YCbCr) with the channel dimension kept: (..., 1, H, W)."""
    return rgb_to_luma_chroma(image, space)[..., :1, :, :]


def match_luminance(lum: Tensor, reference: Tensor, eps: float = 1e-5) -> Tensor:
    """Shift and scale ``lum`` so that its mean and std equal ``reference``'s, per image.

    Gatys et al. 2017 do this to the style's luminance before luminance-only transfer, so that the style's
    brightness histogram does not override the content's. Shapes (1, H, W) or (N, 1, H, W); ``reference`` may
    have batch size 1 or the batch size of ``lum`` (or ``lum`` batch 1 broadcast against ``reference``).
    """
    dims = (-2, -1)
    l_mean, l_std = lum.mean(dims, keepdim=True), lum.std(dims, keepdim=True)
    r_mean, r_std = reference.mean(dims, keepdim=True), reference.std(dims, keepdim=True)
    return (lum - l_mean) / (l_std + eps) * r_std + r_mean


def with_chroma(lum: Tensor, chroma_source: Tensor, space: str = "yiq", clamp: bool = True) -> Tensor:
    """RGB image with the luminance ``lum`` (..., 1, H, W) and the chroma of the RGB ``chroma_source``.

    The last step of luminance-only transfer: the stylised luminance recombined with the content's colours.
    """
    _check_rgb(chroma_source, "chroma_source")
    if lum.shape[-3] != 1 or lum.shape[-2:] != chroma_source.shape[-2:]:
        raise ValueError(
            f"luminance {tuple(lum.shape)} must be (..., 1, H, W) with the size of chroma_source "
            f"{tuple(chroma_source.shape)}"
        )
    chroma = rgb_to_luma_chroma(chroma_source, space)[..., 1:, :, :]
    batch = torch.broadcast_shapes(lum.shape[:-3], chroma.shape[:-3])
    lum = lum.expand(*batch, 1, *lum.shape[-2:])
    chroma = chroma.expand(*batch, 2, *chroma.shape[-2:])
    rgb = luma_chroma_to_rgb(torch.cat([lum, chroma], dim=-3), space)
    return rgb.clamp(0, 1) if clamp else rgb


def colour_stats(image: Tensor) -> tuple[Tensor, Tensor]:
    """Colour mean (N, 3) and covariance (N, 3, 3) over pixels (population covariance), in float64."""
    _check_rgb(image)
    batch = image.reshape(-1, 3, image.shape[-2] * image.shape[-1]).double()
    mean = batch.mean(-1)
    centred = batch - mean.unsqueeze(-1)
    cov = centred @ centred.transpose(-1, -2) / batch.shape[-1]
    return mean, cov


def match_colour(source: Tensor, reference: Tensor, clamp: bool = True, eps: float = 1e-5) -> Tensor:
    """Recolour ``source`` so its colour mean and covariance equal ``reference``'s (per image).

    x' = C_r^(1/2) C_s^(-1/2) (x - mu_s) + mu_r with symmetric matrix square roots (the "image analogies"
    variant of Gatys et al. 2017). For colour preservation, ``source`` is the style image and ``reference``
    the content. ``reference`` may be batch 1 (broadcast) or the batch size of ``source``; ``source`` batch 1
    is broadcast against a batched ``reference``. ``clamp`` keeps the result in [0, 1] (which moves the
    moments slightly when the transform pushes colours out of range).
    """
    _check_rgb(source, "source")
    _check_rgb(reference, "reference")
    s_mean, s_cov = colour_stats(source)
    r_mean, r_cov = colour_stats(reference)
    if s_mean.shape[0] != r_mean.shape[0] and 1 not in (s_mean.shape[0], r_mean.shape[0]):
        raise ValueError(f"batch sizes differ: source {tuple(source.shape)}, reference {tuple(reference.shape)}")
    transform = sym_matrix_power(r_cov, 0.5, eps) @ sym_matrix_power(s_cov, -0.5, eps)
    pixels = source.reshape(-1, 3, source.shape[-2] * source.shape[-1]).double()
    out = transform @ (pixels - s_mean.unsqueeze(-1)) + r_mean.unsqueeze(-1)
    out = out.reshape(out.shape[0], 3, *source.shape[-2:]).to(source.dtype)
    if source.dim() == 3 and reference.dim() == 3:
        out = out[0]
    return out.clamp(0, 1) if clamp else out
