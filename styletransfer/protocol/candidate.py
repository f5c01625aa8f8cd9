"""What the evaluation runs: a model under test, from a model file (any feed-forward method, through the registry)
or supplied by a method from its Hydra config (e.g. Neural Style, which optimises each pair)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from styletransfer.protocol.controls import Controls
from styletransfer.protocol.model import StyleModel


@dataclass
class Candidate:
    """A model under test: ``stylise(content (1,3,H,W), style (1,3,h,w), alpha) -> result (1,3,H,W)`` in [0, 1].

    ``info`` is recorded in the report (method, file, encoder); ``supports_alpha`` says whether the alpha sweep
    means anything for it. ``result_for(content_path, style_path) -> (1,3,H,W)``, when set, gives a result made
    elsewhere (``evaluate.py outputs=DIR``): the evaluation takes it instead of stylising, and times nothing.
    """

    label: str
    stylise: Callable[[Tensor, Tensor, float], Tensor]
    info: dict[str, Any]
    supports_alpha: bool = True
    result_for: Callable[[Path, Path], Tensor] | None = None


def model_candidate(model: StyleModel, label: str) -> Candidate:
    """A Candidate of a loaded feed-forward model: each pair stylised with the pair's style (a model trained for
    its own styles ignores it), at the evaluation's alpha when the model has the control."""
    caps = model.capabilities

    def run(content: Tensor, style: Tensor, alpha: float) -> Tensor:
        styles = [style] if caps.style_input else []
        return model.stylise(content, styles, Controls(alpha=alpha if caps.alpha else 1.0))

    return Candidate(label, run, model.describe(), supports_alpha=caps.alpha)
