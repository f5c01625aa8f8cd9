"""One training job as a sweep trial: its objective, its failure handling and its ``trial_status.json``.

In a multirun (``python train.py -m ...``) a trial that fails -- NaN loss, out of memory, a bad combination of
settings -- must not stop the sweep. :func:`run_trial` catches the error, logs the traceback into the trial's
log, records ``{"status": "failed", "reason": ...}`` in ``<trial dir>/trial_status.json`` and returns the
direction's worst value (+inf when minimising, -inf when maximising) so the sweeper records it and goes on.
Why not NaN or an exception: hydra-optuna-sweeper 1.3 with optuna 2.x crashes the whole sweep on a NaN return
(``Study.tell`` rejects it twice) and aborts on any exception unless ``max_failure_rate`` allows it.
A single run (no ``-m``) raises as usual.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from styletransfer.engine.instantiate import is_multirun
from styletransfer.runtime.errors import NonFiniteLossError
from styletransfer.sweeps.direction import direction_of
from styletransfer.sweeps.table import STATUS_FILE, failure_reason, write_status

log = logging.getLogger(__name__)


def worst_value(cfg: DictConfig) -> float:
    """+inf for a minimised objective, -inf for a maximised one (``objective.direction``)."""
    return -math.inf if direction_of(cfg) == "maximize" else math.inf


def check_finite_losses(metrics: Mapping[str, float]) -> None:
    """Raise :class:`NonFiniteLossError` when a final training loss (``loss/...``) is NaN or infinite."""
    bad = {k: v for k, v in metrics.items() if k.startswith("loss/") and not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"training loss is not finite at the end of training ({', '.join(f'{k}={v}' for k, v in bad.items())}); "
            "lower method.lr or the loss weights"
        )


def _finish_wandb(failed: bool) -> None:
    """Close the wandb run so the next trial in this process starts its own (Lightning would reuse it)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_trial(cfg: DictConfig, train: Callable[[DictConfig], dict[str, float]]) -> float | None:
    """Run ``train(cfg)`` and return the objective (``metrics["objective"]``) when ``objective`` is configured.

    Multirun: never raises for a failed trial (see the module docstring); writes ``trial_status.json``.
    """
    has_objective = bool(cfg.get("objective"))
    if not is_multirun():
        metrics = train(cfg)
        return metrics.get("objective") if has_objective else None

    hydra_cfg = HydraConfig.get()
    status: dict[str, Any] = {
        "trial": hydra_cfg.job.get("num"),  # type: ignore[attr-defined]  # a DictConfig at run time
        "status": "running",
        "objective": None,
        "direction": None,
        "reason": None,
        "overrides": list(hydra_cfg.overrides.task),
    }
    if has_objective:
        status["direction"] = direction_of(cfg)
    directory = Path(hydra_cfg.runtime.output_dir)
    write_status(directory, status)  # stays "running" if the process is killed (out of memory, time limit)
    start = time.monotonic()
    failed = False
    value: float | None = None
    try:
        metrics = train(cfg)
        check_finite_losses(metrics)
        status["metrics"] = {k: v for k, v in metrics.items() if k.startswith(("loss/", "val/loss/"))}
        status["scores"] = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("objective/")}
        if has_objective:
            value = float(metrics["objective"])
            if not math.isfinite(value):
                raise NonFiniteLossError(f"objective is {value}")
            status["objective"] = value
        status["status"] = "completed"
    except Exception as exc:  # noqa: BLE001 -- a trial's failure is recorded, the sweep goes on
        failed = True
        log.exception("trial %s failed; recorded in %s and the sweep goes on", status["trial"], directory / STATUS_FILE)
        status.update(status="failed", reason=failure_reason(exc))
        value = worst_value(cfg) if has_objective else None
    finally:
        _finish_wandb(failed)
        _release_memory()
        status["seconds"] = round(time.monotonic() - start, 3)
        write_status(directory, status)
    return value
