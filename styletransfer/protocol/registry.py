"""The method registry: every method's plugin module, found by name, by a Hydra ``_target_`` or by a model file.

A plugin is a module of the method's own folder (``styletransfer/methods/<name>/plugin.py``) with:

* ``NAME`` (the method's name) and ``FILES`` (the model files it reads, for error messages);
* ``recognises(obj) -> bool``: whether a weights-only-loaded file is one of its model files;
* ``load(obj, path, options) -> StyleModel`` (feed-forward methods; ``options``: a
  :class:`~styletransfer.protocol.loading.LoadOptions`, then the method's own keyword options);
* ``config_candidate(method_cfg, encoder_cfg, options, device) -> Candidate`` (methods evaluated from their
  config, such as Neural Style, whose "model" is an optimisation per pair).

Built-in plugins are listed in :data:`BUILT_IN`; other packages add theirs through the ``styletransfer.methods``
entry-point group (``[project.entry-points."styletransfer.methods"] mymethod = "mypackage.plugin"``). Plugins are
imported by name when first needed, so the applications never import a method.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from styletransfer.nn.weights import safe_load
from styletransfer.protocol.loading import LoadOptions
from styletransfer.protocol.model import StyleModel
from styletransfer.runtime.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

#: The project's own methods: name -> plugin module.
BUILT_IN = {
    "adain": "styletransfer.methods.adain.plugin",
    "gatys": "styletransfer.methods.gatys.plugin",
    "fast": "styletransfer.methods.fast.plugin",
    "wct": "styletransfer.methods.wct.plugin",
    "linear": "styletransfer.methods.linear.plugin",
}
#: Entry-point group through which other packages register methods.
ENTRY_POINT_GROUP = "styletransfer.methods"


@cache
def plugin_modules() -> dict[str, str]:
    """Every method's plugin module path by name: the built-in ones, then the entry points of installed packages."""
    found = dict(BUILT_IN)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name, point.value)
    return found


def plugin(name: str) -> ModuleType:
    """The plugin module of method ``name``; a ConfigError lists the known names."""
    modules = plugin_modules()
    if name not in modules:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(modules))}")
    return importlib.import_module(modules[name])


def plugin_for_target(target: str) -> ModuleType:
    """The plugin of the method whose folder holds ``target`` (a Hydra ``_target_``, e.g. a LightningModule)."""
    for name, module in plugin_modules().items():
        package = module.rpartition(".")[0]
        if target == package or target.startswith(package + "."):
            return plugin(name)
    raise ConfigError(f"method _target_ {target!r} belongs to no known method ({', '.join(sorted(plugin_modules()))})")


def load_model(
    path: str | os.PathLike,
    encoder: Any = None,
    device: str | torch.device = "cpu",
    check: Callable[[str, bool], None] | None = None,
    flags: Mapping[str, str] | None = None,
    *,
    channels_last: bool = False,
    bf16: bool = False,
    compile: bool | str = False,
    **options: Any,
) -> StyleModel:
    """The feed-forward model in a model file of any method (read weights-only once; each plugin that can load
    files is asked whether it recognises it). ``encoder``, ``device`` and the speed options go to the plugin's
    ``load`` as one :class:`~styletransfer.protocol.loading.LoadOptions`, ``options`` (a method's own, e.g.
    ``transform``, ``levels``) as keywords; a file no plugin recognises is a CheckpointError listing what each
    method reads. ``check`` is called with the method's name and whether its models take style images (the
    plugin's ``STYLE_INPUT``) once the file is recognised and before the model is built: an application refuses a
    missing input there, before the slow part. ``flags`` names an option's command-line flag in that refusal
    (option -> flag)."""
    path = Path(path).expanduser()
    obj = safe_load(path)
    readers = [p for p in map(plugin, plugin_modules()) if hasattr(p, "recognises")]
    for reader in readers:
        if reader.recognises(obj):
            if check is not None:
                check(reader.NAME, getattr(reader, "STYLE_INPUT", True))
            taken = inspect.signature(reader.load).parameters
            for name, value in options.items():
                if name not in taken and value is not None:
                    option = f"{name} option ({flags[name]})" if flags and name in flags else f"{name} option"
                    raise ConfigError(f"{path} is a {reader.NAME} model, which has no {option}: leave it out")
            given = {name: value for name, value in options.items() if name in taken}
            loading = LoadOptions(encoder, device, channels_last, bf16, compile)
            model: StyleModel = reader.load(obj, path, loading, **given)
            if model.warning():  # once, for every method and every application that loads through here
                log.warning("%s", model.warning())
            return model
    keys = list(obj)[:4] if isinstance(obj, Mapping) else []
    expected = "; ".join(f"{reader.NAME}: {reader.FILES}" for reader in readers)
    raise CheckpointError(
        f"{path} is not a style-transfer model file: it holds a {type(obj).__name__} "
        f"{keys or ''}; expected one of ({expected})"
    )
