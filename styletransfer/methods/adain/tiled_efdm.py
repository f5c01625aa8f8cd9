"""EFDM's part of tiled stylisation: exact histogram matching needs each position's rank among the whole image's
positions, per channel, so its one statistics pass keeps the features themselves.

Pass 1 encodes each window and keeps, on the host, the relu4_1 positions it owns (as AdaIN's pass, they lie past the
reach of the window's padding, so they are the untiled image's features up to float rounding); the owned blocks,
in grid order, tile the global feature map row band by row band. After the pass, channel group by channel group, the
global map is matched to the style with the untiled function (``transforms.apply``: the style's sorted values
resampled to the image's count, placed at the ranks, ties in position order), blended with alpha and stored in place
of the features. Pass 2 decodes, for each window, its block of that global map: the window is not encoded again.

Host memory: the map, ``channels * itemsize / stride**2`` bytes per image pixel (relu4_1: 512 * 4 / 64 = 32 B in
float32, 16 with bf16), plus the matching of one channel group (``GROUP`` channels: about 44 bytes per channel and
position, 22 B per pixel), so ``HOST_BYTES_PER_PIXEL`` in float32. The sort runs on the host's CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from styletransfer.methods.adain.model import decode_clamped, encode, encode_styles
from styletransfer.methods.adain.tiled import ALIGN, TiledCall, WindowPasses, owned_positions
from styletransfer.methods.adain.transforms import Code, apply, blend, style_code

#: Channels matched at once after pass 1 (bounds the sort's extra host memory).
GROUP = 32
#: Extra host bytes per bottleneck position while one channel group is matched: about 44 bytes per channel and
#: position (the group's copy, two int64 argsorts, the gathered target and the straight-through and alpha
#: temporaries); 22 B per image pixel at stride 8.
GROUP_BYTES_PER_POSITION = GROUP * 44


def host_bytes_per_pixel(channels: int, bf16: bool, stride: int = ALIGN) -> int:
    """What EFDM's tiling keeps on the host per image pixel: the bottleneck map (``channels`` at ``stride``) and one
    group's matching."""
    return channels * (2 if bf16 else 4) // stride**2 + GROUP_BYTES_PER_POSITION // stride**2


class TiledEFDM(WindowPasses):
    """One tiled EFDM call (see the module docstring): ``observe`` is pass 1, ``render`` pass 2; the caller
    (``Styliser.tiled``) runs both under its autocast."""

    def __init__(self, call: TiledCall) -> None:
        super().__init__(call)
        self.weights = list(call.weights)
        cached = call.controls.cached_codes
        self.codes: list[Code] = cached or []
        if self.statistics_passes and cached is None:
            with call.autocast():
                features = encode_styles(
                    call.encoder, call.styles, call.colour_reference(), call.channels_last, call.bottleneck
                )
            self.codes = [style_code("efdm", feature) for feature in features]
        #: Row bands of the global bottleneck map on the host (features after pass 1, the decoder's input after).
        self.bands: list[Tensor] = []
        self._row: list[Tensor] = []
        self._cursor = (0, 0)
        #: Window index -> (row, column, height, width) of its features in the global map.
        self.blocks: dict[int, tuple[int, int, int, int]] = {}
        self._matched = False

    def observe(self, window: Tensor, owned: tuple[slice, slice], index: int) -> None:
        """Keep the relu4_1 positions of the pixels ``owned`` on the host, at their place in the global map."""
        with self.autocast():
            features = encode(self.encoder, window, self.channels_last, self.bottleneck)
        rows, cols = owned_positions(owned, self.stride)
        top, left = self._cursor
        self.blocks[index] = (top - rows.start, left - cols.start, features.shape[-2], features.shape[-1])
        block = features[..., rows, cols].to("cpu", memory_format=torch.contiguous_format)
        self._row.append(block)
        self._cursor = (top, left + block.shape[-1])
        if cols.stop is None:  # the last window of a grid row: its band is complete
            self.bands.append(torch.cat(self._row, dim=-1))
            self._row, self._cursor = [], (top + block.shape[-2], 0)

    def _match(self) -> None:
        """The global map matched to the blended style, blended with alpha, in place, one channel group at a time:
        what the untiled ``decode_clamped`` decodes."""
        heights = [band.shape[-2] for band in self.bands]
        count = sum(heights) * self.bands[0].shape[-1]
        code = blend([tuple(t.cpu() for t in c) for c in self.codes], self.weights, count)[0]
        for c0 in range(0, self.bands[0].shape[1], GROUP):
            features = torch.cat([band[:, c0 : c0 + GROUP] for band in self.bands], dim=-2)
            target = apply("efdm", features.float(), (code[:, c0 : c0 + GROUP],))
            if self.alpha != 1.0:
                target = self.alpha * target.float() + (1.0 - self.alpha) * features.float()
            for band, part in zip(self.bands, target.to(features.dtype).split(heights, dim=-2)):
                band[:, c0 : c0 + GROUP] = part
        self._matched = True

    def _block(self, top: int, left: int, height: int, width: int) -> Tensor:
        """Rows [top, top + height) and columns [left, left + width) of the global map."""
        parts, start = [], 0
        for band in self.bands:
            stop = start + band.shape[-2]
            if start < top + height and top < stop:
                parts.append(band[..., max(top, start) - start : min(top + height, stop) - start, left : left + width])
            start = stop
        return torch.cat(parts, dim=-2)

    def render(self, window: Tensor, index: int, origin: tuple[int, int] = (0, 0)) -> Tensor:
        """Window ``index`` (its first pixel at ``origin``) decoded from its block of the matched global map (alpha
        0: its own features), with the whole image's upsampling (``tiled.WindowUpsampling``)."""
        size = (window.shape[-2], window.shape[-1])
        with self.autocast():
            if not self.statistics_passes:
                features = encode(self.encoder, window, self.channels_last, self.bottleneck)
                return decode_clamped(self.decoder, features, features, 1.0, size, self.upsampling(origin, features))
            if not self._matched:
                self._match()
            target = self._block(*self.blocks[index]).to(window.device)
            if self.channels_last:
                target = target.contiguous(memory_format=torch.channels_last)
            return decode_clamped(self.decoder, target, target, 1.0, size, self.upsampling(origin, target))
