"""The images a model is given, prepared alike by every method: a batch in [0, 1] on the model's device, refused in
one line when a side is shorter than the model stylises, and the styles recoloured to the content for colour
preservation."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from styletransfer.data.images import unit_float_on
from styletransfer.nn.colour import match_colour
from styletransfer.protocol.controls import as_batch, check_size


def model_input(image: Tensor, name: str, device: torch.device, min_side: int, channels_last: bool = False) -> Tensor:
    """``image`` (3, H, W) or (N, 3, H, W), float in [0, 1] or uint8, as a float32 batch on ``device`` (channels
    last with that speed option); a side under ``min_side`` is refused naming ``name`` (``content``, ``style k``)."""
    batch = unit_float_on(as_batch(image, name), device)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    fix = "give a larger image" + (" (--style-short-side)" if name.startswith("style") else "")
    check_size(batch.shape[-1], batch.shape[-2], name, min_side, None if name == "content" else fix)
    return batch


def prepared_styles(
    images: Sequence[Tensor], prepare: Callable[[Tensor, str], Tensor], reference: Tensor | None = None
) -> Iterator[tuple[str, Tensor]]:
    """Each style's name (``style k``) and image, ``prepare``-d (e.g. :func:`model_input`) and, for colour
    preservation, recoloured to ``reference`` (the contents: one recoloured style per content, N of them)."""
    for k, image in enumerate(images):
        name = f"style {k}"
        style = prepare(image, name)
        yield name, style if reference is None else match_colour(style, reference)
