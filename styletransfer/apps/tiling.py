"""Tiled stylisation: an image of any size in device memory bounded by the tile size, for any model that declares
``Capabilities.tiling`` (the model supplies what the windows need: ``StyleModel.tiling`` and ``StyleModel.tiled``).

Two passes over the same grid of overlapping windows (at most ``tile`` x ``tile`` pixels each):

1. statistics (as many passes as the model's ``tiled`` call has ``statistics_passes``: one for AdaIN's global
   channel statistics, one per instance normalisation for fast style): each window is shown to the model with the
   pixels it owns, a partition of the image cut in the middle of the overlaps. Windows start on multiples of the
   model's ``align`` and the owned pixels lie at least its ``margin`` inside their window, past the reach of the
   window's padding;
2. stylise: each window is rendered by the model and its kept part (``margin`` px in from every window edge that is
   not an image edge) is added to the output with feathered weights: linear ramps over ``BLEND`` px, normalised so
   the weights sum to 1 everywhere. The output is assembled in host memory (float32).

Each window is rendered with its first pixel's place in the image (``origin``): AdaIN's decoder upsamples a window
with the whole image's nearest-neighbour maps sliced to it, so a side that is not a multiple of 8 tiles exactly too
(``methods/adain/tiled.py``). What is approximate depends on the model (AdaIN: colour preservation's subsampled
colour statistics). Masks and another output size are refused (``check_tileable``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from styletransfer.data.images import unit_float_on
from styletransfer.protocol.controls import PLAIN, Controls, as_batch, style_list
from styletransfer.protocol.model import StyleModel, TilingNeeds
from styletransfer.runtime.errors import ConfigError

try:  # optional: a better reading of available RAM than /proc/meminfo where it is installed
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

log = logging.getLogger(__name__)

#: Shortest overlap in px between neighbouring windows' used parts, where they are feathered together.
BLEND = 32
#: Smallest tile side: two margins, a blend and room for the windows to advance.
MIN_TILE = 256
#: Share of the free device memory (CUDA) or available RAM (CPU) that ``auto`` plans a tile to use.
MEMORY_FRACTION = 0.5
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class Span:
    """One window along one axis: pixels [start, end) are encoded, [keep0, keep1) go into the output, and the
    pixels [own0, own1) count for a global-statistics pass (own1 = -1: to the window's end)."""

    start: int
    end: int
    keep0: int
    keep1: int
    own0: int
    own1: int


def spans(size: int, tile: int, needs: TilingNeeds, blend: int = BLEND) -> list[Span]:
    """Windows of at most ``tile`` px covering ``size`` px, starting on multiples of ``needs.align`` with
    ``needs.margin`` px of context; kept parts overlap by >= ``blend`` px."""
    align, margin = needs.align, needs.margin
    if size <= tile:
        return [Span(0, size, 0, size, 0, -1)]
    advance = tile - 2 * margin - blend - align  # longest step; rounding starts up to align adds at most align
    count = math.ceil((size - tile) / advance) + 1
    starts = [align * math.ceil(i * (size - tile) / (count - 1) / align) for i in range(count)]
    ends = [min(start + tile, size) for start in starts]
    keep0 = [0 if start == 0 else start + margin for start in starts]
    keep1 = [size if end == size else end - margin for end in ends]
    # each cut halfway between neighbours' kept parts, rounded half up: consecutive midpoints are at least one
    # ``align`` apart, so every window owns pixels (Python's round, half to even, gave two cuts one place)
    cuts = [0] + [align * math.floor((keep0[i + 1] + keep1[i]) / 2 / align + 0.5) for i in range(count - 1)] + [-1]
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
        total[span.keep0 : span.keep1] += weight
        raw.append(weight)
    return [(weight / total[span.keep0 : span.keep1]).float() for span, weight in zip(windows, raw)]


def smallest_tile(needs: TilingNeeds) -> int:
    """The smallest tile side for a model: ``MIN_TILE``, or two margins, a blend and two alignment steps where that
    is more (the windows must advance), rounded up to ``needs.align``."""
    least = 2 * needs.margin + BLEND + 2 * needs.align
    return max(MIN_TILE, needs.align * math.ceil(least / needs.align))


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


def auto_tile(needs: TilingNeeds, device: torch.device, batch: int = 1, pixels: int = 0) -> int:
    """The largest tile side (a multiple of ``needs.align``, at least ``smallest_tile``) whose estimated peak,
    ``needs.bytes_per_pixel`` per pixel and image, fits ``MEMORY_FRACTION`` of the free memory; on a CPU what the
    model keeps on the host for an image of ``pixels`` px (``needs.host_bytes_per_pixel``) is taken off first."""
    per_pixel = needs.bytes_per_pixel * max(1, batch)
    free = available_memory(device)
    if device.type == "cpu":
        free = max(0, free - needs.host_bytes_per_pixel * max(1, batch) * pixels)
    side = int(math.sqrt(MEMORY_FRACTION * free / per_pixel))
    return max(smallest_tile(needs), side // needs.align * needs.align)


def tile_side(max_tile: int | str, needs: TilingNeeds, device: torch.device, batch: int = 1, pixels: int = 0) -> int:
    """``max_tile`` (``--max-tile``) as a side in px: ``auto`` -> ``auto_tile`` (for images of ``pixels`` px), 0 -> 0
    (never tile), else the number rounded down to a multiple of ``needs.align``."""
    if max_tile == "auto":
        return auto_tile(needs, device, batch, pixels)
    least = smallest_tile(needs)
    if isinstance(max_tile, bool) or not isinstance(max_tile, int) or (max_tile != 0 and max_tile < least):
        why = "" if least == MIN_TILE else f" for this model (two {needs.margin} px margins, the blend, the alignment)"
        raise ConfigError(
            f"max_tile (--max-tile) must be auto, 0 (never tile) or a side of at least {least} px{why}, got "
            f"{max_tile!r}"
        )
    return max_tile // needs.align * needs.align


def windows(content: Tensor, rows: Sequence[Span], cols: Sequence[Span]) -> Iterator[tuple[Span, Span, Tensor]]:
    """(row span, column span, the content's window) for every window, row by row."""
    for row in rows:
        for col in cols:
            yield row, col, content[..., row.start : row.end, col.start : col.end]


def owned_pixels(span: Span) -> slice:
    """The pixels of a window that count for pass 1, relative to the window."""
    return slice(span.own0 - span.start, None if span.own1 < 0 else span.own1 - span.start)


def check_tileable(size: tuple[int, int], masks: Sequence[Tensor] | None, output_size: tuple[int, int] | None) -> None:
    """Refuse what tiling cannot do: masks, and an ``output_size`` other than the content's ``size`` (H, W)."""
    if masks is not None:
        raise ConfigError(
            "masks are not supported with tiling (their per-region statistics would need a tiled pass "
            "of their own): pass --max-tile 0 (max_tile=0) or a smaller --content-short-side"
        )
    if output_size is not None and tuple(int(s) for s in output_size) != size:
        raise ConfigError(
            f"--output-size {tuple(output_size)} differs from the content's {size} and tiling "
            "keeps the content's size: resize with --content-short-side, or pass --max-tile 0 (max_tile=0)"
        )


def stylise_tiled(
    model: StyleModel,
    content: Tensor,
    styles: Sequence[Tensor] = (),
    controls: Controls = PLAIN,
    *,
    tile: int | str = "auto",
) -> Tensor:
    """``model.stylise`` in windows of at most ``tile`` x ``tile`` px (``auto``: from the free memory; see the module
    docstring), so device memory is bounded by the tile. ``content`` (3, H, W) or (N, 3, H, W), uint8 or float,
    stays where it is (keep a large image on the host); one window at a time goes to the device. Returns float32
    (N, 3, H, W) in [0, 1] on the host."""
    needs = model.tiling()
    if needs is None:
        raise ConfigError(f"{model.method} models cannot be stylised in tiles: pass --max-tile 0 (max_tile=0)")
    content = as_batch(content, "content")
    size = (int(content.shape[-2]), int(content.shape[-1]))
    check_tileable(size, controls.masks, controls.output_size)
    side = tile_side(tile, needs, model.device, content.shape[0], size[0] * size[1]) or max(size)
    rows, cols = spans(size[0], side, needs), spans(size[1], side, needs)
    log.info("stylising %dx%d px in %d x %d windows of at most %d px", size[1], size[0], len(rows), len(cols), side)
    device = model.device
    passes = model.tiled(content, style_list(styles), controls)
    for _ in range(passes.statistics_passes):
        for index, (row, col, window) in enumerate(windows(content, rows, cols)):
            passes.observe(unit_float_on(window, device), (owned_pixels(row), owned_pixels(col)), index)
    out = torch.zeros(content.shape[0], 3, *size)
    row_weights = dict(zip(rows, ramp_weights(rows, size[0])))
    col_weights = dict(zip(cols, ramp_weights(cols, size[1])))
    for index, (row, col, window) in enumerate(windows(content, rows, cols)):
        image = passes.render(unit_float_on(window, device), index, (row.start, col.start))
        kept = image[..., row.keep0 - row.start : row.keep1 - row.start, col.keep0 - col.start : col.keep1 - col.start]
        weight = row_weights[row].to(kept.device)[:, None] * col_weights[col].to(kept.device)[None, :]
        out[..., row.keep0 : row.keep1, col.keep0 : col.keep1] += (kept * weight).cpu()
    return out


def stylise_any_size(
    model: StyleModel,
    content: Tensor,
    styles: Sequence[Tensor] = (),
    controls: Controls = PLAIN,
    *,
    max_tile: int | str = 0,
) -> Tensor:
    """``model.stylise``, or :func:`stylise_tiled` for an image with a side longer than ``max_tile`` (0: never;
    ``auto``: from the free memory) when the model can be tiled; the tiled result is on the host."""
    needs = model.tiling()
    if needs is not None and max_tile != 0:
        batch = as_batch(content, "content")
        side = tile_side(max_tile, needs, model.device, batch.shape[0], batch.shape[-2] * batch.shape[-1])
        if max(batch.shape[-2:]) > side:
            return stylise_tiled(model, batch, styles, controls, tile=side)
    return model.stylise(content, styles, controls)
