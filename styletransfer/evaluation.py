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

import logging
import math
import platform
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer import metrics as M
from styletransfer.data.images import ImageLoadError, find_images, load_image_tensor, save_image
from styletransfer.encoder import VGGEncoder, build_encoder
from styletransfer.files import write_csv_atomic, write_json_atomic, write_text_atomic
from styletransfer.metric_nets import ArtInception, LPIPSAlex, MetricUnavailable

log = logging.getLogger(__name__)

CONTENT_LAYERS = ("relu4_1", "relu4_2")
MEAN_STD_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
GRAM_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CFSD_LAYER = "relu3_1"
EVAL_LAYERS = tuple(dict.fromkeys([*MEAN_STD_LAYERS, *CONTENT_LAYERS, *GRAM_LAYERS]))
UNAVAILABLE = "unavailable"

#: Per-pair metrics: column -> (description, lower is better).
PAIR_METRICS: dict[str, tuple[str, bool]] = {
    "content_relu4_1": ("content loss: MSE of VGG relu4_1 features, result vs content", True),
    "content_relu4_2": ("content loss: MSE of VGG relu4_2 features, result vs content", True),
    "style_mean_std": ("style loss: MSE of channel means + stds, relu1_1..relu4_1 summed, result vs style", True),
    "style_gram": ("style loss: MSE of Gram matrices / (C*H*W), relu1_1..relu5_1 summed, result vs style", True),
    "ssim": ("SSIM of the luminance of result and content (torchmetrics, window 11)", False),
    "cfsd": ("CFSD: KL of softmax self-similarity of relu3_1 features, content vs result (StyleID)", True),
    "lpips": ("LPIPS (AlexNet) between result and content", True),
    "seconds": ("seconds to stylise the pair after warm-up (encoding both images, AdaIN, decoding)", True),
}
#: Set-level metrics (one value per model).
SET_METRICS: dict[str, tuple[str, bool]] = {
    "fid": ("FID of the results against the style images (art-trained Inception, as ArtFID)", True),
    "art_fid": ("ArtFID = (1 + LPIPS) x (1 + FID) (Wright & Ommer 2022)", True),
}
CSV_COLUMNS = ("model", "content", "style", *PAIR_METRICS)


# ---------------------------------------------------------------------------------------------------------------
# Benchmark images
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Benchmark:
    """Content and style images (loaded, resized) in a stable order; every content is paired with every style."""

    name: str
    contents: list[tuple[Path, Tensor]]
    styles: list[tuple[Path, Tensor]]
    size: int | None
    skipped: list[str] = field(default_factory=list)
    content_dir: str = ""
    style_dir: str = ""

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(c, s) for c in range(len(self.contents)) for s in range(len(self.styles))]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "content_dir": self.content_dir,
            "style_dir": self.style_dir,
            "size": self.size,
            "n_contents": len(self.contents),
            "n_styles": len(self.styles),
            "n_pairs": len(self.pairs),
            "contents": [p.name for p, _ in self.contents],
            "styles": [p.name for p, _ in self.styles],
            "skipped": list(self.skipped),
        }


def _load_folder(folder: Path, size: int | None, limit: int | None, skipped: list[str]) -> list[tuple[Path, Tensor]]:
    images = []
    for path in find_images(folder):
        if limit is not None and len(images) >= limit:
            break
        try:
            images.append((path, load_image_tensor(path, size=size)))
        except ImageLoadError as exc:
            skipped.append(str(exc))
            log.warning("benchmark image skipped: %s", exc)
    if not images:
        raise ValueError(f"no readable image in {folder} (skipped: {'; '.join(skipped)})")
    return images


