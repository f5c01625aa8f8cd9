"""Universal style transfer's inference (Li et al., NeurIPS 2017): the coarse-to-fine cascade of whitening and
colouring, as sunshineatnoon/PytorchWCT ``WCT.py`` (commit ee9d813) runs it, with the one-level maths of
``nn.whitening`` (its ``util.py`` ``whiten_and_color``).

For each level from the deepest to the finest (relu5_1, relu4_1, ..., relu1_1): encode the current image (the content
at the first level, the previous level's decoded image after it) to that level, whiten and colour its features with
the style's mean and covariance at that level (float64), blend with the features by the level's alpha
(alpha * target + (1 - alpha) * features, in float64, then float32, as ``WCT.transform``), and decode with the level's
decoder. The style's statistics come from the style image itself at every level; intermediate images are not
clamped (the authors clamp only when saving); the final one is.

A style's *code* is its (mean, covariance) at every level of the cascade; several styles blend as the weighted sums
of their means and of their covariances (the interpolation ``transform=wct`` uses; the authors' Torch
``test_wct_interpolation2.lua`` instead blends the coloured features, i.e. the covariances' square roots).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ParamSpec

import torch
from torch import Tensor

from styletransfer.methods.wct.decoders import Decoders
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.nn.whitening import EIGEN_FLOOR, covariance, whiten_colour
from styletransfer.runtime.errors import ConfigError

P = ParamSpec("P")

#: A style as the cascade needs it: level -> (channel mean (N, C, 1, 1), covariance (N, C, C)), float64.
StyleCode = dict[str, tuple[Tensor, Tensor]]


def _prepared(images: Tensor, channels_last: bool) -> Tensor:
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def encode_style(
    encoder: VGGEncoder, style: Tensor, levels: Sequence[str], what: str = "style", channels_last: bool = False
) -> StyleCode:
    """The code of style images (N, 3, h, w) in [0, 1]: their (mean, covariance) at each of ``levels``, from one
    pass through the encoder. A style without variation at a level (no covariance eigenvalue of at least
    ``EIGEN_FLOOR``: whitening and colouring would paint its mean alone) is refused naming ``what``."""
    features = encoder(_prepared(style, channels_last), list(levels))
    code = {level: covariance(features[level]) for level in levels}
    for level, (_, cov) in code.items():
        if bool((torch.linalg.eigvalsh(cov)[..., -1] < EIGEN_FLOOR).any()):
            raise ConfigError(
                f"{what} has no variation at {level} (its covariance has no eigenvalue of at least {EIGEN_FLOOR:g}, "
                "so WCT would paint its mean alone): give a style image with some texture"
            )
    return code


def blend_codes(codes: Sequence[StyleCode], weights: Sequence[float]) -> StyleCode:
    """The weighted sums of the codes' means and of their covariances, level by level."""
    return {
        level: (
            sum((w * code[level][0] for w, code in zip(weights, codes)), torch.zeros_like(codes[0][level][0])),
            sum((w * code[level][1] for w, code in zip(weights, codes)), torch.zeros_like(codes[0][level][1])),
        )
        for level in codes[0]
    }


def check_code(code: Mapping[str, object], levels: Sequence[str], what: str) -> None:
    """A ConfigError naming ``what`` when a style code lacks a level of the cascade (a code of another model)."""
    missing = [level for level in levels if level not in code]
    if missing:
        raise ConfigError(
            f"{what} has no statistics at {', '.join(missing)}: encode the styles with this model's encode_styles"
        )


def cascade_steps(
    encoder: VGGEncoder,
    decoders: Decoders,
    content: Tensor,
    code: StyleCode,
    alphas: Mapping[str, float],
    levels: Sequence[str],
    output_size: tuple[int, int] | None = None,
    channels_last: bool = False,
) -> Iterator[tuple[str, Tensor]]:
    """The cascade over ``levels`` (coarse to fine) for content (N, 3, H, W) in [0, 1] and a (blended) style
    ``code``, with ``alphas[level]`` at each level: each level's name and decoded image (N, 3, H, W) in the
    features' dtype, not clamped (``output_size`` if given: the first level decodes to it and the rest work at that
    size)."""
    size = (int(output_size[0]), int(output_size[1])) if output_size else (content.shape[-2], content.shape[-1])
    image = content
    for level in levels:
        features = encoder(_prepared(image, channels_last), [level])[level]
        alpha = float(alphas[level])
        target = features
        if alpha != 0.0:
            coloured = whiten_colour(features, code[level])
            target = (alpha * coloured + (1.0 - alpha) * features.double()).to(features.dtype)
        image = decoders[level](target, output_size=size)
        yield level, image


def last_image(steps: Callable[P, Iterator[tuple[str, Tensor]]]) -> Callable[P, Tensor]:
    """A function of ``steps``' arguments that returns the last image ``steps`` yields, float32 (only that one is
    kept)."""

    def last(*args: P.args, **kwargs: P.kwargs) -> Tensor:
        return deque(steps(*args, **kwargs), maxlen=1)[0][1].float()

    return last


#: ``cascade(...)``, with :func:`cascade_steps`' arguments: the stylised image, float32 (N, 3, H, W), not clamped.
cascade = last_image(cascade_steps)
