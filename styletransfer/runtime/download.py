"""Resumable, verified downloads with the standard library (urllib) and a tqdm progress bar.

:func:`fetch` writes into ``<dest>.part`` beside the destination, continues an interrupted ``.part`` with an HTTP
Range request (and starts again cleanly when the server ignores it), checks the SHA-256 before anything is
installed, and installs with one rename: the destination is either absent, its previous version, or the verified
file, never a half-written or unverified one. Every failure is a :class:`DownloadError` naming the URL and the
destination, so a user without internet knows where to copy the file by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from styletransfer.runtime.errors import ChecksumMismatch, DownloadError
from styletransfer.runtime.files import hash_file_into

#: Suffix of the file a download writes into before it is verified and renamed into place.
PART_SUFFIX = ".part"
#: Bytes read per network read and per hashing step.
CHUNK_BYTES = 1 << 16
#: Seconds a connection may stall before the download fails (an offline machine fails fast instead of hanging).
TIMEOUT_S = 20.0
#: Length of a full SHA-256 in hex digits; shorter expected values are published prefixes.
FULL_SHA256 = 64
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def part_path(dest: str | os.PathLike) -> Path:
    """The temporary file a download of ``dest`` writes into, beside it (same folder: the install is one rename)."""
    dest = Path(dest)
    return dest.with_name(dest.name + PART_SUFFIX)


def sha256_matches(digest: str, expected: str) -> bool:
    """True when ``digest`` is ``expected``, or starts with it when ``expected`` is a published prefix."""
    return bool(expected) and digest.lower().startswith(expected.lower())


def describe_sha256(expected: str) -> str:
    """``expected`` as a message shows it: the full value, or "starting <prefix>" for a prefix."""
    return expected if len(expected) >= FULL_SHA256 else f"starting {expected} (the published prefix)"


def _reason(exc: BaseException) -> str:
    """A one-line cause for a network failure: DNS, refused connection, timeout, HTTP status or the OS's words."""
    cause: object = exc
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        cause = exc.reason  # what the URL error wraps: a socket error, a timeout, the OS's words
    if isinstance(cause, urllib.error.HTTPError):
        return f"HTTP {cause.code} {cause.reason}"
    if isinstance(cause, socket.gaierror):
        return f"the host name could not be resolved ({cause.strerror}; offline, or no DNS)"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused: the server is down or unreachable"
    if isinstance(cause, (TimeoutError, socket.timeout)):
        return f"no answer within {TIMEOUT_S:g} s (offline, or the server is stuck)"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return f"{type(cause).__name__}: {str(cause)[:200]}"


def _open(url: str, offset: int, timeout: float, dest: Path) -> tuple[Any, int, int | None]:
    """``(response, start, total)`` for ``url`` from byte ``offset``. ``start`` is ``offset`` when the server honoured
    the Range request, else 0 (the body is the whole file); ``total`` is the file's size when the server says it."""
    headers = {"User-Agent": "styletransfer-weights"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:  # the .part is not a prefix of this file (as long or longer): start again
            return _open(url, 0, timeout, dest)
        raise DownloadError(f"cannot download {url}: {_reason(exc)}. {manual_hint(url, dest)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"cannot download {url}: {_reason(exc)}. {manual_hint(url, dest)}") from None
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match and int(match[1]) == offset:
            return response, offset, None if match[3] == "*" else int(match[3])
        response.close()  # a range we did not ask for: start again from byte 0
        return _open(url, 0, timeout, dest)
    length = response.headers.get("Content-Length", "")
    return response, 0, int(length) if length.isdigit() else None


def manual_hint(url: str, dest: Path) -> str:
    """The way out when the network fails: where to get the file and where to copy it."""
    return f"To install it by hand, download {url} on a machine that reaches it and copy it to {dest}"


def _stream(
    response: Any, handle: IO[bytes], digest: Any, done: int, total: int | None, label: str, progress: bool
) -> int:
    """Copy the response body into ``handle`` and ``digest`` with a progress bar; returns the bytes now in the file."""
    from tqdm import tqdm  # third-party: imported here so that the command's --help needs only the standard library

    with tqdm(
        total=total,
        initial=done,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
            handle.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            bar.update(len(chunk))
    return done


def _download_part(url: str, dest: Path, timeout: float, progress: bool) -> str:
    """Download ``url`` into ``dest``'s ``.part`` file, resuming it if present; returns the whole file's SHA-256."""
    part = part_path(dest)
    offset = part.stat().st_size if part.is_file() else 0
    response, start, total = _open(url, offset, timeout, dest)
    digest, done = hashlib.sha256(), start
    try:
        with response, part.open("ab" if start else "wb") as handle:
            if start:
                hash_file_into(digest, part)
            try:
                done = _stream(response, handle, digest, start, total, dest.name, progress)
            finally:
                handle.flush()
                os.fsync(handle.fileno())
    except (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError) as exc:
        done = part.stat().st_size
        raise DownloadError(_interrupted(url, part, done, total, _reason(exc))) from None
    except OSError as exc:
        raise DownloadError(
            f"cannot write {part}: {exc.strerror or exc}. Free space or make {dest.parent} "
            "writable, then run the same command again"
        ) from None
    if total is not None and done < total:
        raise DownloadError(_interrupted(url, part, done, total, "the connection closed early"))
    return digest.hexdigest()


def _interrupted(url: str, part: Path, done: int, total: int | None, reason: str) -> str:
    of_total = f" of {total}" if total is not None else ""
    return (
        f"download of {url} interrupted after {done}{of_total} bytes ({reason}); {part} is kept: run the same "
        "command again to resume"
    )


def fetch(
    url: str,
    dest: str | os.PathLike,
    expected: str | None,
    *,
    timeout: float = TIMEOUT_S,
    progress: bool = True,
    check: Callable[[Path], None] | None = None,
) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it and install it; returns its SHA-256.

    ``expected`` is the full SHA-256 or a published prefix of it; None installs a file that ``check`` (called on
    the downloaded ``.part``) accepts, and the caller records its checksum. A mismatch, or ``check`` raising,
    deletes the ``.part`` file and raises (:class:`ChecksumMismatch` naming both values, or ``check``'s error);
    ``dest`` is then untouched. Network and disk failures raise :class:`DownloadError`.
    """
    dest = Path(dest).expanduser()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the folder {dest.parent}: {exc.strerror or exc}") from None
    got = _download_part(url, dest, timeout, progress)
    if expected is not None and not sha256_matches(got, expected):
        part_path(dest).unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"checksum mismatch for {url}: expected SHA-256 {describe_sha256(expected)}, got "
            f"{got}. Nothing was installed at {dest} (the download was deleted): a wrong URL, "
            "a changed file or a corrupted transfer"
        )
    if check is not None:
        try:
            check(part_path(dest))
        except BaseException:
            part_path(dest).unlink(missing_ok=True)
            raise
    try:
        os.replace(part_path(dest), dest)
    except OSError as exc:
        raise DownloadError(f"cannot install {dest}: {exc.strerror or exc}") from None
    return got
