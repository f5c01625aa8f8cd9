"""The AdaIN decoder: a mirror of VGG-19 up to relu4_1 that turns relu4_1 features back into an image."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletransfer.files import atomic_open

#: The encoder layer the decoder inverts: AdaIN mixes statistics here and the content loss is measured here.
BOTTLENECK = "relu4_1"
#: ``format`` of the exported decoder file (``checkpoints/decoder.pth``).
DECODER_FORMAT = "styletransfer.adain_decoder"

#: (in, out) channels of each 3x3 conv, with "up" where the paper's decoder upsamples (nearest, x2).
_DECODER_PLAN: tuple[tuple[int, int] | str, ...] = (
    (512, 256), "up",
    (256, 256), (256, 256), (256, 256), (256, 128), "up",
    (128, 128), (128, 64), "up",
    (64, 64), (64, 3),
)


class AdaINDecoder(nn.Sequential):
    """Decoder of Huang & Belongie (2017): reflection padding, no normalisation, nearest upsampling.

    The module indices equal those of the original release's ``decoder.pth`` (conv weights at 1, 5, 8, ..., 28),
    so that file loads with ``load_state_dict``. ``forward`` upsamples to the exact sizes that lead to
    ``output_size``, so the output matches the input image for any size, not only multiples of 8.
    """

    def __init__(self) -> None:
        layers: list[nn.Module] = []
        for index, step in enumerate(_DECODER_PLAN):
            if step == "up":
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                continue
            c_in, c_out = step
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, kernel_size=3)]
            if index != len(_DECODER_PLAN) - 1:
                layers.append(nn.ReLU())
        super().__init__(*layers)

    def forward(self, features: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
        """Decode relu4_1 ``features`` (N, 512, h, w) to an image (N, 3, H, W).

        Without ``output_size`` each upsampling doubles the size (8h x 8w), as in the release.
        """
        ups = [m for m in self if isinstance(m, nn.Upsample)]
        sizes: list[tuple[int, int] | None] = [None] * len(ups)
        if output_size is not None:
            height, width = int(output_size[0]), int(output_size[1])
            sizes = [
                (math.ceil(height / 2**k), math.ceil(width / 2**k)) for k in range(len(ups) - 1, -1, -1)
            ]
        x = features
        up_index = 0
        for module in self:
            if isinstance(module, nn.Upsample):
                size = sizes[up_index]
                x = module(x) if size is None else F.interpolate(x, size=size, mode="nearest")
                up_index += 1
            else:
                x = module(x)
        return x


def save_decoder(decoder: AdaINDecoder, encoder_spec: Mapping[str, Any], path: Path, step: int = 0) -> None:
    """Write an inference-ready decoder file atomically (temporary file, then rename).

    It holds the decoder's state dict (release layout keys), the spec of the encoder it was trained behind
    (with its fingerprint) and the step; it loads with ``torch.load(weights_only=True)``.
    """
    payload = {
        "format": DECODER_FORMAT,
        "version": 1,
        "step": int(step),
        "decoder": {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()},
        "encoder": dict(encoder_spec),
    }
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)
