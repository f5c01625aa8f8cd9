"""AdaIN inference as an object: a loaded encoder and decoder on a device, with the speed options, around
:func:`~styletransfer.methods.adain.model.stylise`."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from styletransfer.data.images import to_unit_float
from styletransfer.methods.adain import tiling
from styletransfer.methods.adain.checkpoint import EncoderArg, load_model
from styletransfer.methods.adain.model import (
    BOTTLENECK,
    AdaINDecoder,
    Core,
    StyleStats,
    check_style_controls,
    encode_styles,
    style_stats,
    stylise,
    stylise_core,
)
from styletransfer.nn.compiling import CUDA_GRAPH_MODES, call_graph_safe, compile_mode
from styletransfer.nn.encoder import VGGEncoder, min_input_side
from styletransfer.nn.padding import use_fast_reflection_padding
from styletransfer.runtime.errors import ConfigError

log = logging.getLogger(__name__)

#: Smallest content side AdaIN stylises: relu4_1 must keep a 2 x 2 map (its statistics need 2 positions).
MIN_SIDE = min_input_side([BOTTLENECK], positions=2)


def check_size(width: int, height: int, what: str, fix: str = f"pass --content-size {MIN_SIDE} or more") -> None:
    """Raise a ConfigError naming ``what`` (the image or frames) and ``fix`` when a side of ``width`` x ``height`` px
    is shorter than ``MIN_SIDE``."""
    if min(width, height) < MIN_SIDE:
        raise ConfigError(f"{what}: {width}x{height} px is too small (AdaIN needs {MIN_SIDE} px on each side; {fix})")


def as_batch(image: Tensor, name: str) -> Tensor:
    """An RGB image (3, H, W) or batch (N, 3, H, W) as a batch; anything else names ``name`` in the error."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[1] != 3:
        raise ConfigError(f"{name} must be RGB shaped (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")
    return image


