"""The style benchmark: stylise every content/style pair with each model, score, aggregate and report.

``run(cfg)`` (called by ``evaluate.py``) writes into the run directory:

* ``metrics.csv``: a row per model and pair (stable order: models as given, pairs sorted by content then style);
* ``summary.json``: per model the mean and median of every metric, FID / ArtFID, timing with the device named,
  the alpha sweep, the evaluation encoder, the benchmark, skipped images and the metrics that are unavailable
  (with the reason: they are never reported as 0);
* ``report.md``: Markdown tables, models by metrics;
* ``grid.png``: rows content, columns style, the inputs in the first row and column (one ``grid_<model>.png``
  per model as well when there are several);
* ``alpha_sweep.png``: results at alpha 0, 0.25, 0.5, 0.75, 1 and content / style loss plotted against alpha.
Aggregates and images also go to the configured loggers.
"""

from __future__ import annotations

import functools
import logging
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm import tqdm

from styletransfer.data.images import load_image_tensor, save_image
from styletransfer.engine.instantiate import instantiate_group, uses_wandb
from styletransfer.engine.precision import autocast_dtype
from styletransfer.engine.wandb_mode import choose_wandb_mode
from styletransfer.eval import memory
from styletransfer.eval import metrics as M
from styletransfer.eval.benchmark import Benchmark, load_benchmark
from styletransfer.eval.outputs import outputs_candidate, pair_outputs
from styletransfer.eval.report import (
    log_results,
    make_grid_image,
    safe_label,
    write_alpha_figure,
    write_csv,
    write_report,
)
from styletransfer.eval.scorer import EVAL_LAYERS, MEAN_STD_LAYERS, PAIR_METRICS, SET_METRICS, UNAVAILABLE, Scorer
from styletransfer.eval.temporal import content_motions, stylise_frames, video_frames, warping_error
from styletransfer.nn.encoder import build_encoder
from styletransfer.protocol.candidate import Candidate, model_candidate
from styletransfer.protocol.registry import load_model, plugin_for_target
from styletransfer.runtime.devices import device_name, resolve_device
from styletransfer.runtime.errors import ConfigError
from styletransfer.runtime.files import write_json_atomic

log = logging.getLogger(__name__)

#: What a timing cell reads for results made elsewhere (``outputs=DIR``): never a made-up number.
NOT_MEASURED = "not measured"


def checkpoint_labels(paths: Sequence[str | Path]) -> list[str]:
    """Short unique labels: the file stem, with as many parent folders as needed to tell files apart."""
    parts = [Path(p).with_suffix("").parts for p in paths]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{i}:{p}" for i, p in enumerate(paths)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _aggregate(values: Sequence[float]) -> dict[str, float]:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "median": float("nan")}
    return {"mean": statistics.fmean(finite), "median": statistics.median(finite)}


