"""Reading weight files safely, and where torch.hub keeps downloaded ones.

Every ``.pth`` / ``.ckpt`` the project reads goes through :func:`safe_load`: ``torch.load(weights_only=True)``,
whose unpickler refuses any object that would import or call code before anything in the file runs.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from styletransfer.runtime.errors import CheckpointError, StyleTransferError
from styletransfer.runtime.files import atomic_open

#: Key under which :func:`save_atomic` stores :func:`tensor_checksum` in a saved dict; :func:`safe_load` checks it.
CHECKSUM_KEY = "styletransfer_tensor_sha256"


def _tensors(obj: object, name: str = "") -> Iterator[tuple[str, Tensor]]:
    """Every tensor in ``obj`` (nested dicts, lists, tuples) with its key path, in container order."""
    if isinstance(obj, Tensor):
        yield name, obj
        return
    items = obj.items() if isinstance(obj, Mapping) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        if key != CHECKSUM_KEY:
            yield from _tensors(value, f"{name}.{key}" if name else str(key))


def tensor_checksum(obj: object) -> str:
    """SHA-256 over every tensor of ``obj`` (key path, dtype, shape and bytes): what a flipped bit on disk or a
    half-copied file changes, whatever pickle's own framing still accepts."""
    digest = hashlib.sha256()
    for name, tensor in _tensors(obj):
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def save_atomic(obj: object, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` crash-safely: a temporary file in the same folder, forced to disk, renamed
    over ``path`` (a kill leaves the previous file or the new one, whole). The writer twin of ``safe_load``.

    A dict gets :data:`CHECKSUM_KEY`, the checksum of its tensors, which ``safe_load`` verifies. A folder that
    cannot be written (read-only, full disk, file size limit) raises CheckpointError naming the file; the
    previous version of the file is kept.
    """
    if isinstance(obj, dict):
        obj = {**obj, CHECKSUM_KEY: tensor_checksum(obj)}
    try:
        with atomic_open(path, "wb", sync=True) as handle:
            torch.save(obj, handle)
    except (OSError, RuntimeError) as exc:
        cause = _os_error(exc)
        if cause is None:
            raise
        reason = (
            "the disk is full or a file size limit was reached"
            if cause.errno in (errno.ENOSPC, errno.EFBIG)
            else cause.strerror or first_line(cause)
        )
        raise CheckpointError(
            f"could not write {path}: {reason} ({first_line(cause)}). The previous version of the "
            f"file, if any, is kept; free space or make {Path(path).parent} writable, then resume "
            "from the last checkpoint"
        ) from None


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc`` (torch.save reports a failed write as a RuntimeError caused by one), if any."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, shortened: the part of a library error worth showing a user."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {text[:limit]}"


#: Pickle opcodes that import or call: a plain pickle holding one would run code when unpickled.
CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "REDUCE"})


def _names_a_global(message: str) -> bool:
    """True when the weights-only unpickler stopped at an import or call (a GLOBAL opcode): the file holds code.
    Other unpickling failures ("Unsupported operand") mean the bytes are not a pickle at all (random data, a JPEG)."""
    return "global" in message.lower() and "unsupported operand" not in message.lower()


def _plain_pickle_runs_code(path: Path) -> bool:
    """True when ``path`` is a plain (not zip) pickle with an opcode that imports or calls: read with ``pickletools``,
    which only decodes opcodes (nothing runs). The weights-only unpickler stops at a protocol-4 FRAME before it
    reaches such an opcode, and its message would then say "not a pickle"."""
    if zipfile.is_zipfile(path):
        return False
    try:  # the whole stream must decode up to STOP: text or random bytes can start like opcodes
        names = {op.name for op, _, _ in pickletools.genops(path.read_bytes())}
    except Exception:  # not a pickle at all (random bytes, an image): no opcode to fear
        return False
    return bool(names & CODE_OPCODES)


def _truncated_zip(path: Path) -> bool:
    """A file that starts as a zip archive (PyTorch's format) but is not a whole one."""
    with path.open("rb") as handle:
        start = handle.read(4)
    return start == b"PK\x03\x04" and not zipfile.is_zipfile(path)


def _torch_reason(exc: BaseException) -> str:
    """PyTorch's reason for a failed load, shortened, and never its advice to turn the protection off."""
    text = first_line(exc)
    return "unreadable" if "weights_only" in text else text


def safe_load(
    path: str | os.PathLike, what: str = "checkpoint", error: type[StyleTransferError] = CheckpointError, hint: str = ""
) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; every failure raises ``error`` naming the file.

    ``what`` names the file's role in the messages ("checkpoint", "encoder weights file", ...); ``hint`` is
    appended to them (the ways out). A file whose unpickling would import or call anything (classes,
    functions, ``os.system``...) is refused by the weights-only unpickler before anything in it runs.
    """
    path = Path(path).expanduser()
    suffix = f"\n{hint}" if hint else ""
    if not path.exists():
        raise error(f"{what} {path} does not exist (resolved: {path.resolve()}){suffix}")
    if not path.is_file():
        raise error(f"{what} {path} is not a file{suffix}")
    if path.stat().st_size == 0:
        raise error(f"{what} {path} is empty (0 bytes): an interrupted copy or download? Copy it again{suffix}")
    try:
        with warnings.catch_warnings():  # PyTorch's advice on old pickle protocols, which a refusal makes moot
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip, EOF and format errors
        if (isinstance(exc, pickle.UnpicklingError) and _names_a_global(str(exc))) or _plain_pickle_runs_code(path):
            raise error(
                f"refused to load {what} {path}: it holds objects whose loading would run code, and only tensors "
                "and plain containers are accepted. Nothing from the file was run. Re-save the weights as a plain "
                f"state dict if you trust the file.{suffix}"
            ) from None
        if _truncated_zip(path):
            raise error(
                f"{what} {path} is incomplete: a PyTorch file whose end is missing (an interrupted copy, download "
                f"or save?). Copy it again or use an earlier checkpoint{suffix}"
            ) from None
        raise error(f"{path} is not a PyTorch checkpoint ({_torch_reason(exc)}){suffix}") from None
    if isinstance(obj, dict) and CHECKSUM_KEY in obj:
        stored = obj.pop(CHECKSUM_KEY)
        if stored != tensor_checksum(obj):
            raise error(
                f"{what} {path} is damaged: its tensors do not match the checksum written with them (a "
                f"corrupted disk or an incomplete copy). Copy it again or use an earlier checkpoint.{suffix}"
            )
    return obj


def as_state_dict(
    obj: object, path: str | os.PathLike, error: type[StyleTransferError] = CheckpointError
) -> dict[str, Tensor]:
    """``obj`` as a plain ``{str: Tensor}`` state dict, or ``error`` naming ``path`` and what it holds instead."""
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise error(
            f"{path} holds a {type(obj).__name__}, not a state dict of tensors "
            "(expected keys such as 'features.0.weight', '0.weight', ...)."
        )
    return dict(obj)


def first_non_finite(obj: object, name: str = "") -> str | None:
    """The key path (``state_dict.decoder.1.weight``) of the first floating tensor in ``obj`` (nested dicts and
    lists) holding a NaN or an infinity; None when every tensor is finite."""
    for path, tensor in _tensors(obj, name):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return path
    return None
