"""AdaIN's plugin (``styletransfer.protocol.registry``): which model files are AdaIN's and how they load into its
:class:`~styletransfer.protocol.model.StyleModel`, the :class:`~styletransfer.methods.adain.styliser.Styliser`.

Its files: a Lightning checkpoint of an AdaIN run, the exported ``checkpoints/decoder.pth``, or the original
release's ``decoder.pth`` (with its ``vgg_normalised.pth`` as the encoder). Imports no Lightning.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from styletransfer.methods.adain.checkpoint import EncoderArg, file_kind
from styletransfer.methods.adain.styliser import Styliser

NAME = "adain"
#: Whether its models take style images (what an application checks before building one).
STYLE_INPUT = True
FILES = "a Lightning .ckpt of an AdaIN run, an exported checkpoints/decoder.pth, or the AdaIN release's decoder.pth"


def recognises(obj: Any) -> bool:
    """Whether a weights-only-loaded file is one of AdaIN's model files."""
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
    transform: str | None = None,
) -> Styliser:
    """The Styliser of a loaded AdaIN file (see ``checkpoint.read_model`` for the encoder it runs behind), with the
    feature transform it records, or ``transform``."""
    options = {"channels_last": channels_last, "bf16": bf16, "compile": compile}
    return Styliser.from_loaded(obj, path, encoder, device, transform, **options)
