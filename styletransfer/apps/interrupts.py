"""Ctrl-C and SIGTERM in the stylising commands: both become exceptions in the main thread, so that a command
finalises what it wrote (a video's partial clip) or counts it (a folder's images), says so in one line and exits
128 + the signal's number (``runtime.errors.RunInterrupted``)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(BaseException):
    """SIGTERM (a scheduler, ``timeout``) turned into an exception in the main thread, so that a command finishes
    what it was writing and says what is kept, as for Ctrl-C, instead of the process dying silently."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside, SIGTERM raises :class:`Terminated` (main thread only; the old handler comes back)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def signal_of(exc: BaseException) -> int:
    """The signal a KeyboardInterrupt (SIGINT) or :class:`Terminated` stands for."""
    return exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT)
