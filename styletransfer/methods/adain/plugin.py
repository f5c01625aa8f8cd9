"""AdaIN's plugin (``styletransfer.protocol.registry``): which model files are AdaIN's and how they load into its
:class:`~styletransfer.protocol.model.StyleModel`, the :class:`~styletransfer.methods.adain.styliser.Styliser`.

Its files: a Lightning checkpoint of an AdaIN run, the exported ``checkpoints/decoder.pth``, or the original
release's ``decoder.pth`` (with its ``vgg_normalised.pth`` as the encoder). Imports no Lightning.
"""

from __future__ import annotations

import os
from typing import Any

from styletransfer.methods.adain.checkpoint import file_kind
from styletransfer.methods.adain.styliser import Styliser
from styletransfer.protocol.loading import LoadOptions, recognised_by

NAME = "adain"
#: Whether its models take style images (what an application checks before building one).
STYLE_INPUT = True
FILES = "a Lightning .ckpt of an AdaIN run, an exported checkpoints/decoder.pth, or the AdaIN release's decoder.pth"


recognises = recognised_by(file_kind)


def load(obj: Any, path: str | os.PathLike, options: LoadOptions, transform: str | None = None) -> Styliser:
    """The Styliser of a loaded AdaIN file (see ``checkpoint.read_model`` for the encoder it runs behind), with the
    feature transform it records, or ``transform``."""
    return Styliser.from_loaded(obj, path, options, transform)