def evaluate_candidate(
    candidate: Candidate,
    bench: Benchmark,
    scorer: Scorer,
    device: torch.device,
    alpha: float,
    warmup: int,
    seed: int,
    keep: set[tuple[int, int]],
) -> dict[str, Any]:
    """Stylise and score every pair; returns rows, aggregates, set metrics, timing and the kept results. A candidate
    with results made elsewhere (``result_for``) is scored on them and not timed."""
    torch.manual_seed(seed)
    external = candidate.result_for
    style_feats = [scorer.features(s.unsqueeze(0)) for _, s in bench.styles]
    content_cache: dict[int, dict[str, Tensor]] = {}
    first_c, first_s = bench.contents[0][1].unsqueeze(0), bench.styles[0][1].unsqueeze(0)
    for _ in range(warmup if external is None else 0):
        candidate.stylise(first_c.to(device), first_s.to(device), alpha)
    _sync(device)
    measuring_memory = external is None and memory.reset_peak(device)
    rows: list[dict[str, Any]] = []
    kept: dict[tuple[int, int], Tensor] = {}
    result_feats: list[Tensor] = []
    style_inc: list[Tensor] = []
    style_inc_cache: dict[int, Tensor | None] = {}
    for ci, si in tqdm(bench.pairs, desc=f"evaluating {candidate.label}", unit="pair"):
        content = bench.contents[ci][1].unsqueeze(0).to(device)
        style = bench.styles[si][1].unsqueeze(0).to(device)
        torch.manual_seed(seed)
        _sync(device)
        start = time.perf_counter()
        if external is None:
            result = candidate.stylise(content, style, alpha)
        else:
            result = external(bench.contents[ci][0], bench.styles[si][0]).to(device)
        _sync(device)
        seconds: float | str = time.perf_counter() - start if external is None else NOT_MEASURED
        if ci not in content_cache:
            content_cache[ci] = scorer.features(content)
        row: dict[str, Any] = {
            "model": candidate.label,
            "content": bench.contents[ci][0].name,
            "style": bench.styles[si][0].name,
        }
        row.update(scorer.score(result, content, style_feats[si], content_cache[ci]))
        row["seconds"] = seconds
        rows.append(row)
        if (ci, si) in keep:
            kept[(ci, si)] = result[0].float().cpu()
        feats = scorer.inception_features(result)
        if feats is not None:
            style_feat = style_inc_cache.get(si)
            if style_feat is None:
                style_feat = style_inc_cache[si] = scorer.inception_features(style)
            if style_feat is None:
                raise RuntimeError("the Inception features of a style image are missing while the result's are not")
            result_feats.append(feats)
            style_inc.append(style_feat)
    measured = [name for name in PAIR_METRICS if name not in scorer.unavailable]
    if external is not None:
        measured.remove("seconds")
    aggregate = {name: _aggregate([r[name] for r in rows]) for name in measured}
    set_metrics: dict[str, Any] = {}
    if scorer.inception is not None:
        if len(result_feats) >= 2:
            set_metrics["fid"] = M.frechet_distance(torch.cat(result_feats), torch.cat(style_inc))
        else:
            set_metrics["fid"] = UNAVAILABLE
            scorer.unavailable.setdefault("fid", "FID needs at least 2 pairs")
    if isinstance(set_metrics.get("fid"), float) and "lpips" in aggregate:
        set_metrics["art_fid"] = M.art_fid(aggregate["lpips"]["mean"], set_metrics["fid"])
    for name in SET_METRICS:
        set_metrics.setdefault(name, UNAVAILABLE)
    if external is not None:
        timing: dict[str, Any] = {
            "device": NOT_MEASURED,
            "measured": False,
            "warmup_runs": 0,
            "seconds_per_image_mean": NOT_MEASURED,
            "seconds_per_image_median": NOT_MEASURED,
            "images_per_second": NOT_MEASURED,
            "image_size": list(bench.contents[0][1].shape[-2:]),
            "peak_memory_mib": NOT_MEASURED,
            "peak_memory_kind": NOT_MEASURED,
        }
        return {"rows": rows, "aggregate": aggregate, "set_metrics": set_metrics, "timing": timing, "kept": kept}
    times = [float(r["seconds"]) for r in rows]
    mean_s = statistics.fmean(times)
    peak = memory.peak_mib(device) if measuring_memory else None
    timing = {
        "measured": True,
        "device": device_name(device),
        "warmup_runs": warmup,
        "seconds_per_image_mean": mean_s,
        "seconds_per_image_median": statistics.median(times),
        "images_per_second": 1.0 / mean_s if mean_s > 0 else float("inf"),
        "image_size": list(bench.contents[0][1].shape[-2:]),
        "peak_memory_mib": NOT_MEASURED if peak is None else peak,
        "peak_memory_kind": memory.KINDS.get(device.type, NOT_MEASURED) if peak is not None else NOT_MEASURED,
    }
    return {"rows": rows, "aggregate": aggregate, "set_metrics": set_metrics, "timing": timing, "kept": kept}


def alpha_sweep(
    candidate: Candidate,
    bench: Benchmark,
    scorer: Scorer,
    device: torch.device,
    alphas: Sequence[float],
    n_pairs: int,
    seed: int,
) -> dict[str, Any]:
    """Mean content (relu4_1) and style (mean/std) loss at each alpha over the first ``n_pairs`` pairs, and the
    results of the first pair."""
    pairs = bench.pairs[: max(1, n_pairs)]
    style_feats = {si: scorer.features(bench.styles[si][1].unsqueeze(0)) for _, si in pairs}
    content_feats = {ci: scorer.features(bench.contents[ci][1].unsqueeze(0)) for ci, _ in pairs}
    curve: dict[str, list[Any]] = {"alpha": [float(a) for a in alphas], "content_relu4_1": [], "style_mean_std": []}
    images: list[Tensor] = []
    for alpha in alphas:
        losses_c, losses_s = [], []
        for index, (ci, si) in enumerate(pairs):
            torch.manual_seed(seed)
            content = bench.contents[ci][1].unsqueeze(0).to(device)
            result = candidate.stylise(content, bench.styles[si][1].unsqueeze(0).to(device), float(alpha))
            feats = scorer.features(result)
            losses_c.append(float(M.content_distance(feats["relu4_1"], content_feats[ci]["relu4_1"])[0]))
            losses_s.append(
                float(M.summed_over_layers(M.mean_std_distance, feats, style_feats[si], MEAN_STD_LAYERS)[0])
            )
            if index == 0:
                images.append(result[0].float().cpu())
        curve["content_relu4_1"].append(statistics.fmean(losses_c))
        curve["style_mean_std"].append(statistics.fmean(losses_s))
    curve["pairs"] = [[bench.contents[c][0].name, bench.styles[s][0].name] for c, s in pairs]
    return {"curve": curve, "images": images}


