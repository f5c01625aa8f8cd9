"""The trials table of a sweep: a Hydra callback that writes ``trials.csv``, ``trials.md`` and
``objective_vs_params.png`` into the sweep directory when a multirun ends (grids and Optuna searches alike).

Each trial directory holds ``trial_status.json`` (written by :mod:`styletransfer.sweeps.trial`) and Hydra's
``.hydra/overrides.yaml``; the table is built from those files, so it also works when trials ran in other
processes or on other machines (``hydra/launcher=submitit_slurm``). Registered in ``configs/hydra/default.yaml``
(``hydra.callbacks.sweep_table``); single runs are left alone.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from styletransfer.engine.instantiate import register_resolvers
from styletransfer.runtime.files import write_csv_atomic, write_json_atomic, write_text_atomic
from styletransfer.sweeps.direction import direction_of

log = logging.getLogger(__name__)

#: Written into every trial directory by styletransfer.sweeps.trial; one row of the table each.
STATUS_FILE = "trial_status.json"
CSV_NAME, MD_NAME, PLOT_NAME = "trials.csv", "trials.md", "objective_vs_params.png"
#: Plotted when no trial has an objective (a grid without ``+objective=...``).
FALLBACK_METRIC = "loss/total"


@dataclass
class Trial:
    """One row of the table."""

    number: int
    directory: Path
    params: dict[str, str]
    status: str
    objective: float | None = None
    reason: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None


def failure_reason(exc: BaseException, limit: int = 500) -> str:
    """``Type: first line of the message`` of the root cause (Hydra wraps errors raised while instantiating),
    shortened: what the trials table shows."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_status(directory: Path, status: Mapping[str, Any]) -> Path:
    """Write ``trial_status.json`` atomically (the table may be built while trials run), non-finite numbers as null."""
    return write_json_atomic(directory / STATUS_FILE, dict(status))


def _read_overrides(directory: Path) -> list[str]:
    path = directory / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _trial_number(directory: Path, status: Mapping[str, Any]) -> int | None:
    if isinstance(status.get("trial"), int):
        return status["trial"]
    hydra_yaml = directory / ".hydra" / "hydra.yaml"
    if hydra_yaml.is_file():
        num = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.job.num", default=None)
        if isinstance(num, int):
            return num
    return int(directory.name) if directory.name.isdigit() else None


def collect_trials(sweep_dir: Path) -> list[Trial]:
    """Every trial directory under ``sweep_dir`` (one with ``.hydra/overrides.yaml``), sorted by trial number."""
    trials: list[Trial] = []
    for overrides_file in sorted(Path(sweep_dir).glob("**/.hydra/overrides.yaml")):
        directory = overrides_file.parent.parent
        status_path = directory / STATUS_FILE
        status: dict[str, Any] = {}
        if status_path.is_file():
            try:
                status = json.loads(status_path.read_text())
            except json.JSONDecodeError as exc:
                status = {"status": "unknown", "reason": f"unreadable {STATUS_FILE}: {exc}"}
        state = status.get("status")
        reason = status.get("reason") or ""
        if state is None:
            state, reason = "unknown", f"no {STATUS_FILE}: the job did not go through train.py; see its log"
        elif state == "running":
            state, reason = "failed", "stopped without finishing (killed: out of memory or time limit?); see its log"
        number = _trial_number(directory, status)
        trials.append(
            Trial(
                number=number if number is not None else len(trials),
                directory=directory,
                params=dict(_split(o) for o in _read_overrides(directory)),
                status=state,
                objective=status.get("objective"),
                reason=reason,
                scores={k: v for k, v in (status.get("scores") or {}).items() if v is not None},
                metrics={k: v for k, v in (status.get("metrics") or {}).items() if v is not None},
                seconds=status.get("seconds"),
            )
        )
    return sorted(trials, key=lambda t: t.number)


