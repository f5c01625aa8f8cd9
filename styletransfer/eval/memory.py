"""The peak memory a model uses while it stylises the benchmark: on a GPU the most memory PyTorch allocated there
(``torch.cuda.max_memory_allocated`` after resetting it); on the CPU the process's peak resident set (Linux
``VmHWM``, reset by writing 5 to ``/proc/self/clear_refs``), which counts everything the process holds (the
encoder of the metrics, the benchmark) and so compares models rather than measuring one alone. Before that reset,
glibc's ``malloc_trim`` hands the memory that earlier work freed back to the system: otherwise a model could reuse
freed pages that are still resident and its peak would not show them. Elsewhere (another OS, a kernel that refuses
the reset) it is not measured."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
#: What the number is, as the report names it.
KINDS = {"cuda": "CUDA memory allocated", "cpu": "process resident set"}


def reset_peak(device: torch.device) -> bool:
    """Start a new peak; False where it cannot be measured."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    if device.type != "cpu":
        return False
    _trim_heap()
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _rss_peak_bytes() is not None


def peak_mib(device: torch.device) -> float | None:
    """The peak since :func:`reset_peak`, in MiB (None where it cannot be measured)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _rss_peak_bytes() if device.type == "cpu" else None
    return None if peak is None else peak / 2**20


def _trim_heap() -> None:
    """Return the C heap's free pages to the system (glibc ``malloc_trim``; nothing where libc has none)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is not None:
        trim(0)


def _rss_peak_bytes() -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
