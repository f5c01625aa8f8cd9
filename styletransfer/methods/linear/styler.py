"""A trained Linear Style Transfer module behind its encoder and decoder as a
:class:`~styletransfer.protocol.model.StyleModel`: encode the content to the level, transform it with the style's
matrix and mean, decode. Several styles blend as the weighted sums of their style matrices and of their channel
means (the transform is linear in the style matrix); colour preservation and another output size work as for the
other methods. ONNX export writes an image graph and a style graph (:mod:`styletransfer.methods.linear.onnx_graphs`).

Refused with one line: alpha (the authors' code has no content-style trade-off), masks (the content matrix is one
per image) and tiling (the content's matrix and mean are global to the image).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from styletransfer.data.images import unit_float_on
from styletransfer.methods.linear.onnx_graphs import graphs
from styletransfer.methods.linear.transform import LinearTransform
from styletransfer.nn.colour import match_colour
from styletransfer.nn.encoder import VGGEncoder, min_input_side
from styletransfer.protocol.controls import Capabilities, as_batch, check_controls, check_size, style_list
from styletransfer.protocol.model import OnnxGraph, TiledStylisation, TilingNeeds, random_encoder_warning
from styletransfer.runtime.errors import ConfigError

#: A style as this model needs it: {"layer": level, "matrix": (1, 32, 32), "mean": (1, C, 1, 1)}.
LinearCode = dict[str, Any]


def blend_codes(codes: Sequence[LinearCode], weights: Sequence[float]) -> LinearCode:
    """The weighted sums of the codes' style matrices and of their means."""
    return {
        "layer": codes[0]["layer"],
        "matrix": sum((w * code["matrix"] for w, code in zip(weights, codes)), torch.zeros_like(codes[0]["matrix"])),
        "mean": sum((w * code["mean"] for w, code in zip(weights, codes)), torch.zeros_like(codes[0]["mean"])),
    }


class LinearStyler(nn.Module):
    """A frozen encoder, transformation module and decoder of one level (relu3_1 or relu4_1)."""

    method = "linear"

    def __init__(
        self,
        encoder: VGGEncoder,
        transform: LinearTransform,
        decoder: nn.Module,
        source: str = "",
        kind: str = "",
        channels_last: bool = False,
        bf16: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.transform = transform.eval().requires_grad_(False)
        self.decoder = decoder.eval().requires_grad_(False)
        self.layer = transform.layer
        self.source, self.kind = source, kind
        self.channels_last, self.bf16 = bool(channels_last), bool(bf16)
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

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.source,
            "kind": self.kind,
            "layer": self.layer,
            "encoder": dict(self.encoder.spec),
        }

    def warning(self) -> str | None:
        return random_encoder_warning(self.encoder.spec, self.source, "Linear Style Transfer")

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _image(self, image: Tensor, name: str) -> Tensor:
        batch = unit_float_on(as_batch(image, name), self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        fix = "give a larger image" + (" (--style-short-side)" if name.startswith("style") else "")
        check_size(
            batch.shape[-1], batch.shape[-2], name, self.capabilities.min_side, None if name == "content" else fix
        )
        return batch

    def _codes(self, images: Sequence[Tensor], reference: Tensor | None = None) -> list[LinearCode]:
        codes = []
        for k, image in enumerate(images):
            style = self._image(image, f"style {k}")
            if reference is not None:  # colour preservation: the style recoloured to each content first
                style = match_colour(style, reference)
            with self._autocast():
                matrix, mean = self.transform.style_matrix(self.encoder(style, [self.layer])[self.layer])
            # (N, ...) when the style was recoloured to each of N contents, else (1, ...)
            codes.append({"layer": self.layer, "matrix": matrix.float(), "mean": mean.float()})
        return codes

    @torch.no_grad()
    def encode_styles(self, styles: Sequence[Tensor]) -> list[LinearCode]:
        """Each style's matrix (1, 32, 32) and channel means at the level: its code, to reuse across calls."""
        return self._codes(style_list(styles))

    @torch.no_grad()
    def stylise(
        self,
        content: Tensor,
        styles: Tensor | Sequence[Tensor] = (),
        *,
        weights: Sequence[float] | None = None,
        alpha: float = 1.0,
        preserve_colour: bool = False,
        masks: Sequence[Tensor] | None = None,
        output_size: tuple[int, int] | None = None,
        style_codes: Sequence[LinearCode] | None = None,
    ) -> Tensor:
        """``content`` (3, H, W) or (N, 3, H, W), float in [0, 1] or uint8, stylised: float32 (N, 3, H, W) in
        [0, 1]. ``style_codes`` (from :meth:`encode_styles`) replace ``styles`` except with colour preservation."""
        if masks is not None:
            raise ConfigError(f"{self._what} does not support masks: leave them out")
        if float(alpha) != 1.0:
            raise ConfigError(f"{self._what} has no content-style trade-off (the authors' has none): leave --alpha out")
        images = style_list(styles)
        cached = style_codes is not None and not preserve_colour
        count = len(style_codes) if cached and style_codes is not None else len(images)
        mixed = check_controls(count, weights, alpha, None)
        batch = self._image(content, "content")
        codes = list(style_codes) if cached and style_codes is not None else None
        if codes is None:
            codes = self._codes(images, batch if preserve_colour else None)
        for k, code in enumerate(codes):
            if not isinstance(code, dict) or code.get("layer") != self.layer:
                raise ConfigError(
                    f"style code {k} is not one of this model's: encode the styles with its encode_styles"
                )
        code = blend_codes(codes, mixed or [1.0])
        size = (int(output_size[0]), int(output_size[1])) if output_size else (batch.shape[-2], batch.shape[-1])
        with self._autocast():
            features = self.encoder(batch, [self.layer])[self.layer]
            matrix, mean = code["matrix"].to(features.dtype), code["mean"].to(features.dtype)
            moved, _ = self.transform.transfer(features, matrix, mean)
            image = self.decoder(moved, output_size=size)
        return image.float().clamp_(0.0, 1.0)

    def tiling(self) -> TilingNeeds | None:
        return None  # the content's matrix and mean are global to the image: no tiled pass

    def tiled(self, content: Tensor, styles: Sequence[Tensor] = (), **controls: Any) -> TiledStylisation:
        raise ConfigError(f"{self._what} stylises whole images only: --max-tile 0")

    def onnx_graphs(self, fp16: bool = False) -> list[OnnxGraph]:
        """The image graph (content and style code -> image) and the style graph (style -> code), on the CPU."""
        return graphs(self.encoder, self.transform, self.decoder, fp16)