def swept_keys(trials: Sequence[Trial], declared: Sequence[str] = ()) -> list[str]:
    """The parameters of the table: ``declared`` ones (the sweep's own) first, then any override that varies."""
    keys = [k for k in declared if any(k in t.params for t in trials)]
    for trial in trials:
        for key in trial.params:
            if key not in keys and len({t.params.get(key) for t in trials}) > 1:
                keys.append(key)
    return keys


def declared_keys(config: DictConfig) -> list[str]:
    """Keys swept by the command line (``a=1,2``, ``choice(...)``) or by ``hydra.sweeper.params`` (Optuna)."""
    keys: list[str] = []
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    if isinstance(params, Mapping):
        keys += [str(k) for k in params]
    task = list(OmegaConf.select(config, "hydra.overrides.task", default=None) or [])
    try:
        parsed = OverridesParser.create().parse_overrides(task)
    except Exception:  # noqa: BLE001 -- the table still lists the overrides that vary
        parsed = []
    keys += [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]
    return list(dict.fromkeys(keys))


def best_trial(trials: Sequence[Trial], direction: str) -> Trial | None:
    """The completed trial with the best objective (None when no trial completed with one)."""
    done = [t for t in trials if t.status == "completed" and t.objective is not None]
    if not done:
        return None
    return (max if direction == "maximize" else min)(done, key=lambda t: cast(float, t.objective))


