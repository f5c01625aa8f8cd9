"""Reading weight files safely, and where torch.hub keeps downloaded ones.

Every ``.pth`` / ``.ckpt`` the project reads goes through :func:`safe_load`: ``torch.load(weights_only=True)``,
whose unpickler refuses any object that would import or call code before anything in the file runs.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from styletransfer.runtime.errors import CheckpointError, StyleTransferError


def hub_checkpoint(name: str) -> Path:
    """Where torch.hub's cache keeps (and torchvision's loaders look for) a downloaded file called ``name``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, shortened: the part of a library error worth showing a user."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {text[:limit]}"


def safe_load(path: str | os.PathLike, what: str = "checkpoint", error: type[StyleTransferError] = CheckpointError,
              hint: str = "") -> Any:
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
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) or "Unsupported global" in str(exc):
            raise error(
                f"refused to load {what} {path}: it holds objects whose unpickling would run code, and only tensors "
                "and plain containers are accepted (torch.load weights_only=True). Nothing from the file was run. "
                f"Re-save the weights as a plain state dict if you trust the file.{suffix}"
            ) from None
        raise error(f"{path} is not a PyTorch checkpoint ({first_line(exc)}){suffix}") from None
    except Exception as exc:  # zip/EOF/format errors: not a checkpoint at all
        raise error(f"{path} is not a PyTorch checkpoint ({first_line(exc)}){suffix}") from None


def as_state_dict(obj: object, path: str | os.PathLike, error: type[StyleTransferError] = CheckpointError) -> dict[str, Tensor]:
    """``obj`` as a plain ``{str: Tensor}`` state dict, or ``error`` naming ``path`` and what it holds instead."""
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise error(
            f"{path} holds a {type(obj).__name__}, not a state dict of tensors "
            "(expected keys such as 'features.0.weight', '0.weight', ...)."
        )
    return dict(obj)
