"""VGG's 2 x 2 max pooling with a backward that compiles to a gather, not a scatter.

Inductor (torch 2.14 here) decomposes ``max_pool2d_with_indices_backward`` into ``scatter_add`` for every window
shape (pytorch/pytorch#167318): a zeroed float32 gradient, an indirect scatter (atomic adds on a GPU) and a cast
back, for each pooling of every training step. With VGG's non-overlapping windows (2 x 2, stride 2) each input
position lies in exactly one window, so its gradient is a gather: the window's output gradient where the position
held the window's maximum, zero elsewhere (pytorch/pytorch#195123 describes the redundancy). :class:`MaxPool2d`
takes that path under ``torch.compile`` when gradients flow; eager code keeps ``F.max_pool2d``, so the default path
is unchanged bit for bit, and the gather gives the same numbers as ATen's backward (one contribution per position,
nothing to accumulate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletransfer.nn.upsampling import double_nearest


def window_gradient(grad: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
    """Gradient of a 2 x 2, stride-2 max pooling of an input of spatial ``size``: ``grad`` (the output's gradient)
    where ``indices`` (the flat argmax of each window, as ``F.max_pool2d(return_indices=True)`` gives them) names
    the position, zero elsewhere. Input position (i, j) belongs to window (i // 2, j // 2)."""
    height, width = size
    chosen = double_nearest(indices)[..., :height, :width]
    spread = double_nearest(grad)[..., :height, :width]
    here = torch.arange(height * width, device=indices.device).view(height, width)
    return torch.where(chosen == here, spread, torch.zeros((), dtype=grad.dtype, device=grad.device))


class _MaxPool2x2(torch.autograd.Function):
    """``F.max_pool2d(x, 2, 2, ceil_mode=...)`` with :func:`window_gradient` as its backward."""

    @staticmethod
    def forward(ctx, x: Tensor, ceil_mode: bool) -> Tensor:
        out, indices = F.max_pool2d(x, 2, 2, ceil_mode=ceil_mode, return_indices=True)
        ctx.save_for_backward(indices)
        ctx.size = (x.shape[-2], x.shape[-1])
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (indices,) = ctx.saved_tensors
        return window_gradient(grad, indices, ctx.size), None


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (no parameters: module names and state-dict keys are unchanged) whose 2 x 2, stride-2 windows
    get :func:`window_gradient` as their backward under ``torch.compile``. Other settings, eager code and passes
    without gradients (inference, export) run ``nn.MaxPool2d`` itself."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling() and torch.is_grad_enabled() and x.requires_grad and self._gatherable(x):
            return _MaxPool2x2.apply(x, self.ceil_mode)
        return super().forward(x)

    def _gatherable(self, x: Tensor) -> bool:
        """2 x 2 windows, stride 2, no padding or dilation, and every input position inside a window (with floor
        rounding an odd side leaves its last row or column out, which the doubled indices would not cover)."""
        plain = (
            _pair(self.kernel_size) == (2, 2)
            and _pair(self.stride) == (2, 2)
            and _pair(self.padding) == (0, 0)
            and _pair(self.dilation) == (1, 1)
            and not self.return_indices
        )
        return plain and (self.ceil_mode or (x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0))


def _pair(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
