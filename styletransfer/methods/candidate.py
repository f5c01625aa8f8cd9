"""What the evaluation runs: a model under test, as each method supplies it (``methods.<name>.candidate``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor


@dataclass
class Candidate:
    """A model under test: ``stylise(content (1,3,H,W), style (1,3,h,w), alpha) -> result (1,3,H,W)`` in [0, 1].

    ``info`` is recorded in the report (method, file, encoder); ``supports_alpha`` says whether the alpha sweep
    means anything for it.
    """

    label: str
    stylise: Callable[[Tensor, Tensor, float], Tensor]
    info: dict[str, Any]
    supports_alpha: bool = True
