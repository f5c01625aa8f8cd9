"""Writing an evaluation: metrics.csv, report.md, the result grid, the alpha figure, and the loggers' copies."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer.engine.loggers import log_image
from styletransfer.eval.benchmark import Benchmark
from styletransfer.eval.scorer import PAIR_METRICS, SET_METRICS, UNAVAILABLE
from styletransfer.nn.encoder import trained_behind_random
from styletransfer.runtime.files import write_csv_atomic, write_text_atomic

CSV_COLUMNS = ("model", "content", "style", *PAIR_METRICS)


def _cell(image: Tensor, size: int) -> Tensor:
    """Fit an image into a size x size white cell (aspect ratio kept)."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    resized = F.interpolate(image[None].float(), size=new, mode="bilinear", antialias=True, align_corners=False)[0]
    cell = torch.ones(3, size, size)
    top, left = (size - new[0]) // 2, (size - new[1]) // 2
    cell[:, top : top + new[0], left : left + new[1]] = resized.clamp(0, 1)
    return cell


def make_grid_image(
    bench: Benchmark,
    results: Mapping[tuple[int, int], Tensor],
    contents: Sequence[int],
    styles: Sequence[int],
    cell: int = 128,
    pad: int = 2,
) -> Tensor:
    """Rows content, columns style; the first row holds the styles and the first column the contents."""
    rows = len(contents) + 1
    cols = len(styles) + 1
    grid = torch.ones(3, rows * cell + (rows + 1) * pad, cols * cell + (cols + 1) * pad)

    def put(r: int, c: int, image: Tensor) -> None:
        top, left = pad + r * (cell + pad), pad + c * (cell + pad)
        grid[:, top : top + cell, left : left + cell] = _cell(image, cell)

    for c, si in enumerate(styles, start=1):
        put(0, c, bench.styles[si][1])
    for r, ci in enumerate(contents, start=1):
        put(r, 0, bench.contents[ci][1])
        for c, si in enumerate(styles, start=1):
            if (ci, si) in results:
                put(r, c, results[(ci, si)])
    return grid


def write_alpha_figure(path: Path, sweeps: Mapping[str, Mapping[str, Any]]) -> None:
    """Results at each alpha (a row per model) above content and style loss plotted against alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(sweeps)
    alphas = sweeps[labels[0]]["curve"]["alpha"]
    n_rows, n_cols = len(labels) + 1, len(alphas)
    fig = plt.figure(figsize=(2.2 * max(n_cols, 4), 2.2 * len(labels) + 3.2), constrained_layout=True)
    grid = fig.add_gridspec(n_rows, 2 * n_cols, height_ratios=[1.0] * len(labels) + [1.5])
    for r, label in enumerate(labels):
        for c, (alpha, image) in enumerate(zip(alphas, sweeps[label]["images"])):
            ax = fig.add_subplot(grid[r, 2 * c : 2 * c + 2])
            ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"alpha = {alpha:g}", fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    for k, (key, title) in enumerate(
        (("content_relu4_1", "content loss (relu4_1)"), ("style_mean_std", "style loss (mean/std, relu1_1..relu4_1)"))
    ):
        ax = fig.add_subplot(grid[-1, k * n_cols : (k + 1) * n_cols])
        for label in labels:
            curve = sweeps[label]["curve"]
            ax.plot(curve["alpha"], curve[key], marker="o", label=label)
        ax.set_xlabel("alpha")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _report_number(value: Any) -> str:
    """A report cell: strings as they are, n/a for missing or non-finite numbers, else 4 significant digits."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4g}"


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], unavailable: Mapping[str, str]) -> None:
    """metrics.csv: a row per model and pair; a metric that could not be computed reads "unavailable"."""
    cells = [
        [UNAVAILABLE if k in unavailable and k not in row else row.get(k, "") for k in CSV_COLUMNS] for row in rows
    ]
    write_csv_atomic(path, CSV_COLUMNS, cells)


