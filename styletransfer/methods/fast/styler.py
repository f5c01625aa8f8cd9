"""A trained fast-style network as a :class:`~styletransfer.protocol.model.StyleModel`: no style images (the network
holds its styles), several styles blended with ``weights`` over the model's own (their normalisation scales and
shifts blended, as Dumoulin et al. do); alpha, masks, colour preservation, another output size, tiling and ONNX
export are not offered yet and are refused with one line by the applications."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from styletransfer.data.images import unit_float_on
from styletransfer.methods.fast.network import TransformerNet
from styletransfer.nn.compiling import compile_mode
from styletransfer.protocol.controls import Capabilities, as_batch, check_weights
from styletransfer.protocol.model import OnnxGraph, TiledStylisation, TilingNeeds
from styletransfer.runtime.errors import ConfigError

log = logging.getLogger(__name__)

#: The smallest content side: two stride-2 convolutions and reflection padding of 4 px need some room.
MIN_SIDE = 16


class FastStyler(nn.Module):
    """A fast-style network on a device, with its style names; see the module docstring for its controls."""

    method = "fast"

    def __init__(
        self,
        network: TransformerNet,
        names: Sequence[str],
        encoder_spec: dict[str, Any] | None = None,
        source: str = "",
        kind: str = "",
        channels_last: bool = False,
        bf16: bool = False,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.names = list(names)
        self.encoder_spec = dict(encoder_spec or {})
        self.source, self.kind = source, kind
        self.channels_last, self.bf16 = channels_last, bf16
        self.compile_mode = compile_mode(compile, "compile")
        self.capabilities = Capabilities(
            style_input=False,
            interpolation=len(self.names) > 1,
            alpha=False,
            masks=False,
            preserve_colour=False,
            output_size=False,
            tiling=False,
            export=False,
            min_side=MIN_SIDE,
        )
        self._run = self.network if self.compile_mode is None else torch.compile(self.network, mode=self.compile_mode)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def describe(self) -> dict:
        return {
            "method": self.method,
            "path": self.source,
            "kind": self.kind,
            "styles": list(self.names),
            "encoder": dict(self.encoder_spec),
        }

    def warning(self) -> str | None:
        spec = self.encoder_spec
        if spec.get("weights") == "random" or spec.get("fallback_used"):
            return (
                f"{self.source or 'this model'} was trained behind a RANDOM VGG encoder (a test or offline demo "
                "run): its results show that the pipeline works, not what fast neural style looks like"
            )
        return None

    def encode_styles(self, styles: Sequence[Tensor]) -> list[Any]:
        if styles:
            raise ConfigError(self._no_styles())
        return []

    def _no_styles(self) -> str:
        return (
            f"{self.source or 'this fast-style model'} stylises with its own style(s) ({', '.join(self.names)}): "
            "give no style image"
        )

    def style_vector(self, weights: Sequence[float] | None) -> Tensor | None:
        """The network's style vector for ``weights`` over its styles (one style: None)."""
        if len(self.names) == 1:
            if weights is not None and list(map(float, weights)) != [1.0]:
                raise ConfigError(f"{self.source or 'this model'} has one style: give no weights")
            return None
        if weights is None:
            raise ConfigError(
                f"{self.source or 'this model'} has {len(self.names)} styles ({', '.join(self.names)}): choose one "
                "or blend them with one weight per style"
            )
        return torch.tensor(check_weights(weights, len(self.names)), dtype=torch.float32, device=self.device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    @torch.no_grad()
    def stylise(
        self,
        content: Tensor,
        styles: Sequence[Tensor] = (),
        *,
        weights: Sequence[float] | None = None,
        alpha: float = 1.0,
        preserve_colour: bool = False,
        masks: Sequence[Tensor] | None = None,
        output_size: tuple[int, int] | None = None,
        style_codes: Sequence[Any] | None = None,
    ) -> Tensor:
        """``content`` (3, H, W) or (N, 3, H, W), float in [0, 1] or uint8, through the network: float32 in [0, 1]."""
        if styles or style_codes:
            raise ConfigError(self._no_styles())
        if float(alpha) != 1.0 or preserve_colour or masks is not None or output_size is not None:
            raise ConfigError(f"{self.source or 'this fast-style model'} has no alpha, colour, mask or size control")
        batch = unit_float_on(as_batch(content, "content"), self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        style = self.style_vector(weights)
        with self._autocast():
            out = self._run(batch * 255.0, style)
        return (out.float() / 255.0).clamp(0.0, 1.0)

    def tiling(self) -> TilingNeeds | None:
        return None  # instance normalisation's statistics are the whole image's at every layer: no tiled pass yet

    def tiled(self, content: Tensor, styles: Sequence[Tensor] = (), **controls: Any) -> TiledStylisation:
        raise ConfigError(f"{self.source or 'this fast-style model'} cannot be stylised in tiles yet: --max-tile 0")

    def onnx_graphs(self, fp16: bool = False) -> list[OnnxGraph]:
        raise ConfigError(f"{self.source or 'this fast-style model'} cannot be exported to ONNX yet")
