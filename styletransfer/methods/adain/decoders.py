"""AdaIN's decoder choices (the Hydra group ``decoder=``): the paper's mirror and a configurable decoder, their
settings checked, the record a model file keeps of them, and a decoder rebuilt from that record.

* ``mirror``: :class:`~styletransfer.methods.adain.model.AdaINDecoder`, the mirror of VGG-19 up to relu4_1 (default;
  the release's layout, bit for bit what it always was);
* ``configurable``: the same plan of convolutions with every channel count scaled by ``width`` (1 down to 1/4),
  ``residual_blocks`` residual blocks at the bottleneck's resolution, upsampling by ``nearest`` (then a convolution,
  as the mirror) or ``pixel_shuffle`` (a convolution to 4x channels, then ``nn.PixelShuffle(2)``), any number of
  input channels and a bottleneck at stride 8 or 16 (the encoder's: 512 channels at stride 8 for VGG's relu4_1;
  stride 16 adds the mirror of VGG's fourth block, as a mirror of VGG-19 up to relu5_1 would have).

The mirror fits VGG's relu4_1 only: behind another bottleneck (a torchvision backbone's), ``decoder=mirror`` becomes
``decoder=configurable`` with the group's settings, and says so (``fitted_config``).

A file without a record holds the mirror (files from before ``decoder=`` keep loading); a record without ``stride``
is of stride 8 (files from before the backbones).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from styletransfer.methods.adain.model import AdaINDecoder
from styletransfer.nn.upsampling import upsample_nearest, upsampled_sizes
from styletransfer.runtime.errors import ConfigError

log = logging.getLogger(__name__)

NAMES = ("mirror", "configurable")
UPSAMPLINGS = ("nearest", "pixel_shuffle")
#: The record of the paper's decoder (and of any file without one).
MIRROR: dict[str, Any] = {"name": "mirror"}
#: The configurable decoder's settings and their defaults (``in_channels``, ``stride`` None: the encoder's bottleneck).
DEFAULTS: dict[str, Any] = {
    "width": 1.0,
    "residual_blocks": 0,
    "upsample": "nearest",
    "in_channels": None,
    "stride": None,
}
#: The mirror's fixed bottleneck: VGG's relu4_1, 512 channels at stride 8.
MIRROR_BOTTLENECK = {"in_channels": 512, "stride": 8}
MIN_WIDTH = 0.25
#: Strides of the bottlenecks a decoder starts from (three or four x2 upsamplings).
STRIDES = (8, 16)
#: Channels after the first convolution and after each upsampling stage at stride 16 (the mirror's, from stride 8
#: on: 256, 128, 64).
_WIDTHS = (512, 256, 128, 64)

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
    the mirror's signature and output size rule (``output_size``: exactly that size, for any size).

    From a bottleneck at ``stride`` 16 the first convolution goes to 512 x ``width`` channels and one more x2 stage
    of 4 convolutions (the mirror of VGG's fourth block) comes first; the stride-8 layout is unchanged (its keys
    too)."""

    def __init__(
        self,
        in_channels: int = 512,
        width: float = 1.0,
        residual_blocks: int = 0,
        upsample: str = "nearest",
        stride: int = 8,
    ) -> None:
        super().__init__()
        if stride not in STRIDES:
            raise ConfigError(f"decoder.stride={stride!r} must be one of {', '.join(map(str, STRIDES))}")
        self.config = {
            "name": "configurable",
            "in_channels": int(in_channels),
            "width": float(width),
            "residual_blocks": int(residual_blocks),
            "upsample": str(upsample),
            "stride": int(stride),
        }
        c0, c1, c2, c3 = (max(1, round(c * width)) for c in _WIDTHS)
        first = c0 if stride == 16 else c1
        self.head = nn.Sequential(*_conv(in_channels, first))
        self.residual = nn.Sequential(*(ResidualBlock(first) for _ in range(residual_blocks)))
        widths = (c0, c1, c2, c3) if stride == 16 else (c1, c2, c3)
        self.ups = nn.ModuleList(Upsampling(c, upsample) for c in widths)
        stages = [
            nn.Sequential(*_conv(c1, c1), *_conv(c1, c1), *_conv(c1, c1), *_conv(c1, c2)),
            nn.Sequential(*_conv(c2, c2), *_conv(c2, c3)),
            nn.Sequential(*_conv(c3, c3), *_conv(c3, 3, relu=False)),
        ]
        if stride == 16:
            stages.insert(0, nn.Sequential(*_conv(c0, c0), *_conv(c0, c0), *_conv(c0, c0), *_conv(c0, c1)))
        self.stages = nn.ModuleList(stages)

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


