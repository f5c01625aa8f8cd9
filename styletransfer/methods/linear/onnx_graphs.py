"""Linear Style Transfer's ONNX graphs (what ``styletransfer-export`` writes for a ``method=linear`` model; the
export itself, the check and the runtime are :mod:`styletransfer.apps.export` and
:mod:`styletransfer.apps.onnx_runtime`).

* the image graph: ``content`` (N, 3, H, W) in [0, 1] with dynamic N, H and W and the style's code,
  ``style_matrix`` (N, 32, 32) and ``style_mean`` (N, C, 1, 1) -> ``image`` (N, 3, H, W) clamped to [0, 1], the
  content's size for any H and W (no ``alpha`` input: the method has no trade-off);
* the style graph: ``style`` (1, 3, H, W) -> (``style_matrix``, ``style_mean``), the style's half of the module.

Interpolating styles is a weighted sum of the codes, as :func:`styletransfer.methods.linear.styler.blend_codes`
does in PyTorch (the transform is linear in the style's matrix and mean). The decoder upsamples with
:func:`styletransfer.nn.upsampling.upsample_to`, equal to PyTorch's nearest upsampling on any runtime. In half
precision the encoder and decoder run in float16; the transformation module (covariances, matrix products) stays
float32.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from styletransfer.methods.linear.transform import CHANNELS, MATRIX, LinearTransform
from styletransfer.nn.encoder import VGGEncoder, min_input_side
from styletransfer.nn.upsampling import upsample_to
from styletransfer.protocol.model import GraphDims, OnnxGraph, image_graph, style_graph

#: Linear Style Transfer's style code as graph tensors.
CODE_NAMES = ("style_matrix", "style_mean")


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class ImageGraph(nn.Module):
    """content, style matrix and mean -> stylised image: the styler's ``stylise`` with a style code, as one graph."""

    def __init__(self, encoder: VGGEncoder, transform: LinearTransform, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.transform, self.decoder = encoder, transform, decoder
        self.layer = transform.layer

    def forward(self, content: Tensor, style_matrix: Tensor, style_mean: Tensor) -> Tensor:
        features = self.encoder(content.to(_dtype(self.encoder)), [self.layer])[self.layer].float()
        moved, _ = self.transform.transfer(features, style_matrix, style_mean)
        size = (content.shape[2], content.shape[3])
        decoded = self.decoder(moved.to(_dtype(self.decoder)), output_size=size, upsample=upsample_to)
        return decoded.float().clamp(0.0, 1.0)


class StyleGraph(nn.Module):
    """style image -> (its matrix (1, 32, 32), its channel means (1, C, 1, 1)), float32."""

    def __init__(self, encoder: VGGEncoder, transform: LinearTransform) -> None:
        super().__init__()
        self.encoder, self.transform = encoder, transform
        self.layer = transform.layer

    def forward(self, style: Tensor) -> tuple[Tensor, Tensor]:
        features = self.encoder(style.to(_dtype(self.encoder)), [self.layer])[self.layer].float()
        return self.transform.style_matrix(features)


def _image_inputs(channels: int):
    def inputs(height: int, width: int, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        """Two contents (a batch of 1 would be specialised to 1), and a random code for each: matrices of entries
        around +-0.5 and channel means in [0, 1], the scale of a trained module's."""
        content = torch.rand(2, 3, height, width, generator=generator)
        matrix = torch.rand(2, MATRIX, MATRIX, generator=generator) - 0.5
        return content, matrix, torch.rand(2, channels, 1, 1, generator=generator)

    return inputs


def _style_inputs(height: int, width: int, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
    return (torch.rand(1, 3, width, height, generator=generator),)  # the other orientation than the contents'


def graphs(encoder: VGGEncoder, transform: LinearTransform, decoder: nn.Module, fp16: bool = False) -> list[OnnxGraph]:
    """The image graph and the style graph (encoder and decoder as float16 copies with ``fp16``; the float32 models
    stay the reference that ``--check`` compares with)."""
    encoder, transform, decoder = encoder.cpu().eval(), transform.cpu().eval().float(), decoder.cpu().eval()
    half = (copy.deepcopy(encoder).half(), copy.deepcopy(decoder).half()) if fp16 else (encoder, decoder)
    dims = GraphDims.at_least(min_input_side([transform.layer], positions=2))
    codes = {name: {0: dims.batch} for name in CODE_NAMES}
    return [
        image_graph(
            ImageGraph(half[0], transform, half[1]),
            ImageGraph(encoder, transform, decoder),
            _image_inputs(CHANNELS[transform.layer]),
            dims,
            codes,
            alpha=False,
        ),
        style_graph(StyleGraph(half[0], transform), StyleGraph(encoder, transform), _style_inputs, dims, CODE_NAMES),
    ]
