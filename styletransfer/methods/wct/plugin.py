"""Universal style transfer's plugin (``styletransfer.protocol.registry``): which model files are WCT decoders and
how they load into a :class:`~styletransfer.methods.wct.styler.WCTStyler`. Imports no Lightning."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from styletransfer.methods.wct.checkpoint import file_kind, read_model
from styletransfer.methods.wct.styler import WCTStyler
from styletransfer.nn.encoder_record import EncoderArg
from styletransfer.runtime.errors import ConfigError

NAME = "wct"
#: Whether its models take style images (what an application checks before building one).
STYLE_INPUT = True
FILES = "a Lightning .ckpt of a method=wct run, or its exported checkpoints/decoders.pth"


def recognises(obj: Any) -> bool:
    """Whether a weights-only-loaded file is one of WCT's model files."""
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
    levels: Sequence[str] | None = None,
    level_alphas: Mapping[str, float] | None = None,
) -> WCTStyler:
    """The WCTStyler of a loaded WCT file: the cascade over ``levels`` (default: every level it has decoders for),
    with the per-level alpha factors ``level_alphas`` (default 1 at each level). ``compile`` is refused (the
    cascade's eigendecompositions run outside any compiled graph)."""
    if compile:
        raise ConfigError(
            f"{path} is a wct model, which is not compiled (its eigendecompositions): leave --compile out"
        )
    built, decoders, kind = read_model(obj, Path(path), encoder)
    return WCTStyler(
        built,
        decoders,
        str(path),
        kind,
        levels=levels,
        level_alphas=level_alphas,
        channels_last=channels_last,
        bf16=bf16,
    ).to(device)
