"""AdaIN's ONNX graphs (what ``styletransfer-export`` writes for an AdaIN model; the export itself, the check and the
runtime are :mod:`styletransfer.apps.export` and :mod:`styletransfer.apps.onnx_runtime`).

* the image graph: ``content`` (N, 3, H, W) in [0, 1] with dynamic N, H and W, ``alpha`` (1,), and the style's
  relu4_1 channel statistics ``style_mean``, ``style_std`` (N, 512, 1, 1) -> ``image`` (N, 3, H, W) clamped to
  [0, 1], the content's size for any H and W (not only multiples of 8);
* the style graph: ``style`` (1, 3, H, W) -> (``style_mean``, ``style_std``), AdaIN's style code.

Interpolating styles is a weighted sum of the codes: exact, since AdaIN is affine in the style's mean and std.
The decoder's nearest upsampling is :func:`styletransfer.nn.upsampling.upsample_to` (an index gather with ATen's own
index formula, equal to PyTorch on any runtime).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from styletransfer.methods.adain.model import adain, encode
from styletransfer.methods.adain.transforms import with_stats
from styletransfer.nn.encoder import VGGEncoder, min_input_side
from styletransfer.nn.stats import mean_std
from styletransfer.nn.upsampling import upsample_to
from styletransfer.protocol.model import OnnxGraph

#: AdaIN's style code as graph tensors: the relu4_1 channel mean and std.
CODE_NAMES = ("style_mean", "style_std")
#: Smallest exported side: relu4_1 keeps a 2 x 2 map.
MIN_SIDE = min_input_side(["relu4_1"], positions=2)


class ImageGraph(nn.Module):
    """content, alpha, style statistics -> stylised image: ``stylise`` with precomputed statistics, as one graph.
    In half precision the encoder and decoder run in float16; statistics, AdaIN and the trade-off stay float32."""

    def __init__(self, encoder: VGGEncoder, decoder: nn.Module, transform: str = "adain") -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.transform = transform

    def forward(self, content: Tensor, alpha: Tensor, style_mean: Tensor, style_std: Tensor) -> Tensor:
        dtype = next(self.decoder.parameters()).dtype
        c_feat = encode(self.encoder, content.to(dtype)).float()
        if self.transform == "adain":
            moved = adain(c_feat, (style_mean, style_std))
        else:
            moved = with_stats(self.transform, c_feat, mean_std(c_feat), (style_mean, style_std))
        target = alpha * moved + (1.0 - alpha) * c_feat
        decoded = self.decoder(target.to(dtype), (content.shape[2], content.shape[3]), upsample=upsample_to)
        return decoded.float().clamp(0.0, 1.0)


class StyleGraph(nn.Module):
    """style image -> relu4_1 (mean, std), float32 whatever the encoder's precision."""

    def __init__(self, encoder: VGGEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, style: Tensor) -> tuple[Tensor, Tensor]:
        dtype = next(self.encoder.parameters()).dtype
        return mean_std(encode(self.encoder, style.to(dtype)))


def _image_inputs(height: int, width: int, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
    """Image-graph inputs: two contents (a batch of 1 would be specialised to 1), alpha 0.8 (so the trade-off is part
    of what --check compares) and random statistics with stds around 1."""
    content = torch.rand(2, 3, height, width, generator=generator)
    stats = torch.rand(2, 2, 512, 1, 1, generator=generator)
    return content, torch.tensor([0.8]), stats[0], stats[1] + 0.5


def _style_inputs(height: int, width: int, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
    return (torch.rand(1, 3, width, height, generator=generator),)


def graphs(encoder: VGGEncoder, decoder: nn.Module, fp16: bool = False, transform: str = "adain") -> list[OnnxGraph]:
    """The image graph and the style graph of ``encoder`` and ``decoder`` (float16 copies with ``fp16``; the float32
    models stay the reference that ``--check`` compares with)."""
    encoder, decoder = encoder.cpu().eval(), decoder.cpu().eval()
    exported = (copy.deepcopy(encoder).half(), copy.deepcopy(decoder).half()) if fp16 else (encoder, decoder)
    batch = torch.export.Dim("N", min=1)
    side = torch.export.Dim("H", min=MIN_SIDE), torch.export.Dim("W", min=MIN_SIDE)
    image = OnnxGraph(
        role="image",
        suffix="",
        module=ImageGraph(*exported, transform),
        reference=ImageGraph(encoder, decoder, transform),
        inputs=_image_inputs(64, 56),
        input_names=("content", "alpha", *CODE_NAMES),
        output_names=("image",),
        dynamic_shapes={
            "content": {0: batch, 2: side[0], 3: side[1]},
            "alpha": None,
            "style_mean": {0: batch},
            "style_std": {0: batch},
        },
        check_inputs=_image_inputs,
    )
    style = OnnxGraph(
        role="style",
        suffix=".style",
        module=StyleGraph(exported[0]),
        reference=StyleGraph(encoder),
        inputs=_style_inputs(56, 64),
        input_names=("style",),
        output_names=CODE_NAMES,
        dynamic_shapes={"style": {2: side[0], 3: side[1]}},
        check_inputs=_style_inputs,
    )
    return [image, style]
