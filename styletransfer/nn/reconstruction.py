"""Reconstruction decoders of universal style transfer (Li et al., NeurIPS 2017; also behind Linear Style Transfer,
Li et al., CVPR 2019): one per VGG-19 level relu1_1 ... relu5_1, each the mirror of the encoder up to its level, as
sunshineatnoon/PytorchWCT ``modelsNIPS.py``'s ``decoder1`` ... ``decoder5``: the encoder's 3x3 convolutions in reverse
order with their channels swapped, each after reflection padding of 1 px and followed by a ReLU except the last (to
RGB), and nearest upsampling by 2 where the encoder pools. No normalisation layers.

The modules form one ``nn.Sequential`` as AdaIN's decoder does (padding, convolution, ReLU, upsampling), so relu4_1's
decoder has the AdaIN decoder's layout and state-dict keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn

from styletransfer.nn.encoder import VGG19_LAYERS
from styletransfer.nn.upsampling import upsample_nearest, upsampled_sizes
from styletransfer.runtime.errors import ConfigError

#: The levels a decoder inverts, finest first (the cascade runs them in reverse: coarse to fine).
LEVELS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
#: VGG-19's channels per block (the digit after "conv").
_BLOCK_CHANNELS = {"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}
#: One decoder step: a 3x3 convolution (in, out) or "up" (nearest upsampling by 2).
Step = tuple[int, int] | str
#: Decoders by level: a ``build_decoders`` ModuleDict or any mapping of level names to decoders.
Decoders = Mapping[str, nn.Module] | nn.ModuleDict


def check_levels(levels: Sequence[str] | str, setting: str = "method.levels") -> tuple[str, ...]:
    """``levels`` (a non-empty list of distinct names from ``LEVELS``) ordered coarse to fine, as the cascade runs
    them; anything else is a ConfigError naming ``setting``."""
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence):
        raise ConfigError(f"{setting}={levels!r}: give a list of levels, e.g. [{', '.join(LEVELS)}]")
    names = [str(level) for level in levels]
    unknown = [name for name in names if name not in LEVELS]
    if not names or unknown or len(set(names)) != len(names):
        problem = f"unknown level(s) {unknown}" if unknown else "no level given" if not names else "a level repeated"
        raise ConfigError(f"{setting}={names}: {problem}; choose from {', '.join(LEVELS)}")
    return tuple(sorted(names, key=LEVELS.index, reverse=True))


def decoder_plan(level: str) -> tuple[Step, ...]:
    """The steps of ``level``'s decoder: VGG-19's convolutions up to the level's, mirrored (pooling -> "up")."""
    if level not in LEVELS:
        raise ConfigError(f"no decoder for {level!r}: the levels are {', '.join(LEVELS)}")
    encoder: list[Step] = []
    channels = 3
    for name in VGG19_LAYERS[: VGG19_LAYERS.index(level)]:
        if name.startswith("conv"):
            out = _BLOCK_CHANNELS[name[4]]
            encoder.append((channels, out))
            channels = out
        elif name.startswith("pool"):
            encoder.append("up")
    return tuple(step if isinstance(step, str) else (step[1], step[0]) for step in reversed(encoder))


class MirrorDecoder(nn.Sequential):
    """A decoder of ``plan``'s steps: per convolution (in, out), reflection padding of 1 px, the 3x3 convolution and a
    ReLU (none after the last, to RGB); per "up", nearest upsampling by 2. No normalisation layers."""

    def __init__(self, plan: Sequence[Step]) -> None:
        layers: list[nn.Module] = []
        for index, step in enumerate(plan):
            if isinstance(step, str):
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                continue
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(step[0], step[1], kernel_size=3)]
            if index != len(plan) - 1:
                layers.append(nn.ReLU())
        super().__init__(*layers)

    def forward(
        self,
        features: Tensor,
        output_size: tuple[int, int] | None = None,
        upsample: Callable[[Tensor, tuple[int, int] | None], Tensor] = upsample_nearest,
    ) -> Tensor:
        """Decode ``features`` (N, C, h, w) to an image (N, 3, H, W).

        Without ``output_size`` each upsampling doubles the size, as the authors' decoders do. With it, upsampling
        k (of n) goes to ceil(side / 2**(n - 1 - k)), in integer arithmetic so that sizes traced by torch.export
        stay symbolic: any image size comes back as it went in. ``upsample(x, size)`` is nearest upsampling to
        ``size`` (a doubling when None): the export passes one that lowers to ONNX gathers.
        """
        sizes = upsampled_sizes(output_size, sum(isinstance(module, nn.Upsample) for module in self))
        x, up = features, 0
        for module in self:
            if isinstance(module, nn.Upsample):
                x, up = upsample(x, sizes[up]), up + 1
            else:
                x = module(x)
        return x


class ReconstructionDecoder(MirrorDecoder):
    """The decoder that inverts ``level``'s features (N, C, h, w) to an RGB image (N, 3, H, W); see the module
    docstring. ``forward(features, output_size)`` upsamples to the sizes that lead to ``output_size`` (each
    upsampling k of n to ceil(side / 2**(n - 1 - k))), so any image size comes back as it went in; without it each
    upsampling doubles, as the authors' decoders do."""

    def __init__(self, level: str) -> None:
        super().__init__(decoder_plan(level))
        self.level = level


def build_decoders(levels: Sequence[str]) -> nn.ModuleDict:
    """One freshly initialised decoder per level, keyed by level name (state-dict keys ``<level>.<index>...``)."""
    return nn.ModuleDict({level: ReconstructionDecoder(level) for level in check_levels(levels)})
