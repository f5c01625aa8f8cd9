"""torch.compile as the methods and the styliser use it: the modes a ``compile`` setting accepts, and calling a
function compiled with CUDA graphs, whose outputs the next replay overwrites; the models' ``bf16`` autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from styletransfer.runtime.errors import ConfigError

#: torch.compile modes a ``compile`` setting accepts (true means "default").
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: The modes that capture CUDA graphs.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
_OFF = ("", "false", "off", "none", "null")


def compile_mode(value: bool | str | None, setting: str = "method.compile") -> str | None:
    """``value`` as a torch.compile mode, None when off (false, null, "false", "off"); true means "default".
    Anything else raises ConfigError naming ``setting``."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _OFF:
        return None
    if text == "true":
        return "default"
    if text in COMPILE_MODES:
        return text
    raise ConfigError(f"{setting}={value!r}: use false, true or one of {', '.join(COMPILE_MODES)}")


def call_graph_safe(compiled: Callable[..., Any], *args: Any) -> Any:
    """``compiled(*args)`` for a function compiled with CUDA graphs: a new graph step is marked and the outputs (a
    tensor or a mapping of them) are copied out of the graph's memory, which the next replay reuses."""
    torch.compiler.cudagraph_mark_step_begin()
    out = compiled(*args)
    return {k: v.clone() for k, v in out.items()} if isinstance(out, Mapping) else out.clone()


def bf16_autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """A loaded model's ``bf16`` speed option: bfloat16 autocast on ``device`` when ``enabled``, else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
