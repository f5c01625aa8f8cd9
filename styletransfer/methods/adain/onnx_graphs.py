"""AdaIN's ONNX graphs (what ``styletransfer-export`` writes for an AdaIN model; the export itself, the check and the
runtime are :mod:`styletransfer.apps.export` and :mod:`styletransfer.apps.onnx_runtime`).

* the image graph: ``content`` (N, 3, H, W) in [0, 1] with dynamic N, H and W, ``alpha`` (1,), and the style's
  bottleneck channel statistics ``style_mean``, ``style_std`` (N, C, 1, 1; relu4_1: C = 512) -> ``image``
  (N, 3, H, W) clamped to [0, 1], the content's size for any H and W (not only multiples of the stride), at least
  two bottleneck positions a side (16 px at stride 8, 32 px at stride 16);
* the style graph: ``style`` (1, 3, H, W) -> (``style_mean``, ``style_std``), AdaIN's style code.

EFDM's graphs take and give its code instead: ``style_values`` (N, C, L), each channel's sorted values at the
style's L positions (dynamic). The image graph resamples them to the content's count (linear interpolation of the
sorted sequence: ONNX Resize, as ``transforms.apply``), ranks the content's values (the exporter writes the sort as
TopK, whose ties go in index order: ``transforms.efdm_ranks``) and gathers. Several styles: the runtime resamples
their codes to the longest before the weighted sum (``QUANTILE_CODES`` in the metadata).

Interpolating styles is a weighted sum of the codes: exact, since AdaIN is affine in the style's mean and std.
The decoder's nearest upsampling is :func:`styletransfer.nn.upsampling.upsample_to` (an index gather with ATen's own
index formula, equal to PyTorch on any runtime).
"""

from __future__ import annotations

import copy
import functools
import json

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletransfer.methods.adain.model import BOTTLENECK, adain, encode
from styletransfer.methods.adain.transforms import efdm_ranks, sorted_values, with_stats
from styletransfer.nn.encoder import min_input_side
from styletransfer.nn.encoders import FeatureEncoder
from styletransfer.nn.stats import mean_std
from styletransfer.nn.upsampling import upsample_to
from styletransfer.protocol.model import QUANTILE_CODES, GraphDims, OnnxGraph, image_graph, style_graph

#: AdaIN's style code as graph tensors: the bottleneck's channel mean and std.
CODE_NAMES = ("style_mean", "style_std")
#: EFDM's style code as a graph tensor: each channel's sorted values.
EFDM_CODE_NAMES = ("style_values",)
#: Smallest exported side behind VGG: relu4_1 keeps a 2 x 2 map (in general: twice the bottleneck's stride).
MIN_SIDE = min_input_side([BOTTLENECK], positions=2)