def load_benchmark(cfg: Mapping[str, Any]) -> Benchmark:
    """The benchmark named by the ``benchmark`` config group; generates the project's default set on first use.

    Keys: name, content_dir, style_dir (both null: the generated set under ``root``), size (shorter side, null
    keeps), max_contents, max_styles, and for the generated set root, n_content, n_style, generate_size.
    """
    content_dir, style_dir = cfg.get("content_dir"), cfg.get("style_dir")
    if (content_dir is None) != (style_dir is None):
        missing = "benchmark.style_dir" if style_dir is None else "benchmark.content_dir"
        raise ValueError(f"{missing} is not set: give both benchmark.content_dir and benchmark.style_dir")
    generated = content_dir is None
    if generated:
        from styletransfer.data.sample import make_sample_dataset

        if not cfg.get("root"):
            raise ValueError("benchmark.root is not set (where the generated benchmark set is written)")
        content_dir, style_dir = make_sample_dataset(
            Path(cfg["root"]), n_content=int(cfg.get("n_content", 4)), n_style=int(cfg.get("n_style", 4)),
            size=int(cfg.get("generate_size", 256)),
        )
    size = cfg.get("size")
    size = int(size) if size else None
    skipped: list[str] = []
    contents = _load_folder(Path(content_dir), size, cfg.get("max_contents"), skipped)
    styles = _load_folder(Path(style_dir), size, cfg.get("max_styles"), skipped)
    for key, found in (("expected_contents", len(contents)), ("expected_styles", len(styles))):
        expected = cfg.get(key)
        if expected and expected != found:
            log.warning("benchmark %s expects %s images, found %d: numbers will not compare with published ones",
                        cfg.get("name"), expected, found)
    name = str(cfg.get("name") or "folders")
    if not generated and name == "default":
        name = "folders"  # the default set's config with both folders overridden
    return Benchmark(name, contents, styles, size, skipped, str(content_dir), str(style_dir))


# ---------------------------------------------------------------------------------------------------------------
# Models under test
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    """A model under test: ``stylize(content (1,3,H,W), style (1,3,h,w), alpha) -> result (1,3,H,W)``."""

    label: str
    stylize: Callable[[Tensor, Tensor, float], Tensor]
    info: dict[str, Any]
    supports_alpha: bool = True


def checkpoint_labels(paths: Sequence[str | Path]) -> list[str]:
    """Short unique labels: the file stem, with as many parent folders as needed to tell files apart."""
    parts = [Path(p).with_suffix("").parts for p in paths]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{i}:{p}" for i, p in enumerate(paths)]


