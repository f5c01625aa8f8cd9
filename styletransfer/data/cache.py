"""A prepared image cache: images already resized for training, stored in memory-mapped shard files.

Why: decoding a full-size JPEG and resizing it in a loader worker costs more than an AdaIN step on a GPU. A cache
made once by ``styletransfer-prepare`` (``styletransfer.data.prepare``) holds every image at its training size,
so a worker only decodes a small JPEG (or, for a raw cache, copies pixels) and cuts the crop. Random access by
index keeps :class:`~styletransfer.data.resumable.SeededShuffle`'s exact resume and the folder path's pairing and
crop draws.

Layout of a cache folder ``DST``::

    DST/manifest.json       settings, shards (name, size, sha256), records, skipped sources
    DST/shards/00000.bin    records back to back: JPEG bytes (format "jpeg") or uint8 HWC pixels (format "raw")

A record is ``{"source", "size", "mtime_ns", "sha256", "shard", "offset", "length", "height", "width"}``: the
source file (relative to the prepared folder), its size, modification time and SHA-256 (how a rerun sees what
changed), where its bytes are and the image's size. Records are sorted by source path, as ``find_images`` sorts a
folder, so record ``i`` is the image the folder path would load as file ``i``.
"""

from __future__ import annotations

import io
import json
import os
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from styletransfer.runtime.errors import ConfigError, DataDirError, ImageLoadError
from styletransfer.runtime.files import atomic_open, sha256_file

if TYPE_CHECKING:  # torch only where a tensor is made: preparing a cache (its command and workers) needs none
    from styletransfer.data.transforms import EncodedImage

#: Version of the layout above; a cache of another version is refused (prepare it again).
CACHE_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_FOLDER = "shards"


def shard_name(number: int) -> str:
    """File name of shard ``number`` (``00000.bin``)."""
    return f"{number:05d}.bin"


def prepare_command(manifest: dict[str, Any], root: str | os.PathLike, rebuild: bool = True) -> str:
    """The command line that (re)makes the cache at ``root`` with the manifest's settings."""
    settings = manifest.get("settings", {})
    words = [
        "styletransfer-prepare",
        str(manifest.get("source_root", "SRC")),
        str(root),
        "--short-side",
        str(settings.get("short_side", 512)),
        "--format",
        str(settings.get("format", "jpeg")),
    ]
    if settings.get("format") == "jpeg":
        words += ["--quality", str(settings.get("quality", 95))]
    return shlex.join(words + (["--rebuild"] if rebuild else []))


