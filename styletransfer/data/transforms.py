"""Image transforms for training and validation (PIL RGB in, float32 (3, crop, crop) in [0, 1] out).

Training follows the AdaIN paper: shorter side resized to ``short_side`` (default 512), then a random
``crop_size`` (default 256) square crop. The crop offsets come from the generator the dataset passes in, seeded
from the item's (seed, epoch, index), so they are the same in any worker and after a resume.

For a JPEG cache decoded on the GPU, workers only draw the crop boxes (:class:`CropBoxTransform`, the same draws
as :class:`TrainTransform`) and :func:`decode_crops` decodes and crops the whole batch on the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch import Tensor

from styletransfer.data.images import pil_to_tensor, pil_to_uint8, resize_to_side, to_unit_float
from styletransfer.runtime.errors import ConfigError


def check_sizes(short_side: int, crop_size: int) -> None:
    """Raise ConfigError naming data.short_side / data.crop_size when they are not usable together."""
    for name, value in (("data.short_side", short_side), ("data.crop_size", crop_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer number of pixels, got {value!r}")
    if crop_size > short_side:
        raise ConfigError(
            f"data.crop_size ({crop_size}) must be <= data.short_side ({short_side}): the crop is taken "
            f"from the image after its shorter side is resized to data.short_side"
        )


def draw_crop_box(height: int, width: int, crop_size: int, generator: torch.Generator | None) -> tuple[int, int]:
    """(top, left) of a random ``crop_size`` square inside a ``height`` x ``width`` image: top first, then left,
    each one ``torch.randint`` draw from ``generator`` (the order every training crop in the project uses)."""
    top = int(torch.randint(0, height - crop_size + 1, (), generator=generator).item())
    left = int(torch.randint(0, width - crop_size + 1, (), generator=generator).item())
    return top, left


class TrainTransform:
    """Shorter side to ``short_side`` (antialiased), then a random ``crop_size`` square crop; float32 in [0, 1], or
    with ``uint8`` the pixels as they are (converted on the device: ``to_unit_float``, same numbers)."""

    def __init__(self, short_side: int = 512, crop_size: int = 256, uint8: bool = False) -> None:
        check_sizes(short_side, crop_size)
        self.short_side = short_side
        self.crop_size = crop_size
        self.uint8 = uint8

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> Tensor:
        """Resize and crop ``img``; the offsets come from ``generator`` (torch's global generator when None)."""
        img = resize_to_side(img, self.short_side)
        width, height = img.size
        top, left = draw_crop_box(height, width, self.crop_size, generator)
        crop = img.crop((left, top, left + self.crop_size, top + self.crop_size))
        return pil_to_uint8(crop) if self.uint8 else pil_to_tensor(crop)

    def __repr__(self) -> str:
        return f"TrainTransform(short_side={self.short_side}, crop_size={self.crop_size})"


class CentreTransform:
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
        return f"CentreTransform(size={self.size})"


class EncodedImage(NamedTuple):
    """A JPEG file's bytes (1-D uint8 tensor) and the size of the image they decode to."""

    data: Tensor
    height: int
    width: int


class CropBoxTransform:
    """Draw the training crop of an :class:`EncodedImage` without decoding it (decoding happens per batch on the
    device: :func:`decode_crops`). The image is already at its training size (a prepared cache), and the draws
    are :class:`TrainTransform`'s, so the boxes are the ones the CPU path would cut."""

    def __init__(self, crop_size: int = 256) -> None:
        check_sizes(crop_size, crop_size)
        self.crop_size = crop_size

    def __call__(self, image: EncodedImage, generator: torch.Generator | None = None) -> dict[str, Any]:
        """``{"jpeg": bytes tensor, "box": (top, left)}`` for ``image``, the offsets drawn from ``generator``."""
        if min(image.height, image.width) < self.crop_size:
            raise ConfigError(
                f"data.crop_size ({self.crop_size}) is larger than a {image.width} x {image.height} "
                f"cached image; prepare the cache with a --short-side of at least the crop size"
            )
        top, left = draw_crop_box(image.height, image.width, self.crop_size, generator)
        return {"jpeg": image.data, "box": torch.tensor([top, left], dtype=torch.int64)}

    def __repr__(self) -> str:
        return f"CropBoxTransform(crop_size={self.crop_size})"


def is_encoded_batch(value: Any) -> bool:
    """True for a collated batch of encoded crops (``{"jpeg": [...], "boxes": (N, 2)}``)."""
    return isinstance(value, Mapping) and "jpeg" in value and "boxes" in value


def decode_crops(encoded: Mapping[str, Any], crop_size: int, device: torch.device | str) -> Tensor:
    """Decode a batch of JPEGs on ``device`` (batched nvJPEG on CUDA, libjpeg-turbo on the CPU), cut each one's
    ``(top, left)`` box and return float32 (N, 3, crop_size, crop_size) in [0, 1], as :class:`TrainTransform` does.

    ``encoded`` is ``{"jpeg": list of 1-D uint8 CPU tensors, "boxes": (N, 2) int64}`` (collated
    :class:`CropBoxTransform` items). The bytes must stay on the CPU: torchvision reads them from host memory.
    """
    from torchvision.io import ImageReadMode, decode_jpeg  # torchvision takes seconds to import: only when decoding

    images = decode_jpeg(list(encoded["jpeg"]), mode=ImageReadMode.RGB, device=device)
    boxes = encoded["boxes"].tolist()
    crops = [image[:, top : top + crop_size, left : left + crop_size] for image, (top, left) in zip(images, boxes)]
    return to_unit_float(torch.stack(crops))
