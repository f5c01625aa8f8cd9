"""What a user meant when Hydra could not compose their command line.

Hydra refuses a key the config does not have (``trainer.max_step=5``) before any of our code runs, and its hint
("To append to your config use +trainer.max_step=5") leads to a second error from the Trainer. After such a failure
the entry points run their Hydra app through :func:`run_with_hint`, which then calls :func:`explain_unknown_key`: it
composes the command line again through Hydra's compose API and names the key that was probably meant.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

_NOT_OVERRIDABLE = re.compile(r"Could not override '([^']+)'")


def _overrides(argv: Sequence[str]) -> list[str]:
    """The config overrides in a command line (``key=value``, ``+key=``, ``~key``), without Hydra's own
    (``hydra.*``, flags such as ``-m`` or ``--cfg job``)."""
    kept = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key = arg.split("=", 1)[0].lstrip("+~")
        if key != "hydra" and not key.startswith("hydra."):
            kept.append(arg)
    return kept


def _group_options_with(config_dir: Path, group: str, key: str) -> list[str]:
    """The options of config group ``group`` (``configs/<group>/*.yaml``) that have a top-level ``key``."""
    import yaml

    folder = config_dir / group.replace(".", "/")
    found = []
    for path in sorted(folder.glob("*.yaml")) if group and folder.is_dir() else []:
        try:
            content = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(content, dict) and key in content:
            found.append(path.stem)
    return found


def explain_unknown_key(config_dir: str | Path, config_name: str, argv: Sequence[str]) -> str | None:
    """One line naming the key meant when an override in ``argv`` names a key the composed config lacks (None when
    that is not why composition failed)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import DictConfig, OmegaConf

    overrides = _overrides(argv)

    def composed(kept: list[str]) -> tuple[DictConfig | None, str]:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
                return compose(config_name=config_name, overrides=kept), ""
        except (HydraException, ValueError, KeyError) as exc:  # also OmegaConf's errors
            return None, str(exc)
        finally:
            GlobalHydra.instance().clear()

    _, error = composed(overrides)
    found = _NOT_OVERRIDABLE.search(error)
    if not found:
        return None
    full_key = found.group(1)
    # The config as the group choices make it (other key overrides may fail too: they are left out here)
    rest = [o for o in overrides if "." not in o.split("=", 1)[0] and o.split("=", 1)[0] != full_key]
    config, _ = composed(rest)
    if config is None:
        return None
    parent_key, _, key = full_key.rpartition(".")
    parent = OmegaConf.select(config, parent_key) if parent_key else config
    if not isinstance(parent, DictConfig):
        return None
    where = parent_key or "the top level"
    options = _group_options_with(Path(config_dir), parent_key, key)
    if options:  # e.g. data.content with data=folders: the key belongs to another choice of the group
        choices = " or ".join(f"{parent_key}={option}" for option in options)
        return f"{full_key} is not a setting of the chosen {parent_key}: it is one of {choices}; add that choice"
    close = difflib.get_close_matches(key, [str(k) for k in parent.keys()], n=1, cutoff=0.6)
    prefix = f"{parent_key}." if parent_key else ""
    meant = f"did you mean {prefix}{close[0]}?" if close else f"the keys there are {', '.join(map(str, parent))}."
    return (
        f"{full_key} is not a setting ({where} has no {key}): {meant} Hydra's +{full_key}=... would add it as a new "
        "key, which the code that reads it would refuse."
    )


def run_with_hint(main: Callable[[], object], config_dir: str | Path, config_name: str) -> None:
    """Run an entry point's ``@hydra.main`` function; when Hydra could not compose the command line (it printed why
    and exits 1 before the task ran: ``HydraConfig`` was never set), add one ``hint:`` line naming the key meant."""
    from hydra.core.hydra_config import HydraConfig

    try:
        main()
    except SystemExit as exc:
        if exc.code == 1 and not HydraConfig.initialized():
            hint = explain_unknown_key(config_dir, config_name, sys.argv[1:])
            if hint:
                print(f"hint: {hint}", file=sys.stderr)
        raise
