"""AdaIN's decoder choices (the Hydra group ``decoder=``): the paper's mirror and a configurable decoder, their
settings checked, the record a model file keeps of them, and a decoder rebuilt from that record.

* ``mirror``: :class:`~styletransfer.methods.adain.model.AdaINDecoder`, the mirror of VGG-19 up to relu4_1 (default;
  the release's layout, bit for bit what it always was);
* ``configurable``: the same plan of convolutions with every channel count scaled by ``width`` (1 down to 1/4),
  ``residual_blocks`` residual blocks at the bottleneck's resolution, upsampling by ``nearest`` (then a convolution,
  as the mirror) or ``pixel_shuffle`` (a convolution to 4x channels, then ``nn.PixelShuffle(2)``), and any number of
  input channels (the encoder's bottleneck: 512 for VGG's relu4_1).

A file without a record holds the mirror (files from before ``decoder=`` keep loading).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from styletransfer.methods.adain.model import AdaINDecoder
from styletransfer.nn.upsampling import upsample_nearest, upsampled_sizes
from styletransfer.runtime.errors import ConfigError

NAMES = ("mirror", "configurable")
UPSAMPLINGS = ("nearest", "pixel_shuffle")
#: The record of the paper's decoder (and of any file without one).
MIRROR: dict[str, Any] = {"name": "mirror"}
#: The configurable decoder's settings and their defaults (``in_channels`` None: the encoder's bottleneck).
DEFAULTS: dict[str, Any] = {"width": 1.0, "residual_blocks": 0, "upsample": "nearest", "in_channels": None}
MIN_WIDTH = 0.25
#: Channels after the first convolution and after each upsampling stage (the mirror's: 256, 128, 64).
_WIDTHS = (256, 128, 64)

Upsample = Callable[[Tensor, "tuple[int, int] | None"], Tensor]


def _conv(c_in: int, c_out: int, relu: bool = True) -> list[nn.Module]:
    """Reflection padding and a 3x3 convolution (then a ReLU): the mirror's unit."""
    return [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, kernel_size=3), *([nn.ReLU()] if relu else [])]


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(x))), 3x3 convolutions with reflection padding, no normalisation (as the mirror)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv(channels, channels), *_conv(channels, channels, relu=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Upsampling(nn.Module):
    """x2 upsampling to the stage's exact size: nearest (the ``upsample`` the caller passes, as the mirror), or a
    convolution to 4x channels and a pixel shuffle, then nearest to the exact size (a no-op where the doubled map
    already has it; the export's ``upsample`` keeps symbolic sizes)."""

    def __init__(self, channels: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.shuffle = (
            nn.Sequential(*_conv(channels, 4 * channels, relu=False), nn.PixelShuffle(2))
            if mode == "pixel_shuffle"
            else None
        )

    def forward(self, x: Tensor, size: tuple[int, int] | None, upsample: Upsample) -> Tensor:
        if self.shuffle is None:
            return upsample(x, size)
        x = self.shuffle(x)
        return x if size is None else upsample(x, size)


class ConfigurableDecoder(nn.Module):
    """The mirror's plan (one convolution at the bottleneck, then three x2 stages of 4, 2 and 2 convolutions) with
    scaled widths, optional residual blocks after the first convolution and a choice of upsampling; ``forward`` has
    the mirror's signature and output size rule (``output_size``: exactly that size, for any size)."""

    def __init__(
        self, in_channels: int = 512, width: float = 1.0, residual_blocks: int = 0, upsample: str = "nearest"
    ) -> None:
        super().__init__()
        self.config = {
            "name": "configurable",
            "in_channels": int(in_channels),
            "width": float(width),
            "residual_blocks": int(residual_blocks),
            "upsample": str(upsample),
        }
        c1, c2, c3 = (max(1, round(c * width)) for c in _WIDTHS)
        self.head = nn.Sequential(*_conv(in_channels, c1))
        self.residual = nn.Sequential(*(ResidualBlock(c1) for _ in range(residual_blocks)))
        self.ups = nn.ModuleList(Upsampling(c, upsample) for c in (c1, c2, c3))
        self.stages = nn.ModuleList(
            [
                nn.Sequential(*_conv(c1, c1), *_conv(c1, c1), *_conv(c1, c1), *_conv(c1, c2)),
                nn.Sequential(*_conv(c2, c2), *_conv(c2, c3)),
                nn.Sequential(*_conv(c3, c3), *_conv(c3, 3, relu=False)),
            ]
        )

    def forward(
        self, features: Tensor, output_size: tuple[int, int] | None = None, upsample: Upsample = upsample_nearest
    ) -> Tensor:
        """Decode bottleneck ``features`` (N, in_channels, h, w) to an image (N, 3, H, W), as ``AdaINDecoder``."""
        sizes = upsampled_sizes(output_size, len(self.ups))
        x = self.residual(self.head(features))
        for up, stage, size in zip(self.ups, self.stages, sizes):
            x = stage(up(x, size, upsample))
        return x


def _number(config: Mapping[str, Any], key: str) -> float:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"decoder.{key}={value!r} must be a number")
    return float(value)


def decoder_config(config: Mapping[str, Any] | None, bottleneck_channels: int = 512) -> dict[str, Any]:
    """The checked, complete record of a ``decoder`` group (None: the mirror); ``in_channels`` None becomes the
    encoder's ``bottleneck_channels``. Bad settings raise one line naming the setting and the fix."""
    config = dict(config or MIRROR)
    name = config.pop("name", "mirror")
    if name not in NAMES:
        raise ConfigError(f"decoder.name={name!r} is not a decoder: choose decoder=mirror or decoder=configurable")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"decoder.{unknown[0]} is not a decoder setting; the settings are {', '.join(DEFAULTS)}")
    settings = {**DEFAULTS, **config}
    if settings["in_channels"] is None:
        settings["in_channels"] = bottleneck_channels
    if name == "mirror":
        # The group's file lists the configurable settings at the mirror's values, so a changed one is a mistake.
        changed = [k for k, v in settings.items() if v != {**DEFAULTS, "in_channels": 512}[k]]
        if changed:
            key = changed[0]
            raise ConfigError(
                f"decoder.{key}={settings[key]!r} needs decoder=configurable (the mirror is the paper's fixed decoder)"
            )
        return dict(MIRROR)
    width = _number(settings, "width")
    if not MIN_WIDTH <= width <= 1.0:
        raise ConfigError(f"decoder.width={width} must be in [{MIN_WIDTH}, 1.0] (a multiplier of the mirror's widths)")
    blocks, channels = settings["residual_blocks"], settings["in_channels"]
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
        raise ConfigError(f"decoder.residual_blocks={blocks!r} must be a whole number >= 0 (default 0)")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ConfigError(f"decoder.in_channels={channels!r} must be a whole number >= 1 (null: the encoder's)")
    if settings["upsample"] not in UPSAMPLINGS:
        raise ConfigError(f"decoder.upsample={settings['upsample']!r} must be one of {', '.join(UPSAMPLINGS)}")
    return {"name": name, **settings, "width": width}