def decoder_config(
    config: Mapping[str, Any] | None, bottleneck_channels: int = 512, bottleneck_stride: int = 8
) -> dict[str, Any]:
    """The checked, complete record of a ``decoder`` group (None: the mirror); ``in_channels`` and ``stride`` None
    become the encoder's ``bottleneck_channels`` and ``bottleneck_stride``. Bad settings raise one line naming the
    setting and the fix."""
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
    if settings["stride"] is None:
        settings["stride"] = bottleneck_stride
    if name == "mirror":
        # The group's file lists the configurable settings at the mirror's values, so a changed one is a mistake.
        changed = [k for k, v in settings.items() if v != {**DEFAULTS, **MIRROR_BOTTLENECK}[k]]
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
    if settings["stride"] not in STRIDES:
        raise ConfigError(
            f"decoder.stride={settings['stride']!r} must be one of {', '.join(map(str, STRIDES))} "
            "(null: the encoder's bottleneck's)"
        )
    return {"name": name, **settings, "width": width}


def fitted_config(config: Mapping[str, Any] | None, mirror_fits: bool, where: str) -> dict[str, Any] | None:
    """The ``decoder`` group for the encoder's bottleneck: as given where the mirror fits (VGG's relu4_1);
    elsewhere ``decoder=mirror`` (the default) becomes ``decoder=configurable`` with the group's other settings,
    logged once with ``where`` (the encoder and bottleneck)."""
    if mirror_fits or dict(config or MIRROR).get("name", "mirror") != "mirror":
        return None if config is None else dict(config)
    log.info("the mirror decoder fits VGG's relu4_1 only: decoder=configurable behind %s", where)
    return {**dict(config or {}), "name": "configurable"}


def check_fits(record: Mapping[str, Any], channels: int, stride: int, where: str) -> None:
    """A ConfigError naming both when the decoder ``record`` (the mirror: 512 channels at stride 8) does not start
    from the encoder's bottleneck, ``channels`` at ``stride`` (``where``: the encoder and bottleneck in words)."""
    fits = {key: record.get(key, value) for key, value in MIRROR_BOTTLENECK.items()}
    if fits != {"in_channels": channels, "stride": stride}:
        raise ConfigError(
            f"the decoder, {describe(record)}, does not fit the encoder's {where}: give decoder.in_channels and "
            "decoder.stride as null (the bottleneck's)"
        )


def build_decoder(
    config: Mapping[str, Any] | None, bottleneck_channels: int = 512, bottleneck_stride: int = 8
) -> nn.Module:
    """The decoder a ``decoder`` group or a file's record describes (None: the mirror)."""
    record = decoder_config(config, bottleneck_channels, bottleneck_stride)
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
        f"{record.get('upsample')}, {record.get('in_channels')} input channels at stride {record.get('stride', 8)})"
    )


def extra_reach(decoder: nn.Module) -> int:
    """Pixels the decoder's reach exceeds the mirror's by: each 3x3 convolution at the bottleneck adds its stride
    (two per residual block: 16 px at stride 8); pixel shuffle adds one convolution before each doubling (at
    strides 8, 4 and 2: 14 px)."""
    record = decoder_record(decoder)
    if record["name"] != "configurable":
        return 0
    stride = int(record.get("stride", 8))
    doublings = stride.bit_length() - 1
    shuffle = sum(2**k for k in range(1, doublings + 1)) if record["upsample"] == "pixel_shuffle" else 0
    return 2 * stride * int(record["residual_blocks"]) + shuffle
