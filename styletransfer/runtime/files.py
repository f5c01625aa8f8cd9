"""Writing files atomically (images, weights, text, JSON, CSV): readers (a sweep table built while trials run, a
dashboard polling a run directory) never see a half-written JSON, CSV or Markdown file, and a crash leaves the
previous version."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from styletransfer.runtime.errors import ConfigError, RunDirectoryBusyError

#: Lock file a run holds in its directory, and the file naming the process that holds it.
LOCK_NAME, OWNER_NAME = ".run.lock", ".run.owner"
#: Suffix of the temporary files ``atomic_open`` writes before renaming them into place.
TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", sync: bool = False) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` (one rename on the same
    filesystem), on any error it is removed and ``path`` keeps its previous version. ``sync`` also forces the
    bytes to disk before the rename (checkpoints: a power cut then leaves the old file or the new one, whole).

    Creates the parent folders. The file gets the permissions of a plainly created one (0666 less the umask:
    0644 by default), not the 0600 of a temporary file. Temporaries are named ``.<name>.<random>.tmp``;
    ``remove_stale_temporaries`` deletes those a killed process left behind.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only ('w' or 'wb'), got mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        text: dict[str, Any] = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as handle:
            yield handle
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries ``atomic_open`` left in ``folder`` when its process was killed mid-write;
    returns them. Call it only where no other process is writing (a locked run directory)."""
    folder = Path(folder)
    stale = sorted(folder.glob(f".*{TEMP_SUFFIX}")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


#: Bytes read at a time when hashing a file (hashlib releases the GIL, so threads hash files in parallel).
HASH_CHUNK = 1 << 22


def hash_file_into(digest: Any, path: str | os.PathLike) -> None:
    """Feed the bytes of ``path`` to ``digest`` (a hashlib object) in chunks: a large file is never read whole."""
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, in lower-case hex."""
    digest = hashlib.sha256()
    hash_file_into(digest, path)
    return digest.hexdigest()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see ``atomic_open``); returns the path."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats (NaN, inf) replaced by None, so that any JSON reader can load the file
    (Python's json writes them as the non-standard ``NaN`` / ``Infinity``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` as indented, standard JSON (non-finite numbers as null, other objects as ``str``), atomically."""
    return write_text_atomic(path, json.dumps(json_safe(value), indent=2, default=str, allow_nan=False))


def write_csv_atomic(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV file (a header row, then ``rows``) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())


@contextmanager
def run_directory_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold ``<directory>/.run.lock`` while a run writes there: a second run into the same directory stops at
    start with an error naming the first (its process and host), instead of both overwriting each other's
    checkpoints, grids and logs. The lock goes with the process, so a killed run does not leave it held."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock, owner = FileLock(directory / LOCK_NAME), directory / OWNER_NAME
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = owner.read_text(encoding="utf-8").strip() if owner.is_file() else "another process"
        raise RunDirectoryBusyError(
            f"run directory {directory} is in use by {holder}. Two runs in one directory would overwrite each "
            "other's checkpoints: choose another hydra.run.dir, or resume that run with ckpt_path= after it ends."
        ) from None
    try:
        write_text_atomic(
            owner, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        )
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def refuse_finished_run(checkpoints: Path) -> None:
    """A new run (no ``ckpt_path``) would overwrite the checkpoints an earlier run left in its folder (``last.ckpt``
    and ``step_*.ckpt`` mixed with the new ones): refuse with the two ways on, before anything is written."""
    found = sorted(checkpoints.glob("*.ckpt")) if checkpoints.is_dir() else []
    if found:
        last = checkpoints / "last.ckpt"
        resume = last if last.exists() else found[-1]
        raise ConfigError(
            f"{checkpoints} already holds a run's checkpoints ({len(found)} file(s)): resume that run with "
            f"ckpt_path={resume}, or start a new one in another folder (leave hydra.run.dir out, or name a new one)"
        )


def check_writable_folder(folder: Path, setting: str) -> None:
    """Make ``folder`` if missing and make sure a file can be written there, before any work: a ConfigError naming
    ``setting`` (the flag) and the reason otherwise (a read-only or full disk, a path through a file)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{setting} {folder}: cannot write there ({reason}): choose a folder you can write") from None
