"""Linear Style Transfer's plugin (``styletransfer.protocol.registry``): which model files are its own and how they
load into a :class:`~styletransfer.methods.linear.styler.LinearStyler`. Imports no Lightning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from styletransfer.methods.linear.checkpoint import file_kind, read_model
from styletransfer.methods.linear.styler import LinearStyler
from styletransfer.protocol.loading import LoadOptions, recognised_by

NAME = "linear"
#: Whether its models take style images (what an application checks before building one).
STYLE_INPUT = True
FILES = "a Lightning .ckpt of a method=linear run, or its exported checkpoints/linear.pth"


recognises = recognised_by(file_kind)


def load(obj: Any, path: str | os.PathLike, options: LoadOptions) -> LinearStyler:
    """The LinearStyler of a loaded model file. ``compile`` is refused (not offered yet)."""
    options.refuse_compile(path, NAME, "not offered yet")
    built, transform, decoder, kind = read_model(obj, Path(path), options.encoder)
    model = LinearStyler(built, transform, decoder, source=str(path), kind=kind, **options.speed(compiled=False))
    return model.to(options.device)
