"""Turning Hydra config groups into objects, the questions every entry point asks of its config, and the project's
config resolvers (``${sweep_name:}``), registered when this module is first imported."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from styletransfer.runtime.errors import StyleTransferError


def instantiate_checked(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, except that a project error raised by the constructor (a bad setting, a
    missing folder) comes out as itself, not wrapped in Hydra's InstantiationException: the user then reads
    one message naming the setting instead of a traceback."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, StyleTransferError):
            raise cause from None
        raise


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a group such as ``callbacks`` or ``logger`` that has a ``_target_``."""
    if not group:
        return []
    return [instantiate_checked(entry) for entry in group.values() if isinstance(entry, DictConfig) and "_target_" in entry]


def is_multirun() -> bool:
    """True inside a Hydra multirun job (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def uses_wandb(loggers: Mapping[str, Any] | None) -> bool:
    """True when the ``logger`` group has a wandb logger (so wandb's mode must be chosen before it starts)."""
    return bool(loggers) and any(
        "WandbLogger" in str(entry.get("_target_", "")) for entry in loggers.values() if isinstance(entry, Mapping)
    )


def renamed_setting(old: str, new: str, old_value: Any, new_value: Any) -> Any:
    """The value of a setting renamed from ``old`` to ``new``: the old key's value when a user still gives it
    (with a warning naming the new key, once per place), else the new key's."""
    if old_value is None:
        return new_value
    warnings.warn(f"{old} is renamed {new}: using {old}={old_value!r}; write {new}={old_value!r} instead",
                  FutureWarning, stacklevel=3)
    return old_value


def renamed_overrides(overrides: Sequence[str], renames: Mapping[str, str]) -> list[str]:
    """Command-line overrides with renamed top-level keys rewritten (``encoder.weights=x`` ->
    ``metric_encoder.weights=x`` for ``{"encoder": "metric_encoder"}``), warning once per old key."""
    out, warned = [], set()
    for override in overrides:
        prefix = override[: len(override) - len(override.lstrip("+~"))]
        body = override[len(prefix):]
        key = body.split("=", 1)[0].split(".", 1)[0]
        if key in renames and "." in body.split("=", 1)[0]:
            body = renames[key] + body[len(key):]
            if key not in warned:
                warned.add(key)
                warnings.warn(f"{key}.* is renamed {renames[key]}.*: write {prefix}{body}", FutureWarning, stacklevel=2)
        out.append(prefix + body)
    return out


def sweep_name() -> str | None:
    """The sweep directory's name inside a multirun job (e.g. ``2026-01-31_12-00-00``), else None."""
    if not is_multirun():
        return None
    return Path(str(HydraConfig.get().sweep.dir)).name


def register_resolvers() -> None:
    """Register ``${sweep_name:}`` (the wandb group of a sweep's trials) with OmegaConf."""
    OmegaConf.register_new_resolver("sweep_name", sweep_name, replace=True)


# Registered on import: train.py imports this module before Hydra composes the config, and a job unpickled by a
# launcher in another process (submitit) imports it through the callbacks without running train.py's code.
register_resolvers()
