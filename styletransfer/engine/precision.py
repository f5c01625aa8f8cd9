"""``trainer.precision``, the one precision setting of training and evaluation, read by the code that must know it.

Lightning applies it to a LightningModule's steps (autocast for the ``*-mixed`` values); a method that runs part of
its work outside Lightning's autocast (Neural Style's L-BFGS update) asks :func:`autocast_dtype` for the type.
"""

from __future__ import annotations

import torch

#: Lightning's precision values (and their short aliases) that mean autocast, and its type.
_AUTOCAST = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16, "16-mixed": torch.float16, "16": torch.float16}


def autocast_dtype(precision: str | int | None) -> torch.dtype | None:
    """The autocast type ``trainer.precision`` stands for (``bf16-mixed``: bfloat16), None for full precision."""
    return _AUTOCAST.get(str(precision))
