"""AdaIN inference as an object: a loaded encoder and decoder on a device, with the speed options, around
:func:`~styletransfer.methods.adain.model.stylise`; AdaIN's implementation of the feed-forward model protocol
(:class:`~styletransfer.protocol.model.StyleModel`)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from styletransfer.data.images import unit_float_on
from styletransfer.methods.adain import onnx_graphs
from styletransfer.methods.adain.checkpoint import EncoderArg, file_bottleneck, file_transform, read_model
from styletransfer.methods.adain.decoders import check_fits, decoder_record
from styletransfer.methods.adain.decoders import describe as describe_decoder
from styletransfer.methods.adain.model import (
    BOTTLENECK,
    Core,
    StyleStats,
    encode_styles,
    stylise,
    stylise_core,
)
from styletransfer.methods.adain.tiled import TiledAdaIN, TiledCall, tiling_needs
from styletransfer.methods.adain.tiled_efdm import TiledEFDM, host_bytes_per_pixel
from styletransfer.methods.adain.transforms import check_transform, style_code, stylise_transform
from styletransfer.nn.compiling import CUDA_GRAPH_MODES, call_graph_safe, compile_mode
from styletransfer.nn.encoder import min_input_side
from styletransfer.nn.encoders import FeatureEncoder, feature_info
from styletransfer.nn.padding import use_fast_reflection_padding
from styletransfer.nn.weights import safe_load
from styletransfer.protocol.controls import PLAIN, Capabilities, Controls, accept, as_batch
from styletransfer.protocol.loading import LoadOptions
from styletransfer.protocol.model import OnnxGraph, TilingNeeds
from styletransfer.protocol.styler import EncoderStyler, StylerOptions
from styletransfer.runtime.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger(__name__)

#: Smallest content side AdaIN stylises: relu4_1 must keep a 2 x 2 map (its statistics need 2 positions).
MIN_SIDE = min_input_side([BOTTLENECK], positions=2)
#: What AdaIN supports: every control, tiling and export.
CAPABILITIES = Capabilities(min_side=MIN_SIDE)
#: Transforms whose code is the style's channel statistics: tiled with the whole image's statistics, exported with
#: the same two graphs as AdaIN.
STATISTICS_TRANSFORMS = ("adain", "adamean", "adastd")
#: Transforms with a tiled pass: the statistics ones, WCT (the content's global covariance) and EFDM (the global
#: feature map kept on the host: ``tiled_efdm.py``).
TILED_TRANSFORMS = (*STATISTICS_TRANSFORMS, "wct", "efdm")
#: Transforms with ONNX graphs: the statistics ones and EFDM (its sort is TopK in ONNX).
EXPORTED_TRANSFORMS = (*STATISTICS_TRANSFORMS, "efdm")
#: What WCT supports: every control but export (ONNX has no eigendecomposition).
WCT_CAPABILITIES = Capabilities(export=False, min_side=MIN_SIDE)

#: Distinct input shapes compiled per Styliser before new ones run eagerly (each costs a compilation; the results
#: are the same either way). Folder runs batch same-size images, so a handful of shapes covers them.
COMPILE_SHAPES = 8


class Styliser(EncoderStyler):
    """A frozen encoder (to relu4_1, or a backbone's ``bottleneck`` node) and decoder with the paper's test-time
    controls (see ``stylise``): AdaIN's :class:`~styletransfer.protocol.model.StyleModel`.

    Speed options, for GPUs with tensor cores: ``channels_last`` (with memory-format-preserving reflection padding on
    CUDA), ``bf16`` (autocast; AdaIN statistics stay float32) and ``compile`` (True or a ``torch.compile`` mode: the
    no-mask path, encode to clamp, as one compiled graph per input shape, at most ``COMPILE_SHAPES`` of them).
    A style's code is its relu4_1 statistics: cache them with :meth:`encode_styles` and pass them as
    ``Controls(style_codes=...)``.
    """

    method = "adain"
    title = "AdaIN"
    capabilities = CAPABILITIES

    def __init__(
        self,
        encoder: FeatureEncoder,
        decoder: nn.Module,
        compile: bool | str = False,
        transform: str = "adain",
        bottleneck: str = BOTTLENECK,
        **options: Unpack[StylerOptions],
    ) -> None:
        super().__init__(encoder, **options)
        self.transform = check_transform(transform)
        if bottleneck not in encoder.layers:
            raise ConfigError(f"the encoder must compute {bottleneck}, it has {list(encoder.layers)}")
        #: The encoder layer the decoder inverts, its channels and stride.
        self.bottleneck = bottleneck
        self.channels, self.stride = feature_info(encoder, [bottleneck])[bottleneck]
        where = f"{encoder.network} {bottleneck} ({self.channels} channels, stride {self.stride})"
        try:
            check_fits(decoder_record(decoder), self.channels, self.stride, where)
        except ConfigError as exc:
            raise ConfigError(f"{self.source or 'the model'}: {exc}") from None
        #: Every transform has every control, but WCT has no ONNX graph.
        capabilities = WCT_CAPABILITIES if transform == "wct" else CAPABILITIES
        self.capabilities = dataclasses.replace(capabilities, min_side=2 * self.stride)
        self.decoder = decoder.eval().requires_grad_(False)
        self.compile_mode = compile_mode(compile, "compile")
        self._compiled: Core | None = None
        self._compiled_shapes: set[tuple] = set()
        self._padding_on: torch.device | None = None
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        encoder: EncoderArg = None,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        bf16: bool = False,
        compile: bool | str = False,
        transform: str | None = None,
    ) -> Styliser:
        """Load from a Lightning .ckpt, an exported decoder.pth or the release's decoder.pth (see ``read_model``);
        ``transform`` replaces the one the file records (e.g. WCT or EFDM behind an AdaIN-trained decoder)."""
        options = LoadOptions(encoder, device, channels_last, bf16, compile)
        model = cls.from_loaded(safe_load(Path(path).expanduser()), path, options, transform)
        if model.warning():  # the registry's load_model warns for the applications; this is the Python API's door
            log.warning("%s", model.warning())
        return model

    @classmethod
    def from_loaded(
        cls, obj: object, path: str | os.PathLike, options: LoadOptions, transform: str | None = None
    ) -> Styliser:
        """The Styliser of an AdaIN file already read weights-only (``obj``), with the transform it records unless
        ``transform`` is given."""
        enc, dec, kind = read_model(obj, path, options.encoder)
        trained = file_transform(obj)
        if transform is not None:
            check_transform(transform, "--transform")
            if transform != trained:
                log.info("%s: the %s transform, behind a decoder trained with %s", path, transform, trained)
        return cls.from_parts(
            enc,
            dec,
            str(path),
            kind,
            options.device,
            transform=transform or trained,
            bottleneck=file_bottleneck(obj),
            **options.speed(),
        )

    @classmethod
    def from_parts(
        cls,
        encoder: FeatureEncoder,
        decoder: nn.Module,
        source: str,
        kind: str,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> Styliser:
        """A Styliser of loaded parts on ``device``."""
        return cls(encoder, decoder, source=source, kind=kind, **options).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def encoder_spec(self) -> dict:
        return dict(self.encoder.spec)

    def details(self) -> dict[str, Any]:
        """The transform, the bottleneck and the decoder (``describe()`` records them)."""
        return {
            "transform": self.transform,
            "bottleneck": self.bottleneck,
            "decoder": describe_decoder(decoder_record(self.decoder)),
        }

    def _prepare(self) -> None:
        """On CUDA with a speed option, swap in reflection padding that keeps channels_last (ATen's CUDA kernel
        returns NCHW, so every pad would convert the layout back and forth); the CPU kernel keeps it already."""
        device = self.device
        if device != self._padding_on:
            use_fast_reflection_padding(self, device.type == "cuda" and (self.channels_last or bool(self.compile_mode)))
            self._padding_on = device

    def _images(self, images: Tensor, name: str) -> Tensor:
        """A float32 batch on the device; uint8 images (0-255, e.g. straight from a decoder) are moved first and
        scaled there (a quarter of the bytes to copy)."""
        return unit_float_on(as_batch(images, name), self.device)

    def _core(self, content: Tensor) -> Core:
        """The compiled core for this input shape, or the eager one (no compile option, or too many shapes)."""
        if self.compile_mode is None:
            return stylise_core
        key = (tuple(content.shape), content.device, self.bf16)
        if key not in self._compiled_shapes and len(self._compiled_shapes) >= COMPILE_SHAPES:
            return stylise_core
        self._compiled_shapes.add(key)
        if self._compiled is None:
            self._compiled = torch.compile(stylise_core, mode=self.compile_mode, dynamic=False)
        if self.device.type == "cuda" and self.compile_mode in CUDA_GRAPH_MODES:
            return functools.partial(call_graph_safe, self._compiled)
        return self._compiled

    @torch.no_grad()
    def encode_styles(self, styles: Sequence[Tensor]) -> list[StyleStats]:
        """Bottleneck (mean, std) of each style (batch 1): AdaIN's style code, to pass as
        ``Controls(style_codes=...)`` across calls (a few KB instead of a feature map)."""
        self._prepare()
        images = [self._images(s, f"style {k}") for k, s in enumerate(styles)]
        with self._autocast():
            # the transform's code of each style's bottleneck features (AdaIN's: their statistics, style_stats)
            features = encode_styles(self.encoder, images, channels_last=self.channels_last, bottleneck=self.bottleneck)
            return [style_code(self.transform, feature) for feature in features]  # type: ignore[misc]

    @torch.no_grad()
    def stylise(self, content: Tensor, styles: Tensor | Sequence[Tensor] = (), controls: Controls = PLAIN) -> Tensor:
        """Stylise ``content`` ((3, H, W) or (N, 3, H, W), RGB in [0, 1] as float, or 0-255 as uint8) with one or
        more styles: the controls of :func:`~styletransfer.methods.adain.model.stylise` (``style_codes`` are its
        ``style_stats``). Returns float32 (N, 3, H, W) in [0, 1]."""
        styles = accept(self, styles, controls)
        self._prepare()
        styles = [self._images(s, f"style {k}") for k, s in enumerate(styles)]
        content = self._images(content, "content")
        call = (self.encoder, self.decoder, content, styles, controls)
        with self._autocast():
            if self.transform == "adain":
                core = self._core(content)
                return stylise(*call, channels_last=self.channels_last, core=core, bottleneck=self.bottleneck)
            return stylise_transform(
                self.transform, *call, channels_last=self.channels_last, bottleneck=self.bottleneck
            )

    def tiling(self) -> TilingNeeds | None:
        """AdaIN's tiling needs: windows on the bottleneck's grid, 64 px of context behind VGG's relu4_1 (more for a
        decoder that reaches further), a backbone's measured reach behind one (``methods/adain/tiled.py``); EFDM
        keeps the global feature map on the host (``tiled_efdm.py``)."""
        if self.transform not in TILED_TRANSFORMS:
            return None
        needs = tiling_needs(self.bf16, self.decoder, self.encoder, self.bottleneck, self.stride)
        if self.transform == "efdm":
            host = host_bytes_per_pixel(self.channels, self.bf16, self.stride)
            return dataclasses.replace(needs, host_bytes_per_pixel=host)
        return needs

    @torch.no_grad()
    def tiled(
        self, content: Tensor, styles: Sequence[Tensor] = (), controls: Controls = PLAIN
    ) -> TiledAdaIN | TiledEFDM:
        """One tiled call on ``content`` (N, 3, H, W), which stays where it is: the whole image's AdaIN statistics
        (pass 1), then each window with them (pass 2); see ``methods/adain/tiled.py`` (EFDM:
        ``methods/adain/tiled_efdm.py``)."""
        weights = controls.checked_weights(styles)
        self._prepare()
        call = TiledCall(
            self.encoder,
            self.decoder,
            content,
            [self._images(s, f"style {k}") for k, s in enumerate(styles)],
            weights or [1.0],
            controls,
            lambda window: self._images(window, "content"),
            self.channels_last,
            self._autocast,
            self.bottleneck,
            self.stride,
        )
        return TiledEFDM(call) if self.transform == "efdm" else TiledAdaIN(call, self.transform)

    def onnx_graphs(self, fp16: bool = False) -> list[OnnxGraph]:
        """The image graph (content, alpha, style code -> image) and the style graph (style -> code); see
        ``methods/adain/onnx_graphs.py``. For the statistics transforms (adain, adamean, adastd) and EFDM."""
        if self.transform not in EXPORTED_TRANSFORMS:
            raise ConfigError(
                f"{self.source}: ONNX export needs the adain, adamean, adastd or efdm transform (ONNX has no "
                f"eigendecomposition for WCT); this model uses {self.transform}"
            )
        return onnx_graphs.graphs(
            self.encoder, self.decoder, fp16, self.transform, self.bottleneck, self.channels, self.stride
        )
