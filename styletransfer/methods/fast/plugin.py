"""Fast neural style's plugin (``styletransfer.protocol.registry``): which model files are fast-style networks and
how they load into a :class:`~styletransfer.methods.fast.styler.FastStyler`. Imports no Lightning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from styletransfer.methods.fast.checkpoint import file_kind, read_network
from styletransfer.methods.fast.styler import FastStyler

NAME = "fast"
#: Whether its models take style images (what an application checks before building one).
STYLE_INPUT = False
FILES = (
    "a Lightning .ckpt of a method=fast run, an exported checkpoints/network.pth, or a pytorch/examples "
    "fast_neural_style model (.pth)"
)


def recognises(obj: Any) -> bool:
    """Whether a weights-only-loaded file is one of the fast-style files."""
    return file_kind(obj) is not None


def load(
    obj: Any,
    path: str | os.PathLike,
    *,
    encoder: Any = None,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    bf16: bool = False,
    compile: bool | str = False,
) -> FastStyler:
    """The FastStyler of a loaded fast-style file (``encoder`` is not needed: the network stylises alone)."""
    network, names, spec, kind = read_network(obj, Path(path))
    model = FastStyler(
        network, names, spec, str(path), kind, channels_last=channels_last, bf16=bf16, compile=compile
    ).to(device)
    return model
