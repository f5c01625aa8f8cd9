"""Nearest upsampling whose backward compiles to a sum, not a scatter.

Inductor lowers the backward of ``F.interpolate(mode="nearest")`` to ``index_put`` with accumulation into a zeroed
gradient: on a GPU, an atomic scatter kernel that took several milliseconds of the compiled AdaIN training step on an
H200. An exact doubling written as a broadcast and a reshape has the same forward values (each output pixel is a copy
of ``x[..., i // 2, j // 2]``) and a backward that is a sum over each 2 x 2 block, which inductor fuses with its
neighbours. Eager code keeps ``F.interpolate``, so the default path is unchanged bit for bit.

Exported ONNX graphs upsample with :func:`upsample_to`: an index gather with ATen's own index formula
(``floor(dst * (float(in) / out))``), so it equals PyTorch by construction on any runtime; ONNX's Resize divides by
the inverse scale instead, which picks another source row for some size pairs in onnxruntime 1.32 (e.g. 14 -> 16;
none of those the decoders meet at 16-300 px, checked). AdaIN's and Linear Style Transfer's graphs both use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer.nn.padding import memory_format_of


def double_nearest(x: Tensor) -> Tensor:
    """``x`` (N, C, H, W) upsampled to (2H, 2W) by repeating each pixel in a 2 x 2 block, as a broadcast view and
    one reshape (a copy): its gradient is a sum over each 2 x 2 block.

    The output keeps ``x``'s memory format, as ``F.interpolate`` does: a channels_last input is doubled in
    (N, H, W, C) order. A plain reshape would hand the next convolution an NCHW tensor, which it converts back (and
    its backward too), and under ``torch.compile`` those strides are the ones inductor must honour.
    """
    n, c, h, w = x.shape
    if memory_format_of(x) == torch.channels_last:
        nhwc = x.permute(0, 2, 3, 1)
        doubled = nhwc[:, :, None, :, None, :].expand(n, h, 2, w, 2, c).reshape(n, 2 * h, 2 * w, c)
        return doubled.permute(0, 3, 1, 2)
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def upsample_nearest(x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """``F.interpolate(x, size, mode="nearest")``, or a doubling when ``size`` is None. Under ``torch.compile`` a
    doubling goes through :func:`double_nearest`, which has equal values and a backward without atomics."""
    h, w = x.shape[-2:]
    doubling = size is None or (int(size[0]) == 2 * h and int(size[1]) == 2 * w)
    if doubling and torch.compiler.is_compiling():
        return double_nearest(x)
    if size is None:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return F.interpolate(x, size=size, mode="nearest")


def upsampled_sizes(output_size: tuple[int, int] | None, count: int) -> list[tuple[int, int] | None]:
    """The size after each of ``count`` x2 upsamplings that end at ``output_size``: upsampling k goes to
    ceil(side / 2**(count - 1 - k)); all None (plain doublings) without ``output_size``."""
    if output_size is None:
        return [None] * count
    height, width = output_size
    # (side + f - 1) // f: ceil(side / f) on non-negative numbers only (exported, // may truncate).
    return [((height + 2**k - 1) // 2**k, (width + 2**k - 1) // 2**k) for k in range(count - 1, -1, -1)]


def nearest_indices(in_size: int, out_size: int, device: torch.device) -> Tensor:
    """Source index of each output position of PyTorch's nearest upsampling from ``in_size`` to ``out_size``:
    min(floor(dst * (float32(in) / out)), in - 1), the formula of ATen's CPU and CUDA kernels (sizes may be
    symbolic)."""
    scale = torch.full((), in_size, dtype=torch.float32, device=device) / out_size
    index = (torch.arange(out_size, dtype=torch.float32, device=device) * scale).floor().long()
    return index.clamp_max(in_size - 1)


def upsample_to(x: Tensor, size: tuple[int, int] | None) -> Tensor:
    """Nearest upsampling of ``x`` (N, C, h, w) to ``size`` (a doubling when None) by two index gathers, equal to
    ``F.interpolate(mode="nearest")``: a decoder's upsampling in the exported graphs."""
    height, width = size if size is not None else (2 * x.shape[2], 2 * x.shape[3])
    rows = nearest_indices(x.shape[2], height, x.device)
    cols = nearest_indices(x.shape[3], width, x.device)
    return x.index_select(2, rows).index_select(3, cols)


class RegionUpsampling:
    """A decoder's ``upsample`` for one window of an image: each call upsamples the window's map as the whole image's
    map is upsampled (:func:`upsample_to` to the sizes of :func:`upsampled_sizes` for ``image_size``), then keeps the
    window's rows and columns, so every window pixel takes the source position it takes in the whole image, at any
    size (a window's own exact-size upsampling would map pixels differently where a side is not a multiple of the
    stride).

    ``origin`` (top, left) is the window's first pixel, on a multiple of 2**``count`` (the bottleneck's stride);
    ``bottleneck_size`` and ``window_bottleneck_size`` are the whole image's and the window's bottleneck maps (the
    encoder's rounding decides the former). Called once per upsampling, in order; an input with twice the rows and
    columns of the previous stage's output (a pixel shuffle before the upsampling) is taken as that map doubled.
    Source positions outside the window (at its edges, inside the tiling margin) are clamped to its border.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        origin: tuple[int, int],
        bottleneck_size: tuple[int, int],
        window_bottleneck_size: tuple[int, int],
        count: int,
    ) -> None:
        self.count = count
        self.origin = origin
        self.sizes = [size for size in upsampled_sizes(image_size, count) if size is not None]
        self.stage = 0
        # the previous map's global size, its window's offset and length, per axis
        self.previous = [
            (bottleneck_size[axis], origin[axis] >> count, window_bottleneck_size[axis]) for axis in range(2)
        ]

    def __call__(self, x: Tensor, size: tuple[int, int] | None) -> Tensor:
        if size is None or self.stage >= self.count:
            raise ValueError("RegionUpsampling needs the decoder's exact sizes, one call per upsampling")
        out_global = self.sizes[self.stage]
        shift = self.count - 1 - self.stage
        indices, following = [], []
        for axis in range(2):
            global_in, offset_in, length_in = self.previous[axis]
            ratio = x.shape[2 + axis] // length_in  # 2 after a pixel shuffle's doubling, else 1
            global_in, offset_in, length_in = ratio * global_in, ratio * offset_in, ratio * length_in
            offset_out, length_out = self.origin[axis] >> shift, int(size[axis])
            source = nearest_indices(global_in, out_global[axis], x.device)[offset_out : offset_out + length_out]
            indices.append((source - offset_in).clamp(0, length_in - 1))
            following.append((out_global[axis], offset_out, length_out))
        self.previous = following
        self.stage += 1
        return x.index_select(2, indices[0]).index_select(3, indices[1]).contiguous(memory_format=memory_format_of(x))
