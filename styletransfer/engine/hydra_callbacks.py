"""Hydra callbacks of the entry points that act before Hydra writes anything into a run directory."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from styletransfer.runtime.errors import ConfigError, RunDirectoryBusyError
from styletransfer.runtime.files import check_writable_folder, refuse_finished_run, run_directory_lock


class LockRunDirectory(Callback):
    """Take the run directory's lock (``runtime.files.run_directory_lock``) before Hydra creates ``.hydra/`` and
    the log file there, so a second run into a busy directory stops without touching the first run's files.

    Single runs and rank zero only (DDP's other ranks are its children, in the same directory): each trial of a
    multirun gets its own sub-directory, locked by the training job itself. The job asks :meth:`holds` so that it
    does not try to take the lock this process already has.
    """

    #: Directories (resolved) whose lock a callback of this process holds.
    _directories: set[Path] = set()

    def __init__(self) -> None:
        self._held = ExitStack()

    @classmethod
    def holds(cls, directory: str | Path) -> bool:
        """True when this process's callback holds ``directory``'s lock."""
        return Path(directory).resolve() in cls._directories

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # DDP ranks > 0 are children of the run holding the lock, in its directory (Lightning sets .rank at import)
        if getattr(rank_zero_only, "rank", 0) != 0:
            return
        directory = Path(str(config.hydra.run.dir))
        try:  # a read-only or full disk, or a path through a file: one line, not Hydra's traceback of mkdir
            check_writable_folder(directory, "hydra.run.dir")
            self._held.enter_context(run_directory_lock(directory))
        except (ConfigError, RunDirectoryBusyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        self._directories.add(directory.resolve())
        self._held.callback(self._directories.discard, directory.resolve())
        if "ckpt_path" in config and not config.get("ckpt_path"):  # train.py's config (evaluate.py has none)
            try:  # a training run into a finished run's folder would overwrite its checkpoints (and .hydra/)
                refuse_finished_run(directory / "checkpoints")
            except ConfigError as exc:
                self._held.close()
                print(f"error: {exc}", file=sys.stderr)
                sys.exit(1)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._held.close()
