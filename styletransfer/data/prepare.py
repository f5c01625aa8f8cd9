"""Prepare an image cache for fast training: every image resized once, stored in memory-mapped shards.

    styletransfer-prepare SRC DST --short-side 512 [--workers N] [--format jpeg|raw] [--quality 95]
    styletransfer-prepare data/coco data/cache/content --short-side 512
    styletransfer-prepare data/wikiart data/cache/style --short-side 512
    python train.py method=adain data=cache data.cache=data/cache      # reads data/cache/{content,style}

Walks SRC recursively (the folder path's rules: ``find_images``), reads each image with ``load_rgb`` (any mode to
RGB, EXIF orientation applied; JPEG draft decoding when the source is at least twice the target), resizes its
shorter side to ``--short-side`` with the training resize (``resize_to_side``) and writes it to the cache
(``styletransfer.data.cache`` describes the layout): ``--format jpeg`` (default, quality 95: about 100-200 kB per
512 px image, decodable on the GPU) or ``--format raw`` (uint8 pixels, about 1 MB per 512 px image, no decoding).
Files are processed in parallel by ``--workers`` processes (default: the CPU cores this process may use).

Unreadable files are skipped, listed in the manifest and printed at the end; they never stop the run. Every write
is crash-safe: a shard is written to a temporary file, forced to disk and renamed, then the manifest is rewritten
(atomically) after each finished shard. So a rerun (or a run after a crash or Ctrl-C) keeps the finished shards
and only processes sources that are new or changed (size or modification time differ and the SHA-256 of the
contents too); it appends new shards. Sources that disappeared are dropped from the manifest (their bytes stay in
their shard until ``--rebuild``). A rerun with another ``--short-side``, ``--format`` or ``--quality`` is refused;
``--rebuild`` deletes the cache and makes it again.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from filelock import FileLock, Timeout
from tqdm import tqdm

from styletransfer.data.cache import (
    CACHE_VERSION,
    MANIFEST_NAME,
    SHARD_FOLDER,
    read_manifest,
    shard_name,
    write_manifest,
)
from styletransfer.data.images import find_images, load_rgb, resize_to_side
from styletransfer.runtime.choices import (
    CACHE_FORMATS,
    PREPARE_FORMAT,
    PREPARE_QUALITY,
    PREPARE_SHARD_MB,
    PREPARE_SHORT_SIDE,
)
from styletransfer.runtime.errors import ConfigError, DataDirError, ImageLoadError, WorkerDiedError
from styletransfer.runtime.files import atomic_open, remove_stale_temporaries
from styletransfer.runtime.machine import usable_cores


class Task(NamedTuple):
    """One source file to process: where it is, what it was seen as, and the cache's settings."""

    path: str
    source: str
    size: int
    mtime_ns: int
    old_sha256: str | None
    short_side: int
    format: str
    quality: int


class Result(NamedTuple):
    """What a worker made of a :class:`Task`: the encoded image, or why it failed, or that it is unchanged."""

    source: str
    size: int
    mtime_ns: int
    sha256: str
    payload: bytes
    height: int
    width: int
    cause: str | None
    unchanged: bool


class Summary(NamedTuple):
    """What a prepare run did."""

    images: int
    processed: int
    kept: int
    skipped: dict[str, str]
    removed: int
    shards_written: int
    seconds: float


def encode_image(
    path: str | os.PathLike, short_side: int, fmt: str, quality: int, data: bytes | None = None
) -> tuple[bytes, int, int]:
    """Read ``path`` (or decode its bytes ``data``) as training does, resize its shorter side to ``short_side``;
    (record bytes, height, width)."""
    image = resize_to_side(load_rgb(path, draft_side=short_side, data=data), short_side)
    if fmt == "raw":
        return np.asarray(image, dtype=np.uint8).tobytes(), image.height, image.width
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), image.height, image.width


def process(task: Task) -> Result:
    """Hash the source; unless its contents are the recorded ones, encode it (in a worker process). The file is read
    once: the bytes hashed are the bytes decoded."""

    def failed(cause: str, sha: str = "") -> Result:
        return Result(task.source, task.size, task.mtime_ns, sha, b"", 0, 0, cause, False)

    try:
        data = Path(task.path).read_bytes()
    except OSError as exc:
        return failed(f"{type(exc).__name__}: {exc}")
    sha = hashlib.sha256(data).hexdigest()
    if sha == task.old_sha256:
        return Result(task.source, task.size, task.mtime_ns, sha, b"", 0, 0, None, True)
    try:
        payload, height, width = encode_image(task.path, task.short_side, task.format, task.quality, data)
    except ImageLoadError as exc:
        return failed(exc.cause, sha)
    return Result(task.source, task.size, task.mtime_ns, sha, payload, height, width, None, False)


