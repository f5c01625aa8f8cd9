"""Tiled AdaIN stylisation: an image of any size in device memory bounded by the tile size.

Two passes over the same grid of overlapping windows (at most ``tile`` x ``tile`` pixels each):

1. statistics: each window is encoded and the relu4_1 positions it owns (a partition of the global feature map,
   cut in the middle of the overlaps) are merged into one running channel mean and variance. Windows start on
   multiples of 8 (relu4_1's stride), so their features lie on the global grid, and the owned positions lie at
   least ``MARGIN`` px inside their window, past the reach of the window's padding: the statistics are those of
   the untiled image, up to float rounding (exact, not a downscaled estimate);
2. stylise: each window is encoded again, given the one global AdaIN transform (content statistics above, the
   style's), alpha-blended, decoded, and its kept part (``MARGIN`` px in from every window edge that is not an
   image edge) is added to the output with feathered weights: linear ramps over ``BLEND`` px, normalised so
   the weights sum to 1 everywhere. The output is assembled in host memory (float32).

Measured with random weights: an input pixel changes the output up to 62 px away (encoder and decoder together),
so with ``MARGIN`` = 64 a kept pixel is what the untiled run gives, and the blend mixes two equal values. What is
approximate: the bottom and right image edges when the size is not a multiple of 8 (the decoder's exact-size
upsampling rounds differently in the last window), and colour preservation, whose colour statistics come from a
strided subsample of the content (at most ``COLOUR_SAMPLE_PIXELS`` pixels). Masks are refused (their per-region
content statistics would need a tiled pass of their own).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from styletransfer.methods.adain.model import (
    AdaINDecoder,
    StyleStats,
    _stats_for,
    decode_clamped,
    encode,
    mix_stats,
)
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.nn.stats import STD_EPS
from styletransfer.runtime.errors import ConfigError

try:  # optional: a better reading of available RAM than /proc/meminfo where it is installed
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

log = logging.getLogger(__name__)

#: relu4_1's stride: windows start on multiples of it, so a window's features are a block of the global map.
ALIGN = 8
#: Context in px kept around each window's used part; the output's reach is 62 px (measured, see the docstring).
MARGIN = 64
#: Shortest overlap in px between neighbouring windows' used parts, where they are feathered together.
BLEND = 32
#: Smallest tile side: two margins, a blend and room for the windows to advance.
MIN_TILE = 256
#: Estimated peak memory per tile pixel per image, float32 (measured 0.8-1.5 kB on a CPU; bf16 halves it).
BYTES_PER_PIXEL = 2048
#: Share of the free device memory (CUDA) or available RAM (CPU) that ``auto`` plans a tile to use.
MEMORY_FRACTION = 0.5
#: Colour preservation reads the content's colour statistics from every k-th pixel, at most this many.
COLOUR_SAMPLE_PIXELS = 2**20
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class Span:
    """One window along one axis: pixels [start, end) are encoded, [keep0, keep1) go into the output, and the
    relu4_1 positions of pixels [own0, own1) count for the statistics (own1 = -1: to the window's end)."""

    start: int
    end: int
    keep0: int
    keep1: int
    own0: int
    own1: int


def spans(size: int, tile: int, margin: int = MARGIN, blend: int = BLEND) -> list[Span]:
    """Windows of at most ``tile`` px covering ``size`` px; kept parts overlap by >= ``blend`` px."""
    if size <= tile:
        return [Span(0, size, 0, size, 0, -1)]
    advance = tile - 2 * margin - blend - ALIGN  # longest step; rounding starts up to ALIGN adds at most ALIGN
    count = math.ceil((size - tile) / advance) + 1
    starts = [ALIGN * math.ceil(i * (size - tile) / (count - 1) / ALIGN) for i in range(count)]
    ends = [min(start + tile, size) for start in starts]
    keep0 = [0 if start == 0 else start + margin for start in starts]
    keep1 = [size if end == size else end - margin for end in ends]
    cuts = [0] + [ALIGN * round((keep0[i + 1] + keep1[i]) / 2 / ALIGN) for i in range(count - 1)] + [-1]
    return [Span(starts[i], ends[i], keep0[i], keep1[i], cuts[i], cuts[i + 1]) for i in range(count)]


def ramp_weights(windows: Sequence[Span], size: int, blend: int = BLEND) -> list[Tensor]:
    """Each window's weights over its kept part: linear ramps over ``blend`` px at inner edges, normalised so
    that the weights of all windows sum to 1 at every pixel."""
    raw = []
    total = torch.zeros(size, dtype=torch.float64)
    for span in windows:
        weight = torch.ones(span.keep1 - span.keep0, dtype=torch.float64)
        ramp = (torch.arange(blend, dtype=torch.float64) + 0.5) / blend
        if span.keep0 > 0:
            weight[:blend] = torch.minimum(weight[:blend], ramp)
        if span.keep1 < size:
            weight[-blend:] = torch.minimum(weight[-blend:], ramp.flip(0))
        total[span.keep0:span.keep1] += weight
        raw.append(weight)
    return [(weight / total[span.keep0:span.keep1]).float() for span, weight in zip(windows, raw)]


class RunningStats:
    """Channel mean and variance of feature blocks, merged block by block (Chan et al.'s pairwise update) in
    float64 on the host, so many blocks lose no precision."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, block: Tensor) -> None:
        """Merge a (N, C, h, w) block."""
        count = block.shape[2] * block.shape[3]
        var, mean = torch.var_mean(block.float(), dim=(2, 3), unbiased=False, keepdim=True)
        mean, m2 = mean.double().cpu(), var.double().cpu() * count
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * count / total)
        self.count = total

    def mean_std(self, device: torch.device, eps: float = STD_EPS) -> StyleStats:
        """(mean, std) as ``nn.stats.mean_std`` gives them: unbiased variance plus ``eps``, float32 (N, C, 1, 1)."""
        if self.mean is None or self.m2 is None or self.count < 2:
            raise ValueError("the content's feature map has fewer than 2 positions: the image is too small")
        std = (self.m2 / (self.count - 1) + eps).sqrt()
        return self.mean.float().to(device), std.float().to(device)


def available_memory(device: torch.device) -> int:
    """Bytes free on ``device``: on CUDA ``torch.cuda.mem_get_info`` plus what PyTorch's allocator holds unused
    (else a folder's first large image would shrink the tiles of the next); on the CPU the available RAM (psutil if
    installed, else MemAvailable in /proc/meminfo, else the free physical pages)."""
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0]) + cached
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    if MEMINFO.exists():
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def auto_tile(device: torch.device, batch: int = 1, bf16: bool = False) -> int:
    """The largest tile side (a multiple of ``ALIGN``, at least ``MIN_TILE``) whose estimated peak,
    ``BYTES_PER_PIXEL`` per pixel and image (half with bf16), fits ``MEMORY_FRACTION`` of the free memory."""
    per_pixel = BYTES_PER_PIXEL // (2 if bf16 else 1) * max(1, batch)
    side = int(math.sqrt(MEMORY_FRACTION * available_memory(device) / per_pixel))
    return max(MIN_TILE, side // ALIGN * ALIGN)


def tile_side(max_tile: int | str, device: torch.device, batch: int = 1, bf16: bool = False) -> int:
    """``max_tile`` (``--max-tile``) as a side in px: ``auto`` -> ``auto_tile``, 0 -> 0 (never tile), else the
    number rounded down to a multiple of ``ALIGN``."""
    if max_tile == "auto":
        return auto_tile(device, batch, bf16)
    if isinstance(max_tile, bool) or not isinstance(max_tile, int) or (max_tile != 0 and max_tile < MIN_TILE):
        raise ConfigError(f"max_tile (--max-tile) must be auto, 0 (never tile) or a side of at least {MIN_TILE} px, "
                          f"got {max_tile!r}")
    return max_tile // ALIGN * ALIGN


def _windows(content: Tensor, rows: Sequence[Span], cols: Sequence[Span]):
    """(row span, column span, the content's window) for every window, row by row."""
    for row in rows:
        for col in cols:
            yield row, col, content[..., row.start:row.end, col.start:col.end]


def content_stats(encoder: VGGEncoder, content: Tensor, rows: Sequence[Span], cols: Sequence[Span],
                  to_device: Callable[[Tensor], Tensor], channels_last: bool = False) -> StyleStats:
    """The content's global relu4_1 (mean, std), from the positions each window owns (pass 1)."""
    stats = RunningStats()
    device = None
    for row, col, window in _windows(content, rows, cols):
        features = encode(encoder, to_device(window), channels_last)
        device = features.device
        y0, x0 = (row.own0 - row.start) // ALIGN, (col.own0 - col.start) // ALIGN
        y1 = None if row.own1 < 0 else (row.own1 - row.start) // ALIGN
        x1 = None if col.own1 < 0 else (col.own1 - col.start) // ALIGN
        stats.add(features[..., y0:y1, x0:x1])
    return stats.mean_std(device)


def stylise_windows(encoder: VGGEncoder, decoder: AdaINDecoder, content: Tensor, transform: tuple[StyleStats,
                    StyleStats] | None, alpha: float, rows: Sequence[Span], cols: Sequence[Span],
                    to_device: Callable[[Tensor], Tensor], channels_last: bool = False) -> Tensor:
    """Pass 2: every window encoded, given the global ``transform`` ((content stats, style stats); None: decode
    the content features), decoded and feathered into a float32 host image (N, 3, H, W)."""
    height, width = rows[-1].end, cols[-1].end
    out = torch.zeros(content.shape[0], 3, height, width)
    row_weights = dict(zip(rows, ramp_weights(rows, height)))
    col_weights = dict(zip(cols, ramp_weights(cols, width)))
    for row, col, window in _windows(content, rows, cols):
        window = to_device(window)
        features = encode(encoder, window, channels_last)
        target = features
        if transform is not None:
            (c_mean, c_std), (s_mean, s_std) = transform
            target = (features.float() - c_mean) / c_std * s_std + s_mean
        image = decode_clamped(decoder, target, features, alpha, tuple(window.shape[-2:]))
        kept = image[..., row.keep0 - row.start:row.keep1 - row.start, col.keep0 - col.start:col.keep1 - col.start]
        weight = row_weights[row].to(kept.device)[:, None] * col_weights[col].to(kept.device)[None, :]
        out[..., row.keep0:row.keep1, col.keep0:col.keep1] += (kept * weight).cpu()
    return out


def colour_sample(content: Tensor, to_device: Callable[[Tensor], Tensor]) -> Tensor:
    """Every k-th pixel of ``content`` in both directions, at most ``COLOUR_SAMPLE_PIXELS``, on the device: the
    colour mean and covariance that colour preservation matches, estimated without a full-size float copy."""
    step = max(1, math.ceil(math.sqrt(content.shape[-2] * content.shape[-1] / COLOUR_SAMPLE_PIXELS)))
    return to_device(content[..., ::step, ::step])


def check_tileable(size: tuple[int, int], masks: Sequence[Tensor] | None,
                   output_size: tuple[int, int] | None) -> None:
    """Refuse what tiling cannot do: masks, and an ``output_size`` other than the content's ``size`` (H, W)."""
    if masks is not None:
        raise ConfigError("masks are not supported with tiling (their per-region statistics would need a tiled pass "
                          "of their own): pass --max-tile 0 (max_tile=0) or a smaller --content-size")
    if output_size is not None and tuple(int(s) for s in output_size) != size:
        raise ConfigError(f"--output-size {tuple(output_size)} differs from the content's {size} and tiling "
                          "keeps the content's size: resize with --content-size, or pass --max-tile 0 (max_tile=0)")


def stylise_tiled(encoder: VGGEncoder, decoder: AdaINDecoder, content: Tensor, styles: Sequence[Tensor] = (), *,
                  tile: int, to_device: Callable[[Tensor], Tensor], weights: Sequence[float], alpha: float = 1.0,
                  preserve_colour: bool = False, style_features: Sequence[Tensor] | None = None,
                  style_stats: Sequence[StyleStats] | None = None, channels_last: bool = False) -> Tensor:
    """``model.stylise`` in windows of at most ``tile`` px (see the module docstring), with controls the caller
    checked (``Styliser.stylise_tiled``: ``check_tileable`` and ``check_style_controls``, whose interpolation
    ``weights`` these are). ``content`` (N, 3, H, W) may stay on the host (uint8 or float): ``to_device`` turns each
    window into a float32 batch in [0, 1] on the device. Returns float32 (N, 3, H, W) in [0, 1] on the host. Runs
    under whatever autocast the caller set."""
    size = tuple(content.shape[-2:])
    rows, cols = spans(size[0], tile), spans(size[1], tile)
    log.info("stylising %dx%d px in %d x %d windows of at most %d px", size[1], size[0], len(rows), len(cols), tile)
    transform = None
    if alpha != 0.0:
        reference = colour_sample(content, to_device) if preserve_colour else None
        stats = _stats_for(encoder, reference, styles, preserve_colour, style_features, style_stats, channels_last)
        transform = (content_stats(encoder, content, rows, cols, to_device, channels_last), mix_stats(stats, weights))
    return stylise_windows(encoder, decoder, content, transform, float(alpha), rows, cols, to_device, channels_last)
