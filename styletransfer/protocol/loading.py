"""How a model file is loaded (what ``registry.load_model`` hands every plugin's ``load``), and what each plugin
module would otherwise write again: recognising its files by their kind, and refusing ``compile`` where a method
has no compiled path."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from styletransfer.runtime.errors import ConfigError


@dataclass(frozen=True)
class LoadOptions:
    """The options every method's model loads with: ``encoder`` (None: the one its file records; a dict of
    ``encoder`` settings or a built encoder otherwise), ``device``, and the speed options ``channels_last``,
    ``bf16`` (autocast) and ``compile`` (True or a ``torch.compile`` mode)."""

    encoder: Any = None
    device: str | torch.device = "cpu"
    channels_last: bool = False
    bf16: bool = False
    compile: bool | str = False

    def speed(self, compiled: bool = True) -> dict[str, Any]:
        """The speed options as a model's constructor takes them; without ``compile`` for a model that is not
        ``compiled`` (refuse it first: :meth:`refuse_compile`)."""
        options: dict[str, Any] = {"channels_last": self.channels_last, "bf16": self.bf16}
        return {**options, "compile": self.compile} if compiled else options

    def refuse_compile(self, path: str | os.PathLike, method: str, why: str) -> None:
        """A ConfigError when ``compile`` is set for a method that is not compiled (``why`` says why not)."""
        if self.compile:
            raise ConfigError(f"{path} is a {method} model, which is not compiled ({why}): leave --compile out")


def recognised_by(file_kind: Callable[[Any], str | None]) -> Callable[[Any], bool]:
    """A plugin's ``recognises``: whether a weights-only-loaded file is one of the method's, by its ``file_kind``
    (None for a file that is not)."""

    def recognises(obj: Any) -> bool:
        return file_kind(obj) is not None

    return recognises
