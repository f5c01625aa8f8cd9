"""ONNX export of an AdaIN model (what ``styletransfer-export`` does once ``styletransfer.export`` parsed its flags).

Two graphs, so that one file serves any style:

* the image graph (``model.onnx``): ``content`` (N, 3, H, W) in [0, 1] with dynamic N, H and W, ``alpha`` (1,), and
  the style's relu4_1 channel statistics ``style_mean``, ``style_std`` (N, 512, 1, 1) -> ``image`` (N, 3, H, W)
  clamped to [0, 1], the content's size for any H and W (not only multiples of 8);
* the style graph (``model.style.onnx``): ``style`` (1, 3, H, W) -> (``style_mean``, ``style_std``), what
  ``model.style_stats`` computes.

The graphs are captured with the torch.export-based exporter (``dynamo=True``): it keeps H and W symbolic through the
decoder's exact-size upsampling, whereas the TorchScript tracer (``dynamo=False``) turns the sizes the decoder
computes from them into constants, so its graph only runs at the traced size. The decoder's nearest upsampling is
written as an index gather with ATen's own index formula (``floor(dst * (float(in) / out))``), so it equals PyTorch
by construction on any runtime: ONNX's Resize divides by the inverse scale instead, which picks another source row
for some size pairs in onnxruntime 1.32 (e.g. 14 -> 16; none of those the decoder meets at 16-300 px, checked).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from styletransfer.methods.adain.cli import encoder_arg
from styletransfer.methods.adain.model import AdaINDecoder, adain, encode, style_stats, stylise
from styletransfer.methods.adain.onnx_runtime import (
    IMAGE_INPUTS,
    IMAGE_OUTPUTS,
    STYLE_INPUTS,
    STYLE_OUTPUTS,
    OnnxStyliser,
    style_graph_path,
)
from styletransfer.methods.adain.styliser import MIN_SIDE, Styliser
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.nn.stats import mean_std
from styletransfer.runtime.errors import ConfigError, ExportCheckError

log = logging.getLogger(__name__)

#: Default ONNX opset: the torch.export-based exporter's native one (lower opsets need a version conversion).
OPSET = 18
#: Opsets accepted by --opset (onnxruntime 1.18+ runs all of them).
OPSETS = range(18, 22)
#: (H, W) that --check runs: one multiple of 8 and one that is not, so the exact-size upsampling is exercised.
CHECK_SIZES = ((64, 48), (77, 53))
#: Largest absolute difference --check accepts between onnxruntime and PyTorch (float32), per precision. fp16 runs
#: the convolutions in half precision (10-bit mantissa) against the float32 PyTorch model.
TOLERANCE = {"fp32": 1e-3, "fp16": 3e-2}
#: Loggers of the exporter's passes, which report every rewrite at INFO.
QUIET_LOGGERS = ("onnxscript", "onnx_ir")
#: alpha used by --check (below 1, so the content-style trade-off is part of what is compared).
CHECK_ALPHA = 0.8


def nearest_indices(in_size: int, out_size: int, device: torch.device) -> Tensor:
    """Source index of each output position of PyTorch's nearest upsampling from ``in_size`` to ``out_size``:
    min(floor(dst * (float32(in) / out)), in - 1), the formula of ATen's CPU and CUDA kernels (sizes may be symbolic)."""
    scale = torch.full((), in_size, dtype=torch.float32, device=device) / out_size
    index = (torch.arange(out_size, dtype=torch.float32, device=device) * scale).floor().long()
    return index.clamp_max(in_size - 1)


def upsample_to(x: Tensor, size: tuple[int, int] | None) -> Tensor:
    """Nearest upsampling of ``x`` (N, C, h, w) to ``size`` (a doubling when None) by two index gathers, equal to
    ``F.interpolate(mode="nearest")``: the decoder's upsampling in the exported graphs."""
    height, width = size if size is not None else (2 * x.shape[2], 2 * x.shape[3])
    rows = nearest_indices(x.shape[2], height, x.device)
    cols = nearest_indices(x.shape[3], width, x.device)
    return x.index_select(2, rows).index_select(3, cols)


class ImageGraph(nn.Module):
    """content, alpha, style statistics -> stylised image: ``stylise`` with precomputed statistics, as one graph.
    In half precision the encoder and decoder run in float16; statistics, AdaIN and the trade-off stay float32."""

    def __init__(self, encoder: VGGEncoder, decoder: AdaINDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, content: Tensor, alpha: Tensor, style_mean: Tensor, style_std: Tensor) -> Tensor:
        dtype = self.decoder[1].weight.dtype
        c_feat = encode(self.encoder, content.to(dtype)).float()
        target = alpha * adain(c_feat, (style_mean, style_std)) + (1.0 - alpha) * c_feat
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


