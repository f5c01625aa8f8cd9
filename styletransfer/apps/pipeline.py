"""The overlapped folder run behind ``styletransfer-stylise``: three stages that work at the same time.

* decode: DataLoader workers read, orient and resize the contents and hand over uint8 tensors (pinned on CUDA);
* stylise: the main thread gathers same-size images into batches (a batch never mixes sizes) and stylises them on
  the device; results are quantised to uint8 there and copied to the host without waiting for the device;
* encode: a thread pool turns each finished batch into image files (atomic writes) while the device works on the
  next one. A semaphore bounds the batches in flight, so memory stays bounded however large the folder.

A file that cannot be read, is too small or cannot be written is named in ``FolderRun.skipped`` and never stops
the folder; results that could not be written (a full disk) are also counted in ``FolderRun.unwritten``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from styletransfer.apps.tiling import stylise_any_size
from styletransfer.data.images import load_rgb, pil_to_uint8, resize_to_side, save_pil, to_uint8_hwc
from styletransfer.protocol.controls import Controls, check_size
from styletransfer.protocol.model import StyleModel
from styletransfer.runtime.errors import ConfigError, ImageLoadError

#: Images waiting for a batch of their size, in batches: past it the fullest size is stylised as it is.
PENDING_BATCHES = 4
#: Stylised batches queued for (or being) written at once, per writer thread.
IN_FLIGHT_PER_WRITER = 2

#: One decoded content: (index, uint8 (3, H, W) or None, why it was skipped).
Decoded = tuple[int, Tensor | None, str]


class ContentImages(Dataset):
    """Contents as uint8 (3, H, W) tensors (shorter side resized to ``content_short_side`` when given); a file that
    cannot be read or is smaller than ``min_side`` comes back as ``(index, None, reason)``, so a worker never
    raises."""

    def __init__(self, paths: Sequence[Path], content_short_side: int | None, min_side: int = 1) -> None:
        self.paths = list(paths)
        self.content_short_side = content_short_side
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Decoded:
        path = self.paths[index]
        try:
            img = load_rgb(path)
        except ImageLoadError as exc:
            return index, None, str(exc)
        if self.content_short_side is not None:
            img = resize_to_side(
                img, self.content_short_side
            )  # a bad --content-short-side stops the run: not caught here
        try:
            check_size(img.width, img.height, str(path), self.min_side)
        except ConfigError as exc:  # too small: this file is skipped
            return index, None, str(exc)
        return index, pil_to_uint8(img), ""


def _as_is(item: Any) -> Any:
    """The loader's collate function: items are stylised in batches of one size, formed after decoding."""
    return item


@dataclass
class FolderRun:
    """What a folder run did: files written (in content order) and one line per content it skipped."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: The reasons of the results stylised but not written (a full disk, a file size limit): the command fails.
    unwritten: list[str] = field(default_factory=list)
    #: Images stylised after the first batch, and the seconds from the end of that batch (compilation and kernel
    #: selection happen there) to the last write: the steady rate without start-up.
    steady_images: int = 0
    steady_seconds: float = 0.0


class SizeGroups:
    """Images of one size gathered into batches of ``batch_size``; at most ``PENDING_BATCHES`` batches' worth wait
    in all (past that the largest group goes as it is), so a folder of all-different sizes stays bounded."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.groups: dict[tuple[int, ...], list[tuple[int, Tensor]]] = {}

    def add(self, index: int, image: Tensor) -> list[list[tuple[int, Tensor]]]:
        """Add one image; returns the batches now ready (a full group, or the largest one when too many wait)."""
        group = self.groups.setdefault(tuple(image.shape), [])
        group.append((index, image))
        if len(group) >= self.batch_size:
            return [self.groups.pop(tuple(image.shape))]
        if sum(len(g) for g in self.groups.values()) > PENDING_BATCHES * self.batch_size:
            return [self.groups.pop(max(self.groups, key=lambda key: len(self.groups[key])))]
        return []

    def drain(self) -> list[list[tuple[int, Tensor]]]:
        """Every group still waiting, as batches."""
        batches = list(self.groups.values())
        self.groups.clear()
        return batches


