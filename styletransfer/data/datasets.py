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
from typing import Any

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


class _ReadableFiles:
    """A file list whose unreadable entries are replaced by the next readable one, each failure remembered.

    Bad indices are remembered per instance (so per DataLoader worker) and never retried.
    """

    def __init__(self, files: Sequence[str | os.PathLike], kind: str, folder: str | None) -> None:
        if not files:
            raise ConfigError(f"no {kind} images given")
        self.files = [Path(f) for f in files]
        self.kind = kind
        self.folder = folder if folder is not None else _folder_of(self.files)
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, skipped: Skipped) -> tuple[int, Image.Image]:
        """Load file ``index``, or the next readable one (cyclically); append new failures to ``skipped``."""
        n = len(self.files)
        for step in range(n):
            candidate = (index + step) % n
            if candidate in self.bad:
                continue
            try:
                return candidate, load_rgb(self.files[candidate])
            except ImageLoadError as exc:
                self.bad.add(candidate)
                skipped.append((exc.path, exc.cause))
        raise RuntimeError(f"none of the {n} {self.kind} images under {self.folder} could be read; "
                           f"check that the folder holds valid image files")


class ContentStyleDataset(Dataset):
    """Content image ``index`` with a random style image and random crops, all drawn from (seed, epoch, index).

    Length = number of content files. ``dataset[DrawKey(seed, epoch, index)]`` (what
    :class:`~styletransfer.data.resumable.SeededShuffle` hands out) seeds a generator of its own for the style
    choice and both crops, so the item is the same in any process, worker or resumed run; ``dataset[index]`` is
    ``DrawKey(seed, 0, index)`` with this dataset's ``seed`` (``data.seed``, or the run's seed when null). An
    unreadable file is replaced by the next readable one and reported in the item's ``skipped`` list; it is then
    never retried by this instance.
    """

    def __init__(self, content_files: Sequence[str | os.PathLike], style_files: Sequence[str | os.PathLike],
                 transform: RandomTransform, *, content_dir: str | None = None, style_dir: str | None = None,
                 seed: int | None = None) -> None:
        self.content = _ReadableFiles(content_files, "content", content_dir)
        self.style = _ReadableFiles(style_files, "style", style_dir)
        self.transform = transform
        self.seed = resolve_seed(seed)

    def __len__(self) -> int:
        return len(self.content)

    def __getitem__(self, key: int | DrawKey) -> dict[str, Any]:
        seed, epoch, index = key if isinstance(key, tuple) else (self.seed, 0, int(key))
        generator = generator_for("item", seed, epoch, index)
        style_index = int(torch.randint(len(self.style), (), generator=generator).item())
        skipped: Skipped = []
        _, content = self.content.load(index, skipped)
        _, style = self.style.load(style_index, skipped)
        return {"content": self.transform(content, generator), "style": self.transform(style, generator),
                "skipped": skipped}


def choose_pairs(content_files: Sequence[str | os.PathLike], style_files: Sequence[str | os.PathLike],
                 n_pairs: int, *, content_dir: str | None = None,
                 style_dir: str | None = None) -> list[tuple[Path, Path]]:
    """``n_pairs`` fixed (content, style) pairs spread evenly through both sorted lists, skipping unreadable files.

    Pair k uses content index k * n_content // n_pairs and style index k * n_style // n_pairs (cycling through a
    list shorter than ``n_pairs``); an unreadable file is replaced by the next readable one.
    """
    if n_pairs < 0:
        raise ConfigError(f"data.val_pairs must be >= 0, got {n_pairs}")
    if n_pairs == 0:
        return []
    contents = _ReadableFiles(content_files, "content", content_dir)
    styles = _ReadableFiles(style_files, "style", style_dir)

    def spread(k: int, n: int) -> int:
        return k % n if n_pairs > n else k * n // n_pairs

    pairs = []
    for k in range(n_pairs):
        ci, _ = contents.load(spread(k, len(contents)), [])
        si, _ = styles.load(spread(k, len(styles)), [])
        pairs.append((contents.files[ci], styles.files[si]))
    return pairs


class ValidationPairsDataset(Dataset):
    """A fixed list of (content_path, style_path) pairs with a deterministic transform (same tensors every epoch)."""

    def __init__(self, pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]], transform: Transform) -> None:
        self.pairs = [(Path(c), Path(s)) for c, s in pairs]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        content_path, style_path = self.pairs[index]
        return {"content": self.transform(load_rgb(content_path)), "style": self.transform(load_rgb(style_path)),
                "skipped": []}


def collate_content_style(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``content`` and ``style`` into (N, 3, H, W) batches and concatenate the ``skipped`` lists."""
    return {
        "content": torch.stack([item["content"] for item in items]),
        "style": torch.stack([item["style"] for item in items]),
        "skipped": [entry for item in items for entry in item.get("skipped", [])],
    }
