"""Reflection padding that keeps the input's memory format, with a cheap explicit backward.

``nn.ReflectionPad2d``'s CUDA kernel writes a contiguous (NCHW) output whatever its input, so in a channels_last
network every pad converts the layout and the next convolution converts it back; its backward accumulates with
atomics into a zeroed gradient. :class:`FastReflectionPad2d` is a drop-in replacement (same forward values, bit for
bit; no parameters, so state-dict keys and module indices stay as they were) that the speed options swap in with
:func:`use_fast_reflection_padding`. Under ``torch.compile`` it defers to ``F.pad(mode="reflect")``: inductor lowers
that to index arithmetic fused into the neighbouring pointwise kernels (the ReLU before it in the forward, the
ReLU's mask in the backward), which a hand-written sequence of copies would only get in the way of.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check(x: Tensor, pad: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"reflection padding expects (N, C, H, W), got {tuple(x.shape)}")
    if not 0 <= pad < min(x.shape[-2:]):
        raise ValueError(f"reflection padding {pad} needs a side longer than it, got {tuple(x.shape[-2:])}")


def memory_format_of(x: Tensor) -> torch.memory_format:
    """channels_last for a dense channels_last tensor that is not also contiguous, else contiguous_format."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def reflection_pad(x: Tensor, pad: int) -> Tensor:
    """``F.pad(x, (pad,) * 4, mode="reflect")`` computed by copies into an output in ``x``'s memory format."""
    _check(x, pad)
    h, w = x.shape[-2:]
    out = torch.empty(
        (*x.shape[:2], h + 2 * pad, w + 2 * pad), dtype=x.dtype, device=x.device, memory_format=memory_format_of(x)
    )
    out[..., pad : pad + h, pad : pad + w] = x
    for i in range(pad):
        # Padded column i mirrors input column pad - i; padded column pad + w + i mirrors input column w - 2 - i.
        out[..., pad : pad + h, i] = x[..., :, pad - i]
        out[..., pad : pad + h, pad + w + i] = x[..., :, w - 2 - i]
    for i in range(pad):
        # Whole rows (corners included, now that the columns are in place): row i mirrors row 2 * pad - i.
        out[..., i, :] = out[..., 2 * pad - i, :]
        out[..., pad + h + i, :] = out[..., pad + h - 2 - i, :]
    return out


def reflection_pad_backward(grad: Tensor, pad: int, memory_format: torch.memory_format) -> Tensor:
    """Gradient of :func:`reflection_pad`: border rows, then border columns, folded back onto the rows and columns
    they were copied from; returns the interior, dense in ``memory_format``."""
    h, w = grad.shape[-2] - 2 * pad, grad.shape[-1] - 2 * pad
    rows = grad[..., pad : pad + h, :].clone(memory_format=memory_format)
    for i in range(pad):
        rows[..., pad - i, :] += grad[..., i, :]
        rows[..., h - 2 - i, :] += grad[..., pad + h + i, :]
    out = torch.empty_like(rows[..., pad : pad + w], memory_format=memory_format)
    out.copy_(rows[..., pad : pad + w])
    for i in range(pad):
        out[..., pad - i] += rows[..., i]
        out[..., w - 2 - i] += rows[..., pad + w + i]
    return out


class _ReflectionPad(torch.autograd.Function):
    """Autograd wrapper of the two functions above (the backward is summation-order equal to ATen's)."""

    @staticmethod
    def forward(ctx, x: Tensor, pad: int) -> Tensor:
        ctx.pad = pad
        ctx.memory_format = memory_format_of(x)
        return reflection_pad(x, pad)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return reflection_pad_backward(grad, ctx.pad, ctx.memory_format), None


def fast_reflection_pad(x: Tensor, pad: int) -> Tensor:
    """Reflection padding by ``pad`` on all four sides keeping ``x``'s memory format (F.pad's under compile)."""
    if torch.compiler.is_compiling():
        return F.pad(x, (pad,) * 4, mode="reflect")
    return _ReflectionPad.apply(x, pad)


class FastReflectionPad2d(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` with equal padding on all sides that keeps the input's memory format."""

    def __init__(self, padding: int) -> None:
        super().__init__(padding)
        if len(set(self.padding)) != 1:
            raise ValueError(f"FastReflectionPad2d pads all sides equally, got {self.padding}")

    def forward(self, x: Tensor) -> Tensor:
        return fast_reflection_pad(x, self.padding[0])


def use_fast_reflection_padding(module: nn.Module, enabled: bool = True) -> int:
    """Swap every equal-sided ``nn.ReflectionPad2d`` inside ``module`` for a :class:`FastReflectionPad2d` (or back,
    with ``enabled=False``) in place, keeping module names and indices; returns how many were swapped."""
    swapped = 0
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if type(child) is not (nn.ReflectionPad2d if enabled else FastReflectionPad2d):
                continue
            if len(set(child.padding)) != 1:
                continue
            setattr(
                parent, name, FastReflectionPad2d(child.padding[0]) if enabled else nn.ReflectionPad2d(child.padding)
            )
            swapped += 1
    return swapped
