"""A trained Linear Style Transfer module behind its encoder and decoder as a
:class:`~styletransfer.protocol.model.StyleModel`: encode the content to the level, transform it with the style's
matrix and mean, decode. Several styles blend as the weighted sums of their style matrices and of their channel
means (the transform is linear in the style matrix); colour preservation and another output size work as for the
other methods. ONNX export writes an image graph and a style graph (:mod:`styletransfer.methods.linear.onnx_graphs`).

Refused with one line: alpha (the authors' code has no content-style trade-off), masks (the content matrix is one
per image) and tiling (the content's matrix and mean are global to the image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from styletransfer.methods.linear.onnx_graphs import graphs
from styletransfer.methods.linear.transform import LinearTransform
from styletransfer.nn.encoder import VGGEncoder, min_input_side
from styletransfer.protocol.controls import PLAIN, Capabilities, Controls
from styletransfer.protocol.inputs import model_input
from styletransfer.protocol.model import OnnxGraph, TiledStylisation, TilingNeeds
from styletransfer.protocol.styler import EncoderStyler, StylerOptions
from styletransfer.runtime.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: A style as this model needs it: {"layer": level, "matrix": (1, 32, 32), "mean": (1, C, 1, 1)}.
LinearCode = dict[str, Any]


def blend_codes(codes: Sequence[LinearCode], weights: Sequence[float]) -> LinearCode:
    """The weighted sums of the codes' style matrices and of their means."""
    return {
        "layer": codes[0]["layer"],
        "matrix": sum((w * code["matrix"] for w, code in zip(weights, codes)), torch.zeros_like(codes[0]["matrix"])),
        "mean": sum((w * code["mean"] for w, code in zip(weights, codes)), torch.zeros_like(codes[0]["mean"])),
    }


class LinearStyler(EncoderStyler):
    """A frozen encoder, transformation module and decoder of one level (relu3_1 or relu4_1)."""

    method = "linear"
    title = "Linear Style Transfer"

    def __init__(
        self,
        encoder: VGGEncoder,
        transform: LinearTransform,
        decoder: nn.Module,
        **options: Unpack[StylerOptions],
    ) -> None:
        super().__init__(encoder, **options)
        self.transform = transform.eval().requires_grad_(False)
        self.decoder = decoder.eval().requires_grad_(False)
        self.layer = transform.layer
        self.capabilities = Capabilities(
            alpha=False, masks=False, tiling=False, min_side=min_input_side([self.layer], positions=2)
        )
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def _what(self) -> str:
        return self.source or "this Linear Style Transfer model"

    @property
    def device(self) -> torch.device:
        return next(self.transform.parameters()).device

    def details(self) -> dict[str, Any]:
        return {"layer": self.layer}

    def _image(self, image: Tensor, name: str) -> Tensor:
        return model_input(image, name, self.device, self.capabilities.min_side, self.channels_last)

    def _style_code(self, name: str, style: Tensor) -> LinearCode:
        """A style's matrix and channel means at the level: (N, ...) when the style was recoloured to each of N
        contents, else (1, ...)."""
        matrix, mean = self.transform.style_matrix(self.encoder(style, [self.layer])[self.layer])
        return {"layer": self.layer, "matrix": matrix.float(), "mean": mean.float()}

    @torch.no_grad()
    def stylise(self, content: Tensor, styles: Tensor | Sequence[Tensor] = (), controls: Controls = PLAIN) -> Tensor:
        """``content`` (3, H, W) or (N, 3, H, W), float in [0, 1] or uint8, stylised: float32 (N, 3, H, W) in
        [0, 1]. ``controls.style_codes`` (from :meth:`encode_styles`) replace ``styles`` except with colour
        preservation."""
        batch, codes, weights = self._call_inputs(content, styles, controls)
        for k, code in enumerate(codes):
            if not isinstance(code, dict) or code.get("layer") != self.layer:
                raise ConfigError(
                    f"style code {k} is not one of this model's: encode the styles with its encode_styles"
                )
        code = blend_codes(codes, weights)
        size = controls.size(batch)
        with self._autocast():
            features = self.encoder(batch, [self.layer])[self.layer]
            matrix, mean = code["matrix"].to(features.dtype), code["mean"].to(features.dtype)
            moved, _ = self.transform.transfer(features, matrix, mean)
            image = self.decoder(moved, output_size=size)
        return image.float().clamp_(0.0, 1.0)

    def tiling(self) -> TilingNeeds | None:
        return None  # the content's matrix and mean are global to the image: no tiled pass

    def tiled(self, content: Tensor, styles: Sequence[Tensor] = (), controls: Controls = PLAIN) -> TiledStylisation:
        raise ConfigError(f"{self._what} stylises whole images only: --max-tile 0")

    def onnx_graphs(self, fp16: bool = False) -> list[OnnxGraph]:
        """The image graph (content and style code -> image) and the style graph (style -> code), on the CPU."""
        return graphs(self.encoder, self.transform, self.decoder, fp16)