def adain_candidate(path: str | Path, label: str, device: torch.device, encoder: Any = None,
                    channels_last: bool = False, bf16: bool = False) -> Candidate:
    """A Candidate from an AdaIN checkpoint (Lightning .ckpt, exported decoder.pth, or the release's decoder.pth)."""
    from styletransfer.stylize import Stylizer

    stylizer = Stylizer.from_checkpoint(path, encoder=encoder, device=device, channels_last=channels_last, bf16=bf16)

    def run(content: Tensor, style: Tensor, alpha: float) -> Tensor:
        return stylizer.stylize(content, [style], alpha=alpha)

    info = {"method": "adain", "path": str(path), "kind": stylizer.kind, "encoder": stylizer.encoder_spec}
    return Candidate(label, run, info, supports_alpha=True)


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------
class Scorer:
    """Computes every per-pair metric with one evaluation encoder, plus LPIPS / Inception features when available."""

    def __init__(self, encoder: VGGEncoder, device: torch.device, cfg: Mapping[str, Any] | None = None) -> None:
        cfg = dict(cfg or {})
        self.encoder = encoder.to(device)
        self.device = device
        self.cfsd_max_positions = cfg.get("cfsd_max_positions", M.CFSD_MAX_POSITIONS)
        self.unavailable: dict[str, str] = {}
        self.lpips: LPIPSAlex | None = None
        self.inception: ArtInception | None = None
        try:
            self.lpips = LPIPSAlex(cfg.get("lpips_weights")).to(device)
        except MetricUnavailable as exc:
            self.unavailable["lpips"] = str(exc)
        try:
            self.inception = ArtInception(cfg.get("inception_weights"), int(cfg.get("inception_size", 512))).to(device)
        except MetricUnavailable as exc:
            self.unavailable["fid"] = str(exc)
        if "fid" in self.unavailable or "lpips" in self.unavailable:
            self.unavailable["art_fid"] = "needs " + " and ".join(k.upper() for k in ("lpips", "fid") if k in self.unavailable)

    @torch.no_grad()
    def features(self, image: Tensor) -> dict[str, Tensor]:
        return self.encoder(image.to(self.device, torch.float32), EVAL_LAYERS)

    @torch.no_grad()
    def score(self, result: Tensor, content: Tensor, style_feats: Mapping[str, Tensor],
              content_feats: Mapping[str, Tensor]) -> dict[str, float]:
        """Per-pair metrics of one result (1, 3, H, W) against its content and the style's features."""
        result = result.to(self.device, torch.float32)
        content = content.to(self.device, torch.float32)
        feats = self.features(result)
        values = {f"content_{layer}": M.content_distance(feats[layer], content_feats[layer]) for layer in CONTENT_LAYERS}
        values["style_mean_std"] = M.summed_over_layers(M.mean_std_distance, feats, style_feats, MEAN_STD_LAYERS)
        values["style_gram"] = M.summed_over_layers(M.gram_distance, feats, style_feats, GRAM_LAYERS)
        values["ssim"] = M.ssim_luminance(result, content)
        values["cfsd"] = M.cfsd(content_feats[CFSD_LAYER], feats[CFSD_LAYER], self.cfsd_max_positions)
        if self.lpips is not None:
            values["lpips"] = self.lpips(result, content)
        return {k: float(v.reshape(-1)[0]) for k, v in values.items()}

    @torch.no_grad()
    def inception_features(self, image: Tensor) -> Tensor | None:
        return None if self.inception is None else self.inception(image.to(self.device, torch.float32)).cpu()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """Human-readable device: the GPU's name, or the CPU with its thread count."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _aggregate(values: Sequence[float]) -> dict[str, float]:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "median": float("nan")}
    return {"mean": statistics.fmean(finite), "median": statistics.median(finite)}


def evaluate_candidate(candidate: Candidate, bench: Benchmark, scorer: Scorer, device: torch.device, alpha: float,
                       warmup: int, seed: int, keep: set[tuple[int, int]]) -> dict[str, Any]:
    """Stylise and score every pair; returns rows, aggregates, set metrics, timing and the kept results."""
    torch.manual_seed(seed)
    style_feats = [scorer.features(s.unsqueeze(0)) for _, s in bench.styles]
    content_cache: dict[int, dict[str, Tensor]] = {}
    first_c, first_s = bench.contents[0][1].unsqueeze(0), bench.styles[0][1].unsqueeze(0)
    for _ in range(warmup):
        candidate.stylize(first_c.to(device), first_s.to(device), alpha)
    _sync(device)
    rows, kept, result_feats, style_inc = [], {}, [], []
    style_inc_cache: dict[int, Tensor | None] = {}
    for ci, si in bench.pairs:
        content = bench.contents[ci][1].unsqueeze(0).to(device)
        style = bench.styles[si][1].unsqueeze(0).to(device)
        torch.manual_seed(seed)
        _sync(device)
        start = time.perf_counter()
        result = candidate.stylize(content, style, alpha)
        _sync(device)
        seconds = time.perf_counter() - start
        if ci not in content_cache:
            content_cache[ci] = scorer.features(content)
        row: dict[str, Any] = {"model": candidate.label, "content": bench.contents[ci][0].name,
                               "style": bench.styles[si][0].name}
        row.update(scorer.score(result, content, style_feats[si], content_cache[ci]))
        row["seconds"] = seconds
        rows.append(row)
        if (ci, si) in keep:
            kept[(ci, si)] = result[0].float().cpu()
        feats = scorer.inception_features(result)
        if feats is not None:
            if si not in style_inc_cache:
                style_inc_cache[si] = scorer.inception_features(style)
            result_feats.append(feats)
            style_inc.append(style_inc_cache[si])
    aggregate = {name: _aggregate([r[name] for r in rows]) for name in PAIR_METRICS if name not in scorer.unavailable}
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
    seconds = [r["seconds"] for r in rows]
    mean_s = statistics.fmean(seconds)
    timing = {
        "device": device_name(device),
        "warmup_runs": warmup,
        "seconds_per_image_mean": mean_s,
        "seconds_per_image_median": statistics.median(seconds),
        "images_per_second": 1.0 / mean_s if mean_s > 0 else float("inf"),
        "image_size": list(bench.contents[0][1].shape[-2:]),
    }
    return {"rows": rows, "aggregate": aggregate, "set_metrics": set_metrics, "timing": timing, "kept": kept}


def alpha_sweep(candidate: Candidate, bench: Benchmark, scorer: Scorer, device: torch.device,
                alphas: Sequence[float], n_pairs: int, seed: int) -> dict[str, Any]:
    """Mean content (relu4_1) and style (mean/std) loss at each alpha over the first ``n_pairs`` pairs, and the
    results of the first pair."""
    pairs = bench.pairs[: max(1, n_pairs)]
    style_feats = {si: scorer.features(bench.styles[si][1].unsqueeze(0)) for _, si in pairs}
    content_feats = {ci: scorer.features(bench.contents[ci][1].unsqueeze(0)) for ci, _ in pairs}
    curve = {"alpha": [float(a) for a in alphas], "content_relu4_1": [], "style_mean_std": []}
    images = []
    for alpha in alphas:
        losses_c, losses_s = [], []
        for index, (ci, si) in enumerate(pairs):
            torch.manual_seed(seed)
            content = bench.contents[ci][1].unsqueeze(0).to(device)
            result = candidate.stylize(content, bench.styles[si][1].unsqueeze(0).to(device), float(alpha))
            feats = scorer.features(result)
            losses_c.append(float(M.content_distance(feats["relu4_1"], content_feats[ci]["relu4_1"])[0]))
            losses_s.append(float(M.summed_over_layers(M.mean_std_distance, feats, style_feats[si], MEAN_STD_LAYERS)[0]))
            if index == 0:
                images.append(result[0].float().cpu())
        curve["content_relu4_1"].append(statistics.fmean(losses_c))
        curve["style_mean_std"].append(statistics.fmean(losses_s))
    curve["pairs"] = [[bench.contents[c][0].name, bench.styles[s][0].name] for c, s in pairs]
    return {"curve": curve, "images": images}


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------
def _cell(image: Tensor, size: int) -> Tensor:
    """Fit an image into a size x size white cell (aspect ratio kept)."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    resized = F.interpolate(image[None].float(), size=new, mode="bilinear", antialias=True, align_corners=False)[0]
    cell = torch.ones(3, size, size)
    top, left = (size - new[0]) // 2, (size - new[1]) // 2
    cell[:, top: top + new[0], left: left + new[1]] = resized.clamp(0, 1)
    return cell


