"""LightningDataModule for content/style folders (MS-COCO + WikiArt in the paper, any two image folders here)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from styletransfer.data.datasets import (
    ContentStyleDataset,
    FolderSource,
    ImageSource,
    ValidationPairsDataset,
    choose_pairs,
    collate_content_style,
)
from styletransfer.data.images import DataDirError, find_images, to_unit_float
from styletransfer.data.loading import resolve_workers
from styletransfer.data.resumable import ResumableDataLoader, SeededShuffle, resolve_seed
from styletransfer.data.transforms import CentreTransform, TrainTransform, check_sizes
from styletransfer.runtime.errors import ConfigError
from styletransfer.runtime.machine import usable_cores

log = logging.getLogger(__name__)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _list_folder(setting: str, folder: str) -> list[Path]:
    """find_images, with the error naming the config setting that holds the folder."""
    try:
        return find_images(folder)
    except DataDirError as exc:
        raise DataDirError(
            f"{setting}: {exc}. Point {setting}=<folder> at a folder of images (see data/README.md)"
        ) from None


class ContentStyleDataModule(pl.LightningDataModule):
    """Random (content, style) training pairs and fixed validation pairs from two image folders.

    Training: every content image once per epoch (shuffled) with a random style image, shorter side resized to
    ``short_side`` then a random ``crop_size`` crop (the AdaIN paper's 512 / 256). Order, style choice and crops are
    drawn from (``seed``, epoch, index) only (``seed`` null: the run's seed), and the training loader's position is
    saved in every checkpoint, so a resumed run continues with exactly the batches an uninterrupted one would see
    (``styletransfer.data.resumable``). Validation: ``val_pairs`` fixed pairs, shorter side resized to
    ``crop_size`` then centre-cropped. Folders are listed (recursively) here, so a missing or empty folder fails at
    start. Unreadable files are skipped, logged once and counted in ``skipped_files`` (kept in checkpoints too).
    Batches reaching the model are ``{"content": (N,3,H,W), "style": (N,3,H,W)}`` in [0, 1]. ``jpeg_draft``
    decodes JPEGs at least twice the training size at a reduced scale first (``load_rgb``'s ``draft_side``).
    The loading settings (``crop_size``, ``batch_size``, ``num_workers``, ``val_pairs``, ``pin_memory``,
    ``persistent_workers``, ``drop_last``, ``seed``, ``prefetch_factor``) come by keyword (``loading``): the data
    modules of this family share them, with the defaults of :meth:`_configure`.
    Subclasses (the prepared cache) change where the images come from: :meth:`train_sources`,
    :meth:`train_transform` and :meth:`val_dataset`.
    """

    #: How to give styles (the setting and its value): what a method trained on content-style pairs, and validation
    #: pairs, ask for when there are none (:attr:`missing_styles`).
    style_fix = "data.style_dir=DIR (a folder of styles)"

    def __init__(
        self,
        content_dir: str,
        style_dir: str | None = None,
        short_side: int = 512,
        jpeg_draft: bool = True,
        **loading: Any,
    ) -> None:
        super().__init__()
        self._configure(short_side, **loading)
        self.jpeg_draft = bool(jpeg_draft)
        self.content_dir = str(content_dir)
        self.style_dir = None if style_dir is None else str(style_dir)
        self.content_files = _list_folder("data.content_dir", self.content_dir)
        self.style_files = [] if self.style_dir is None else _list_folder("data.style_dir", self.style_dir)
        self._check_styles(self.style_dir is not None)
        self._check_batch(len(self.content_files), self.content_dir)

    def _configure(
        self,
        short_side: int,
        *,
        crop_size: int = 256,
        batch_size: int = 8,
        num_workers: int | str = 4,
        val_pairs: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        drop_last: bool = True,
        seed: int | None = None,
        prefetch_factor: int | None = None,
    ) -> None:
        """Check and keep the settings every data module of this family has: ``short_side`` and the loading
        settings its constructor takes by keyword (``loading``), with these defaults."""
        check_sizes(short_side, crop_size)
        _check_int("data.batch_size", batch_size, 1)
        _check_int("data.val_pairs", val_pairs, 0)
        if prefetch_factor is not None:
            _check_int("data.prefetch_factor", prefetch_factor, 1)
        self.num_workers = resolve_workers(num_workers)
        self.short_side = short_side
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.val_pairs = val_pairs
        self.prefetch_factor = prefetch_factor
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.drop_last = bool(drop_last)
        self.seed = resolve_seed(seed)
        #: Unreadable files seen so far: path -> cause.
        self.skipped_files: dict[str, str] = {}
        self._validation_pairs: list[tuple[Any, Any]] | None = None

    def _check_styles(self, has_styles: bool) -> None:
        """Content only (no styles): batches hold only ``content`` and there can be no validation pairs."""
        self.has_styles = has_styles
        if not has_styles and self.val_pairs:
            raise ConfigError(
                f"data.val_pairs={self.val_pairs} needs {self.style_fix}, validation pairs being content-style "
                "pairs; or set data.val_pairs=0 for content-only training"
            )

    @property
    def missing_styles(self) -> str | None:
        """None with styles; content only, the setting to give and its value (``style_fix``) for a method that
        trains on content-style pairs to name in its error."""
        return None if self.has_styles else self.style_fix

    def _check_batch(self, n_content: int, where: str) -> None:
        if self.drop_last and n_content < self.batch_size:
            raise ConfigError(
                f"data.batch_size ({self.batch_size}) is larger than the {n_content} content images "
                f"under {where}: every batch holds data.batch_size pairs, so none would be produced; lower "
                f"data.batch_size or add images"
            )

    @property
    def num_skipped(self) -> int:
        """How many distinct unreadable files have been skipped so far."""
        return len(self.skipped_files)

    @property
    def validation_pairs(self) -> list[tuple[Any, Any]]:
        """The fixed (content, style) validation pairs (chosen once, deterministically, readable files only)."""
        if self._validation_pairs is None:
            self._validation_pairs = choose_pairs(
                self.content_files,
                self.style_files,
                self.val_pairs,
                content_dir=self.content_dir,
                style_dir=self.style_dir,
            )
        return self._validation_pairs

    def _workers(self) -> int:
        return min(self.num_workers, usable_cores())

    def _loader_options(self) -> dict[str, Any]:
        workers = self._workers()
        options = {
            "num_workers": workers,
            "collate_fn": collate_content_style,
            "pin_memory": self.pin_memory and torch.cuda.is_available(),
            "persistent_workers": self.persistent_workers and workers > 0,
        }
        if workers > 0 and self.prefetch_factor is not None:
            options["prefetch_factor"] = self.prefetch_factor
        return options

    def _ranks(self) -> tuple[int, int]:
        """(number of ranks, this rank) of the attached trainer: each rank loads its own shard of every epoch."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_sources(self) -> tuple[ImageSource, ImageSource | None]:
        """Where training images come from: the content and style folders (JPEG draft at ``short_side``); no style
        source without ``style_dir`` (content-only training: batches hold only ``content``)."""
        draft = self.short_side if self.jpeg_draft else None
        style = (
            None
            if self.style_dir is None
            else FolderSource(self.style_files, "style", self.style_dir, draft_side=draft)
        )
        return FolderSource(self.content_files, "content", self.content_dir, draft_side=draft), style

    def train_transform(self) -> Any:
        """The training items' transform: resize the shorter side, random crop; uint8 crops (a quarter of float32's
        bytes through the workers' queues, pinning and the copy to the device), made float on the device."""
        return TrainTransform(self.short_side, self.crop_size, uint8=True)

    def val_dataset(self) -> Dataset:
        """The fixed validation pairs, resized to the crop size and centre-cropped."""
        return ValidationPairsDataset(self.validation_pairs, CentreTransform(self.crop_size))

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled training pairs whose position Lightning saves in checkpoints and restores on resume."""
        content, style = self.train_sources()
        dataset = ContentStyleDataset(content, style, self.train_transform(), seed=self.seed)
        replicas, rank = self._ranks()
        sampler = SeededShuffle(dataset, self.seed, num_replicas=replicas, rank=rank)
        return ResumableDataLoader(
            dataset,
            sampler,
            on_fetch=self.on_fetch(),
            batch_size=self.batch_size,
            drop_last=self.drop_last,
            **self._loader_options(),
        )

    def on_fetch(self) -> Callable[[Any], Any] | None:
        """What the training loader does with each batch as the loop takes it (nothing here; see subclasses)."""
        return None

    def val_dataloader(self) -> DataLoader | list:
        if self.val_pairs == 0:
            return []
        return DataLoader(
            self.val_dataset(),
            batch_size=min(self.batch_size, self.val_pairs),
            shuffle=False,
            drop_last=False,
            **self._loader_options(),
        )

    def record_skipped(self, skipped: list) -> None:
        """Log each newly skipped (path, cause) once at WARNING and remember it in ``skipped_files``."""
        for path, cause in skipped:
            if path not in self.skipped_files:
                self.skipped_files[path] = cause
                log.warning("skipping unreadable image %s: %s", path, cause)

    def state_dict(self) -> dict[str, Any]:
        """The unreadable files seen so far, so that a resumed run neither reports nor counts them again."""
        return {"skipped_files": dict(self.skipped_files)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take over the skipped files of the run being resumed (see :meth:`state_dict`)."""
        skipped = state_dict.get("skipped_files", {})
        if not isinstance(skipped, dict):
            raise ConfigError(
                f"ckpt_path: the checkpoint's list of skipped images ({type(skipped).__name__}) is not "
                f"one this project wrote; resume from a checkpoint of this project"
            )
        self.skipped_files.update({str(path): str(cause) for path, cause in skipped.items()})

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Take ``skipped`` out of the batch (recording it), leaving ``{"content", "style"}`` for the model, and turn
        uint8 crops into float32 in [0, 1] where the batch now is (the device)."""
        if not isinstance(batch, dict):
            return batch
        batch = dict(batch)
        if "skipped" in batch:
            self.record_skipped(batch.pop("skipped"))
        return {key: to_unit_float(value) if isinstance(value, Tensor) else value for key, value in batch.items()}


def require_styles(trainer: pl.Trainer | None, method: str) -> None:
    """Refuse content-only data (``missing_styles``) for ``method``, which trains on content-style pairs, naming the
    setting that gives the styles."""
    missing = getattr(getattr(trainer, "datamodule", None), "missing_styles", None)
    if missing:
        raise ConfigError(f"method={method} trains on content-style pairs: give {missing}")