def _temporal_lines(temporal: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """report.md's table of warping errors, model by video (none without ``videos``)."""
    if not temporal:
        return []
    lines = [
        "",
        "## Temporal stability",
        "",
        "Warping error ↓ between consecutive stylised frames, warped with the "
        "content's optical flow where it is reliable (content: the same for the original frames).",
        "",
        "| model | video | warping error ↓ | content | reliable pixels | frame pairs |",
        "|---|---|---|---|---|---|",
    ]
    for label, per_video in temporal.items():
        for video, t in per_video.items():
            lines.append(
                f"| {label} | {video} | {_report_number(t['warping_error'])} | "
                f"{_report_number(t['content_error'])} | {t['reliable_fraction']:.0%} | {t['pairs']} |"
            )
    return lines


def write_report(path: Path, summary: Mapping[str, Any]) -> None:
    """report.md: a table of means (median in brackets), models by metrics, then set metrics, timing and notes."""
    models = summary["models"]
    unavailable = summary["unavailable"]
    arrows = {name: ("↓" if lower else "↑") for name, (_, lower) in {**PAIR_METRICS, **SET_METRICS}.items()}
    pair_cols = [name for name in PAIR_METRICS if name != "seconds"]
    set_cols = list(SET_METRICS)
    bench = summary["benchmark"]
    lines = [
        "# Style-transfer benchmark",
        "",
        f"Benchmark **{bench['name']}**: {bench['n_contents']} contents x {bench['n_styles']} styles = "
        f"{bench['n_pairs']} pairs, shorter side {bench['short_side'] or 'as is'}; alpha {summary['alpha']}; "
        f"seed {summary['seed']}.",
        f"Evaluation encoder: {summary['encoder'].get('arch')} / {summary['encoder'].get('used')} "
        f"(fingerprint {summary['encoder'].get('fingerprint')}).",
        "",
        "Mean over pairs (median in brackets). ↓ lower is better, ↑ higher is better.",
        "",
        "| model | " + " | ".join(f"{c} {arrows[c]}" for c in pair_cols + set_cols) + " |",
        "|---|" + "---|" * (len(pair_cols) + len(set_cols)),
    ]
    for model in models:
        cells = []
        for c in pair_cols:
            if c in unavailable:
                cells.append(UNAVAILABLE)
            else:
                agg = model["aggregate"][c]
                cells.append(f"{_report_number(agg['mean'])} ({_report_number(agg['median'])})")
        cells += [_report_number(model["set_metrics"][c]) for c in set_cols]
        lines.append(f"| {model['label']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Speed",
        "",
        "| model | device | s / image (mean) | images / s | warm-up runs | peak memory (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for model in models:
        t = model["timing"]
        peak = t.get("peak_memory_mib", "not measured")
        kind = t.get("peak_memory_kind")
        lines.append(
            f"| {model['label']} | {t['device']} | {_report_number(t['seconds_per_image_mean'])} | "
            f"{_report_number(t['images_per_second'])} | {t['warmup_runs']} | {_report_number(peak)}"
            + (f" ({kind})" if isinstance(peak, float) else "")
            + " |"
        )
    lines += _temporal_lines(summary.get("temporal") or {})
    lines += ["", "## Models", ""]
    for model in models:
        info = model["info"]
        if info.get("external"):
            lines.append(
                f"- **{model['label']}**: results made elsewhere, folder `{info.get('path')}` (paired by "
                f"{info.get('pairing')}; not timed, no alpha sweep)"
            )
            lines += [f"  - {note}" for note in info.get("notes", [])]
            continue
        enc = info.get("encoder") or {}
        random = trained_behind_random(enc)
        weights = (
            "RANDOM (a test or offline run: results show the pipeline, not the method)"
            if random
            else enc.get("used", enc.get("weights"))
        )
        lines.append(
            f"- **{model['label']}**: {info.get('method')} {info.get('kind', '')} `{info.get('path', '')}`; "
            f"encoder {enc.get('arch')} / {weights} (fingerprint {enc.get('fingerprint')}); network "
            f"{enc.get('network', 'vgg19')}"
            + (f", bottleneck {info['bottleneck']}" if info.get("bottleneck") else "")
            + (f"; decoder {info['decoder']}" if info.get("decoder") else "")
        )
    lines += ["", "## Metrics", ""]
    for name, (text, _) in {**PAIR_METRICS, **SET_METRICS}.items():
        lines.append(f"- `{name}`: {text}")
    if unavailable:
        lines += ["", "## Unavailable metrics", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in unavailable.items()]
    if bench["skipped"]:
        lines += ["", "## Skipped images", ""] + [f"- {s}" for s in bench["skipped"]]
    lines += ["", "Files: metrics.csv (per pair), summary.json, grid.png, alpha_sweep.png.", ""]
    write_text_atomic(path, "\n".join(lines))


def safe_label(label: str) -> str:
    """``label`` as a file-name part (letters, digits, ``_.-``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


def log_results(loggers: Sequence[Any], summary: Mapping[str, Any], images: Mapping[str, tuple[Path, Tensor]]) -> None:
    """Send hyper-parameters, aggregates and figures to Lightning loggers (wandb and TensorBoard take images)."""
    flat: dict[str, float] = {}
    for model in summary["models"]:
        for name, agg in model["aggregate"].items():
            flat[f"eval/{model['label']}/{name}_mean"] = agg["mean"]
            flat[f"eval/{model['label']}/{name}_median"] = agg["median"]
        for name, value in model["set_metrics"].items():
            if isinstance(value, float):
                flat[f"eval/{model['label']}/{name}"] = value
        if isinstance(model["timing"]["images_per_second"], float):  # "not measured" for results made elsewhere
            flat[f"eval/{model['label']}/images_per_second"] = model["timing"]["images_per_second"]
    for logger in loggers:
        logger.log_hyperparams(
            {
                "benchmark": summary["benchmark"]["name"],
                "encoder": summary["encoder"],
                "models": [m["info"].get("path", m["label"]) for m in summary["models"]],
                "unavailable": summary["unavailable"],
            }
        )
        logger.log_metrics(flat, step=0)
        for key, (path, tensor) in images.items():
            log_image(logger, f"eval/{key}", tensor.clamp(0, 1), path, step=0)
        logger.save()
        if hasattr(logger, "finalize"):
            logger.finalize("success")
