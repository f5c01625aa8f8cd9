"""Colour preservation (Gatys et al. 2017): luminance-only transfer and colour histogram (mean/covariance) matching."""

from __future__ import annotations

import pytest
import torch

from styletransfer.nn.colour import (
    COLOUR_SPACES,
    colour_stats,
    luma_chroma_to_rgb,
    luminance,
    match_colour,
    match_luminance,
    rgb_to_luma_chroma,
    with_chroma,
)


def _photo_like(seed: int, n: int | None = None, size: int = 24) -> torch.Tensor:
    """Smooth, correlated colours in the middle of the range (like a photo), so no clamping interferes."""
    g = torch.Generator().manual_seed(seed)
    shape = (n or 1, 3, size, size)
    base = torch.rand((shape[0], 1, size, size), generator=g)
    image = 0.3 + 0.4 * (0.6 * base + 0.4 * torch.rand(shape, generator=g))
    return image if n else image[0]


@pytest.mark.parametrize("space", COLOUR_SPACES)
def test_colour_space_round_trip_and_luma(space: str) -> None:
    image = torch.rand(2, 3, 8, 9, dtype=torch.float64)
    assert torch.allclose(luma_chroma_to_rgb(rgb_to_luma_chroma(image, space), space), image, atol=1e-12)
    expected_y = 0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]
    assert torch.allclose(luminance(image, space)[:, 0], expected_y, atol=1e-12)
    grey = image[:, :1].expand(-1, 3, -1, -1)
    neutral = 0.5 if space == "ycbcr" else 0.0
    assert torch.allclose(rgb_to_luma_chroma(grey, space)[:, 1:], torch.full_like(grey[:, 1:], neutral), atol=1e-6)


@pytest.mark.parametrize("space", COLOUR_SPACES)
def test_luminance_only_transfer_keeps_content_chroma(space: str) -> None:
    content = _photo_like(0, n=2)
    stylised_lum = match_luminance(luminance(_photo_like(1), space), luminance(content, space))
    result = with_chroma(stylised_lum, content, space)
    assert result.shape == content.shape and result.min() >= 0 and result.max() <= 1
    out = rgb_to_luma_chroma(result, space)
    assert torch.allclose(out[:, 1:], rgb_to_luma_chroma(content, space)[:, 1:], atol=1e-5)
    assert torch.allclose(out[:, :1], stylised_lum, atol=1e-5)


def test_match_luminance_gives_reference_mean_and_std() -> None:
    lum = torch.rand(1, 1, 16, 16) * 0.2
    reference = 0.5 + 0.1 * torch.randn(3, 1, 10, 12)
    matched = match_luminance(lum, reference)
    assert matched.shape == (3, 1, 16, 16)
    assert torch.allclose(matched.mean((-2, -1)), reference.mean((-2, -1)), atol=1e-5)
    assert torch.allclose(matched.std((-2, -1)), reference.std((-2, -1)), atol=1e-4)


def test_histogram_matching_gives_reference_mean_and_covariance() -> None:
    style = torch.rand(3, 20, 16)
    style[0] = 0.8 * style[0] + 0.2  # a reddish style with its own channel correlations
    style[2] = 0.5 * style[1] + 0.3 * style[2]
    content = _photo_like(2, n=2)
    matched = match_colour(style, content, clamp=False)
    assert matched.shape == (2, 3, 20, 16)
    mean, cov = colour_stats(matched)
    c_mean, c_cov = colour_stats(content)
    assert torch.allclose(mean, c_mean, atol=1e-5)
    assert torch.allclose(cov, c_cov, atol=1e-5)
    clamped = match_colour(style, content[0])
    assert clamped.shape == style.shape and clamped.min() >= 0 and clamped.max() <= 1
    m, c = colour_stats(clamped)
    assert torch.allclose(m[0], c_mean[0], atol=0.02) and torch.allclose(c[0], c_cov[0], atol=0.005)


def test_colour_functions_reject_non_rgb() -> None:
    with pytest.raises(ValueError, match="RGB"):
        match_colour(torch.rand(1, 16, 16), torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="colour space"):
        luminance(torch.rand(3, 4, 4), "hsv")
