"""AdaIN's part of tiled stylisation (the windows, passes and blending are :mod:`styletransfer.apps.tiling`'s).

Pass 1 encodes each window and merges the relu4_1 positions it owns into one running channel mean and variance (for
WCT, mean and covariance):
windows start on multiples of 8 (relu4_1's stride), so their features lie on the global grid, and the owned
positions lie at least ``MARGIN`` px inside their window, past the reach of its padding: the statistics are those of
the untiled image, up to float rounding. Pass 2 encodes each window again, applies the one global transform (those
content statistics, the style's: AdaIN's and its ablations' per-channel affine map, or WCT's whitening and colouring
matrix), blends with alpha and decodes. Where a side of the image is not a multiple of the stride, the whole image's
decoder upsamples to exact sizes that are not doublings; each window then upsamples with the whole image's
nearest-neighbour maps sliced to its region (``WindowUpsampling``, ``nn.upsampling.RegionUpsampling``), so its
pixels map as untiled.

Measured with random weights: an input pixel changes the output up to 62 px away (encoder and decoder together), so
with ``MARGIN`` = 64 a kept pixel is what the untiled run gives. A configurable decoder reaches further: each
residual block adds two 3x3 convolutions at stride 8 (16 px), pixel shuffle a convolution before each doubling
(8 + 4 + 2 = 14 px); ``margin_for`` adds that, rounded up to the 8 px grid. Colour preservation reads the content's
colour statistics from a strided subsample (at most ``COLOUR_SAMPLE_PIXELS`` pixels).

Behind a torchvision backbone (``bottleneck`` a graph node at stride 8 or 16) windows start on multiples of the
bottleneck's stride and the margin is the reach of encoder and decoder together measured by a gradient probe
(:func:`~styletransfer.nn.reach.gradient_reach`, once per network, bottleneck and decoder layout, cached), rounded up
to the stride: e.g. 88 px for ResNet-50 to ``layer2``, 240 px to ``layer3``, 136 px for ConvNeXt-Tiny to
``features.3`` (decoder at width 0.25; the width does not change the reach).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from styletransfer.methods.adain.decoders import decoder_record, extra_reach
from styletransfer.methods.adain.model import (
    BOTTLENECK,
    StyleStats,
    _stats_for,
    decode_clamped,
    encode,
    encode_styles,
    mix_stats,
)
from styletransfer.methods.adain.transforms import Code, blend, style_code, with_stats
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.nn.encoders import FeatureEncoder
from styletransfer.nn.reach import gradient_reach
from styletransfer.nn.stats import RunningCovariance, RunningStats
from styletransfer.nn.upsampling import RegionUpsampling
from styletransfer.nn.whitening import apply_map, wct_map
from styletransfer.protocol.controls import Controls
from styletransfer.protocol.model import TilingNeeds

#: relu4_1's stride: windows start on multiples of it, so a window's features are a block of the global map.
ALIGN = 8
#: Context in px kept around each window's used part; the output's reach is 62 px (measured, see the docstring).
MARGIN = 64
#: Estimated peak memory per tile pixel per image, float32 (measured 0.8-1.5 kB on a CPU; bf16 halves it).
BYTES_PER_PIXEL = 2048
#: Colour preservation reads the content's colour statistics from every k-th pixel, at most this many.
COLOUR_SAMPLE_PIXELS = 2**20


#: Measured reaches behind backbones: (network, bottleneck, decoder record) -> px (``backbone_reach``).
_REACHES: dict[tuple[str, str, str], int] = {}


def margin_for(
    decoder: nn.Module | None,
    encoder: FeatureEncoder | None = None,
    bottleneck: str = BOTTLENECK,
    stride: int = ALIGN,
) -> int:
    """Context in px around a window's kept part. VGG to relu4_1 (or no ``encoder``): ``MARGIN`` plus what
    ``decoder`` reaches beyond the mirror (residual blocks, pixel shuffle), rounded up to ``ALIGN``: the mirror's
    64 px, e.g. 96 px with 2 residual blocks, 80 px with pixel shuffle. Behind a backbone: its measured reach with
    ``decoder`` (``backbone_reach``) rounded up to the bottleneck's ``stride``."""
    if encoder is None or (isinstance(encoder, VGGEncoder) and bottleneck == BOTTLENECK):
        extra = 0 if decoder is None else extra_reach(decoder)
        return MARGIN + ALIGN * math.ceil(extra / ALIGN)
    if decoder is None:
        raise ValueError("a backbone's margin needs its decoder")
    return stride * math.ceil(backbone_reach(encoder, decoder, bottleneck, stride) / stride)


