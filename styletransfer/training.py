"""Compose the pieces named by the Hydra config and run one training job."""

from __future__ import annotations

import logging
import math
import signal
import warnings
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from styletransfer.engine.hydra_callbacks import LockRunDirectory
from styletransfer.engine.instantiate import instantiate_checked, instantiate_group, uses_wandb
from styletransfer.engine.interrupt import StopOnSignal
from styletransfer.engine.wandb_mode import choose_wandb_mode
from styletransfer.nn.checkpoints import check_resume_fits, save_final_checkpoint
from styletransfer.runtime.errors import RunInterrupted
from styletransfer.runtime.files import (
    refuse_finished_run,
    remove_stale_temporaries,
    run_directory_lock,
    write_text_atomic,
)

log = logging.getLogger(__name__)

#: Lightning warnings about what the project does on purpose, which a user cannot act on: the frozen encoder stays
#: in eval mode; a method trained on content alone (fast style) has no validation step while the datamodule, shared
#: by every method, offers a validation loader (empty with data.val_pairs=0); Lightning 2.6's own use of a
#: deprecated torch pytree name.
QUIET_WARNINGS = (
    r".*module\(s\) in eval mode.*",
    r".*passed in a `val_dataloader` but have no `validation_step`.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)
#: Loggers of Lightning's rank-zero messages, where Lightning 2.6 advertises a cloud service at every fit.
LIGHTNING_INFO = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


def _no_advert(record: logging.LogRecord) -> bool:
    """Drops Lightning's "Tip: ... try installing litlogger" line (an advert, nothing the run needs)."""
    return "litlogger" not in str(record.msg)


def run(cfg: DictConfig) -> dict[str, float]:
    """Train the configured method on the configured data; return the final metrics as floats.

    The run directory is locked for the whole run (rank zero; the other DDP ranks are its children), and the
    temporaries of a killed earlier run in it are removed first.
    """
    output_dir = Path(cfg.paths.output_dir)
    loggers = [logging.getLogger(name) for name in LIGHTNING_INFO]
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.addFilter(_no_advert)
        try:
            return _locked_run(cfg, output_dir)
        finally:
            for logger in loggers:
                logger.removeFilter(_no_advert)


def _locked_run(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    if getattr(rank_zero_only, "rank", 0) != 0:  # Lightning sets .rank at import
        return _run(cfg, output_dir)
    with ExitStack() as held:
        if not LockRunDirectory.holds(output_dir):  # train.py's Hydra callback took it before Hydra wrote there
            held.enter_context(run_directory_lock(output_dir))
        for folder in (output_dir, output_dir / "checkpoints"):
            for stale in remove_stale_temporaries(folder):
                log.warning("removed %s, left by a run that was killed while writing", stale)
        if not cfg.get("ckpt_path"):
            refuse_finished_run(output_dir / "checkpoints")
        return _run(cfg, output_dir)


def _run(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """The training job itself: data, model, trainer, fit, the final checkpoint, then the objective if any."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if uses_wandb(cfg.get("logger")):
        choose_wandb_mode()

    # The objective's own config builds it (``_target_``), only when a sweep configures one: training never imports
    # the sweep or evaluation code.
    objective = instantiate_checked(cfg.objective) if cfg.get("objective") else None
    pl.seed_everything(cfg.seed, workers=True)
    datamodule: pl.LightningDataModule = instantiate_checked(cfg.data)
    encoder_cfg = OmegaConf.to_container(cfg.encoder, resolve=True)
    model: pl.LightningModule = instantiate_checked(cfg.method, encoder=encoder_cfg)
    if cfg.get("ckpt_path"):
        check_resume_fits(model, cfg.ckpt_path, type(model).__name__)  # before anything is written
    record_run_config(cfg, model, output_dir)

    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate_checked(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    last = save_final_checkpoint(trainer)
    stopper = next((c for c in callbacks if isinstance(c, StopOnSignal)), None)
    if stopper is not None and stopper.received is not None:
        name = signal.Signals(stopper.received).name
        raise RunInterrupted(
            f"{name} at step {trainer.global_step}: saved {last or 'no checkpoint (checkpointing off)'}; "
            f"resume with the same command plus ckpt_path={last}",
            stopper.received,
        )
    if trainer.is_global_zero:
        report_skipped(datamodule)
        log.info("run directory: %s", output_dir)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if objective is not None:
        metrics.update(score_objective(objective, model, datamodule, trainer, metrics, encoder_cfg))
    non_finite = [k for k, v in metrics.items() if not math.isfinite(v)]
    if non_finite:
        log.warning("non-finite final metrics: %s", ", ".join(non_finite))
    return metrics


def score_objective(
    objective: Any,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    trainer: pl.Trainer,
    metrics: dict[str, float],
    encoder_cfg: Any,
) -> dict[str, float]:
    """Measure the sweep objective after training (``objective.measure``: styletransfer.sweeps.objective) and send
    it to the loggers."""
    scores = objective.measure(model, datamodule, trainer, metrics, encoder_cfg)
    for logger in trainer.loggers:
        logger.log_metrics(scores, step=trainer.global_step)
        logger.save()
    return scores


@rank_zero_only
def record_run_config(cfg: DictConfig, model: pl.LightningModule, output_dir: Path) -> None:
    """Write ``run_config.yaml`` (rank zero, atomically): the resolved config plus the encoder actually used."""
    resolved = cast(dict, OmegaConf.to_container(cfg, resolve=True))  # a DictConfig gives a dict
    encoder = getattr(model, "encoder", None)
    spec = getattr(encoder, "spec", None)
    if isinstance(spec, Mapping):
        resolved["encoder_used"] = dict(spec)
        if spec.get("fallback_used"):
            log.warning("this run uses a RANDOM encoder (fallback); recorded in %s", output_dir / "run_config.yaml")
    write_text_atomic(output_dir / "run_config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))


def report_skipped(datamodule: pl.LightningDataModule) -> None:
    """Name the unreadable images the data module skipped, once, at the end of the run."""
    skipped = getattr(datamodule, "skipped_files", None)
    if skipped:
        log.warning("%d unreadable image(s) were skipped: %s", len(skipped), ", ".join(sorted(map(str, skipped))))