class Writers:
    """Encode and write stylised batches on ``threads`` threads (0: in the calling thread), at most
    ``IN_FLIGHT_PER_WRITER`` batches per thread queued; failures are collected, never raised."""

    def __init__(self, threads: int, quality: int) -> None:
        self.quality = quality
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="stylise-write") if threads > 0 else None
        self.slots = threading.BoundedSemaphore(max(1, threads) * IN_FLIGHT_PER_WRITER)
        self.futures: list[Future] = []

    def submit(self, images: Tensor, ready: torch.cuda.Event | None, outputs: list[tuple[int, Path]]) -> None:
        """Write uint8 (N, H, W, 3) host ``images`` to ``outputs`` ((index, path) each) once ``ready`` has fired."""
        self.slots.acquire()
        if self.pool is None:
            self.futures.append(_done(self._write(images, ready, outputs)))
        else:
            self.futures.append(self.pool.submit(self._write, images, ready, outputs))

    def _write(
        self, images: Tensor, ready: torch.cuda.Event | None, outputs: list[tuple[int, Path]]
    ) -> list[tuple[int, Path | None, str]]:
        try:
            if ready is not None:
                ready.synchronize()
            results: list[tuple[int, Path | None, str]] = []
            for array, (index, path) in zip(images.numpy(), outputs):
                try:
                    save_pil(Image.fromarray(array), path, quality=self.quality)
                    results.append((index, path, ""))
                except Exception as exc:  # a full disk or a bad path skips this file, not the folder
                    results.append((index, None, f"{path}: cannot write: {type(exc).__name__}: {exc}"))
            return results
        finally:
            self.slots.release()

    def close(self) -> list[tuple[int, Path | None, str]]:
        """Wait for every write; returns (index, path or None, reason) per image."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        return [row for future in self.futures for row in future.result()]


def _done(value: object) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def to_host(result: Tensor) -> tuple[Tensor, torch.cuda.Event | None]:
    """Quantise on the device and start the copy to (pinned) host memory; the event fires when it has landed."""
    images = to_uint8_hwc(result)
    if images.device.type != "cuda":
        return images, None
    host = torch.empty(images.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(images, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return host, ready


def decoded(
    paths: Sequence[Path], content_short_side: int | None, workers: int, pin: bool, min_side: int = 1
) -> Iterator[Decoded]:
    """Decoded contents in order, read by ``workers`` loader processes (0: in this thread); contents smaller than
    ``min_side`` are skipped."""
    loader = DataLoader(
        ContentImages(paths, content_short_side, min_side),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=pin,
        prefetch_factor=4 if workers > 0 else None,
    )
    return iter(loader)


def run_folder(
    styliser: StyleModel,
    contents: Iterator[Decoded],
    paths: Sequence[Path],
    output_of: Callable[[Path], Path],
    styles: Sequence[Tensor],
    controls: Controls,
    batch_size: int,
    writers: int = 2,
    quality: int = 95,
    max_tile: int | str = 0,
) -> FolderRun:
    """Stylise ``contents`` (``decoded(paths, ...)``) in same-size batches of up to ``batch_size``, writing the
    result of ``paths[i]`` to ``output_of(paths[i])`` on ``writers`` threads; ``styles`` and ``controls`` go to
    ``tiling.stylise_any_size`` (the model's ``stylise``, in tiles past ``max_tile``)."""
    groups, sink, run = SizeGroups(batch_size), Writers(writers, quality), FolderRun()
    skipped: dict[int, str] = {}
    device = styliser.device
    clock: list[float] = []  # when the first batch was done

    def stylise(batch: list[tuple[int, Tensor]]) -> None:
        images = [image.to(device, non_blocking=True) for _, image in batch]
        # On CUDA a short batch is filled up with copies of its last image: one shape per image size, so no new
        # kernel selection or compilation for the remainder (models treat each image alone; the copies are dropped).
        fill = batch_size - len(images) if device.type == "cuda" else 0
        stacked = torch.stack(images + images[-1:] * fill)
        try:
            host, ready = to_host(
                stylise_any_size(styliser, stacked, styles, controls, max_tile=max_tile)[: len(batch)]
            )
        except torch.cuda.OutOfMemoryError:
            shape = "x".join(str(side) for side in stacked.shape[-1:-3:-1])
            for index, _ in batch:
                skipped[index] = (
                    f"{paths[index]}: out of device memory stylising {len(batch)} image(s) of "
                    f"{shape} px (try a smaller --batch-size or --content-short-side)"
                )
            bar.update(len(batch))
            return
        sink.submit(host, ready, [(index, output_of(paths[index])) for index, _ in batch])
        bar.update(len(batch))
        if not clock:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            clock.append(time.perf_counter())
        else:
            run.steady_images += len(batch)

    with tqdm(total=len(paths), desc="stylising", unit="img") as bar:
        try:
            for index, image, reason in contents:
                if image is None:
                    skipped[index] = reason
                    bar.update(1)
                    continue
                for batch in groups.add(index, image):
                    stylise(batch)
            for batch in groups.drain():
                stylise(batch)
        finally:
            rows = sink.close()
    run.steady_seconds = time.perf_counter() - clock[0] if clock else 0.0
    for index, path, reason in sorted(rows, key=lambda row: row[0]):
        if path is None:
            skipped[index] = reason
            run.unwritten.append(reason)
        else:
            run.written.append(path)
    run.skipped = [skipped[index] for index in sorted(skipped)]
    return run