def make_grid_image(bench: Benchmark, results: Mapping[tuple[int, int], Tensor], contents: Sequence[int],
                    styles: Sequence[int], cell: int = 128, pad: int = 2) -> Tensor:
    """Rows content, columns style; the first row holds the styles and the first column the contents."""
    rows = len(contents) + 1
    cols = len(styles) + 1
    grid = torch.ones(3, rows * cell + (rows + 1) * pad, cols * cell + (cols + 1) * pad)

    def put(r: int, c: int, image: Tensor) -> None:
        top, left = pad + r * (cell + pad), pad + c * (cell + pad)
        grid[:, top: top + cell, left: left + cell] = _cell(image, cell)

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
            ax = fig.add_subplot(grid[r, 2 * c: 2 * c + 2])
            ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"alpha = {alpha:g}", fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    for k, (key, title) in enumerate((("content_relu4_1", "content loss (relu4_1)"),
                                      ("style_mean_std", "style loss (mean/std, relu1_1..relu4_1)"))):
        ax = fig.add_subplot(grid[-1, k * n_cols: (k + 1) * n_cols])
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


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4g}"


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], unavailable: Mapping[str, str]) -> None:
    """metrics.csv: a row per model and pair; a metric that could not be computed reads "unavailable"."""
    cells = [[UNAVAILABLE if k in unavailable and k not in row else row.get(k, "") for k in CSV_COLUMNS] for row in rows]
    write_csv_atomic(path, CSV_COLUMNS, cells)


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
        f"{bench['n_pairs']} pairs, shorter side {bench['size'] or 'as is'}; alpha {summary['alpha']}; "
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
                cells.append(f"{_fmt(agg['mean'])} ({_fmt(agg['median'])})")
        cells += [_fmt(model["set_metrics"][c]) for c in set_cols]
        lines.append(f"| {model['label']} | " + " | ".join(cells) + " |")
    lines += ["", "## Speed", "", "| model | device | s / image (mean) | images / s | warm-up runs |", "|---|---|---|---|---|"]
    for model in models:
        t = model["timing"]
        lines.append(f"| {model['label']} | {t['device']} | {_fmt(t['seconds_per_image_mean'])} | "
                     f"{_fmt(t['images_per_second'])} | {t['warmup_runs']} |")
    lines += ["", "## Models", ""]
    for model in models:
        info = model["info"]
        enc = info.get("encoder") or {}
        lines.append(f"- **{model['label']}**: {info.get('method')} {info.get('kind', '')} `{info.get('path', '')}`; "
                     f"encoder {enc.get('arch')} / {enc.get('weights')} (fingerprint {enc.get('fingerprint')})")
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


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


