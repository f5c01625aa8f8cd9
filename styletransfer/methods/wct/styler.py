"""Trained WCT decoders behind their encoder as a :class:`~styletransfer.protocol.model.StyleModel`: the
coarse-to-fine cascade (``cascade``) with style images, several styles blended (their means and covariances),
alpha at every level (times the per-level alphas the model was loaded with), colour preservation and another output
size.

Refused with one line: masks (no spatial control yet), tiling (each level re-encodes the whole decoded image of the
level before, so a tiled run would need one global pass per level; not offered), ONNX export (ONNX has no
eigendecomposition) and ``--compile``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from styletransfer.methods.wct.cascade import StyleCode, blend_codes, cascade, check_code, encode_style
from styletransfer.methods.wct.decoders import Decoders, check_levels
from styletransfer.nn.encoder import VGGEncoder, min_input_side
from styletransfer.protocol.controls import PLAIN, Capabilities, Controls
from styletransfer.protocol.inputs import model_input
from styletransfer.protocol.model import OnnxGraph, TiledStylisation, TilingNeeds
from styletransfer.protocol.styler import EncoderStyler, StylerOptions
from styletransfer.runtime.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger(__name__)


def check_level_alphas(
    per_level: Mapping[str, float] | None, levels: Sequence[str], setting: str = "level_alphas (--level-alpha)"
) -> dict[str, float]:
    """Each level's alpha factor (default 1), checked: levels of the cascade only, numbers in [0, 1]."""
    given = dict(per_level or {})
    unknown = [level for level in given if level not in levels]
    if unknown:
        raise ConfigError(
            f"{setting}: {', '.join(map(str, unknown))} is not a level of this model ({', '.join(levels)})"
        )
    for level, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"{setting}: {level}={value!r} must be a number in [0, 1]")
    return {level: float(given.get(level, 1.0)) for level in levels}


class WCTStyler(EncoderStyler):
    """A frozen encoder and the decoders of ``levels`` (default: every level the model has), run coarse to fine.

    ``stylise(..., Controls(alpha=a))`` uses ``a * level_alphas[level]`` at each level: the scalar alpha alone (the
    authors' one alpha for all levels) unless ``level_alphas`` (level -> factor in [0, 1], default 1) says otherwise.
    A style's code (:meth:`encode_styles`) is its (mean, covariance) at each level.
    """

    method = "wct"
    title = "universal style transfer (WCT)"

    def __init__(
        self,
        encoder: VGGEncoder,
        decoders: Decoders,
        levels: Sequence[str] | None = None,
        level_alphas: Mapping[str, float] | None = None,
        **options: Unpack[StylerOptions],
    ) -> None:
        super().__init__(encoder, **options)
        self.levels = check_levels(list(decoders) if levels is None else levels, "levels")
        lacking = [level for level in self.levels if level not in decoders or level not in encoder.layers]
        if lacking:
            raise ConfigError(
                f"levels: {self.source or 'this model'} has no decoder for {', '.join(lacking)} (it has "
                f"{', '.join(check_levels(list(decoders)))}): choose among those"
            )
        self.decoders = nn.ModuleDict({level: decoders[level] for level in self.levels}).eval().requires_grad_(False)
        self.level_alphas = check_level_alphas(level_alphas, self.levels)
        self.capabilities = Capabilities(
            masks=False,
            tiling=False,
            export=False,
            min_side=min_input_side([self.levels[0]], positions=2),
        )
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return next(self.decoders.parameters()).device

    def details(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "level_alphas": dict(self.level_alphas)}

    def _image(self, image: Tensor, name: str) -> Tensor:
        return model_input(image, name, self.device, self.capabilities.min_side)

    def _style_code(self, name: str, style: Tensor) -> StyleCode:
        """A style's (mean, covariance) at every level of the cascade, float64."""
        return encode_style(self.encoder, style, self.levels, name, self.channels_last)

    @torch.no_grad()
    def stylise(self, content: Tensor, styles: Tensor | Sequence[Tensor] = (), controls: Controls = PLAIN) -> Tensor:
        """``content`` (3, H, W) or (N, 3, H, W), float in [0, 1] or uint8, through the cascade: float32
        (N, 3, H, W) in [0, 1]. ``controls.style_codes`` (from :meth:`encode_styles`) replace ``styles`` except with
        colour preservation, which recomputes them against each content."""
        batch, codes, weights = self._call_inputs(content, styles, controls)
        for k, code in enumerate(codes):
            check_code(code, self.levels, f"style code {k}")
        alphas = {level: float(controls.alpha) * factor for level, factor in self.level_alphas.items()}
        with self._autocast():
            image = cascade(
                self.encoder,
                self.decoders,
                batch,
                blend_codes(codes, weights),
                alphas,
                self.levels,
                controls.output_size,
                self.channels_last,
            )
        return image.clamp_(0.0, 1.0)

    def tiling(self) -> TilingNeeds | None:
        return None  # each level re-encodes the whole image the level before decoded: no tiled pass

    def tiled(self, content: Tensor, styles: Sequence[Tensor] = (), controls: Controls = PLAIN) -> TiledStylisation:
        raise ConfigError(f"{self.source or 'this WCT model'} stylises whole images only: --max-tile 0")

    def onnx_graphs(self, fp16: bool = False) -> list[OnnxGraph]:
        raise ConfigError(
            f"{self.source or 'this WCT model'} cannot be exported to ONNX: whitening and colouring need an "
            "eigendecomposition, which ONNX has no operator for"
        )
