"""Image transforms for training and validation (PIL RGB in, float32 (3, crop, crop) in [0, 1] out).

Training follows the AdaIN paper: shorter side resized to ``short_side`` (default 512), then a random
``crop_size`` (default 256) square crop. The crop offsets come from the generator the dataset passes in, seeded
from the item's (seed, epoch, index), so they are the same in any worker and after a resume.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor

from styletransfer.data.images import pil_to_tensor, resize_to_side
from styletransfer.runtime.errors import ConfigError


def check_sizes(short_side: int, crop_size: int) -> None:
    """Raise ConfigError naming data.short_side / data.crop_size when they are not usable together."""
    for name, value in (("data.short_side", short_side), ("data.crop_size", crop_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer number of pixels, got {value!r}")
    if crop_size > short_side:
        raise ConfigError(f"data.crop_size ({crop_size}) must be <= data.short_side ({short_side}): the crop is taken "
                          f"from the image after its shorter side is resized to data.short_side")


class TrainTransform:
    """Shorter side to ``short_side`` (antialiased), then a random ``crop_size`` square crop."""

    def __init__(self, short_side: int = 512, crop_size: int = 256) -> None:
        check_sizes(short_side, crop_size)
        self.short_side = short_side
        self.crop_size = crop_size

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> Tensor:
        """Resize and crop ``img``; the offsets come from ``generator`` (torch's global generator when None)."""
        img = resize_to_side(img, self.short_side)
        width, height = img.size
        top = int(torch.randint(0, height - self.crop_size + 1, (), generator=generator).item())
        left = int(torch.randint(0, width - self.crop_size + 1, (), generator=generator).item())
        return pil_to_tensor(img.crop((left, top, left + self.crop_size, top + self.crop_size)))

    def __repr__(self) -> str:
        return f"TrainTransform(short_side={self.short_side}, crop_size={self.crop_size})"


class CenterTransform:
    """Deterministic: shorter side to ``size`` (antialiased), then the centre ``size`` x ``size`` square."""

    def __init__(self, size: int) -> None:
        check_sizes(size, size)
        self.size = size

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> Tensor:
        """Resize and centre-crop ``img``; ``generator`` is accepted (and unused) so either transform fits a dataset."""
        img = resize_to_side(img, self.size)
        width, height = img.size
        left, top = (width - self.size) // 2, (height - self.size) // 2
        return pil_to_tensor(img.crop((left, top, left + self.size, top + self.size)))

    def __repr__(self) -> str:
        return f"CenterTransform(size={self.size})"
