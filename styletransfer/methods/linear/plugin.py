"""Linear Style Transfer's plugin (``styletransfer.protocol.registry``): which model files are its own and how they
load into a :class:`~styletransfer.methods.linear.styler.LinearStyler`. Imports no Lightning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from styletransfer.methods.linear.checkpoint import file_kind, read_model
from styletransfer.methods.linear.styler import LinearStyler
from styletransfer.nn.encoder_record import EncoderArg
from styletransfer.runtime.errors import ConfigError

NAME = "linear"
#: Whether its models take style images (what an application checks before building one).
STYLE_INPUT = True
FILES = "a Lightning .ckpt of a method=linear run, or its exported checkpoints/linear.pth"


def recognises(obj: Any) -> bool:
    """Whether a weights-only-loaded file is one of Linear Style Transfer's model files."""
    return file_kind(obj) is not None


def load(
    obj: Any,
    path: str | os.PathLike,
    *,
    encoder: EncoderArg = None,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    bf16: bool = False,
    compile: bool | str = False,
) -> LinearStyler:
    """The LinearStyler of a loaded model file. ``compile`` is refused (not offered yet)."""
    if compile:
        raise ConfigError(f"{path} is a linear model, which is not compiled yet: leave --compile out")
    built, transform, decoder, kind = read_model(obj, Path(path), encoder)
    return LinearStyler(built, transform, decoder, str(path), kind, channels_last=channels_last, bf16=bf16).to(device)
