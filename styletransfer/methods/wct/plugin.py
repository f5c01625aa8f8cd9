"""Universal style transfer's plugin (``styletransfer.protocol.registry``): which model files are WCT decoders and
how they load into a :class:`~styletransfer.methods.wct.styler.WCTStyler`. Imports no Lightning."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from styletransfer.methods.wct.checkpoint import file_kind, read_model
from styletransfer.methods.wct.styler import WCTStyler
from styletransfer.protocol.loading import LoadOptions, recognised_by

NAME = "wct"
#: Whether its models take style images (what an application checks before building one).
STYLE_INPUT = True
FILES = "a Lightning .ckpt of a method=wct run, or its exported checkpoints/decoders.pth"


recognises = recognised_by(file_kind)


def load(
    obj: Any,
    path: str | os.PathLike,
    options: LoadOptions,
    levels: Sequence[str] | None = None,
    level_alphas: Mapping[str, float] | None = None,
) -> WCTStyler:
    """The WCTStyler of a loaded WCT file: the cascade over ``levels`` (default: every level it has decoders for),
    with the per-level alpha factors ``level_alphas`` (default 1 at each level). ``compile`` is refused (the
    cascade's eigendecompositions run outside any compiled graph)."""
    options.refuse_compile(path, NAME, "its eigendecompositions")
    built, decoders, kind = read_model(obj, Path(path), options.encoder)
    speed = options.speed(compiled=False)
    return WCTStyler(built, decoders, levels, level_alphas, source=str(path), kind=kind, **speed).to(options.device)