def _check_arguments(short_side: int, fmt: str, quality: int, workers: int | None, shard_mb: float) -> None:
    for flag, value, low in (("--short-side", short_side, 1), ("--quality", quality, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{flag} must be an integer >= {low}, got {value!r}")
    if quality > 100:
        raise ConfigError(f"--quality must be between 1 and 100, got {quality}")
    if fmt not in CACHE_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(CACHE_FORMATS)}, got {fmt!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise ConfigError(f"--workers must be an integer >= 0 (0: in this process), got {workers!r}")
    if not shard_mb > 0:
        raise ConfigError(f"--shard-mb must be > 0, got {shard_mb!r}")


def _open_manifest(src: Path, dst: Path, settings: dict[str, Any], rebuild: bool) -> dict[str, Any]:
    """The existing manifest if its settings match (or a fresh one); stale temporaries and orphan shards removed."""
    fresh: dict[str, Any] = {
        "version": CACHE_VERSION,
        "settings": settings,
        "source_root": str(src),
        "checksum": "sha256",
        "shards": [],
        "records": [],
        "skipped": [],
    }
    manifest = read_manifest(dst, "DST") if (dst / MANIFEST_NAME).exists() and not rebuild else fresh
    if manifest["settings"] != settings:
        have = manifest["settings"]
        raise ConfigError(
            f"{dst} was prepared with --short-side {have['short_side']} --format {have['format']} "
            f"--quality {have['quality']}, not --short-side {settings['short_side']} --format "
            f"{settings['format']} --quality {settings['quality']}: rerun with those settings, or "
            f"add --rebuild to delete the cache and make it again"
        )
    if manifest["source_root"] != str(src):
        print(f"note: {dst} was prepared from {manifest['source_root']}; updating it from {src}", file=sys.stderr)
        manifest["source_root"] = str(src)
    shards = dst / SHARD_FOLDER
    remove_stale_temporaries(shards)
    kept = {shard_name(shard["number"]) for shard in manifest["shards"]}
    for path in sorted(shards.glob("*.bin")) if shards.is_dir() else []:
        if path.name not in kept:  # written by a run that stopped before its manifest, or a deleted cache
            path.unlink()
    if manifest is fresh:
        (dst / MANIFEST_NAME).unlink(missing_ok=True)
    return manifest


def _plan(src: Path, manifest: dict[str, Any], settings: dict[str, Any]) -> tuple[list[Task], int, int]:
    """Tasks for the sources that are new or changed; drops vanished sources from ``manifest``.
    (tasks, number of sources, number removed)"""
    known = {entry["source"]: entry for entry in manifest["records"] + manifest["skipped"]}
    tasks, present = [], set()
    for path in find_images(src):
        source = path.relative_to(src).as_posix()
        present.add(source)
        stat = path.stat()
        entry = known.get(source)
        if entry is not None and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            continue
        old = entry.get("sha256") if entry is not None and "shard" in entry else None
        tasks.append(
            Task(
                str(path),
                source,
                stat.st_size,
                stat.st_mtime_ns,
                old,
                settings["short_side"],
                settings["format"],
                settings["quality"],
            )
        )
    removed = sum(1 for source in known if source not in present)
    for key in ("records", "skipped"):
        manifest[key] = [entry for entry in manifest[key] if entry["source"] in present]
    return tasks, len(present), removed


#: Blocked while the pool starts its workers, and unblocked by each once its handlers are set (_quiet_worker).
_WORKER_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _quiet_worker() -> None:
    """A worker's signals: Ctrl-C, which a terminal sends to the whole process group, is the parent's to handle
    (it stops the pool, keeps the finished shards and says so in one line), and a SIGTERM ends a worker at once,
    without the traceback a handler inherited from the parent would print. The worker starts with both blocked
    (:func:`_results`), so one sent while it starts waits for these handlers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WORKER_SIGNALS)


def _results(tasks: list[Task], workers: int) -> Iterator[Result]:
    """Process ``tasks`` in order, in ``workers`` processes (0 or 1: in this one).

    A ``concurrent.futures`` process pool, not ``multiprocessing.Pool``: a worker that dies (a SIGTERM sent to the
    process group, the out-of-memory killer) breaks it with ``BrokenProcessPool`` at once, where ``Pool`` waited
    forever for the lost task, or for the queue lock a worker killed while waiting for work still held. An early
    exit (an error, Ctrl-C) cancels the tasks not started and waits for the workers' current ones."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(process, tasks)
        return
    workers = min(workers, len(tasks))
    context = get_context("spawn" if sys.platform == "darwin" else "fork")
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)  # inherited by the workers made in map()
    try:
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_quiet_worker)
        results = pool.map(process, tasks, chunksize=max(1, min(16, len(tasks) // (workers * 8))))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    try:
        yield from results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _chunks(results: Iterable[Result], shard_bytes: int) -> Iterator[list[Result]]:
    """Group results into shards of at most ``shard_bytes`` (one larger record makes a shard of its own)."""
    chunk: list[Result] = []
    size = 0
    for result in results:
        if chunk and size + len(result.payload) > shard_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(result)
        size += len(result.payload)
    if chunk:
        yield chunk


def _replace(manifest: dict[str, Any], key: str, entries: list[dict[str, Any]]) -> None:
    """Put ``entries`` into ``manifest[key]``, replacing the entries of the same sources in records and skipped."""
    sources = {entry["source"] for entry in entries}
    for name in ("records", "skipped"):
        manifest[name] = [entry for entry in manifest[name] if entry["source"] not in sources]
    manifest[key].extend(entries)


def write_shard(dst: Path, number: int, results: list[Result]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write the encoded ``results`` as shard ``number`` (temporary file, fsync, rename); (shard entry, records)."""
    digest, records, offset = hashlib.sha256(), [], 0
    with atomic_open(dst / SHARD_FOLDER / shard_name(number), "wb", sync=True) as handle:
        for result in results:
            handle.write(result.payload)
            digest.update(result.payload)
            records.append(
                {
                    "source": result.source,
                    "size": result.size,
                    "mtime_ns": result.mtime_ns,
                    "sha256": result.sha256,
                    "shard": number,
                    "offset": offset,
                    "length": len(result.payload),
                    "height": result.height,
                    "width": result.width,
                }
            )
            offset += len(result.payload)
    return {"number": number, "name": shard_name(number), "size": offset, "sha256": digest.hexdigest()}, records


def _store(dst: Path, manifest: dict[str, Any], chunk: list[Result]) -> bool:
    """Record one chunk: its images as a new shard, its failures and unchanged sources in the manifest; then
    rewrite the manifest. True when a shard was written."""
    encoded = [r for r in chunk if r.cause is None and not r.unchanged]
    unchanged = {r.source: r for r in chunk if r.unchanged}
    for record in manifest["records"]:
        if record["source"] in unchanged:  # same contents, touched: only the modification time moved
            record["size"], record["mtime_ns"] = unchanged[record["source"]].size, unchanged[record["source"]].mtime_ns
    _replace(
        manifest,
        "skipped",
        [
            {"source": r.source, "size": r.size, "mtime_ns": r.mtime_ns, "cause": r.cause}
            for r in chunk
            if r.cause is not None
        ],
    )
    if encoded:
        number = max((shard["number"] for shard in manifest["shards"]), default=-1) + 1
        shard, records = write_shard(dst, number, encoded)
        manifest["shards"].append(shard)
        _replace(manifest, "records", records)
    write_manifest(dst, manifest)
    return bool(encoded)


def prepare(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    short_side: int = PREPARE_SHORT_SIDE,
    fmt: str = PREPARE_FORMAT,
    quality: int = PREPARE_QUALITY,
    workers: int | None = None,
    rebuild: bool = False,
    shard_mb: float = PREPARE_SHARD_MB,
    progress: bool = True,
) -> Summary:
    """Make or update the cache ``dst`` from the images under ``src`` (see the module docstring)."""
    _check_arguments(short_side, fmt, quality, workers, shard_mb)
    start = time.perf_counter()
    src, dst = Path(src).expanduser().resolve(), Path(dst).expanduser()
    if not src.is_dir():
        raise DataDirError(f"SRC: {src} is not a folder; give the folder of images to prepare")
    settings = {"short_side": short_side, "format": fmt, "quality": quality if fmt == "jpeg" else 0}
    dst.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(dst / ".prepare.lock", timeout=0):
            manifest = _open_manifest(src, dst, settings, rebuild)
            tasks, total, removed = _plan(src, manifest, settings)
            workers = usable_cores() if workers is None else workers
            with tqdm(
                _results(tasks, workers), total=len(tasks), unit="img", disable=not progress, desc=f"prepare {dst}"
            ) as results:  # closed before an interrupt's line is printed
                try:
                    shards = sum(_store(dst, manifest, chunk) for chunk in _chunks(results, int(shard_mb * 2**20)))
                except BrokenProcessPool:
                    raise WorkerDiedError(
                        f"a prepare worker process ended unexpectedly (killed by a signal, or out of memory); the "
                        f"shards finished so far are kept in {dst}; run the same command again to continue (with "
                        "fewer --workers if memory ran short)"
                    ) from None
            if not tasks:
                write_manifest(dst, manifest)
    except Timeout:
        raise ConfigError(
            f"another prepare run is writing {dst} (it holds {dst / '.prepare.lock'}); wait for it to finish"
        ) from None
    skipped = {entry["source"]: entry["cause"] for entry in manifest["skipped"]}
    return Summary(
        len(manifest["records"]), len(tasks), total - len(tasks), skipped, removed, shards, time.perf_counter() - start
    )