def build_decoder(config: Mapping[str, Any] | None, bottleneck_channels: int = 512) -> nn.Module:
    """The decoder a ``decoder`` group or a file's record describes (None: the mirror)."""
    record = decoder_config(config, bottleneck_channels)
    if record["name"] == "mirror":
        return AdaINDecoder()
    settings = {k: v for k, v in record.items() if k != "name"}
    return ConfigurableDecoder(**settings)


def decoder_record(decoder: nn.Module) -> dict[str, Any]:
    """What a model file records of ``decoder`` (the mirror's record for ``AdaINDecoder``)."""
    return dict(getattr(decoder, "config", MIRROR))


def describe(record: Mapping[str, Any] | None) -> str:
    """A record in words for messages, e.g. ``configurable (width 0.5, 2 residual blocks, pixel_shuffle)``."""
    record = dict(record or MIRROR)
    if record.get("name") != "configurable":
        return "mirror (the paper's decoder)"
    return (
        f"configurable (width {record.get('width')}, {record.get('residual_blocks')} residual blocks, "
        f"{record.get('upsample')}, {record.get('in_channels')} input channels)"
    )


def extra_reach(decoder: nn.Module) -> int:
    """Pixels the decoder's reach exceeds the mirror's by: each 3x3 convolution at the bottleneck (stride 8) adds
    8 px; pixel shuffle adds one convolution before each doubling (at strides 8, 4 and 2: 14 px)."""
    record = decoder_record(decoder)
    if record["name"] != "configurable":
        return 0
    return 16 * int(record["residual_blocks"]) + (14 if record["upsample"] == "pixel_shuffle" else 0)
