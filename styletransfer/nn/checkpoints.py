"""Training checkpoints, in one place: the trainer plugin that writes them crash-safely and reads them weights-only
(``trainer.plugins`` in ``configs/trainer/default.yaml``), the checked readers a module's ``load_from_checkpoint``
uses, the periodic checkpoints whose ``last.ckpt`` is the newest one (``callbacks.model_checkpoint``), and the final
checkpoint at the end of a run.

Kept apart from ``nn.weights`` (the safe reader and writer of any weight file) so that inference and export never
load Lightning.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerStatus

from styletransfer.nn.weights import first_non_finite, safe_load, save_atomic
from styletransfer.runtime.errors import CheckpointError
from styletransfer.runtime.files import TEMP_SUFFIX

log = logging.getLogger(__name__)

#: A resumed checkpoint's role and the fix, as messages name them.
RESUME_WHAT = "checkpoint to resume from (ckpt_path)"
RESUME_FIX = "pass ckpt_path=<run>/checkpoints/last.ckpt"


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, written crash-safely and read weights-only (``trainer.plugins`` in the configs).

    Saving writes a temporary file in the checkpoint's folder, forces it to disk and renames it over the target,
    so a kill at any moment leaves the previous checkpoint or the new one, never a truncated file (Lightning's own
    writer truncates the target first). Loading (``ckpt_path=`` resume) always goes through :func:`safe_load`,
    whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` or a caller's ``weights_only=False`` says: a checkpoint whose
    unpickling would run code is refused, and a missing, truncated or foreign file, or one holding NaN or infinite
    weights or optimiser state, is named in a CheckpointError.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomic(checkpoint, path)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(path, RESUME_WHAT, RESUME_FIX)


def read_checkpoint(path: str | os.PathLike, what: str, fix: str) -> dict[str, Any]:
    """A Lightning checkpoint of this project read by :func:`safe_load`: weights only, its checksum checked, with a
    ``state_dict`` and no NaN or infinite weights or optimiser state. CheckpointError naming the file and ``fix``
    otherwise (``what`` is the file's role in the messages)."""
    checkpoint = safe_load(path, what, CheckpointError)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint of this project (no 'state_dict'): {fix}")
    broken = first_non_finite({k: checkpoint.get(k) for k in ("state_dict", "optimizer_states")})
    if broken is not None:
        raise CheckpointError(
            f"{path} holds NaN or infinite values ({broken}): its weights are broken. Use an "
            "earlier checkpoint of the run (checkpoints/step_*.ckpt)."
        )
    return checkpoint


def check_resume_fits(model: pl.LightningModule, path: str | os.PathLike, method: str) -> None:
    """Refuse ``ckpt_path`` before training starts when its weights are another model's: the checkpoint's state dict
    and ``model``'s must hold the same top-level modules (e.g. ``encoder`` and ``decoder`` for AdaIN, ``network`` and
    ``loss`` for fast style), else the resume would end in Lightning's wall of missing and unexpected keys. Finer
    differences (a layer more or less) are left to Lightning's strict load, which some methods adapt first."""
    checkpoint = read_checkpoint(path, RESUME_WHAT, RESUME_FIX)
    found = sorted({str(key).split(".")[0] for key in checkpoint["state_dict"]})
    expected = sorted({key.split(".")[0] for key in model.state_dict()})
    if found != expected:
        raise CheckpointError(
            f"{RESUME_WHAT} {path} holds the weights of another model ({', '.join(found) or 'none'}; {method} has "
            f"{', '.join(expected)}): resume it with the method and settings of the run that wrote it (its "
            ".hydra/config.yaml), or leave ckpt_path out to start a new run"
        )


def read_run_checkpoint(path: str | os.PathLike, run: str, holds: str) -> dict[str, Any]:
    """:func:`read_checkpoint` of a training checkpoint of ``run`` (e.g. "an AdaIN run (method=adain)"), for a
    module's ``load_from_checkpoint``: its ``state_dict`` must hold ``holds`` (a key or a module's keys) and its
    hyper-parameters must be there."""
    fix = f"pass <run dir>/checkpoints/last.ckpt of {run}"
    checkpoint = read_checkpoint(path, f"checkpoint of {run}", fix)
    state = checkpoint["state_dict"]
    if not (
        isinstance(state, Mapping)
        and any(key == holds or key.startswith(f"{holds}.") for key in state)
        and isinstance(checkpoint.get("hyper_parameters"), Mapping)
    ):
        raise CheckpointError(f"{path} is not a training checkpoint of {run}: it holds no {holds} and settings; {fix}")
    return checkpoint


class LatestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose ``last.ckpt`` is the newest periodic checkpoint itself, crash-safely.

    After each periodic save (``every_n_train_steps``), ``last.ckpt`` becomes a hard link to the file just written,
    swapped in with one rename: it is always a whole checkpoint, and the newest one from the moment that one is
    complete (one rename later, instead of a second 56 MB write later). Filesystems without hard links get a copy,
    renamed into place the same way. Lightning's own ``save_last`` stays off: its link is removed and remade (a moment
    with no ``last.ckpt``, a dangling link once the periodic file is deleted), and a run resumed into the folder of
    the run it resumes would name its links ``last-v1.ckpt``, leaving ``last.ckpt`` at the older step. Version
    counters are off for the same reason: a resumed run writes the names a fresh run would.

    The link is made from the public hooks, after Lightning's save: Lightning 2.6 offers no public hook for its
    ``save_last`` link itself (``ModelCheckpoint._link_checkpoint`` is private).
    """

    def __init__(self, *args: Any, last_link: bool = True, **kwargs: Any) -> None:
        kwargs.update(save_last=False, enable_version_counter=False)
        super().__init__(*args, **kwargs)
        self.last_link = bool(last_link)

    @property
    def last_path(self) -> Path | None:
        """Where ``last.ckpt`` goes (None without a folder)."""
        if self.dirpath is None:
            return None
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def _after_save(self, trainer: pl.Trainer, newest_before: str) -> None:
        if self.last_link and self.best_model_path and self.best_model_path != newest_before:
            self.link_last(trainer, self.best_model_path)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        before = self.best_model_path
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        self._after_save(trainer, before)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        before = self.best_model_path
        super().on_train_epoch_end(trainer, pl_module)
        self._after_save(trainer, before)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        before = self.best_model_path
        super().on_validation_end(trainer, pl_module)
        self._after_save(trainer, before)

    def link_last(self, trainer: pl.Trainer, filepath: str) -> None:
        """Make ``last.ckpt`` the file ``filepath`` (rank zero; every rank waits), by a temporary hard link (or copy)
        renamed into place."""
        link = self.last_path
        if trainer.is_global_zero and link is not None and Path(filepath).resolve() != link.resolve():
            if not (link.exists() and os.path.samefile(filepath, link)):  # renaming a link onto itself is a no-op
                temporary = link.with_name(f".{link.name}.{os.getpid()}{TEMP_SUFFIX}")
                temporary.unlink(missing_ok=True)
                try:
                    os.link(filepath, temporary)
                except OSError:
                    shutil.copyfile(filepath, temporary)
                os.replace(temporary, link)
        trainer.strategy.barrier()


def save_final_checkpoint(trainer: pl.Trainer) -> Path | None:
    """Make ``last.ckpt`` hold the final state of a finished run (periodic saves leave it at the last multiple of
    ``every_n_train_steps``); returns its path, or None when checkpointing is off or the run did not finish."""
    callback = trainer.checkpoint_callback
    last = callback.last_path if isinstance(callback, LatestCheckpoint) and callback.last_link else None
    if last is None or trainer.state.status != TrainerStatus.FINISHED:
        return None
    trainer.save_checkpoint(last, weights_only=False)
    log.info("final checkpoint written to %s", last)
    return last


class LoadsRunCheckpoints:
    """``load_from_checkpoint`` for a LightningModule (list this class before ``pl.LightningModule``): the module of
    one of its training checkpoints, always read weights-only and checked as for resuming
    (:func:`read_run_checkpoint`; ``weights_only`` and ``hparams_file`` are ignored), never by Lightning's loader,
    which unpickles anything with ``weights_only=False`` or TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD set.

    A subclass sets ``checkpoint_of`` (:func:`read_run_checkpoint`'s ``run`` and ``holds``) and may adapt the saved
    hyper-parameters to its constructor (:meth:`saved_settings`)."""

    checkpoint_of: tuple[str, str]

    @classmethod
    def saved_settings(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor's arguments from a checkpoint's hyper-parameters."""
        return dict(hparams)

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | os.PathLike,
        map_location: str | torch.device | None = None,
        hparams_file: Any = None,
        strict: bool = True,
        weights_only: bool | None = None,
        **settings: Any,
    ) -> Any:
        """The module of the checkpoint, on ``map_location`` (default the CPU); ``settings`` override the saved
        hyper-parameters. ``on_load_checkpoint`` sees the checkpoint before its state dict is loaded."""
        checkpoint = read_run_checkpoint(checkpoint_path, *cls.checkpoint_of)
        model = cls(**{**cls.saved_settings(checkpoint["hyper_parameters"]), **settings})
        model = model.to(map_location or "cpu")  # type: ignore[attr-defined]
        model.on_load_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["state_dict"], strict=strict)
        return model
