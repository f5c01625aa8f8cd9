"""Loader settings that suit the machine: how many CPU cores this process may use, and ``data.num_workers=auto``."""

from __future__ import annotations

import os
from typing import Any

import torch

from styletransfer.runtime.errors import ConfigError

#: Upper bound of ``data.num_workers=auto``: more workers than this rarely help one GPU and cost memory.
MAX_AUTO_WORKERS = 16


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_workers(value: Any) -> int:
    """``data.num_workers``: an integer >= 0, or ``auto``: the usable cores shared between this node's GPUs, one
    left to the process that drives each GPU, at least 1 and at most :data:`MAX_AUTO_WORKERS`."""
    if value == "auto":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return max(1, min(MAX_AUTO_WORKERS, usable_cores() // max(1, gpus) - 1))
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"data.num_workers must be auto or an integer >= 0 (0: load in the main process), "
                          f"got {value!r}")
    return value