def _table_cell(value: Any, digits: int | None = 6) -> str:
    """A table cell: empty for None, floats to ``digits`` significant digits (None: full precision)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value) or digits is None:
            return repr(value)
        return f"{value:.{digits}g}"
    return str(value)


def write_tables(trials: Sequence[Trial], keys: Sequence[str], directory: Path, direction: str) -> tuple[Path, Path]:
    """``trials.csv`` (every column) and ``trials.md`` (best trial on top, then the table)."""
    score_names = list(dict.fromkeys(n for t in trials for n in t.scores))
    metric_names = [FALLBACK_METRIC] if any(FALLBACK_METRIC in t.metrics for t in trials) else []
    header = ["trial", *keys, "objective", "status", "reason", *score_names, *metric_names, "seconds", "directory"]
    rows = []
    for t in trials:
        rows.append(
            [
                t.number,
                *(t.params.get(k, "") for k in keys),
                t.objective,
                t.status,
                t.reason,
                *(t.scores.get(n) for n in score_names),
                *(t.metrics.get(n) for n in metric_names),
                t.seconds,
                t.directory.name,
            ]
        )
    csv_path = write_csv_atomic(
        directory / CSV_NAME, header, [[_table_cell(v, digits=None) for v in row] for row in rows]
    )

    best = best_trial(trials, direction)
    counts = {state: sum(t.status == state for t in trials) for state in ("completed", "failed", "unknown")}
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n or state != "unknown")
    lines = [f"# Sweep {directory.name}", "", f"{len(trials)} trials: {summary}. Objective: {direction}."]
    if best is not None:
        params = ", ".join(f"`{k}={best.params.get(k, '')}`" for k in keys)
        lines += [
            "",
            f"**Best: trial {best.number}**, objective {_table_cell(best.objective)}: {params or '(no parameters)'}",
        ]
    md_header = [h for h in header if h != "directory"]
    lines += ["", "| " + " | ".join(md_header) + " |", "|" + " --- |" * len(md_header)]
    for row in rows:
        cells = [_table_cell(v).replace("|", "\\|").replace("\n", " ") for v in row[:-1]]
        lines.append("| " + " | ".join(cells) + " |")
    md_path = write_text_atomic(directory / MD_NAME, "\n".join(lines) + "\n")
    return csv_path, md_path


def _as_number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def plot_objective(trials: Sequence[Trial], keys: Sequence[str], path: Path) -> Path:
    """One panel per varying parameter: the objective (or ``loss/total`` when there is none) against its values.

    Numeric parameters on a linear or (when they span more than two decades) log axis; others as categories.
    Failed trials are red crosses above the completed ones.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if any(t.objective is not None for t in trials):
        label, value_of = "objective", (lambda t: t.objective)
    else:
        label, value_of = FALLBACK_METRIC, (lambda t: t.metrics.get(FALLBACK_METRIC))
    panels = [k for k in keys if len({t.params.get(k, "") for t in trials}) > 1] or list(keys[:1]) or ["trial"]
    ok = [t.status == "completed" and value_of(t) is not None for t in trials]
    values = [value_of(t) for t, good in zip(trials, ok) if good]
    if values:
        low, high = min(values), max(values)
        top = high + 0.1 * ((high - low) or abs(high) or 1.0)
    else:
        top = 0.0
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, panels):
        raw = [str(t.number) if key == "trial" else t.params.get(key, "") for t in trials]
        numbers = [_as_number(r) for r in raw]
        if all(n is not None for n in numbers):
            xs = [float(n) for n in numbers]  # type: ignore[arg-type]
            if min(xs) > 0 and max(xs) / min(xs) > 100:
                ax.set_xscale("log")
        else:
            categories = list(dict.fromkeys(raw))
            xs = [float(categories.index(r)) for r in raw]
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(categories, rotation=30, ha="right", fontsize=7)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        good = [(x, value_of(t)) for x, t, g in zip(xs, trials, ok) if g]
        bad = [x for x, g in zip(xs, ok) if not g]
        if good:
            ax.scatter([p[0] for p in good], [p[1] for p in good], color="tab:blue", label="completed")
        if bad:
            ax.scatter(bad, [top] * len(bad), marker="x", color="tab:red", label="failed (no value)")
        ax.set_xlabel(key)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{label} against each parameter ({len(trials)} trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_sweep_report(sweep_dir: Path, declared: Sequence[str] = (), direction: str = "minimize") -> list[Trial]:
    """Collect the trials under ``sweep_dir`` and write the table and the plot there; returns the trials."""
    sweep_dir = Path(sweep_dir)
    trials = collect_trials(sweep_dir)
    if not trials:
        log.warning("no trial directories under %s: no trials table written", sweep_dir)
        return trials
    keys = swept_keys(trials, declared)
    csv_path, md_path = write_tables(trials, keys, sweep_dir, direction)
    plot_objective(trials, keys, sweep_dir / PLOT_NAME)
    best = best_trial(trials, direction)
    failed = [t for t in trials if t.status != "completed"]
    log.info("trials table: %s, %s, %s", csv_path, md_path, sweep_dir / PLOT_NAME)
    for t in failed:
        log.warning("trial %d %s: %s", t.number, t.status, t.reason)
    if best is not None:
        log.info(
            "best trial %d: objective %s with %s",
            best.number,
            _table_cell(best.objective),
            ", ".join(f"{k}={best.params.get(k, '')}" for k in keys),
        )
    return trials


# A job unpickled by a launcher in another process (submitit) imports this module for the callback without running
# train.py's module code: the resolvers its config uses are registered here too.
register_resolvers()


class SweepTableCallback(Callback):
    """Hydra callback: the trials table and plot at the end of every multirun (and a status for crashed jobs)."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """A multirun job that raised before ``train.py`` could record it still gets a failed ``trial_status.json``."""
        if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN or job_return.status != JobStatus.FAILED:
            return
        directory = Path(str(OmegaConf.select(config, "hydra.runtime.output_dir")))
        if (directory / STATUS_FILE).is_file() and json.loads((directory / STATUS_FILE).read_text()).get(
            "status"
        ) != "running":
            return
        exc = job_return._return_value
        write_status(
            directory,
            {
                "trial": OmegaConf.select(config, "hydra.job.num"),
                "status": "failed",
                "objective": None,
                "reason": failure_reason(exc) if isinstance(exc, BaseException) else str(exc),
            },
        )

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Save the sweep's config as ``multirun.yaml`` (Hydra's basic sweeper does, the Optuna sweeper does not),
        so that ``styletransfer-sweep-table SWEEP_DIR`` knows the swept keys and the direction."""
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not (sweep_dir / "multirun.yaml").exists():
            OmegaConf.save(config, sweep_dir / "multirun.yaml")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        write_sweep_report(sweep_dir, declared_keys(config), direction_of(config))
