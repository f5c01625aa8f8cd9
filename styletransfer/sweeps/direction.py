"""Which way a sweep optimises: ``objective.direction``, else the sweeper's, else minimize (no evaluation imports,
so the trial handling and the sweep table stay light)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from styletransfer.runtime.errors import ObjectiveError

DIRECTIONS = ("minimize", "maximize")


def parse_direction(value: Any, setting: str = "objective.direction") -> str:
    """``minimize`` or ``maximize`` (any case; None means minimize); anything else names ``setting``."""
    direction = "minimize" if value is None else str(value).lower()
    if direction not in DIRECTIONS:
        raise ObjectiveError(f"{setting}={value!r}: use minimize or maximize")
    return direction


def direction_of(config: Any) -> str:
    """The direction of a run's or sweep's whole config: ``objective.direction``, else the sweeper's
    ``hydra.sweeper.direction`` (Optuna), else minimize."""
    objective = config.get("objective") if isinstance(config, (Mapping, DictConfig)) else None
    if isinstance(objective, (Mapping, DictConfig)) and objective.get("direction") is not None:
        return parse_direction(objective.get("direction"))
    sweeper = (
        OmegaConf.select(config, "hydra.sweeper.direction", default=None) if isinstance(config, DictConfig) else None
    )
    return parse_direction(sweeper, "hydra.sweeper.direction") if isinstance(sweeper, str) else "minimize"
