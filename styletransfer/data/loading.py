"""Loader settings that suit the machine: ``data.num_workers=auto`` from the cores this process may use."""

from __future__ import annotations

from typing import Any

import torch

from styletransfer.runtime.errors import ConfigError
from styletransfer.runtime.machine import usable_cores

#: Upper bound of ``data.num_workers=auto``: more workers than this rarely help one GPU and cost memory.
MAX_AUTO_WORKERS = 16


def resolve_workers(value: Any) -> int:
    """``data.num_workers``: an integer >= 0, or ``auto``: the usable cores shared between this node's GPUs, one
    left to the process that drives each GPU, at least 1 and at most :data:`MAX_AUTO_WORKERS`."""
    if value == "auto":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return max(1, min(MAX_AUTO_WORKERS, usable_cores() // max(1, gpus) - 1))
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(
            f"data.num_workers must be auto or an integer >= 0 (0: load in the main process), got {value!r}"
        )
    return value
