"""The images Neural Style optimises: content and styles in the optimised space (colour preservation) and the
first iterate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer.nn.colour import luminance, match_colour, match_luminance


def optimised_space(
    content_rgb: Tensor, styles: list[Tensor], preserve_colour: str | None, colour_space: str
) -> tuple[Tensor, list[Tensor]]:
    """Content (N,3,H,W) and styles [(1 or N,3,h,w)] in the space that is optimised (``method.preserve_colour``).

    Luminance-only: greyscale copies of the luminance, the style's luminance matched (mean, std) to each
    content's. Histogram: each style recoloured with each content's colour mean and covariance.
    """
    if preserve_colour == "luminance":
        c_lum = luminance(content_rgb, colour_space)
        styles = [match_luminance(luminance(s, colour_space), c_lum).expand(-1, 3, -1, -1) for s in styles]
        return c_lum.expand(-1, 3, -1, -1), styles
    if preserve_colour == "histogram":
        styles = [match_colour(s, content_rgb) for s in styles]
    return content_rgb, styles


def initial_image(
    init: str, content: Tensor, styles: Sequence[Tensor], blend: Sequence[float], seed: int, luminance_only: bool
) -> Tensor:
    """The first iterate (``method.init``): the content, seeded uniform noise, or the styles blended with
    ``blend``'s weights and resized to the content; its first channel only when ``luminance_only``."""
    n, _, h, w = content.shape
    if init == "content":
        image = content.clone()
    elif init == "noise":
        generator = torch.Generator().manual_seed(seed)
        image = torch.rand(content.shape, generator=generator).to(content)
    else:
        blended = sum(
            weight * F.interpolate(style, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
            for weight, style in zip(blend, styles)
        )
        image = cast(Tensor, blended).expand(n, -1, -1, -1).clamp(0, 1)  # at least one style: a tensor
    image = image[:, :1] if luminance_only else image
    return image.contiguous().detach().float().cpu()