class ImageGraph(nn.Module):
    """content, alpha, style statistics -> stylised image: ``stylise`` with precomputed statistics, as one graph.
    In half precision the encoder and decoder run in float16; statistics, AdaIN and the trade-off stay float32."""

    def __init__(
        self, encoder: FeatureEncoder, decoder: nn.Module, transform: str = "adain", bottleneck: str = BOTTLENECK
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.transform = transform
        self.bottleneck = bottleneck

    def forward(self, content: Tensor, alpha: Tensor, style_mean: Tensor, style_std: Tensor) -> Tensor:
        dtype = next(self.decoder.parameters()).dtype
        c_feat = encode(self.encoder, content.to(dtype), bottleneck=self.bottleneck).float()
        if self.transform == "adain":
            moved = adain(c_feat, (style_mean, style_std))
        else:
            moved = with_stats(self.transform, c_feat, mean_std(c_feat), (style_mean, style_std))
        target = alpha * moved + (1.0 - alpha) * c_feat
        decoded = self.decoder(target.to(dtype), (content.shape[2], content.shape[3]), upsample=upsample_to)
        return decoded.float().clamp(0.0, 1.0)


class EFDMImageGraph(nn.Module):
    """content, alpha, the style's sorted values -> stylised image: EFDM's ``stylise`` with a precomputed code."""

    def __init__(self, encoder: FeatureEncoder, decoder: nn.Module, bottleneck: str = BOTTLENECK) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.bottleneck = bottleneck

    def forward(self, content: Tensor, alpha: Tensor, style_values: Tensor) -> Tensor:
        dtype = next(self.decoder.parameters()).dtype
        c_feat = encode(self.encoder, content.to(dtype), bottleneck=self.bottleneck).float()
        flat = c_feat.flatten(2)
        values = F.interpolate(style_values, size=flat.shape[-1], mode="linear", align_corners=True)
        target = values.gather(-1, efdm_ranks(flat)).view_as(c_feat)
        mixed = alpha * target + (1.0 - alpha) * c_feat
        decoded = self.decoder(mixed.to(dtype), (content.shape[2], content.shape[3]), upsample=upsample_to)
        return decoded.float().clamp(0.0, 1.0)


class EFDMStyleGraph(nn.Module):
    """style image -> each bottleneck channel's sorted values (1, C, L), float32."""

    def __init__(self, encoder: FeatureEncoder, bottleneck: str = BOTTLENECK) -> None:
        super().__init__()
        self.encoder = encoder
        self.bottleneck = bottleneck

    def forward(self, style: Tensor) -> Tensor:
        dtype = next(self.encoder.parameters()).dtype
        return sorted_values(encode(self.encoder, style.to(dtype), bottleneck=self.bottleneck))


class StyleGraph(nn.Module):
    """style image -> bottleneck (mean, std), float32 whatever the encoder's precision."""

    def __init__(self, encoder: FeatureEncoder, bottleneck: str = BOTTLENECK) -> None:
        super().__init__()
        self.encoder = encoder
        self.bottleneck = bottleneck

    def forward(self, style: Tensor) -> tuple[Tensor, Tensor]:
        dtype = next(self.encoder.parameters()).dtype
        return mean_std(encode(self.encoder, style.to(dtype), bottleneck=self.bottleneck))


def _image_inputs(
    height: int, width: int, generator: torch.Generator | None = None, channels: int = 512
) -> tuple[Tensor, ...]:
    """Image-graph inputs: two contents (a batch of 1 would be specialised to 1), alpha 0.8 (so the trade-off is part
    of what --check compares) and random statistics of the bottleneck's ``channels`` with stds around 1."""
    content = torch.rand(2, 3, height, width, generator=generator)
    stats = torch.rand(2, 2, channels, 1, 1, generator=generator)
    return content, torch.tensor([0.8]), stats[0], stats[1] + 0.5


def _efdm_image_inputs(
    height: int, width: int, generator: torch.Generator | None = None, channels: int = 512
) -> tuple[Tensor, ...]:
    """EFDM's image-graph inputs: two contents, alpha 0.8 and sorted values at 37 style positions (another count
    than the content's, so the resampling is part of what --check compares)."""
    content = torch.rand(2, 3, height, width, generator=generator)
    values = torch.sort(torch.rand(2, channels, 37, generator=generator) * 2.0, dim=-1).values
    return content, torch.tensor([0.8]), values


def _style_inputs(height: int, width: int, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
    return (torch.rand(1, 3, width, height, generator=generator),)


def graphs(
    encoder: FeatureEncoder,
    decoder: nn.Module,
    fp16: bool = False,
    transform: str = "adain",
    bottleneck: str = BOTTLENECK,
    channels: int = 512,
    stride: int = 8,
) -> list[OnnxGraph]:
    """The image graph and the style graph of ``encoder`` and ``decoder`` (float16 copies with ``fp16``; the float32
    models stay the reference that ``--check`` compares with); ``bottleneck`` is the layer the decoder inverts, with
    its ``channels`` and ``stride`` (the graphs' smallest side is two positions there)."""
    encoder, decoder = encoder.cpu().eval(), decoder.cpu().eval()
    exported = (copy.deepcopy(encoder).half(), copy.deepcopy(decoder).half()) if fp16 else (encoder, decoder)
    dims = GraphDims.at_least(2 * stride)
    if transform == "efdm":
        return _efdm_graphs(encoder, decoder, exported, bottleneck, channels, dims)
    image_inputs = functools.partial(_image_inputs, channels=channels)
    codes = {name: {0: dims.batch} for name in CODE_NAMES}
    return [
        image_graph(
            ImageGraph(*exported, transform, bottleneck),
            ImageGraph(encoder, decoder, transform, bottleneck),
            image_inputs,
            dims,
            codes,
        ),
        style_graph(
            StyleGraph(exported[0], bottleneck), StyleGraph(encoder, bottleneck), _style_inputs, dims, CODE_NAMES
        ),
    ]


def _efdm_graphs(
    encoder: FeatureEncoder,
    decoder: nn.Module,
    exported: tuple[FeatureEncoder, nn.Module],
    bottleneck: str,
    channels: int,
    dims: GraphDims,
) -> list[OnnxGraph]:
    """EFDM's image graph and style graph (see the module docstring): its code's length L is dynamic."""
    image_inputs = functools.partial(_efdm_image_inputs, channels=channels)
    codes = {name: {0: dims.batch, 2: torch.export.Dim("L", min=2)} for name in EFDM_CODE_NAMES}
    return [
        image_graph(
            EFDMImageGraph(*exported, bottleneck),
            EFDMImageGraph(encoder, decoder, bottleneck),
            image_inputs,
            dims,
            codes,
            metadata={QUANTILE_CODES: json.dumps(list(EFDM_CODE_NAMES))},
        ),
        style_graph(
            EFDMStyleGraph(exported[0], bottleneck),
            EFDMStyleGraph(encoder, bottleneck),
            _style_inputs,
            dims,
            EFDM_CODE_NAMES,
        ),
    ]
