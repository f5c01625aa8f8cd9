"""The number a sweep optimises: a weighted sum of metrics measured after training (config key ``objective``).

Metric names are either the benchmark's (the ones ``evaluate.py`` reports: ``content_relu4_1``,
``style_mean_std``, ``ssim``, ...), measured with :mod:`styletransfer.eval`'s scorer on the result of the
trained model, or final training metrics (``loss/total``, ``loss/style``, ...; ``val/...`` runs a validation
pass first). AdaIN is scored on every content/style pair of ``objective.benchmark``; Neural Style (Gatys) on the
image(s) it optimised, against its own content and style images.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from styletransfer.eval.benchmark import load_benchmark
from styletransfer.eval.run import evaluate_candidate
from styletransfer.eval.scorer import EVAL_LAYERS, PAIR_METRICS, SET_METRICS, Scorer
from styletransfer.nn.encoder import build_encoder
from styletransfer.protocol.candidate import Candidate
from styletransfer.runtime.errors import ObjectiveError
from styletransfer.sweeps.direction import parse_direction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Objective:
    """``value = sum(weight * metric for metric, weight in terms)``, to be minimised or maximised."""

    terms: dict[str, float]
    direction: str = "minimize"
    alpha: float = 1.0
    benchmark: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Any) -> Objective:
        """Read the ``objective`` config: a metric name (minimised), or a mapping with terms, direction, alpha and
        benchmark."""
        if isinstance(cfg, str):
            return cls(terms={cfg: 1.0})
        plain: dict = (
            cast(dict, OmegaConf.to_container(cfg, resolve=True)) if isinstance(cfg, DictConfig) else dict(cfg)
        )
        terms = plain.get("terms")
        if not isinstance(terms, Mapping) or not terms:
            raise ObjectiveError(
                f"objective.terms must map metric names to weights, e.g. {{style_mean_std: 1.0}}; got {terms!r}"
            )
        bad = {k: v for k, v in terms.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
        if bad:
            raise ObjectiveError(f"objective.terms weights must be numbers; got {bad}")
        direction = parse_direction(plain.get("direction"))
        alpha = float(plain.get("alpha", 1.0))
        if not 0.0 <= alpha <= 1.0:
            raise ObjectiveError(f"objective.alpha={alpha} must be in [0, 1]")
        benchmark = plain.get("benchmark") or {}
        return cls({str(k): float(v) for k, v in terms.items()}, direction, alpha, dict(benchmark))

    @property
    def benchmark_terms(self) -> list[str]:
        """Terms measured by the benchmark scorer (the rest are training metrics)."""
        return [name for name in self.terms if name in PAIR_METRICS or name in SET_METRICS]

    def combine(self, values: Mapping[str, float]) -> float:
        """The weighted sum of ``values`` (every term must be there and finite)."""
        missing = [name for name in self.terms if name not in values]
        if missing:
            raise ObjectiveError(f"objective terms {missing} were not measured; available: {sorted(values)}")
        bad = {name: values[name] for name in self.terms if not math.isfinite(values[name])}
        if bad:
            raise ObjectiveError(f"objective terms are not finite: {bad}")
        return float(sum(weight * values[name] for name, weight in self.terms.items()))

    def measure(
        self,
        model: Any,
        datamodule: Any,
        trainer: Any,
        run_metrics: Mapping[str, float],
        encoder_cfg: Mapping[str, Any],
    ) -> dict[str, float]:
        """Measure every term and return ``{"objective": value, "objective/<term>": value, ...}``.

        ``run_metrics`` are the final training metrics; a ``val/...`` term not among them triggers
        ``trainer.validate``. Benchmark terms stylise with ``model`` and score with an evaluation encoder built
        from ``encoder_cfg`` (the run's ``encoder`` group, as ``evaluate.py`` does).
        """
        values = dict(run_metrics)
        if any(name.startswith("val/") and name not in values for name in self.terms):
            for result in trainer.validate(model, datamodule=datamodule, verbose=False):
                values.update({k: float(v) for k, v in result.items()})
        if self.benchmark_terms:
            values.update(benchmark_scores(self, model, datamodule, encoder_cfg))
        unknown = [name for name in self.terms if name not in values]
        if unknown:
            raise ObjectiveError(
                f"objective.terms names {unknown}: not a benchmark metric ({', '.join([*PAIR_METRICS, *SET_METRICS])}) "
                f"nor a final metric of this run ({', '.join(sorted(values))})"
            )
        scores = {f"objective/{name}": float(values[name]) for name in self.terms}
        scores["objective"] = self.combine(values)
        log.info(
            "objective (%s) = %.6g  [%s]",
            self.direction,
            scores["objective"],
            ", ".join(f"{n}={values[n]:.4g} x {w:g}" for n, w in self.terms.items()),
        )
        return scores


def build_objective(**cfg: Any) -> Objective:
    """The ``objective`` config's ``_target_``: an Objective from terms, direction, alpha and benchmark, checked."""
    return Objective.from_config(cfg)


def benchmark_scores(
    objective: Objective, model: Any, datamodule: Any, encoder_cfg: Mapping[str, Any]
) -> dict[str, float]:
    """Benchmark metrics of a trained model: a feed-forward model (its ``trained_candidate()``) stylises every pair
    of ``objective.benchmark``, means over pairs plus FID/ArtFID; a model whose result is the optimised image itself
    (``optimised_results(datamodule)``, e.g. Neural Style) is scored against its own content and style."""
    if not hasattr(model, "trained_candidate") and not hasattr(model, "optimised_results"):
        raise ObjectiveError(
            f"{type(model).__name__} cannot be scored on the benchmark; use training metrics in objective.terms "
            "(e.g. loss/total)"
        )
    device = next(model.parameters()).device
    scorer = Scorer(build_encoder(dict(encoder_cfg), EVAL_LAYERS), device, objective.benchmark.get("metrics") or {})
    unavailable = {name: scorer.unavailable[name] for name in objective.benchmark_terms if name in scorer.unavailable}
    if unavailable:
        raise ObjectiveError(f"objective metrics unavailable: {unavailable}; choose other objective.terms")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if hasattr(model, "trained_candidate"):
                return _on_benchmark(objective, model.trained_candidate(), scorer, device)
            return _result_against_inputs(model.optimised_results(datamodule), scorer)
    finally:
        model.train(was_training)


def _on_benchmark(objective: Objective, candidate: Candidate, scorer: Scorer, device: torch.device) -> dict[str, float]:
    """Stylise every benchmark pair with the trained model and score it as ``evaluate.py`` does."""
    if not objective.benchmark:
        raise ObjectiveError(
            "objective.benchmark is not set: scoring a trained model needs a benchmark (e.g. /benchmark: default)"
        )
    bench = load_benchmark(objective.benchmark)
    out = evaluate_candidate(candidate, bench, scorer, device, objective.alpha, warmup=0, seed=0, keep=set())
    scores = {name: agg["mean"] for name, agg in out["aggregate"].items()}
    scores.update({k: v for k, v in out["set_metrics"].items() if isinstance(v, float)})
    return scores


def _result_against_inputs(
    results: Sequence[tuple[Tensor, Tensor, Sequence[Tensor]]], scorer: Scorer
) -> dict[str, float]:
    """Score optimised images against their content and style(s): ``results`` holds (image (1, 3, H, W), its
    content (1, 3, H, W), its styles (1, 3, h, w) each); the mean over every (image, style) pair."""
    rows = []
    for image, content, styles in results:
        content_feats = scorer.features(content)
        rows += [scorer.score(image, content, scorer.features(style), content_feats) for style in styles]
    names = [n for n in rows[0] if n not in SET_METRICS]
    return {name: statistics.fmean(row[name] for row in rows) for name in names}
