"""Datasets of (content, style) image pairs that survive unreadable files.

Items are dicts ``{"content": Tensor, "style": Tensor, "skipped": [(path, cause), ...]}``; ``skipped`` lists the
files that failed while this item was produced, so the main process can log and count them
(see ``ContentStyleDataModule.on_after_batch_transfer``). A training item is a pure function of its
:class:`~styletransfer.data.resumable.DrawKey` (seed, epoch, index), so a resumed run draws what an uninterrupted one
would, whatever the worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from styletransfer.data.images import ImageLoadError, load_rgb
from styletransfer.data.resumable import DrawKey, generator_for, resolve_seed
from styletransfer.runtime.errors import ConfigError

Transform = Callable[[Image.Image], Tensor]
#: A transform whose random choices come from the generator it is given (``TrainTransform``).
RandomTransform = Callable[[Image.Image, torch.Generator], Tensor]
Skipped = list[tuple[str, str]]


def _folder_of(files: Sequence[Path]) -> str:
    """The common folder of a file list, for error messages."""
    try:
        return os.path.commonpath([str(Path(f).parent) for f in files])
    except ValueError:
        return "<several folders>"


@runtime_checkable
class ImageSource(Protocol):
    """Images by index, whatever holds them (a folder's files, a prepared cache's records).

    ``read(index)`` returns what the dataset's transform takes (a PIL image, or an encoded image for decoding on
    the GPU) and raises :class:`ImageLoadError` naming the image when it cannot; ``kind`` ("content"/"style") and
    ``folder`` name the source in messages.
    """

    kind: str
    folder: str

    def __len__(self) -> int: ...

    def read(self, index: int) -> Any: ...


class FolderSource:
    """Image files read with :func:`load_rgb` (``draft_side``: JPEG draft decoding for that training size)."""

    def __init__(
        self, files: Sequence[str | os.PathLike], kind: str, folder: str | None = None, draft_side: int | None = None
    ) -> None:
        self.files = [Path(f) for f in files]
        self.kind = kind
        self.folder = folder if folder is not None else _folder_of(self.files) if self.files else "<no files>"
        self.draft_side = draft_side

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> Image.Image:
        """File ``index`` as an RGB image (ImageLoadError naming it when unreadable)."""
        return load_rgb(self.files[index], draft_side=self.draft_side)


def as_source(images: Sequence[str | os.PathLike] | ImageSource, kind: str, folder: str | None) -> ImageSource:
    """``images`` itself when it is an :class:`ImageSource`, else a :class:`FolderSource` over the file list."""
    return images if isinstance(images, ImageSource) else FolderSource(images, kind, folder)


class _Readable:
    """An image source whose unreadable entries are replaced by the next readable one, each failure remembered.

    Bad indices are remembered per instance (so per DataLoader worker) and never retried.
    """

    def __init__(self, source: ImageSource) -> None:
        if len(source) == 0:
            raise ConfigError(f"no {source.kind} images given")
        self.source = source
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.source)

    def load(self, index: int, skipped: Skipped) -> tuple[int, Any]:
        """Read image ``index``, or the next readable one (cyclically); append new failures to ``skipped``."""
        n = len(self.source)
        for step in range(n):
            candidate = (index + step) % n
            if candidate in self.bad:
                continue
            try:
                return candidate, self.source.read(candidate)
            except ImageLoadError as exc:
                self.bad.add(candidate)
                skipped.append((exc.path, exc.cause))
        raise RuntimeError(
            f"none of the {n} {self.source.kind} images under {self.source.folder} could be read; "
            f"check that the folder holds valid image files"
        )


class ContentStyleDataset(Dataset):
    """Content image ``index`` with a random style image and random crops, all drawn from (seed, epoch, index).

    Length = number of content files. ``dataset[DrawKey(seed, epoch, index)]`` (what
    :class:`~styletransfer.data.resumable.SeededShuffle` hands out) seeds a generator of its own for the style
    choice and both crops, so the item is the same in any process, worker or resumed run; ``dataset[index]`` is
    ``DrawKey(seed, 0, index)`` with this dataset's ``seed`` (``data.seed``, or the run's seed when null). An
    unreadable file is replaced by the next readable one and reported in the item's ``skipped`` list; it is then
    never retried by this instance. Content and style are file lists or any :class:`ImageSource` (a prepared
    cache: ``styletransfer.data.cache``); the draws are the same whatever holds the images.
    """

    def __init__(
        self,
        content_files: Sequence[str | os.PathLike] | ImageSource,
        style_files: Sequence[str | os.PathLike] | ImageSource | None,
        transform: RandomTransform,
        *,
        content_dir: str | None = None,
        style_dir: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.content = _Readable(as_source(content_files, "content", content_dir))
        # None: content only (a method trained for fixed styles); items then have no "style"
        self.style = None if style_files is None else _Readable(as_source(style_files, "style", style_dir))
        self.transform = transform
        self.seed = resolve_seed(seed)

    def __len__(self) -> int:
        return len(self.content)

    def __getitem__(self, key: int | DrawKey) -> dict[str, Any]:
        seed, epoch, index = key if isinstance(key, tuple) else (self.seed, 0, int(key))
        generator = generator_for("item", seed, epoch, index)
        skipped: Skipped = []
        if self.style is None:
            _, content = self.content.load(index, skipped)
            return {"content": self.transform(content, generator), "skipped": skipped}
        style_index = int(torch.randint(len(self.style), (), generator=generator).item())
        _, content = self.content.load(index, skipped)
        _, style = self.style.load(style_index, skipped)
        return {
            "content": self.transform(content, generator),
            "style": self.transform(style, generator),
            "skipped": skipped,
        }


def choose_pair_indices(content: ImageSource, style: ImageSource, n_pairs: int) -> list[tuple[int, int]]:
    """``n_pairs`` fixed (content, style) index pairs spread evenly through both sources, skipping unreadable images.

    Pair k uses content index k * n_content // n_pairs and style index k * n_style // n_pairs (cycling through a
    source shorter than ``n_pairs``); an unreadable image is replaced by the next readable one.
    """
    if n_pairs < 0:
        raise ConfigError(f"data.val_pairs must be >= 0, got {n_pairs}")
    if n_pairs == 0:
        return []
    contents, styles = _Readable(content), _Readable(style)

    def spread(k: int, n: int) -> int:
        return k % n if n_pairs > n else k * n // n_pairs

    return [
        (contents.load(spread(k, len(contents)), [])[0], styles.load(spread(k, len(styles)), [])[0])
        for k in range(n_pairs)
    ]


def choose_pairs(
    content_files: Sequence[str | os.PathLike],
    style_files: Sequence[str | os.PathLike],
    n_pairs: int,
    *,
    content_dir: str | None = None,
    style_dir: str | None = None,
) -> list[tuple[Path, Path]]:
    """:func:`choose_pair_indices` over two file lists, as (content path, style path) pairs."""
    content = FolderSource(content_files, "content", content_dir)
    style = FolderSource(style_files, "style", style_dir)
    return [(content.files[c], style.files[s]) for c, s in choose_pair_indices(content, style, n_pairs)]


class ValidationPairsDataset(Dataset):
    """Fixed (content, style) pairs with a deterministic transform (same tensors every epoch).

    ``pairs`` are file paths, or with ``sources`` (content source, style source) indices into them.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str | os.PathLike | int, str | os.PathLike | int]],
        transform: Transform,
        sources: tuple[ImageSource, ImageSource] | None = None,
    ) -> None:
        if sources is None:
            files = cast("Sequence[tuple[str | os.PathLike, str | os.PathLike]]", pairs)
            sources = (FolderSource([c for c, _ in files], "content"), FolderSource([s for _, s in files], "style"))
            self.pairs = [(k, k) for k in range(len(files))]
        else:
            self.pairs = [(int(c), int(s)) for c, s in cast("Sequence[tuple[int, int]]", pairs)]
        self.sources = sources
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        content_index, style_index = self.pairs[index]
        content, style = self.sources
        return {
            "content": self.transform(content.read(content_index)),
            "style": self.transform(style.read(style_index)),
            "skipped": [],
        }


def _collate_images(images: Sequence[Any]) -> Any:
    """Stack image tensors; collect encoded crops (:class:`CropBoxTransform` items) into one encoded batch."""
    if isinstance(images[0], Tensor):
        return torch.stack(list(images))
    return {"jpeg": [image["jpeg"] for image in images], "boxes": torch.stack([image["box"] for image in images])}


def collate_content_style(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``content`` and ``style`` into (N, 3, H, W) batches and concatenate the ``skipped`` lists.

    Encoded items (a JPEG cache decoded on the GPU) become ``{"jpeg": [N bytes tensors], "boxes": (N, 2)}``,
    which the datamodule decodes on the device (``styletransfer.data.transforms.decode_crops``).
    """
    batch = {"content": _collate_images([item["content"] for item in items])}
    if "style" in items[0]:  # content-only items (a method trained for fixed styles) have none
        batch["style"] = _collate_images([item["style"] for item in items])
    batch["skipped"] = [entry for item in items for entry in item.get("skipped", [])]
    return batch
