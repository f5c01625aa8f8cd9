"""The image transformation network of pytorch/examples ``fast_neural_style/neural_style/transformer_net.py``
(Johnson et al. 2016 with instance normalisation): three reflection-padded convolutions down (9x9, then two 3x3 of
stride 2), five residual blocks, two nearest-neighbour upsamplings each followed by a 3x3 convolution, and a 9x9
convolution to RGB. Module and parameter names are the examples', so their saved models load as they are.

Several styles in one network (Dumoulin et al. 2017): every instance normalisation holds one scale and shift per
style (``weight``/``bias`` of shape (styles, C)); the network is asked for a style by a weight vector over the styles,
which blends the scales and shifts (one style: a one-hot vector). With one style the parameters are (C,) and the
layer is ``torch.nn.InstanceNorm2d(C, affine=True)`` exactly.

A slimmer network for slow machines: ``width`` scales every convolution's channels (32, 64, 128 at 1.0, the
examples' layout exactly; each rounded to the nearest multiple of 8, at least 8: ``channels``) and
``residual_blocks`` sets how many residual blocks it has (5, the examples'). Both are recorded in a model file
(``checkpoint.py``) so that the same network is rebuilt wherever it is loaded.

Images are RGB in [0, 255], in and out, as the examples train them (the output is not clamped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Instance normalisation's epsilon (torch.nn.InstanceNorm2d's default, which the examples use).
EPS = 1e-5
#: The examples' channels after the first, second and third convolution (the residual blocks keep the third).
EXAMPLES_CHANNELS = (32, 64, 128)
#: The examples' number of residual blocks.
EXAMPLES_BLOCKS = 5
#: Scaled channels are rounded to a multiple of this (a whole number of AVX2 float32 vectors), and at least it.
CHANNEL_MULTIPLE = 8


def channels(width: float) -> tuple[int, int, int]:
    """The three channel counts of a network ``width`` times the examples' (``EXAMPLES_CHANNELS`` at 1.0), each
    rounded to the nearest multiple of ``CHANNEL_MULTIPLE`` and at least that; a width must be a number > 0."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < float(width) < float("inf"):
        raise ValueError(f"width={width!r} must be a finite number > 0 (1.0: the examples' layout)")
    c1, c2, c3 = (
        max(CHANNEL_MULTIPLE, int(c * float(width) / CHANNEL_MULTIPLE + 0.5) * CHANNEL_MULTIPLE)
        for c in EXAMPLES_CHANNELS
    )
    return c1, c2, c3


def check_blocks(residual_blocks: int) -> int:
    """``residual_blocks`` as an int >= 1 (every model file holds ``res1``), or ValueError naming it."""
    if isinstance(residual_blocks, bool) or not isinstance(residual_blocks, int) or residual_blocks < 1:
        raise ValueError(f"residual_blocks={residual_blocks!r} must be a whole number >= 1 (5: the examples')")
    return residual_blocks


class StyleNorm(nn.Module):
    """Instance normalisation with a scale and shift per style: ``weight``/``bias`` of shape (C,) for one style (as
    ``nn.InstanceNorm2d(C, affine=True)``), (styles, C) for several, blended by the network's style vector."""

    def __init__(self, channels: int, styles: int = 1) -> None:
        super().__init__()
        shape = (channels,) if styles == 1 else (styles, channels)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.style: Tensor | None = None  # (styles,) weights, set by TransformerNet.forward for several styles

    def affine(self) -> tuple[Tensor, Tensor]:
        """The scale and shift (C,) of the network's style: its one style's, or the style vector's blend."""
        weight: Tensor = self.weight
        bias: Tensor = self.bias
        if weight.dim() == 2:
            if self.style is None:
                raise ValueError("a network of several styles needs a style vector (TransformerNet.forward(x, style))")
            weight, bias = self.style @ weight, self.style @ bias
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.affine()
        return F.instance_norm(x, weight=weight, bias=bias, eps=EPS)


class ConvLayer(nn.Module):
    """Reflection padding of kernel_size // 2, then a convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """conv, norm, ReLU, conv, norm, plus the input (He et al.; the examples' block)."""

    def __init__(self, channels: int, styles: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = StyleNorm(channels, styles)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = StyleNorm(channels, styles)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class UpsampleConvLayer(nn.Module):
    """Nearest-neighbour upsampling by ``upsample``, reflection padding, convolution (no checkerboard artefacts)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int) -> None:
        super().__init__()
        self.upsample = upsample
        self.upsample_layer = nn.Upsample(mode="nearest", scale_factor=upsample)
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(self.reflection_pad(self.upsample_layer(x)))


class TransformerNet(nn.Module):
    """The examples' network for ``styles`` styles (see the module docstring), ``width`` times as wide with
    ``residual_blocks`` blocks (``res1`` .. ``resN``); ``forward(x, style)`` takes RGB in [0, 255] (N, 3, H, W) and,
    for several styles, ``style``: weights over them (styles,), summing to 1."""

    def __init__(self, styles: int = 1, width: float = 1.0, residual_blocks: int = EXAMPLES_BLOCKS) -> None:
        super().__init__()
        if styles < 1:
            raise ValueError(f"a network needs at least one style, got {styles}")
        self.styles = styles
        self.width = float(width)
        self.channels = c1, c2, c3 = channels(width)
        self.residual_blocks = check_blocks(residual_blocks)
        self.conv1 = ConvLayer(3, c1, kernel_size=9, stride=1)
        self.in1 = StyleNorm(c1, styles)
        self.conv2 = ConvLayer(c1, c2, kernel_size=3, stride=2)
        self.in2 = StyleNorm(c2, styles)
        self.conv3 = ConvLayer(c2, c3, kernel_size=3, stride=2)
        self.in3 = StyleNorm(c3, styles)
        for number in range(1, residual_blocks + 1):
            self.add_module(f"res{number}", ResidualBlock(c3, styles))
        self.deconv1 = UpsampleConvLayer(c3, c2, kernel_size=3, stride=1, upsample=2)
        self.in4 = StyleNorm(c2, styles)
        self.deconv2 = UpsampleConvLayer(c2, c1, kernel_size=3, stride=1, upsample=2)
        self.in5 = StyleNorm(c1, styles)
        self.deconv3 = ConvLayer(c1, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def blocks(self) -> list[ResidualBlock]:
        """The residual blocks in order (``res1`` first)."""
        return [getattr(self, f"res{number}") for number in range(1, self.residual_blocks + 1)]

    def layout(self) -> dict[str, float | int]:
        """The settings that rebuild this network's shape (what a model file records beside its weights)."""
        return {"width": self.width, "residual_blocks": self.residual_blocks}

    def set_style(self, style: Tensor | None) -> None:
        """Give every normalisation the style vector (None: the one style of a single-style network)."""
        if self.styles > 1:
            if style is None or style.shape != (self.styles,):
                raise ValueError(f"this network has {self.styles} styles: give a weight vector of that length")
        for module in self.modules():
            if isinstance(module, StyleNorm):
                module.style = style

    def forward(self, x: Tensor, style: Tensor | None = None) -> Tensor:
        if self.styles > 1:
            self.set_style(style.to(x.device, x.dtype) if style is not None else None)
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        for block in self.blocks():
            y = block(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)
