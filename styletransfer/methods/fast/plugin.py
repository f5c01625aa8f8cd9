"""Fast neural style's plugin (``styletransfer.protocol.registry``): which model files are fast-style networks and
how they load into a :class:`~styletransfer.methods.fast.styler.FastStyler`. Imports no Lightning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from styletransfer.methods.fast.checkpoint import file_kind, read_network
from styletransfer.methods.fast.styler import FastStyler
from styletransfer.protocol.loading import LoadOptions, recognised_by

NAME = "fast"
#: Whether its models take style images (what an application checks before building one).
STYLE_INPUT = False
FILES = (
    "a Lightning .ckpt of a method=fast run, an exported checkpoints/network.pth, or a pytorch/examples "
    "fast_neural_style model (.pth)"
)


recognises = recognised_by(file_kind)


def load(obj: Any, path: str | os.PathLike, options: LoadOptions) -> FastStyler:
    """The FastStyler of a loaded fast-style file (``options.encoder`` is not needed: the network stylises alone)."""
    network, names, spec, kind = read_network(obj, Path(path))
    return FastStyler(network, names, spec, str(path), kind, **options.speed()).to(options.device)
