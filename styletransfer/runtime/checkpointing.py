"""Periodic checkpoints whose ``last.ckpt`` is the newest one itself, not a second copy written after it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from styletransfer.runtime.files import TEMP_SUFFIX


class LatestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint with ``save_last="link"`` made crash-safe and portable.

    Lightning's link removes ``last.ckpt`` and then makes a symbolic link (a moment with no ``last.ckpt`` at all, and
    a dangling link once the periodic file is deleted). Here ``last.ckpt`` becomes a hard link to the periodic
    checkpoint just written, swapped in with one rename: it is always a whole checkpoint, and it is the newest
    periodic one from the moment that one is complete (one rename later, instead of a second 56 MB write later).
    Filesystems without hard links get a copy, renamed into place the same way.
    """

    @staticmethod
    def _link_checkpoint(trainer: pl.Trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            link = Path(linkpath)
            temporary = link.with_name(f".{link.name}.{os.getpid()}{TEMP_SUFFIX}")
            temporary.unlink(missing_ok=True)
            try:
                os.link(filepath, temporary)
            except OSError:
                shutil.copyfile(filepath, temporary)
            os.replace(temporary, link)
        trainer.strategy.barrier()
