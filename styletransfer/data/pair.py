"""Content and style images for Neural Style (Gatys): a few named files, loaded at the sizes the method asks for.

Neural Style optimises an image, so there is no data set to iterate: the data module resolves and checks the
files when it is built (before any optimisation), loads them at each coarse-to-fine scale, and gives Lightning
a loader that yields one dummy item per step forever, so that ``trainer.max_steps`` counts optimiser steps.
``PairDataModule.from_tensors`` builds the same from images already in memory (the evaluation's pairs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import pytorch_lightning as pl
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from styletransfer.data.images import (
    IMAGE_EXTENSIONS,
    DataDirError,
    ImageLoadError,
    find_images,
    load_rgb,
    pil_to_tensor,
    resize_to_side,
    tensor_to_pil,
)
from styletransfer.runtime.errors import ConfigError

PathList = str | os.PathLike | Sequence[str | os.PathLike]
#: An input image: a file, read (and checked) each time it is loaded, or an 8-bit RGB image held in memory.
Source = Path | Image.Image


def resolve_images(setting: str, value: PathList) -> list[Path]:
    """Files named by a setting: a file, a folder (all its images, recursively, sorted), or a list of either.

    Raises FileNotFoundError / DataDirError naming ``setting`` for a missing path, a folder without images or an
    empty list.
    """
    entries = [value] if isinstance(value, (str, os.PathLike)) else list(value or [])
    if not entries:
        raise FileNotFoundError(f"{setting} is empty: give an image file, a folder of images or a list of them")
    paths: list[Path] = []
    for entry in entries:
        path = Path(str(entry)).expanduser()
        if path.is_dir():
            try:
                paths.extend(find_images(path))
            except DataDirError as exc:
                raise DataDirError(f"{setting}: {exc}") from None
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(
                f"{setting}: {path} does not exist (resolved: {path.resolve()}); give an image file "
                f"({' '.join(sorted(IMAGE_EXTENSIONS))}), a folder of images, or a list [a.jpg,b.jpg]"
            )
    return paths


def _read(setting: str, source: Source) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    try:
        return load_rgb(source)
    except ImageLoadError as exc:
        raise ImageLoadError(source, f"{exc.cause} (from {setting}); replace or remove the file") from None


def _sources(setting: str, value: PathList | Sequence[Image.Image]) -> list[Source]:
    """The images a setting gives: in-memory PIL images as they are, anything else through ``resolve_images``."""
    if isinstance(value, Sequence) and value and all(isinstance(entry, Image.Image) for entry in value):
        return [cast(Image.Image, entry) for entry in value]
    paths: list[Source] = list(resolve_images(setting, cast(PathList, value)))
    return paths


def _images_in_memory(setting: str, images: Tensor | Sequence[Tensor]) -> list[Image.Image]:
    """Image tensors in [0, 1] as 8-bit RGB images, exactly as a PNG file of each would read back.

    ``images``: one (3, H, W) image, a batch (N, 3, H, W), or a sequence of (3, H, W) / (1, 3, H, W) images.
    """
    if isinstance(images, Tensor):
        images = [images] if images.dim() == 3 else list(images)
    if not images:
        raise ConfigError(f"{setting} is empty: give at least one image tensor")
    try:
        return [tensor_to_pil(image) for image in images]
    except ConfigError as exc:
        raise ConfigError(f"{setting}: {exc}") from None


class _EveryStep(IterableDataset):
    """An endless stream of one dummy item: one item = one optimiser step."""

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            yield torch.zeros(())


class PairDataModule(pl.LightningDataModule):
    """Content image(s) and style image(s) for optimisation-based style transfer.

    - ``content``: a file, a folder (all its images) or a list of files/folders. Several contents are optimised
      together as one batch: each is resized to cover the first content's size and centre-cropped to it (aspect
      ratio kept, no distortion).
    - ``style``: likewise; several styles are blended by the method (``method.style_blend``).
    - ``long_side``: the longer side of the (first) content in pixels; the output keeps its aspect ratio.
    - ``style_scale``: the style's longer side relative to the content's longer side (1.0: the same; 0.5: half,
      so the style's textures come out finer in the result; 2.0: coarser). Each style keeps its aspect ratio.

    Files are resolved and checked in ``__init__`` and fully read in ``setup``: a missing, empty or unreadable
    input fails before any optimisation with a message naming the setting and the file. ``content`` and
    ``style`` may instead be lists of RGB PIL images already in memory (``from_tensors`` builds those).
    """

    def __init__(
        self,
        content: PathList | Sequence[Image.Image],
        style: PathList | Sequence[Image.Image],
        long_side: int = 512,
        style_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(long_side, int) or isinstance(long_side, bool) or long_side < 16:
            raise ConfigError(f"data.long_side must be an integer >= 16 (pixels, longer side), got {long_side!r}")
        if isinstance(style_scale, bool) or not isinstance(style_scale, (int, float)) or not style_scale > 0:
            raise ConfigError(f"data.style_scale must be a number > 0, got {style_scale!r}")
        self.long_side = long_side
        self.style_scale = float(style_scale)
        self._contents = _sources("data.content", content)
        self._styles = _sources("data.style", style)
        self.content_paths = [s for s in self._contents if isinstance(s, Path)]
        self.style_paths = [s for s in self._styles if isinstance(s, Path)]
        #: How messages name each style: its file name, or "style i" (1-based) for an image in memory.
        self.style_names = [s.name if isinstance(s, Path) else f"style {i + 1}" for i, s in enumerate(self._styles)]
        self.content: Tensor | None = None
        self.styles: list[Tensor] | None = None

    @classmethod
    def from_tensors(
        cls,
        content: Tensor | Sequence[Tensor],
        styles: Tensor | Sequence[Tensor],
        long_side: int = 512,
        style_scale: float = 1.0,
    ) -> PairDataModule:
        """The data module of images in memory, loaded as files would be: ``content`` one (3, H, W) image or a
        batch (N, 3, H, W), ``styles`` one image, a batch or a sequence of images of any sizes, all in [0, 1].

        Each image is quantised to 8 bits exactly as writing it to PNG would, then resized like a file read from
        disk (same sizes, filter and crop), so the tensors equal those of the file path for the same images.
        """
        return cls(
            _images_in_memory("data.content", content),
            _images_in_memory("data.style", styles),
            long_side=long_side,
            style_scale=style_scale,
        )

    def setup(self, stage: str | None = None) -> None:
        """Read every file at ``long_side`` (checks that all are readable; the tensors are kept for inspection)."""
        if self.content is None:
            self.content = self.load_content(self.long_side)
            self.styles = self.load_styles(self.long_side)

    def load_content(self, long_side: int) -> Tensor:
        """Contents as one batch (N, 3, H, W) in [0, 1]; the first content's longer side is ``long_side``."""
        first = resize_to_side(_read("data.content", self._contents[0]), long_side, long_side=True)
        images = [first] + [
            ImageOps.fit(_read("data.content", source), first.size, method=Image.Resampling.BICUBIC)
            for source in self._contents[1:]
        ]
        return torch.stack([pil_to_tensor(img) for img in images])

    def style_side(self, content_long_side: int) -> int:
        """The styles' longer side for a content whose longer side is ``content_long_side``."""
        return max(1, round(self.style_scale * content_long_side))

    def load_styles(self, content_long_side: int) -> list[Tensor]:
        """Styles, each (3, h, w) in [0, 1] with its own aspect ratio, longer side from ``style_side``."""
        side = self.style_side(content_long_side)
        return [
            pil_to_tensor(resize_to_side(_read("data.style", source), side, long_side=True)) for source in self._styles
        ]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_EveryStep(), batch_size=None)