def style_list(styles: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """Styles as a list: one image (3, h, w), a stack of them, or a sequence."""
    if isinstance(styles, Tensor):
        return [styles] if styles.dim() == 3 else list(styles)
    return list(styles)


#: Distinct input shapes compiled per Styliser before new ones run eagerly (each costs a compilation; the results
#: are the same either way). Folder runs batch same-size images, so a handful of shapes covers them.
COMPILE_SHAPES = 8


class Styliser(nn.Module):
    """A frozen encoder (to relu4_1) and decoder with the paper's test-time controls (see ``stylise``).

    Speed options, for GPUs with tensor cores: ``channels_last`` (with memory-format-preserving reflection padding on
    CUDA), ``bf16`` (autocast; AdaIN statistics stay float32) and ``compile`` (True or a ``torch.compile`` mode: the
    no-mask path, encode to clamp, as one compiled graph per input shape, at most ``COMPILE_SHAPES`` of them).
    Cache a style's statistics with :meth:`style_stats` and pass them as ``stylise(..., style_stats=...)``.
    """

    def __init__(self, encoder: VGGEncoder, decoder: AdaINDecoder, source: str = "", kind: str = "",
                 channels_last: bool = False, bf16: bool = False, compile: bool | str = False) -> None:
        super().__init__()
        if BOTTLENECK not in encoder.layers:
            raise ConfigError(f"the encoder must compute {BOTTLENECK}, it has {list(encoder.layers)}")
        self.encoder = encoder
        self.decoder = decoder.eval().requires_grad_(False)
        self.source = source
        self.kind = kind
        self.channels_last = channels_last
        self.bf16 = bf16
        self.compile_mode = compile_mode(compile, "compile")
        self._compiled: Core | None = None
        self._compiled_shapes: set[tuple] = set()
        self._padding_on: torch.device | None = None
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, encoder: EncoderArg = None, device: str | torch.device = "cpu",
                        channels_last: bool = False, bf16: bool = False, compile: bool | str = False) -> Styliser:
        """Load from a Lightning .ckpt, an exported decoder.pth or the release's decoder.pth (see ``load_model``)."""
        enc, dec, kind = load_model(path, encoder)
        if enc.spec.get("weights") == "random" or enc.spec.get("fallback_used"):
            log.warning("%s was trained behind a RANDOM VGG encoder (a test or offline demo run): its results show "
                        "that the pipeline works, not what AdaIN looks like", path)
        return cls(enc, dec, source=str(path), kind=kind, channels_last=channels_last, bf16=bf16,
                   compile=compile).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def encoder_spec(self) -> dict:
        return dict(self.encoder.spec)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

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
        images = as_batch(images, name)
        if images.dtype == torch.uint8:
            images = images.to(self.device, non_blocking=True)
        return to_unit_float(images).to(self.device, torch.float32)

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
    def style_stats(self, styles: Sequence[Tensor]) -> list[StyleStats]:
        """relu4_1 (mean, std) of each style (batch 1), to pass as ``stylise(..., style_stats=...)`` across calls."""
        self._prepare()
        with self._autocast():
            return style_stats(self.encoder, [self._images(s, f"style {k}") for k, s in enumerate(styles)],
                               channels_last=self.channels_last)

    @torch.no_grad()
    def style_features(self, styles: Sequence[Tensor]) -> list[Tensor]:
        """relu4_1 features of each style (batch 1), to pass as ``stylise(..., style_features=...)`` across calls
        (``style_stats`` is all AdaIN needs and much smaller)."""
        self._prepare()
        with self._autocast():
            return encode_styles(self.encoder, [self._images(s, f"style {k}") for k, s in enumerate(styles)],
                                 channels_last=self.channels_last)

    @torch.no_grad()
    def stylise(self, content: Tensor, styles: Tensor | Sequence[Tensor] = (), max_tile: int | str = 0,
                **controls) -> Tensor:
        """Stylise ``content`` ((3, H, W) or (N, 3, H, W), RGB in [0, 1] as float, or 0-255 as uint8) with one or
        more styles.

        ``controls`` are those of :func:`~styletransfer.methods.adain.model.stylise` (weights, alpha,
        preserve_colour, masks, output_size, style_stats, style_features). Returns float32 (N, 3, H, W) in [0, 1].
        ``max_tile`` (0, the default: never; ``auto``: from the free memory; or a side in px): an image with a
        side longer than it goes to :meth:`stylise_tiled` (the result is then on the host).
        """
        styles = style_list(styles)
        content = as_batch(content, "content")
        side = tiling.tile_side(max_tile, self.device, content.shape[0], self.bf16)
        if side and max(content.shape[-2:]) > side:
            return self.stylise_tiled(content, styles, tile=side, **controls)
        self._prepare()
        styles = [self._images(s, f"style {k}") for k, s in enumerate(styles)]
        content = self._images(content, "content")
        with self._autocast():
            return stylise(self.encoder, self.decoder, content, styles, channels_last=self.channels_last,
                           core=self._core(content), **controls)

    @torch.no_grad()
    def stylise_tiled(self, content: Tensor, styles: Tensor | Sequence[Tensor] = (), tile: int | str = "auto", *,
                      weights: Sequence[float] | None = None, alpha: float = 1.0, preserve_colour: bool = False,
                      masks: Sequence[Tensor] | None = None, output_size: tuple[int, int] | None = None,
                      style_features: Sequence[Tensor] | None = None,
                      style_stats: Sequence[StyleStats] | None = None) -> Tensor:
        """Stylise in overlapping windows of at most ``tile`` x ``tile`` px (``auto``: chosen from the free memory)
        with the AdaIN statistics of the whole image (see ``tiling``), so device memory is bounded by the tile.

        ``content`` stays where it is (keep a large image on the host); only one window at a time is on the device.
        Controls as in :meth:`stylise`, less masks and a different output size. Returns float32 (N, 3, H, W) in
        [0, 1] on the host.
        """
        styles = style_list(styles)
        content = as_batch(content, "content")
        tiling.check_tileable(tuple(content.shape[-2:]), masks, output_size)
        weights = check_style_controls(styles, weights, alpha, None, preserve_colour, style_stats, style_features)
        side = tiling.tile_side(tile, self.device, content.shape[0], self.bf16) or max(content.shape[-2:])
        self._prepare()
        styles = [self._images(s, f"style {k}") for k, s in enumerate(styles)]
        with self._autocast():
            return tiling.stylise_tiled(self.encoder, self.decoder, content, styles, tile=side,
                                        to_device=lambda window: self._images(window, "content"), weights=weights,
                                        alpha=alpha, preserve_colour=preserve_colour, style_features=style_features,
                                        style_stats=style_stats, channels_last=self.channels_last)