def _export(module: nn.Module, inputs: tuple[Tensor, ...], path: Path, names: tuple[tuple[str, ...], tuple[str, ...]],
            dynamic: dict, opset: int) -> Path:
    """One graph to ``path``, written to a temporary file beside it and renamed (a failed export leaves no file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used")  # the statistics' N is N
            torch.onnx.export(module.eval(), inputs, str(partial), input_names=list(names[0]),
                              output_names=list(names[1]), dynamic_shapes=dynamic, opset_version=opset, dynamo=True,
                              external_data=False, verbose=False)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def export_graphs(encoder: VGGEncoder, decoder: AdaINDecoder, output: str | os.PathLike, part: str = "both",
                  fp16: bool = False, opset: int = OPSET) -> list[Path]:
    """Write the image graph to ``output`` and/or the style graph to ``style_graph_path(output)``; returns them."""
    if part not in ("image", "style", "both"):
        raise ConfigError(f"part must be image, style or both, got {part!r}")
    if opset not in OPSETS:
        raise ConfigError(f"--opset must be in {OPSETS.start}-{OPSETS.stop - 1}, got {opset}")
    if fp16:  # copies: the caller's float32 models are the reference of --check
        encoder, decoder = copy.deepcopy(encoder).half(), copy.deepcopy(decoder).half()
    encoder, decoder = encoder.cpu().eval(), decoder.cpu().eval()
    side = torch.export.Dim("H", min=MIN_SIDE), torch.export.Dim("W", min=MIN_SIDE)
    written = []
    with torch.no_grad():
        if part in ("image", "both"):
            batch = torch.export.Dim("N", min=1)
            content = torch.rand(2, 3, 64, 56)  # batch 2: a batch of 1 would be specialised to 1
            inputs = (content, torch.tensor([0.5]), torch.rand(2, 512, 1, 1), torch.rand(2, 512, 1, 1) + 0.5)
            dynamic = {"content": {0: batch, 2: side[0], 3: side[1]}, "alpha": None,
                       "style_mean": {0: batch}, "style_std": {0: batch}}
            written.append(_export(ImageGraph(encoder, decoder), inputs, Path(output), (IMAGE_INPUTS, IMAGE_OUTPUTS),
                                   dynamic, opset))
        if part in ("style", "both"):
            written.append(_export(StyleGraph(encoder), (torch.rand(1, 3, 64, 56),), style_graph_path(output),
                                   (STYLE_INPUTS, STYLE_OUTPUTS), {"style": {2: side[0], 3: side[1]}}, opset))
    return written


def check_graphs(encoder: VGGEncoder, decoder: AdaINDecoder, output: str | os.PathLike, part: str = "both",
                 sizes: tuple[tuple[int, int], ...] = CHECK_SIZES, seed: int = 0) -> list[tuple[tuple[int, int], float]]:
    """Largest absolute difference between onnxruntime (CPU) and the float32 PyTorch model at each size: the image
    (style statistics from the style graph when it was exported) and, for the style graph, its statistics."""
    encoder, decoder = encoder.float().eval(), decoder.float().eval()
    runner = OnnxStyliser(output if part != "style" else None, style_graph_path(output) if part != "image" else None)
    generator = torch.Generator().manual_seed(seed)
    results = []
    for height, width in sizes:
        content = torch.rand(2, 3, height, width, generator=generator)
        style = torch.rand(1, 3, width, height, generator=generator)
        with torch.no_grad():
            reference = style_stats(encoder, [style])[0]
        diff = 0.0
        if runner.style is not None:
            stats = runner.run_style(style)
            diff = max(float((a - b).abs().max()) for a, b in zip(stats, reference))
        if runner.image is not None:
            expected = stylise(encoder, decoder, content, style_stats=[reference], alpha=CHECK_ALPHA)
            got = runner.run_image(content, stats if runner.style is not None else reference, CHECK_ALPHA)
            diff = float((got - expected).abs().max())
        results.append(((height, width), diff))
    return results


def run_export(args: argparse.Namespace) -> list[Path]:
    """Load CKPT (warning for a random encoder), export the requested graphs and, with ``--check``, compare them
    with PyTorch; an ExportCheckError names the first size over the tolerance."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    styliser = Styliser.from_checkpoint(args.checkpoint, encoder_arg(args), "cpu")
    written = export_graphs(styliser.encoder, styliser.decoder, args.output, args.part, args.fp16, args.opset)
    precision = "fp16" if args.fp16 else "fp32"
    print(f"wrote {', '.join(str(p) for p in written)} (opset {args.opset}, {precision})")
    if not args.check:
        return written
    tolerance = TOLERANCE[precision]
    what = "style statistics" if args.part == "style" else "image"
    results = check_graphs(styliser.encoder, styliser.decoder, args.output, args.part)
    for (height, width), diff in results:
        print(f"check {height}x{width}: largest absolute difference of the {what} {diff:.3g} (tolerance {tolerance:g})")
    for (height, width), diff in results:
        if not diff <= tolerance:
            raise ExportCheckError(f"the exported graph differs from PyTorch at {height}x{width} by {diff:.3g}, above "
                                   f"the {precision} tolerance {tolerance:g}")
    print("check passed: onnxruntime matches PyTorch at " + ", ".join(f"{h}x{w}" for (h, w), _ in results))
    return written
