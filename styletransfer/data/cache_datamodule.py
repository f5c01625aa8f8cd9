"""Training from prepared caches (``data=cache``): the folder path's pairs and crops, without decoding full images.

``python train.py data=cache data.cache=DST`` reads ``DST/content`` and ``DST/style``, each made by
``styletransfer-prepare`` (or name them with ``data.content_cache`` / ``data.style_cache``; only
``data.content_cache``: content only, as ``data=folders`` without ``data.style_dir``, for a method trained for fixed
styles). Items are drawn exactly as from folders (:class:`~styletransfer.data.datasets.ContentStyleDataset` with
cache records as its image source): same order, style choice and crop boxes for a given seed, same exact resume. A
JPEG cache on a CUDA trainer is decoded on the GPU (``data.decode``): workers hand over the JPEG bytes and the crop
boxes they drew, and the batch is decoded with batched nvJPEG on the GPU and cropped there, one batch ahead of the
training step (:mod:`~styletransfer.data.decode_ahead`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import Dataset

from styletransfer.data.cache import CacheSource, ShardCache
from styletransfer.data.datamodule import ContentStyleDataModule
from styletransfer.data.datasets import ImageSource, ValidationPairsDataset, choose_pair_indices
from styletransfer.data.decode_ahead import DecodeAhead, PendingBatch
from styletransfer.data.transforms import (
    CentreTransform,
    CropBoxTransform,
    EncodedImage,
    TrainTransform,
    decode_crops,
    is_encoded_batch,
)
from styletransfer.runtime.errors import ConfigError
from styletransfer.runtime.machine import launched_local_rank

log = logging.getLogger(__name__)

DECODE_CHOICES = ("auto", "cpu", "gpu")


class CacheTrainTransform:
    """:class:`TrainTransform` for decoded images (uint8 crops: a quarter of the bytes through the loader; the
    datamodule converts them on the device), :class:`CropBoxTransform` for encoded ones (same draws)."""

    def __init__(self, short_side: int, crop_size: int) -> None:
        self.decoded = TrainTransform(short_side, crop_size, uint8=True)
        self.encoded = CropBoxTransform(crop_size)

    def __call__(self, image: Any, generator: torch.Generator | None = None) -> Tensor | dict[str, Any]:
        """The crop of ``image`` (uint8 tensor) or its bytes and crop box, drawn from ``generator``."""
        return (self.encoded if isinstance(image, EncodedImage) else self.decoded)(image, generator)


def _short_side(setting: int | None, caches: list[ShardCache]) -> int:
    """``data.short_side``, which must be the caches' (null: take theirs, which must agree)."""
    sides = {cache.short_side for cache in caches}
    if setting is None:
        if len(sides) > 1:
            raise ConfigError(
                f"data.short_side is null but the caches were prepared at different shorter sides "
                f"({', '.join(f'{c.root}: {c.short_side}' for c in caches)}); prepare them with one "
                f"--short-side"
            )
        return sides.pop()
    for cache in caches:
        if cache.short_side != setting:
            raise ConfigError(
                f"data.short_side={setting} but {cache.root} was prepared with --short-side "
                f"{cache.short_side}: set data.short_side={cache.short_side} (or null), or prepare it "
                f"again with --short-side {setting} ({cache.rebuild_command()})"
            )
    return setting


def _cache_paths(cache: str | None, content_cache: str | None, style_cache: str | None) -> list[tuple[str, str]]:
    """(setting, folder) of the content and style caches; only the content cache's when neither ``cache`` nor
    ``style_cache`` is set (content only)."""
    if content_cache is not None and style_cache is not None:
        return [("data.content_cache", str(content_cache)), ("data.style_cache", str(style_cache))]
    if cache is None and content_cache is not None:
        return [("data.content_cache", str(content_cache))]
    if cache is None:
        raise ConfigError(
            "data.cache is not set: set data.cache=DIR (a folder holding content/ and style/ caches made "
            "by styletransfer-prepare), or data.content_cache (and data.style_cache)"
        )
    root = Path(str(cache)).expanduser()
    return [
        ("data.content_cache" if content_cache else "data.cache", str(content_cache or root / "content")),
        ("data.style_cache" if style_cache else "data.cache", str(style_cache or root / "style")),
    ]


