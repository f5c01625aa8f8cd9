"""How far an image-to-image network reaches: the largest distance, in px, between an output pixel and an input pixel
it depends on, measured by the gradient (what tiling's margins must cover).

The probe runs one strip through the network: ``PROBE_WIDTH`` bottleneck positions wide (rows and columns reach
alike: every kernel is square) and tall enough that the support does not touch the strip's ends (doubled until it
does not). A random cotangent on the ``stride`` output rows of one bottleneck row (every phase of the upsamplings)
is pulled back to the input; the rows with a non-zero gradient are the support. Reach is counted from the far
end of that block of rows, so it may exceed an output pixel's own by up to ``stride - 1`` px (on the safe side).

Why a probe rather than an analytic receptive field: the encoders are any torchvision classifier cut at a graph node
(residual branches, depthwise 7 x 7 convolutions, pooling), so an analytic field needs a rule
per node type and graph walk; the gradient follows whatever the graph is. The support of a ReLU network's gradient
can only miss an input pixel whose every path is through inactive units at that input, which random noise makes
vanishingly unlikely at the support's edge (many channels and columns feed each row).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: Strip width in bottleneck positions (the narrowest map every trunk accepts is 2 positions).
PROBE_WIDTH = 4
#: First strip height in px, doubled while the support reaches the strip's ends, up to ``PROBE_LIMIT``.
PROBE_START = 512
PROBE_LIMIT = 8192


def gradient_reach(network: Callable[[Tensor], Tensor], stride: int, device: torch.device, seed: int = 0) -> int:
    """Reach in px of ``network`` (an image (1, 3, H, W) in [0, 1] to an image of the same size) whose outputs depend
    on its input through a bottleneck at ``stride`` (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = PROBE_START, PROBE_WIDTH * stride
    while True:
        image = torch.rand(1, 3, height, width, generator=generator).to(device).requires_grad_(True)
        with torch.enable_grad():
            out = network(image)
            top = height // 2 // stride * stride
            cotangent = torch.zeros_like(out)
            rows = cotangent[..., top : top + stride, :]
            rows.copy_(torch.randn(rows.shape, generator=generator).to(device))
            (grad,) = torch.autograd.grad(out, image, cotangent)
        support = grad.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
        first, last = int(support.min()), int(support.max())
        if first > 0 and last < height - 1:
            return max(top + stride - 1 - first, last - top)
        if height >= PROBE_LIMIT:
            raise RuntimeError(f"the network reaches over {height // 2} px: too far to tile")
        height *= 2