def log_results(loggers: Sequence[Any], summary: Mapping[str, Any], images: Mapping[str, tuple[Path, Tensor]]) -> None:
    """Send hyper-parameters, aggregates and figures to Lightning loggers (wandb and TensorBoard take images)."""
    from styletransfer.loggers import log_image

    flat: dict[str, float] = {}
    for model in summary["models"]:
        for name, agg in model["aggregate"].items():
            flat[f"eval/{model['label']}/{name}_mean"] = agg["mean"]
            flat[f"eval/{model['label']}/{name}_median"] = agg["median"]
        for name, value in model["set_metrics"].items():
            if isinstance(value, float):
                flat[f"eval/{model['label']}/{name}"] = value
        flat[f"eval/{model['label']}/images_per_second"] = model["timing"]["images_per_second"]
    for logger in loggers:
        logger.log_hyperparams({"benchmark": summary["benchmark"]["name"], "encoder": summary["encoder"],
                                "models": [m["info"].get("path", m["label"]) for m in summary["models"]],
                                "unavailable": summary["unavailable"]})
        logger.log_metrics(flat, step=0)
        for key, (path, tensor) in images.items():
            log_image(logger, f"eval/{key}", tensor.clamp(0, 1), path, step=0)
        logger.save()
        if hasattr(logger, "finalize"):
            logger.finalize("success")


# ---------------------------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------------------------
def evaluate(candidates: Sequence[Candidate], bench: Benchmark, scorer: Scorer, device: torch.device,
             output_dir: Path, alpha: float = 1.0, warmup: int = 2, seed: int = 0,
             sweep_alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), sweep_pairs: int = 4,
             grid_contents: int = 6, grid_styles: int = 6, grid_cell: int = 128,
             loggers: Sequence[Any] = (), extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Score every candidate on every pair and write metrics.csv, summary.json, report.md, grid(s), alpha_sweep.png."""
    if not candidates:
        raise ValueError("nothing to evaluate: give ckpt=PATH (or ckpt=[A,B]) and/or method=gatys")
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
        entry = {"label": candidate.label, "info": candidate.info, "n_pairs": len(out["rows"]),
                 "aggregate": out["aggregate"], "set_metrics": out["set_metrics"], "timing": out["timing"]}
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
            path = output_dir / f"grid_{_safe(label)}.png"
            save_image(grid, path)
            images[f"grid_{_safe(label)}"] = (path, grid)
    if sweeps:
        write_alpha_figure(output_dir / "alpha_sweep.png", sweeps)
        from styletransfer.data.images import load_image_tensor as _read

        images["alpha_sweep"] = (output_dir / "alpha_sweep.png", _read(output_dir / "alpha_sweep.png"))
    log_results(loggers, summary, images)
    log.info("evaluation written to %s", output_dir)
    return summary


def resolve_device(trainer_cfg: Mapping[str, Any] | None) -> torch.device:
    """The device named by the trainer group's ``accelerator`` (auto: the GPU when there is one)."""
    accelerator = str((trainer_cfg or {}).get("accelerator", "auto")).lower()
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"trainer.accelerator={accelerator} but CUDA is not available; use trainer=cpu")
        return torch.device("cuda")
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise ValueError(f"trainer.accelerator={accelerator} is not supported by evaluate.py (cpu, gpu or auto)")


