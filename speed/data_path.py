"""Time the training data path alone (no model): folders vs prepared caches, CPU vs GPU JPEG decoding.

    python speed/data_path.py                                   # 1200 640x480 JPEGs per folder, batch 8, crop 256
    python speed/data_path.py --device cpu --images 40 --batches 5 --workers 2     # a quick check on a laptop

Makes two folders of procedural JPEGs (content and style; reused when already there), prepares a JPEG and a raw
cache of each with ``styletransfer-prepare``'s function (timed: the prepare rows) and iterates each
variant's real training loader (``data=folders`` / ``data=cache``) for ``--batches`` batches after ``--warmup``:

* folders (CPU decode): Pillow decode + resize + crop per item in the workers (today's path);
* cache jpeg (CPU decode): workers decode the small cached JPEG and crop;
* cache jpeg (GPU decode): workers only draw crop boxes, the batch is decoded with batched nvJPEG (CUDA only);
* cache raw (CPU): workers copy the crop out of the memory-mapped pixels.

On CUDA each batch is also moved to the GPU (what training does), and the peak GPU memory of each row is shown.
images/s counts content and style images (2 x batch per batch); "per core" divides by the worker processes (the
data path's CPU cost). Other scripts import :func:`make_jpeg_folders`, :func:`prepare_caches`,
:func:`data_path_rows` (every variant).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timing import timed  # speed/timing.py

from styletransfer.data import CacheDataModule, ContentStyleDataModule
from styletransfer.data.loading import resolve_workers, usable_cores
from styletransfer.data.prepare import prepare

#: (label, ms per batch, batches per second, images per second); NaN where the row failed.
Row = tuple[str, float, float, float]


def make_jpeg_folders(root: str | Path, n: int, width: int = 640, height: int = 480,
                      seed: int = 0) -> tuple[Path, Path]:
    """``root/content`` and ``root/style``, each with ``n`` seeded procedural ``width`` x ``height`` JPEGs (quality 90,
    smooth colour fields with noise, like photos to a JPEG coder); folders made with the same settings are reused.
    Returns (content folder, style folder)."""
    root = Path(root)
    marker = root / "jpeg_folders.json"
    settings = {"n": n, "width": width, "height": height, "seed": seed}
    folders = (root / "content", root / "style")
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return folders
    rng = np.random.default_rng(seed)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            coarse = Image.fromarray(rng.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8))
            field = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
            noise = rng.integers(-12, 13, (height, width, 1), dtype=np.int16)
            Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg",
                                                                                   quality=90)
    marker.write_text(json.dumps(settings))
    return folders


def _endless(loader: Any) -> Iterator[dict[str, Any]]:
    """The loader's batches across epochs (a small folder has few batches per epoch)."""
    while True:
        yield from loader


def time_loader(datamodule: ContentStyleDataModule, device: torch.device, batches: int, warmup: int) -> Row:
    """Iterate ``datamodule``'s training loader as training does (JPEG bytes decoded on the GPU where the loader
    hands them out, batches moved to ``device``, the datamodule's after-transfer step: uint8 -> float);
    (label placeholder, ms/batch, batches/s, images/s)."""
    decode = isinstance(datamodule, CacheDataModule) and datamodule.decode_on_device()
    batches_iter = _endless(datamodule.train_dataloader())

    def step() -> int:
        batch = next(batches_iter)
        if decode:
            batch = datamodule.on_before_batch_transfer(batch, 0)
        batch = {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                 for key, value in batch.items()}
        batch = datamodule.on_after_batch_transfer(batch, 0)
        return batch["content"].shape[0] + batch["style"].shape[0]

    images: list[int] = []
    seconds, _ = timed(lambda: images.append(step()), device, batches, warmup)
    return "", seconds * 1e3, 1 / seconds, images[-1] / seconds


def _error(exc: BaseException) -> str:
    return f"error: {type(exc).__name__}: {exc}"[:100]


def _variants(folders: tuple[Path, Path], caches: dict[str, Path], device: torch.device, workers: int,
              options: dict[str, Any]) -> list[tuple[str, Any]]:
    """(label, function making the datamodule) for each row that applies to ``device``."""
    variants = [(f"folders (CPU decode, {workers} workers)",
                 lambda: ContentStyleDataModule(str(folders[0]), str(folders[1]), **options)),
                (f"cache jpeg (CPU decode, {workers} workers)",
                 lambda: CacheDataModule(str(caches["jpeg"]), decode="cpu", **options))]
    if device.type == "cuda":
        variants.append((f"cache jpeg (GPU decode, {workers} workers)",
                         lambda: CacheDataModule(str(caches["jpeg"]), decode="gpu", **options)))
    variants.append((f"cache raw (CPU, {workers} workers)",
                     lambda: CacheDataModule(str(caches["raw"]), decode="cpu", **options)))
    return variants


