"""A trained fast-style network as a :class:`~styletransfer.protocol.model.StyleModel`: no style images (the network
holds its styles), several styles blended with ``weights`` over the model's own (their normalisation scales and
shifts blended, as Dumoulin et al. do), ONNX export (one image graph; a network of several styles takes the
weights over its styles as a second input, ``weights``), large images in windows with the whole image's
normalisation statistics (``tiled``); alpha, masks, colour preservation and another output size are not offered
yet and are refused with one line by the applications."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletransfer.data.images import unit_float_on
from styletransfer.methods.fast.network import TransformerNet
from styletransfer.methods.fast.tiled import TiledFast, tiling_needs
from styletransfer.nn.compiling import bf16_autocast, compile_mode
from styletransfer.protocol.controls import PLAIN, Capabilities, Controls, accept, as_batch, check_weights
from styletransfer.protocol.model import GraphDims, OnnxGraph, TilingNeeds, image_graph, random_encoder_warning
from styletransfer.runtime.errors import ConfigError

log = logging.getLogger(__name__)

#: The smallest content side: two stride-2 convolutions and reflection padding of 4 px need some room.
MIN_SIDE = 16
#: The network halves the size twice and doubles it twice: sides are padded to a multiple of this (reflection)
#: and the result cropped back, so that every content keeps its size (the examples' network returns 80 px for 77).
MULTIPLE = 4


def run_network(network: Callable[..., Tensor], content: Tensor, style: Tensor | None = None) -> Tensor:
    """The network on content (N, 3, H, W) in [0, 1] (any size: reflection-padded to a multiple of 4, cropped back):
    float32 in [0, 1], the examples' output / 255 clamped."""
    height, width = content.shape[-2], content.shape[-1]
    # (-side) % MULTIPLE, written with a floor division: in an export's symbolic sizes, torch.export reasons about
    # ceil-to-a-multiple much faster than about a modulo (a fast network's ONNX export: about a third less CPU time).
    pad_h = (height + MULTIPLE - 1) // MULTIPLE * MULTIPLE - height
    pad_w = (width + MULTIPLE - 1) // MULTIPLE * MULTIPLE - width
    padded = F.pad(content, (0, pad_w, 0, pad_h), mode="reflect")  # always: an exported graph keeps the sizes symbolic
    out = network(padded * 255.0, style)[..., :height, :width]
    return (out.float() / 255.0).clamp(0.0, 1.0)


class ImageGraph(nn.Module):
    """The exported image graph: content in [0, 1] -> image in [0, 1] (float32 at both ends whatever the network's
    precision); a network of several styles also takes ``weights`` (styles,) over them."""

    def __init__(self, network: TransformerNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, content: Tensor, weights: Tensor | None = None) -> Tensor:
        dtype = next(self.network.parameters()).dtype
        style = None if weights is None else weights.to(dtype)
        return run_network(self.network, content.to(dtype), style)


def _graph_inputs(styles: int) -> Callable[..., tuple[Tensor, ...]]:
    """The image graph's example inputs at a size: two contents (a batch of 1 would be specialised to 1) and, for
    several styles, random weights over them summing to 1."""

    def inputs(height: int, width: int, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        content = torch.rand(2, 3, height, width, generator=generator)
        if styles == 1:
            return (content,)
        weights = torch.rand(styles, generator=generator)
        return content, weights / weights.sum()

    return inputs


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
            tiling=True,
            export=True,
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
            **self.network.layout(),
            "encoder": dict(self.encoder_spec),
        }

    def warning(self) -> str | None:
        return random_encoder_warning(self.encoder_spec, self.source, "fast neural style")

    def encode_styles(self, styles: Sequence[Tensor]) -> list[Any]:
        accept(self, styles, PLAIN)  # a network of its own styles: no style image
        return []

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
        return bf16_autocast(self.bf16, self.device)

    @torch.no_grad()
    def stylise(self, content: Tensor, styles: Sequence[Tensor] = (), controls: Controls = PLAIN) -> Tensor:
        """``content`` (3, H, W) or (N, 3, H, W), float in [0, 1] or uint8, through the network: float32 in [0, 1];
        ``controls.weights`` blend the network's own styles."""
        accept(self, styles, controls)
        batch = unit_float_on(as_batch(content, "content"), self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        style = self.style_vector(controls.weights)
        with self._autocast():
            return run_network(self._run, batch, style)

    def tiling(self) -> TilingNeeds | None:
        """Windows on the network's stride-4 grid with the context its layout needs (``methods/fast/tiled.py``)."""
        return tiling_needs(self.bf16, self.network)

    def tiled(self, content: Tensor, styles: Sequence[Tensor] = (), controls: Controls = PLAIN) -> TiledFast:
        """One tiled call (``content`` stays where it is): a statistics pass per instance normalisation, each
        window carrying its state from pass to pass, then the end of the network (``methods/fast/tiled.py``)."""
        accept(self, styles, controls)
        return TiledFast(self.network, self.style_vector(controls.weights), self.channels_last, self._autocast)

    def onnx_graphs(self, fp16: bool = False) -> list[OnnxGraph]:
        """One image graph (content [, weights over the styles] -> image; a float16 copy with ``fp16``, the float32
        network staying the reference that ``--check`` compares with)."""
        network = self.network.cpu().eval().float()
        exported = copy.deepcopy(network).half() if fp16 else network
        several = len(self.names) > 1
        codes = {"weights": None} if several else {}  # the weights over its styles, when it has several
        inputs = _graph_inputs(len(self.names))
        dims = GraphDims.at_least(MIN_SIDE)
        return [image_graph(ImageGraph(exported), ImageGraph(network), inputs, dims, codes, alpha=False)]