class CacheDataModule(ContentStyleDataModule):
    """:class:`ContentStyleDataModule` over two prepared caches, or one content cache (see the module docstring).

    At start both manifests are read and checked against their shards (sizes always; SHA-256 of every shard when
    ``verify_cache``): a mismatch stops the run naming the shard and the prepare command that rebuilds the cache.
    ``short_side`` must be the caches' (null: theirs). Sources that prepare could not read count as skipped files.
    Validation pairs are the folder path's choice of images, read from the cache (so resized from the cached
    ``short_side`` image to ``crop_size``, not from the original file). Content only (no style cache) is the folder
    path's: batches hold only ``content``, ``val_pairs`` must be 0.
    """

    style_fix = (
        "data.style_cache=DIR (a cache of a folder of styles: styletransfer-prepare STYLES DIR --short-side N) "
        "or data.cache=DIR (holding content/ and style/)"
    )

    def __init__(
        self,
        cache: str | None = None,
        content_cache: str | None = None,
        style_cache: str | None = None,
        short_side: int | None = None,
        num_workers: int | str = "auto",
        decode: str = "auto",
        verify_cache: bool = True,
        **loading: Any,
    ) -> None:
        pl.LightningDataModule.__init__(self)  # not the folder module's: nothing to list
        if decode not in DECODE_CHOICES:
            raise ConfigError(f"data.decode must be one of {', '.join(DECODE_CHOICES)}, got {decode!r}")
        caches = [ShardCache(path, setting) for setting, path in _cache_paths(cache, content_cache, style_cache)]
        # Checksums on one process per node: the other DDP ranks read the same files (they check sizes).
        checksums = bool(verify_cache) and launched_local_rank() == 0
        for opened in caches:
            opened.verify(checksums=checksums)
        self.content_cache = caches[0]
        self.style_cache: ShardCache | None = caches[1] if len(caches) > 1 else None
        if decode == "gpu" and all(c.format != "jpeg" for c in caches):
            raise ConfigError(
                "data.decode=gpu but no cache is a JPEG cache (raw pixels need no decoding); "
                "set data.decode=auto or cpu"
            )
        self._configure(_short_side(short_side, caches), num_workers=num_workers, **loading)
        self._check_styles(self.style_cache is not None)
        self.decode = decode
        self._ahead: DecodeAhead | None = None
        self._check_batch(len(self.content_cache), str(self.content_cache.root))
        skipped = {path: cause for opened in caches for path, cause in opened.skipped().items()}
        if skipped:
            log.warning(
                "%d unreadable source image(s) were left out when the caches were prepared (listed in their "
                "manifest.json)",
                len(skipped),
            )
            self.skipped_files.update(skipped)

    def decode_on_device(self) -> bool:
        """Whether training batches are decoded on the GPU: ``data.decode`` gpu, or auto with a CUDA trainer."""
        trainer = self.trainer
        on_cuda = trainer.strategy.root_device.type == "cuda" if trainer is not None else torch.cuda.is_available()
        if self.decode == "gpu" and not on_cuda:
            raise ConfigError("data.decode=gpu but the trainer does not run on CUDA; set data.decode=auto or cpu")
        return self.decode == "gpu" or (self.decode == "auto" and trainer is not None and on_cuda)

    def _sources(self, encoded: bool) -> tuple[CacheSource, CacheSource | None]:
        """The content and style records (JPEG bytes with ``encoded``); no style source content only."""

        def source(cache: ShardCache, kind: str) -> CacheSource:
            return CacheSource(cache, kind, encoded and cache.format == "jpeg")

        style = None if self.style_cache is None else source(self.style_cache, "style")
        return source(self.content_cache, "content"), style

    def _pair_sources(self) -> tuple[CacheSource, CacheSource]:
        """The decoded records of validation pairs (which need styles: content only has ``val_pairs`` 0)."""
        content, style = self._sources(False)
        assert style is not None, "validation pairs without a style cache"
        return content, style

    def train_sources(self) -> tuple[ImageSource, ImageSource | None]:
        """The cache records: JPEG bytes for decoding on the device, or decoded images."""
        return self._sources(self.decode_on_device())

    def train_transform(self) -> CacheTrainTransform:
        """Crop boxes for encoded images, the folder path's crop for decoded ones."""
        return CacheTrainTransform(self.short_side, self.crop_size)

    @property
    def validation_pairs(self) -> list[tuple[int, int]]:
        """The fixed validation pairs as (content record, style record) indices."""
        if self._validation_pairs is None:
            self._validation_pairs = choose_pair_indices(*self._pair_sources(), self.val_pairs)
        return self._validation_pairs

    def val_dataset(self) -> Dataset:
        """The validation pairs read (and decoded on the CPU) from the caches."""
        return ValidationPairsDataset(
            self.validation_pairs, CentreTransform(self.crop_size), sources=self._pair_sources()
        )

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cuda")

    def decode_batch(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
        """Decode the encoded parts of a collated batch on ``device`` (see ``decode_crops``), all of them in one
        batched call; the rest is kept."""
        keys = [key for key, value in batch.items() if is_encoded_batch(value)]
        if not keys:
            return batch
        merged = {
            "jpeg": [data for key in keys for data in batch[key]["jpeg"]],
            "boxes": torch.cat([batch[key]["boxes"] for key in keys]),
        }
        crops = decode_crops(merged, self.crop_size, device).split([len(batch[key]["jpeg"]) for key in keys])
        return {**batch, **dict(zip(keys, crops))}

    def on_fetch(self) -> Callable[[Any], Any] | None:
        """With GPU decoding, start decoding each training batch as the loop fetches it, one batch ahead of the
        step (:mod:`~styletransfer.data.decode_ahead`); ``on_before_batch_transfer`` collects it."""
        if not self.decode_on_device():
            return None
        if self._ahead is None:
            self._ahead = DecodeAhead(self.decode_batch, self._device())
        return self._ahead.start

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A batch decoding ahead is collected; one still encoded (not from the training loader) is decoded now, on
        the trainer's device, before Lightning moves the batch: the decoded crops are already where the model is."""
        if isinstance(batch, PendingBatch):
            return batch.result()
        if isinstance(batch, dict) and any(is_encoded_batch(value) for value in batch.values()):
            return self.decode_batch(batch, self._device())
        return batch

    def teardown(self, stage: str) -> None:
        """Stop the decoding thread, if one was started."""
        if self._ahead is not None:
            self._ahead.close()
