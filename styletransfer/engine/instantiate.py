"""Turning Hydra config groups into objects, the questions every entry point asks of its config, and the project's
config resolvers (``${sweep_name:}``), registered when this module is first imported."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_class as locate
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from styletransfer.runtime.errors import ConfigError, StyleTransferError


def instantiate_checked(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, except that a project error raised by the constructor (a bad setting, a
    missing folder) comes out as itself, not wrapped in Hydra's InstantiationException: the user then reads
    one message naming the setting instead of a traceback. So does a setting left at ``???`` (one the user must
    give, such as ``method.styles``)."""
    try:
        return instantiate(config, **kwargs)
    except MissingMandatoryValue as exc:
        key = exc.full_key or "a setting"
        raise ConfigError(f"{key} must be given (it has no default): add {key}=... to the command line") from None
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, StyleTransferError):
            raise cause from None
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        if isinstance(cause, TypeError) and unknown and isinstance(config, Mapping):
            raise ConfigError(_unknown_key(config, unknown.group(1))) from None
        raise


def _unknown_key(config: Mapping[str, Any], key: str) -> str:
    """The message for a key ``config``'s ``_target_`` does not take (a typo made with Hydra's ``+key=`` hint); the
    guess is among the target's parameters and the config's other keys (those a constructor takes as ``**kwargs``)."""
    target = str(config.get("_target_", "?"))
    try:
        taken = list(inspect.signature(locate(target)).parameters)
    except (ImportError, TypeError, ValueError):
        taken = []
    taken += [str(name) for name in config if name != key and not str(name).startswith("_")]
    close = difflib.get_close_matches(key, taken, n=1)
    meant = f": did you mean {close[0]}?" if close else ""
    return (
        f"{key} is not a setting of {target.rsplit('.', 1)[-1]}{meant} (a key added with +{key}=... is passed on as is)"
    )


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a group such as ``callbacks`` or ``logger`` that has a ``_target_``."""
    if not group:
        return []
    return [
        instantiate_checked(entry) for entry in group.values() if isinstance(entry, DictConfig) and "_target_" in entry
    ]


def is_multirun() -> bool:
    """True inside a Hydra multirun job (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def uses_wandb(loggers: Mapping[str, Any] | None) -> bool:
    """True when the ``logger`` group has a wandb logger (so wandb's mode must be chosen before it starts)."""
    return any(
        "WandbLogger" in str(entry.get("_target_", ""))
        for entry in (loggers or {}).values()
        if isinstance(entry, Mapping)
    )


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