def backbone_reach(encoder: FeatureEncoder, decoder: nn.Module, bottleneck: str, stride: int) -> int:
    """The reach in px of ``encoder`` to ``bottleneck`` and ``decoder`` together, by a gradient probe in float32
    (:func:`~styletransfer.nn.reach.gradient_reach`, a fraction of a second on a CPU), once per network, bottleneck
    and decoder layout (the weights do not change which pixels an output depends on)."""
    key = (str(encoder.network), bottleneck, repr(sorted(decoder_record(decoder).items())))
    if key not in _REACHES:
        device = next(decoder.parameters()).device

        def network(image: Tensor) -> Tensor:
            return decoder(encode(encoder, image, False, bottleneck), output_size=tuple(image.shape[-2:]))

        _REACHES[key] = gradient_reach(network, stride, device)
    return _REACHES[key]


def tiling_needs(
    bf16: bool,
    decoder: nn.Module | None = None,
    encoder: FeatureEncoder | None = None,
    bottleneck: str = BOTTLENECK,
    stride: int = ALIGN,
) -> TilingNeeds:
    """AdaIN's alignment (the bottleneck's ``stride``), margin (see ``margin_for``) and memory estimate (halved with
    bf16)."""
    margin = margin_for(decoder, encoder, bottleneck, stride)
    return TilingNeeds(align=stride, margin=margin, bytes_per_pixel=BYTES_PER_PIXEL // (2 if bf16 else 1))


def colour_sample(content: Tensor, to_device: Callable[[Tensor], Tensor]) -> Tensor:
    """Every k-th pixel of ``content`` in both directions, at most ``COLOUR_SAMPLE_PIXELS``, on the device: the
    colour mean and covariance that colour preservation matches, estimated without a full-size float copy."""
    step = max(1, math.ceil(math.sqrt(content.shape[-2] * content.shape[-1] / COLOUR_SAMPLE_PIXELS)))
    return to_device(content[..., ::step, ::step])


def owned_positions(owned: tuple[slice, slice], stride: int) -> tuple[slice, slice]:
    """The bottleneck positions (at ``stride``) of the pixel rows and columns ``owned`` (their starts and stops lie
    on the stride's grid)."""
    rows, cols = (slice(s.start // stride, None if s.stop is None else s.stop // stride) for s in owned)
    return rows, cols


class WindowUpsampling:
    """How each window's decoder upsamples so that its pixels map as the whole image's do (``RegionUpsampling``):
    only where a side of the image is not a multiple of the bottleneck's ``stride`` (elsewhere the window's own
    doublings are the image's, and the decoder keeps its own upsampling). The whole image's bottleneck size, which
    depends on the encoder's rounding, is read once from two strips (the image's height by two strides, two strides
    by its width) through the encoder."""

    def __init__(self, encoder: FeatureEncoder, bottleneck: str, stride: int, image_size: tuple[int, int]) -> None:
        self.encoder, self.bottleneck, self.stride = encoder, bottleneck, stride
        self.image_size = image_size
        self.needed = any(side % stride for side in image_size)
        self._bottleneck_size: tuple[int, int] | None = None

    def _whole_bottleneck(self, device: torch.device) -> tuple[int, int]:
        if self._bottleneck_size is None:
            height, width = self.image_size
            side = 2 * self.stride
            rows = encode(self.encoder, torch.zeros(1, 3, height, side, device=device), bottleneck=self.bottleneck)
            cols = encode(self.encoder, torch.zeros(1, 3, side, width, device=device), bottleneck=self.bottleneck)
            self._bottleneck_size = (int(rows.shape[-2]), int(cols.shape[-1]))
        return self._bottleneck_size

    def __call__(self, origin: tuple[int, int], features: Tensor) -> RegionUpsampling | None:
        """The upsampling for the window at pixel ``origin`` whose bottleneck map is ``features``, or None."""
        if not self.needed:
            return None
        window = (int(features.shape[-2]), int(features.shape[-1]))
        count = self.stride.bit_length() - 1
        return RegionUpsampling(self.image_size, origin, self._whole_bottleneck(features.device), window, count)


@dataclass(frozen=True)
class TiledCall:
    """What ``Styliser.tiled`` gives a tiled pass (AdaIN's, or EFDM's in ``tiled_efdm.py``): its networks, the
    content (where it stays), the styles with their checked ``weights`` and the call's ``controls``, how a window
    reaches the device, and the styliser's speed settings and bottleneck (layer and stride)."""

    encoder: FeatureEncoder
    decoder: nn.Module
    content: Tensor
    styles: Sequence[Tensor]
    weights: Sequence[float]
    controls: Controls
    to_device: Callable[[Tensor], Tensor]
    channels_last: bool
    autocast: Callable[[], AbstractContextManager]
    bottleneck: str = BOTTLENECK
    stride: int = ALIGN

    def colour_reference(self) -> Tensor | None:
        """With colour preservation, the content's colour sample (``colour_sample``) on the device; else None."""
        return colour_sample(self.content, self.to_device) if self.controls.preserve_colour else None


class WindowPasses:
    """What every tiled pass of a bottleneck model keeps of its call: the networks, the bottleneck and its stride,
    the whole image's upsampling, alpha (one statistics pass unless it is 0) and the speed settings."""

    def __init__(self, call: TiledCall) -> None:
        self.encoder, self.decoder = call.encoder, call.decoder
        #: The layer the decoder inverts and its stride (the windows' alignment).
        self.bottleneck, self.stride = call.bottleneck, call.stride
        size = (int(call.content.shape[-2]), int(call.content.shape[-1]))
        self.upsampling = WindowUpsampling(call.encoder, call.bottleneck, call.stride, size)
        self.alpha = float(call.controls.alpha)
        self.channels_last = call.channels_last
        self.autocast = call.autocast
        self.statistics_passes = int(self.alpha != 0.0)


class TiledAdaIN(WindowPasses):
    """One tiled AdaIN call (see the module docstring): ``observe`` is pass 1, ``render`` pass 2; the caller
    (``Styliser.tiled``) runs both under its autocast."""

    def __init__(self, call: TiledCall, transform: str = "adain") -> None:
        super().__init__(call)
        # a statistics transform (adain, adamean, adastd: ``transforms.with_stats``) or wct (``nn.whitening.wct_map``)
        self.transform = transform
        self.style: Code | None = None
        self.content_stats: RunningStats | RunningCovariance = (
            RunningCovariance() if transform == "wct" else RunningStats()
        )
        self._transform: tuple[StyleStats, StyleStats] | None = None
        self._map: tuple[Tensor, Tensor] | None = None
        if self.statistics_passes:
            reference = call.colour_reference()
            with call.autocast():
                if transform == "wct":
                    self.style = self._wct_code(call.styles, call.weights, reference, call.controls.cached_codes)
                else:
                    stats = _stats_for(
                        call.encoder, reference, call.styles, call.controls, call.channels_last, call.bottleneck
                    )
                    self.style = mix_stats(stats, call.weights)

    def _wct_code(
        self, styles: Sequence[Tensor], weights: Sequence[float], reference: Tensor | None, codes: Sequence | None
    ) -> Code:
        """The styles' blended (mean, covariance); recomputed against the content's colour with preservation."""
        if reference is not None or codes is None:
            features = encode_styles(self.encoder, styles, reference, self.channels_last, self.bottleneck)
            codes = [style_code("wct", feature) for feature in features]
        return blend(list(codes), weights, 0)

    def observe(self, window: Tensor, owned: tuple[slice, slice], index: int = 0) -> None:
        """Merge the bottleneck positions of the pixels ``owned`` into the content's running statistics (the one pass
        needs no ``index``)."""
        with self.autocast():
            features = encode(self.encoder, window, self.channels_last, self.bottleneck)
        rows, cols = owned_positions(owned, self.stride)
        self.content_stats.add(features[..., rows, cols])

    def render(self, window: Tensor, index: int = 0, origin: tuple[int, int] = (0, 0)) -> Tensor:
        """The window (its first pixel at ``origin`` in the image) encoded, given the global AdaIN transform,
        alpha-blended and decoded with the whole image's upsampling (``WindowUpsampling``)."""
        with self.autocast():
            return self._render(window, origin)

    def _render(self, window: Tensor, origin: tuple[int, int]) -> Tensor:
        features = encode(self.encoder, window, self.channels_last, self.bottleneck)
        target = features
        if self.style is not None and isinstance(self.content_stats, RunningCovariance):
            if self._map is None:  # pass 1 is over: WCT's matrix from the content's global covariance, once
                self._map = wct_map(self.content_stats.mean_covariance(features.device), (self.style[0], self.style[1]))
            target = apply_map(features, self._map).float()
        elif self.style is not None and isinstance(self.content_stats, RunningStats):
            if self._transform is None:  # pass 1 is over: the content's global statistics, once
                self._transform = (self.content_stats.mean_std(features.device), (self.style[0], self.style[1]))
            target = with_stats(self.transform, features.float(), *self._transform)
        size = (window.shape[-2], window.shape[-1])
        return decode_clamped(self.decoder, target, features, self.alpha, size, self.upsampling(origin, features))
