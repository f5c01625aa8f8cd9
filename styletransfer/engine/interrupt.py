"""Ctrl-C and SIGTERM (a scheduler's stop, a pre-empted job) end a run at the next step boundary, so that the
final checkpoint, ``decoder.pth`` and Gatys' current image are written as at a normal end, then the run exits
non-zero naming the checkpoint to resume from.

Lightning's own handling would stop mid-step (Ctrl-C raises wherever Python is, possibly between two parameter
updates) and save nothing. SLURM's requeue signal (SIGUSR1) is still Lightning's: it saves an HPC checkpoint and
requeues the job (``SLURMEnvironment(auto_requeue=True)``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)

#: Signals that stop a run at the next step; a second one of the same kind stops at once (no save).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal(pl.Callback):
    """Turn SIGINT / SIGTERM into ``trainer.should_stop`` at the end of the current step (see the module doc).

    ``received`` holds the signal once one came. With several DDP ranks the decision is shared every
    ``sync_every`` steps (one collective then, none in between), so every rank stops at the same step.
    """

    def __init__(self, sync_every: int = 10) -> None:
        self.sync_every = max(1, int(sync_every))
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._resume = "<run>/checkpoints/last.ckpt"  # the run's own path once ``setup`` knows it

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received == signum:  # asked twice: stop now, without the orderly save, with the shell's status
            name = signal.Signals(signum).name
            print(
                f"interrupted: a second {name}: stopped at once without saving; resume from the last checkpoint "
                f"(ckpt_path={self._resume})",
                file=sys.stderr,
                flush=True,
            )
            os._exit(128 + signum)  # every file is written atomically: nothing half-written is left behind
        self.received = signum
        log.warning(
            "%s received: stopping after this step and saving (send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Installed first here, before Lightning's sanity check of the validation loop: a Ctrl-C there is ours too
        (Lightning would raise KeyboardInterrupt and exit 1). Lightning then adds its SIGTERM notifier in front."""
        folder = getattr(getattr(trainer, "checkpoint_callback", None), "dirpath", None)
        if folder:
            self._resume = os.path.join(str(folder), "last.ckpt")
        self._install()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Installed again here, alone, after Lightning has set its own SIGTERM handler (which would raise mid-loop
        and exit 0). A SIGTERM that came during the sanity check set Lightning's flag, which would end the first step
        with its SIGTERMException (exit 0, nothing saved): it is taken over as ours. Lightning 2.6 offers no public
        way to clear that flag, hence ``trainer._signal_connector``."""
        self._install()
        if trainer.received_sigterm:
            self.received = signal.SIGTERM
            connector = getattr(trainer, "_signal_connector", None)
            if connector is not None:
                connector.received_sigterm = False

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            self._previous.setdefault(signum, signal.getsignal(signum))  # the handler from before the run
            signal.signal(signum, self._handle)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.world_size > 1:
            if trainer.global_step % self.sync_every == 0:
                stop = trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)
                trainer.should_stop = trainer.should_stop or stop
        elif self.received is not None:
            trainer.should_stop = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """After Lightning's own teardown, which puts back the handlers it found (ours, from ``setup``)."""
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        """Give the signals back to whoever handled them before the run."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
