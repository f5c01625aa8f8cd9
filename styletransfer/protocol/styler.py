"""What the stylers behind a frozen encoder share (AdaIN's Styliser, WCT's and Linear Style Transfer's stylers): the
model file they came from, the speed options, ``describe()``, the random-encoder ``warning()``, bf16 autocast and the
style codes computed from prepared style images."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import torch
from torch import Tensor, nn

from styletransfer.nn.compiling import bf16_autocast
from styletransfer.protocol.controls import Capabilities, Controls, accept, style_list
from styletransfer.protocol.inputs import prepared_styles
from styletransfer.protocol.model import random_encoder_warning

if TYPE_CHECKING:
    from typing_extensions import Unpack


class StylerOptions(TypedDict, total=False):
    """What every styler takes by keyword besides its parts: the model file it was read from (``source``, default
    "") and its ``kind`` (default ""), and the speed options ``channels_last`` and ``bf16`` (default False)."""

    source: str
    kind: str
    channels_last: bool
    bf16: bool


class EncoderStyler(nn.Module):
    """A :class:`~styletransfer.protocol.model.StyleModel` behind ``encoder`` (its ``spec`` is the encoder's record)
    read from ``source`` (a file of ``kind``), with the ``channels_last`` and ``bf16`` speed options (the
    :class:`StylerOptions` every subclass takes by keyword after its own parts).

    A subclass sets ``method``, ``title`` (the method's name in the random-encoder warning) and ``capabilities``,
    the ``device`` property and :meth:`details` (what ``describe()`` adds); one whose style codes are computed image
    by image gives ``_image`` (the image prepared as an input) and ``_style_code`` (one prepared style's code, under
    autocast) and gets :meth:`encode_styles` and ``_codes``."""

    method: str
    title: str
    capabilities: Capabilities

    def __init__(self, encoder: Any, **options: Unpack[StylerOptions]) -> None:
        super().__init__()
        self.encoder = encoder
        self.source, self.kind = options.get("source", ""), options.get("kind", "")
        self.channels_last, self.bf16 = bool(options.get("channels_last")), bool(options.get("bf16"))

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    def details(self) -> dict[str, Any]:
        """What ``describe()`` records of this model besides its method, file, kind and encoder."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Method, file, kind of file, the model's own details and the encoder it was trained behind (for reports)."""
        return {
            "method": self.method,
            "path": self.source,
            "kind": self.kind,
            **self.details(),
            "encoder": dict(self.encoder.spec),
        }

    def warning(self) -> str | None:
        """Says so when the model was trained behind a random encoder (a test or offline run)."""
        return random_encoder_warning(self.encoder.spec, self.source, self.title)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return bf16_autocast(self.bf16, self.device)

    def _image(self, image: Tensor, name: str) -> Tensor:
        raise NotImplementedError

    def _style_code(self, name: str, style: Tensor) -> Any:
        raise NotImplementedError

    def _codes(self, images: Sequence[Tensor], reference: Tensor | None = None) -> list[Any]:
        """Each style's code; with ``reference`` (the contents, for colour preservation) of the style recoloured to
        each content."""
        codes = []
        for name, style in prepared_styles(images, self._image, reference):
            with self._autocast():
                codes.append(self._style_code(name, style))
        return codes

    def _call_inputs(self, content: Tensor, styles: Any, controls: Controls) -> tuple[Tensor, list[Any], list[float]]:
        """A stylise call's content batch, its styles' codes (the cached ones unless colour preservation recomputes
        them against each content) and the weights to blend them with (``[1.0]`` for one style); a control the model
        does not declare is refused (``accept``)."""
        images = accept(self, styles, controls)
        mixed = controls.checked_weights(images)
        batch = self._image(content, "content")
        codes = controls.cached_codes
        if codes is None:
            codes = self._codes(images, batch if controls.preserve_colour else None)
        return batch, list(codes), mixed or [1.0]

    @torch.no_grad()
    def encode_styles(self, styles: Sequence[Tensor]) -> list[Any]:
        """Each style's code, to reuse across calls as ``Controls(style_codes=...)``."""
        return self._codes(style_list(styles))