def data_path_rows(folders: tuple[Path, Path], caches: dict[str, Path], device: str | torch.device = "cpu",
                   batches: int = 50, workers: int | str = "auto", warmup: int = 5, batch: int = 8, crop: int = 256,
                   short_side: int = 512, errors: dict[str, str] | None = None) -> list[Row]:
    """Time the data path's variants (module docstring) on ``folders`` (from :func:`make_jpeg_folders`) and
    ``caches`` ({"jpeg": root, "raw": root} from :func:`prepare_caches`). A variant that fails gets NaN figures
    (its message goes to ``errors``, keyed by label) and the others still run. On CUDA the peak memory of each
    row is printed as it finishes."""
    device = torch.device(device)
    workers = resolve_workers(workers)
    options = {"short_side": short_side, "crop_size": crop, "batch_size": batch, "num_workers": workers,
               "val_pairs": 0, "prefetch_factor": 4 if workers else None, "seed": 0}
    rows: list[Row] = []
    for label, make in _variants(folders, caches, device, workers, options):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            _, ms, per_s, images = time_loader(make(), device, batches, warmup)
            rows.append((label, ms, per_s, images))
            peak = f", peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if device.type == "cuda" else ""
            print(f"{label}: {ms:.1f} ms/batch, {per_s:.1f} batches/s, {images:.0f} images/s{peak}", flush=True)
        except Exception as exc:  # one failing variant must not hide the others
            rows.append((label, math.nan, math.nan, math.nan))
            print(f"{label}: {_error(exc)}", flush=True)
            if errors is not None:
                errors[label] = _error(exc)
    return rows


def prepare_caches(folders: tuple[Path, Path], root: str | Path, short_side: int = 512, workers: int | None = None,
                   rebuild: bool = False, formats: tuple[str, ...] = ("jpeg", "raw"),
                   ) -> tuple[dict[str, Path], dict[str, float]]:
    """Prepare a cache of each format of both folders under ``root/<format>/{content,style}`` (reused when up to
    date, unless ``rebuild``); returns ({format: cache root}, {format: images/s of the preparation, NaN when
    nothing had to be prepared})."""
    roots, rates = {}, {}
    for fmt in formats:
        roots[fmt] = Path(root) / fmt
        processed, seconds = 0, 0.0
        for folder, name in zip(folders, ("content", "style")):
            summary = prepare(folder, roots[fmt] / name, short_side=short_side, fmt=fmt, workers=workers,
                              rebuild=rebuild, progress=False)
            processed, seconds = processed + summary.processed, seconds + summary.seconds
        rates[fmt] = processed / seconds if processed else math.nan
    return roots, rates


def _table(rows: list[tuple[str, str, str, str, str]]) -> str:
    header = ("variant", "ms/batch", "batches/s", "images/s", "images/s per core")
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--root", default="outputs/speed/data_path", help="where the folders and caches go")
    parser.add_argument("--images", type=int, default=1200, help="JPEGs per folder")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--batches", type=int, default=100, help="timed batches per variant")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches first (workers start here)")
    parser.add_argument("--workers", default="auto", help="loader workers: auto or a number")
    parser.add_argument("--prepare-workers", type=int, default=None, help="prepare processes (default: all cores)")
    parser.add_argument("--batch", type=int, default=8, help="content/style pairs per batch")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--short-side", type=int, default=512)
    args = parser.parse_args()
    device = torch.device(args.device)
    workers = resolve_workers(args.workers if args.workers == "auto" else int(args.workers))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"data path: batch {args.batch} pairs, crop {args.crop}, short side {args.short_side}, {args.images} "
          f"{args.width}x{args.height} JPEGs per folder, {workers} workers; {name}, torch {torch.__version__}")
    root = Path(args.root)
    folders = make_jpeg_folders(root / "folders", args.images, args.width, args.height)
    table: list[tuple[str, str, str, str, str]] = []
    prep_workers = args.prepare_workers
    try:
        caches, rates = prepare_caches(folders, root / "caches", args.short_side, prep_workers, rebuild=True)
        cores = prep_workers if prep_workers else usable_cores()
        for fmt, rate in rates.items():
            table.append((f"prepare {fmt} ({cores} processes)", "-", "-", f"{rate:.0f}", f"{rate / cores:.1f}"))
    except Exception as exc:
        caches = {"jpeg": root / "caches" / "jpeg", "raw": root / "caches" / "raw"}
        table.append(("prepare", _error(exc), "", "", ""))
    errors: dict[str, str] = {}
    for label, ms, per_s, images in data_path_rows(folders, caches, device, args.batches, workers, args.warmup,
                                                   args.batch, args.crop, args.short_side, errors):
        if label in errors:
            table.append((label, errors[label], "", "", ""))
            continue
        per_core = "-" if "GPU" in label else f"{images / max(1, workers):.1f}"
        table.append((label, f"{ms:.1f}", f"{per_s:.1f}", f"{images:.0f}", per_core))
    print()
    print(_table(table))


if __name__ == "__main__":
    main()