def run(cfg: Any) -> dict[str, Any]:
    """Evaluate the configured checkpoints (and Gatys, with method=gatys) on the configured benchmark."""
    from omegaconf import OmegaConf

    from styletransfer.training import instantiate_group

    plain = OmegaConf.to_container(cfg, resolve=True)
    output_dir = Path(plain["paths"]["output_dir"])
    device = resolve_device(plain.get("trainer"))
    seed = int(plain.get("seed", 0))
    precision = str((plain.get("trainer") or {}).get("precision", "32-true"))
    bf16 = precision.startswith("bf16") and device.type == "cuda"
    channels_last = bool(plain.get("channels_last", False))

    ckpts = plain.get("ckpt")
    ckpts = [] if ckpts is None else ([ckpts] if isinstance(ckpts, (str, Path)) else list(ckpts))
    model_encoder = dict(plain.get("model_encoder") or {})
    if not model_encoder.get("weights"):
        model_encoder = plain["encoder"]
    candidates = [
        adain_candidate(path, label, device, encoder=model_encoder, channels_last=channels_last, bf16=bf16)
        for path, label in zip(ckpts, checkpoint_labels(ckpts))
    ]
    method = plain.get("method")
    if isinstance(method, Mapping) and method:
        candidates.append(gatys_candidate(method, plain["encoder"], plain.get("gatys") or {}, device))
    if not candidates:
        raise ValueError("nothing to evaluate: give ckpt=PATH (or ckpt=[A,B]) and/or method=gatys")

    bench = load_benchmark(plain["benchmark"])
    scorer = Scorer(build_encoder(plain["encoder"], EVAL_LAYERS), device, plain.get("metrics") or {})
    if "logger" in plain and plain["logger"] and any("WandbLogger" in str(v.get("_target_", ""))
                                                       for v in plain["logger"].values() if isinstance(v, Mapping)):
        from styletransfer.wandb_setup import choose_wandb_mode

        choose_wandb_mode()
    loggers = instantiate_group(cfg.get("logger"))
    sweep = plain.get("alpha_sweep") or {}
    grid = plain.get("grid") or {}
    return evaluate(
        candidates, bench, scorer, device, output_dir,
        alpha=float(plain.get("alpha", 1.0)), warmup=int((plain.get("timing") or {}).get("warmup", 2)), seed=seed,
        sweep_alphas=[float(a) for a in sweep.get("values", (0.0, 0.25, 0.5, 0.75, 1.0))],
        sweep_pairs=int(sweep.get("pairs", 4)), grid_contents=int(grid.get("max_contents", 6)),
        grid_styles=int(grid.get("max_styles", 6)), grid_cell=int(grid.get("cell", 128)), loggers=loggers,
        extra={"config": {k: plain.get(k) for k in ("ckpt", "alpha", "metrics", "timing", "alpha_sweep", "gatys")}},
    )


def gatys_candidate(method_cfg: Mapping[str, Any], encoder_cfg: Mapping[str, Any], gatys_cfg: Mapping[str, Any],
                    device: torch.device) -> Candidate:
    """Neural Style (``method=gatys``) at ``gatys.steps`` iterations per pair, through GatysModule and
    PairDataModule: each pair is written losslessly to a temporary folder and optimised by a quiet pl.Trainer.

    The time per image includes the whole optimisation (that is what it costs to stylise an image).
    """
    import tempfile

    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from styletransfer.data.pair import PairDataModule

    steps = int(gatys_cfg.get("steps", 200))
    if steps < 1:
        raise ValueError(f"gatys.steps must be >= 1, got {steps}")
    target = str(method_cfg.get("_target_", ""))
    if not target.endswith("GatysModule"):
        raise ValueError(f"method={target or method_cfg}: evaluate.py scores AdaIN checkpoints (ckpt=...) and "
                         "method=gatys; other methods are not supported")
    accelerator = "gpu" if device.type == "cuda" else "cpu"

    def run(content: Tensor, style: Tensor, alpha: float) -> Tensor:
        with tempfile.TemporaryDirectory(prefix="gatys_eval_") as tmp:
            root = Path(tmp)
            save_image(content[0].cpu(), root / "content.png")
            save_image(style[0].cpu(), root / "style.png")
            data = PairDataModule(content=str(root / "content.png"), style=str(root / "style.png"),
                                  image_size=int(max(content.shape[-2:])))
            module = instantiate(dict(method_cfg), encoder=dict(encoder_cfg), snapshot_every=0)
            trainer = pl.Trainer(accelerator=accelerator, devices=1, max_steps=steps, max_epochs=-1, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                 default_root_dir=str(root), num_sanity_val_steps=0)
            trainer.fit(module, datamodule=data)
            result = module.output().detach().float()[:1]
        if result.shape[-2:] != content.shape[-2:]:
            result = F.interpolate(result, size=content.shape[-2:], mode="bilinear", align_corners=False)
        return result.clamp(0, 1).to(content.device)

    info = {"method": "gatys", "kind": f"{steps} steps", "path": "", "steps": steps,
            "config": {k: v for k, v in method_cfg.items() if k != "_target_"}, "encoder": dict(encoder_cfg)}
    return Candidate(f"gatys@{steps}", run, info, supports_alpha=False)