def read_manifest(root: str | os.PathLike, setting: str = "cache") -> dict[str, Any]:
    """The manifest of the cache at ``root``; DataDirError naming ``setting`` when it is missing or not ours."""
    path = Path(root).expanduser() / MANIFEST_NAME
    how = "make it with: styletransfer-prepare SRC_FOLDER CACHE_FOLDER --short-side 512"
    if not path.is_file():
        raise DataDirError(f"{setting}: {path} does not exist, so {Path(root)} is not a prepared image cache; {how}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataDirError(f"{setting}: cannot read {path} ({exc}); {how} --rebuild") from None
    keys = ("version", "settings", "shards", "records", "skipped")
    if not isinstance(manifest, dict) or any(key not in manifest for key in keys):
        raise DataDirError(f"{setting}: {path} is not a manifest this project wrote; {how} --rebuild")
    if manifest["version"] != CACHE_VERSION:
        raise DataDirError(
            f"{setting}: {path} is a version {manifest['version']} cache, this version reads "
            f"{CACHE_VERSION}; prepare it again: {prepare_command(manifest, root)}"
        )
    return manifest


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write the manifest crash-safely (temporary file, fsync, rename), records sorted by source path."""
    manifest["records"].sort(key=lambda record: record["source"])
    manifest["skipped"].sort(key=lambda entry: entry["source"])
    with atomic_open(Path(root) / MANIFEST_NAME, "w", sync=True) as handle:
        json.dump(manifest, handle, indent=1)


class ShardCache:
    """A prepared cache opened for reading: record ``i``'s bytes, memory-mapped lazily in each process.

    The manifest is read when the object is made (in the main process); the shard maps are opened on first use and
    are not pickled, so each DataLoader worker maps the shards itself.
    """

    def __init__(self, root: str | os.PathLike, setting: str = "data.cache") -> None:
        self.root = Path(root).expanduser()
        self.setting = setting
        self.manifest = read_manifest(self.root, setting)
        settings = self.manifest["settings"]
        self.format: str = settings["format"]
        self.short_side: int = int(settings["short_side"])
        self.records: list[dict[str, Any]] = self.manifest["records"]
        self.source_root = Path(self.manifest.get("source_root", self.root))
        self._maps: dict[int, np.memmap] = {}
        if not self.records:
            raise DataDirError(
                f"{setting}: the cache {self.root} holds no image (every source was unreadable or the "
                f"prepare run stopped before its first shard); run: {self.rebuild_command()}"
            )

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}

    def rebuild_command(self) -> str:
        """The prepare command that rebuilds this cache."""
        return prepare_command(self.manifest, self.root)

    def source_path(self, index: int) -> str:
        """The original file of record ``index`` (what the folder path would name in messages)."""
        return str(self.source_root / self.records[index]["source"])

    def skipped(self) -> dict[str, str]:
        """Sources that prepare could not read: original path -> cause."""
        return {str(self.source_root / entry["source"]): entry["cause"] for entry in self.manifest["skipped"]}

    def payload(self, index: int) -> np.ndarray:
        """Record ``index``'s bytes: a read-only uint8 view into its memory-mapped shard."""
        record = self.records[index]
        shard = int(record["shard"])
        if shard not in self._maps:
            path = self.root / SHARD_FOLDER / shard_name(shard)
            self._maps[shard] = np.memmap(path, dtype=np.uint8, mode="r")
        return self._maps[shard][record["offset"] : record["offset"] + record["length"]]

    def verify(self, checksums: bool = True) -> None:
        """Check every shard against the manifest (existence and size; SHA-256 too when ``checksums``) and every
        record's bounds. Raises DataDirError naming the shard and the command that rebuilds the cache."""
        fix = f"rebuild the cache: {self.rebuild_command()}"
        sizes: dict[int, int] = {}
        for shard in self.manifest["shards"]:
            path = self.root / SHARD_FOLDER / shard_name(shard["number"])
            if not path.is_file():
                raise DataDirError(f"{self.setting}: shard {path} is missing; {fix}")
            size = path.stat().st_size
            if size != shard["size"]:
                raise DataDirError(
                    f"{self.setting}: shard {path} has {size} bytes, the manifest says {shard['size']} "
                    f"(truncated or overwritten); {fix}"
                )
            sizes[shard["number"]] = size
        for record in self.records:
            if record["shard"] not in sizes or record["offset"] + record["length"] > sizes[record["shard"]]:
                raise DataDirError(
                    f"{self.setting}: the record of {record['source']} points outside its shard "
                    f"{shard_name(record['shard'])}; {fix}"
                )
        if checksums and self.manifest["shards"]:
            shards = self.manifest["shards"]
            paths = [self.root / SHARD_FOLDER / shard_name(shard["number"]) for shard in shards]
            with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
                digests = list(pool.map(sha256_file, paths))
            for shard, path, digest in zip(shards, paths, digests):
                if digest != shard["sha256"]:
                    raise DataDirError(
                        f"{self.setting}: shard {path} does not match its checksum in the manifest (corrupted); {fix}"
                    )


def record_image(data: np.ndarray, record: dict[str, Any], fmt: str) -> Image.Image:
    """Record bytes -> RGB PIL image (a JPEG decoded, raw pixels wrapped without a copy)."""
    if fmt == "raw":
        return Image.frombuffer("RGB", (record["width"], record["height"]), data, "raw", "RGB", 0, 1)
    image = Image.open(io.BytesIO(data.tobytes()))
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


class CacheSource:
    """A :class:`ShardCache` as an image source for the datasets: PIL images, or with ``encoded`` the JPEG bytes
    and the image size (decoded later, per batch, on the GPU). A record that fails to decode raises
    ImageLoadError naming its source file, so it is skipped like an unreadable file."""

    def __init__(self, cache: ShardCache, kind: str, encoded: bool = False) -> None:
        if encoded and cache.format != "jpeg":
            raise ConfigError(
                f"{cache.setting}: only a JPEG cache can be decoded on the GPU; {cache.root} is "
                f"{cache.format}: set data.decode=cpu (raw pixels need no decoding)"
            )
        self.cache = cache
        self.kind = kind
        self.folder = str(cache.root)
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.cache)

    def read(self, index: int) -> Image.Image | EncodedImage:
        """Record ``index`` as an RGB image, or (``encoded``) its JPEG bytes and size."""
        record = self.cache.records[index]
        data = self.cache.payload(index)
        if self.encoded:
            import torch

            from styletransfer.data.transforms import EncodedImage

            return EncodedImage(torch.from_numpy(np.array(data)), int(record["height"]), int(record["width"]))
        try:
            return record_image(data, record, self.cache.format)
        except Exception as exc:  # Pillow raises many types for corrupt data
            raise ImageLoadError(
                f"{self.cache.source_path(index)} (cached in {self.cache.root})", f"{type(exc).__name__}: {exc}"
            ) from exc