def _frame(candidate: Candidate, style: Tensor, alpha: float, frame: Tensor) -> Tensor:
    """One video frame stylised by ``candidate`` with ``style``."""
    return candidate.stylise(frame, style, alpha)


def temporal_scores(
    candidates: Sequence[Candidate],
    bench: Benchmark,
    videos: Sequence[str],
    alpha: float,
    device: torch.device,
    max_frames: int,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model and video, the warping error of the video stylised frame by frame with the benchmark's first
    style (``eval.temporal``): {label: {video: TemporalReport as a dict}}. Each video is read and its optical flow
    computed once, for all models."""
    style = bench.styles[0][1][None].to(device)
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    for video in videos:
        frames = video_frames(Path(video), max_frames)
        motions = content_motions(frames)
        for candidate in candidates:
            if candidate.result_for is not None:
                log.info("temporal stability of %s not measured: results made elsewhere", candidate.label)
                continue
            log.info("temporal stability of %s on %s", candidate.label, video)
            stylised = stylise_frames(functools.partial(_frame, candidate, style, alpha), frames, device)
            scores.setdefault(candidate.label, {})[str(video)] = asdict(
                warping_error(frames, stylised, motions=motions)
            )
    return scores


def evaluate(
    candidates: Sequence[Candidate],
    bench: Benchmark,
    scorer: Scorer,
    device: torch.device,
    output_dir: Path,
    alpha: float = 1.0,
    warmup: int = 2,
    seed: int = 0,
    sweep_alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    sweep_pairs: int = 4,
    grid_contents: int = 6,
    grid_styles: int = 6,
    grid_cell: int = 128,
    loggers: Sequence[Any] = (),
    extra: Mapping[str, Any] | None = None,
    videos: Sequence[str] = (),
    video_frames: int = 48,
) -> dict[str, Any]:
    """Score every candidate on every pair and write metrics.csv, summary.json, report.md, grid(s), alpha_sweep.png;
    with ``videos``, the warping error of each model on each (``temporal`` in summary.json and report.md)."""
    if not candidates:
        raise ConfigError("nothing to evaluate: give ckpt=PATH (or ckpt=[A,B]), outputs=DIR and/or method=gatys")
    output_dir.mkdir(parents=True, exist_ok=True)
    grid_c = list(range(min(grid_contents, len(bench.contents))))
    grid_s = list(range(min(grid_styles, len(bench.styles))))
    keep = {(c, s) for c in grid_c for s in grid_s}
    rows, models, grids, sweeps = [], [], {}, {}
    for candidate in candidates:
        log.info("evaluating %s on %d pairs", candidate.label, len(bench.pairs))
        out = evaluate_candidate(candidate, bench, scorer, device, alpha, warmup, seed, keep)
        rows += out["rows"]
        grids[candidate.label] = make_grid_image(bench, out["kept"], grid_c, grid_s, grid_cell)
        entry = {
            "label": candidate.label,
            "info": candidate.info,
            "n_pairs": len(out["rows"]),
            "aggregate": out["aggregate"],
            "set_metrics": out["set_metrics"],
            "timing": out["timing"],
        }
        if candidate.supports_alpha and sweep_alphas:
            sweep = alpha_sweep(candidate, bench, scorer, device, sweep_alphas, sweep_pairs, seed)
            sweeps[candidate.label] = sweep
            entry["alpha_sweep"] = sweep["curve"]
        models.append(entry)

    summary = {
        "benchmark": bench.describe(),
        "encoder": dict(scorer.encoder.spec),
        "device": device_name(device),
        "seed": seed,
        "alpha": alpha,
        "metrics": {name: text for name, (text, _) in {**PAIR_METRICS, **SET_METRICS}.items()},
        "unavailable": dict(scorer.unavailable),
        "models": models,
        "temporal": temporal_scores(candidates, bench, videos, alpha, device, video_frames) if videos else {},
        **dict(extra or {}),
    }
    write_csv(output_dir / "metrics.csv", rows, scorer.unavailable)
    write_json_atomic(output_dir / "summary.json", summary)
    write_report(output_dir / "report.md", summary)
    images: dict[str, tuple[Path, Tensor]] = {}
    first = candidates[0].label
    save_image(grids[first], output_dir / "grid.png")
    images["grid"] = (output_dir / "grid.png", grids[first])
    if len(candidates) > 1:
        for label, grid in grids.items():
            path = output_dir / f"grid_{safe_label(label)}.png"
            save_image(grid, path)
            images[f"grid_{safe_label(label)}"] = (path, grid)
    if sweeps:
        write_alpha_figure(output_dir / "alpha_sweep.png", sweeps)
        images["alpha_sweep"] = (output_dir / "alpha_sweep.png", load_image_tensor(output_dir / "alpha_sweep.png"))
    log_results(loggers, summary, images)
    log.info("evaluation written to %s", output_dir)
    return summary


def build_candidates(plain: Mapping[str, Any], device: torch.device) -> list[Candidate]:
    """The models under test: every ``ckpt`` (a model file of any feed-forward method, through the registry), then
    the configured ``method``'s own candidate (a method evaluated from its config, e.g. method=gatys)."""
    ckpts = _listed(plain["ckpt"])
    # The encoder for decoder files when given; else each file's own record (a Lightning .ckpt always uses the
    # encoder stored in it).
    model_encoder = dict(plain["model_encoder"]) if plain["model_encoder"].get("weights") else None
    channels_last = bool(plain["channels_last"])
    bf16 = autocast_dtype(plain["trainer"]["precision"]) == torch.bfloat16 and device.type == "cuda"
    candidates = [
        model_candidate(load_model(path, model_encoder, device, channels_last=channels_last, bf16=bf16), label)
        for path, label in zip(ckpts, checkpoint_labels(ckpts))
    ]
    method = plain.get("method")
    if isinstance(method, Mapping) and method:
        method_plugin = plugin_for_target(str(method.get("_target_", "")))
        if not hasattr(method_plugin, "config_candidate"):
            raise ConfigError(
                f"method={method_plugin.NAME} is evaluated from its model files (ckpt=...), not from "
                "its config: drop method="
            )
        candidates.append(
            method_plugin.config_candidate(method, plain["metric_encoder"], plain["optimisation"], device)
        )
    if not candidates and not _listed(plain.get("outputs")):
        raise ConfigError(
            "nothing to evaluate: give ckpt=PATH (or ckpt=[A,B]), outputs=DIR (results made by another tool) "
            "and/or a method evaluated from its config (method=gatys)"
        )
    return candidates


def _listed(value: Any) -> list[str]:
    """A path-or-list setting (``ckpt``, ``outputs``) as a list of strings."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]


def external_candidates(folders: Sequence[str], bench: Benchmark, taken: Sequence[str]) -> list[Candidate]:
    """A Candidate per ``outputs`` folder (``eval.outputs``), labelled by its folder name (with parents where
    needed to tell it from the others and from the ``taken`` labels)."""
    labels = checkpoint_labels([*taken, *folders])[len(taken) :]
    return [outputs_candidate(pair_outputs(folder, bench), bench, label) for folder, label in zip(folders, labels)]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the configured checkpoints (and Gatys, with method=gatys; folders of results made elsewhere, with
    outputs=DIR) on the configured benchmark."""
    plain = cast(dict, OmegaConf.to_container(cfg, resolve=True))  # a DictConfig gives a dict
    device = resolve_device(plain["trainer"]["accelerator"], "trainer.accelerator")
    candidates = build_candidates(plain, device)
    bench = load_benchmark(plain["benchmark"])
    candidates += external_candidates(_listed(plain.get("outputs")), bench, [c.label for c in candidates])
    scorer = Scorer(
        build_encoder(plain["metric_encoder"], EVAL_LAYERS, "metric_encoder"), device, plain.get("metrics") or {}
    )
    if uses_wandb(plain.get("logger")):
        choose_wandb_mode()
    sweep, grid = plain["alpha_sweep"], plain["grid"]
    return evaluate(
        candidates,
        bench,
        scorer,
        device,
        Path(plain["paths"]["output_dir"]),
        alpha=float(plain["alpha"]),
        warmup=int(plain["timing"]["warmup"]),
        seed=int(plain["seed"]),
        sweep_alphas=[float(a) for a in sweep["values"]],
        sweep_pairs=int(sweep["pairs"]),
        grid_contents=int(grid["max_contents"]),
        grid_styles=int(grid["max_styles"]),
        grid_cell=int(grid["cell"]),
        loggers=instantiate_group(cfg.get("logger")),
        extra={
            "config": {
                k: plain.get(k)
                for k in ("ckpt", "outputs", "alpha", "metrics", "timing", "alpha_sweep", "optimisation")
            }
        },
        videos=[str(v) for v in plain["videos"] or []],
        video_frames=int(plain["video_frames"]),
    )
