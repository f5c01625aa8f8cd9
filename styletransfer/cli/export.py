"""``styletransfer-export``: a model file of any method to ONNX.

    styletransfer-export MODEL -o model.onnx [--part image|style|both] [--fp16] [--opset N] [--check]

Writes the image graph (``model.onnx``) and, for methods that take style images, the style graph beside it
(``model.style.onnx``) for onnxruntime; see :mod:`styletransfer.apps.export`. As in every command, the arguments are
parsed with the standard library only, so ``--help`` answers at once, and :func:`main` imports the work (which loads
torch) afterwards.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from styletransfer.cli.common import LOG_FORMAT, add_model_arguments, command_parser, parse_command, run_command
from styletransfer.runtime.choices import EXPORT_PARTS, OPSETS


def build_parser() -> argparse.ArgumentParser:
    parser, add = command_parser(
        "styletransfer-export",
        "Export a model file (a run's .ckpt or exported weights, e.g. AdaIN's decoder.pth, or the AdaIN "
        "release's decoder.pth with --encoder-weights vgg_normalised.pth) to ONNX: an image graph (content, alpha "
        "and the style code -> stylised image) and, for methods that take style images, a style graph (style image "
        "-> its code, e.g. AdaIN's relu4_1 statistics).",
    )
    add_model_arguments(parser)
    add(
        "--output",
        "-o",
        type=Path,
        default=Path("model.onnx"),
        help="the image graph's file (default model.onnx); the style graph goes beside it as <name>.style.onnx",
    )
    add("--part", choices=EXPORT_PARTS, default="both", help="which graphs to write (default both)")
    add("--fp16", action="store_true", help="float16 weights and activations (inputs and outputs stay float32)")
    add("--opset", type=int, default=OPSETS[0], help=f"ONNX opset, {OPSETS[0]}-{OPSETS[-1]} (default {OPSETS[0]})")
    add(
        "--check",
        action="store_true",
        help="run the graphs in onnxruntime (CPU) at 64x48 and 77x53 and compare "
        "with PyTorch; exit 1 above the tolerance (1e-3 fp32, 3e-2 fp16)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``styletransfer-export``; returns 0, or 1 with a one-line error on bad input or a failed check."""
    return run_command(parse_command(build_parser(), argv, LOG_FORMAT), "styletransfer.apps.export:run_export")


if __name__ == "__main__":
    sys.exit(main())
