"""Facts about this machine that defaults are derived from (standard library only: the commands' ``--help`` stays
instant)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def launched_local_rank() -> int:
    """This process's rank on its node when a launcher started it as one of several (``LOCAL_RANK``, set by
    torchrun and by Lightning's DDP launcher for the processes it starts), else 0."""
    text = os.environ.get("LOCAL_RANK", "0")
    return int(text) if text.isdigit() else 0
