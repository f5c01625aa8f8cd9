"""``styletransfer-stylise``: images, folders and videos through a model file of any feed-forward method.

    styletransfer-stylise MODEL --content photo.jpg --style a.jpg b.jpg --weights 0.7 0.3 --alpha 0.8 -o out/

This module parses the arguments with the standard library only, so ``--help`` and a mistyped flag answer at once;
:func:`main` then imports the work itself (:mod:`styletransfer.apps.stylise`, which loads torch). That import,
inside the function, is deliberate: the command modules of ``styletransfer.cli`` are the only places that import a
project module inside a function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from styletransfer.cli.common import (
    CHECKPOINT_HELP,
    LOG_FORMAT,
    add_model_arguments,
    command_parser,
    parse_command,
    run_command,
)
from styletransfer.runtime.choices import PRECISIONS
from styletransfer.runtime.machine import usable_cores


def default_workers() -> int:
    """Decoding processes: one per core but the one that drives the device, at least 1, at most 8."""
    return max(1, min(8, usable_cores() - 1))


def default_writers() -> int:
    """Encoding threads: half the cores, at least 1, at most 8 (Pillow releases the GIL while encoding)."""
    return max(1, min(8, usable_cores() // 2))


def max_tile(text: str) -> int | str:
    """``--max-tile``: ``auto`` or a whole number of pixels (0: never tile)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number of pixels, got {text!r}") from None


def level_alphas(text: str) -> dict[str, float]:
    """``--level-alpha``: comma-separated ``LEVEL=FACTOR`` pairs, e.g. ``relu5_1=1,relu1_1=0.5`` (the model checks
    the levels and that each factor is in [0, 1])."""
    factors: dict[str, float] = {}
    for pair in text.split(","):
        level, equals, number = (part.strip() for part in pair.partition("="))
        try:
            factor = float(number) if equals and level else None
        except ValueError:
            factor = None
        if factor is None:
            raise argparse.ArgumentTypeError(
                f"expected LEVEL=FACTOR pairs separated by commas, e.g. relu5_1=1,relu1_1=0.5; got {pair.strip()!r}"
            )
        if level in factors:
            raise argparse.ArgumentTypeError(f"{level} is given twice in {text!r}")
        factors[level] = factor
    return factors


def build_parser() -> argparse.ArgumentParser:
    parser, add = command_parser(
        "styletransfer-stylise",
        "Stylise an image, a folder of images or a video with a model file of any feed-forward method "
        "(a run's .ckpt or exported weights, or the AdaIN release's decoder.pth with --encoder-weights "
        "vgg_normalised.pth). Controls a model does not support are refused with one line.",
    )
    add_model_arguments(parser, f"{CHECKPOINT_HELP} (with --runtime onnx: model.onnx)")
    add("--content", "-c", type=Path, required=True, help="a content image or a folder of them (recursive)")
    add(
        "--style",
        "-s",
        type=Path,
        nargs="+",
        default=[],
        help="one style image, or several to interpolate/mask (models trained for their own styles take none)",
    )
    add("--weights", "-w", type=float, nargs="+", help="interpolation weights, one per style, summing to 1")
    add(
        "--style-name",
        nargs="+",
        metavar="NAME",
        help="for a model trained for several styles of its own: the style(s) to use by name (several with --weights "
        "to blend them)",
    )
    add("--mask", "-m", type=Path, nargs="+", help="one mask image per style (white = that style's region)")
    add("--alpha", "-a", type=float, default=1.0, help="content-style trade-off in [0, 1] (default 1)")
    add(
        "--level-alpha",
        type=level_alphas,
        metavar="LEVEL=F,...",
        help="for models that stylise at several levels (method=wct): each named level's alpha is --alpha times F "
        "(in [0, 1]; levels not named keep --alpha), e.g. relu5_1=1,relu1_1=0.5",
    )
    add("--preserve-colour", action="store_true", help="match each style's colours to the content first")
    add("--output", "-o", type=Path, default=Path("stylised"), help="output folder (default ./stylised)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument(
        "--skip-existing",
        action="store_true",
        help="results already in the output folder are kept and only the missing ones are made (to finish an "
        "interrupted run); without this or --overwrite, a run whose results exist is refused",
    )
    existing.add_argument(
        "--overwrite", action="store_true", help="replace results of the same names already in the output folder"
    )
    add("--content-short-side", type=int, default=None, help="resize the content's shorter side first (default: keep)")
    add("--style-short-side", type=int, default=512, help="resize the styles' shorter side (default 512; 0 keeps)")
    add("--output-size", type=int, nargs=2, metavar=("H", "W"), help="output size (default: the content's)")
    add(
        "--runtime",
        choices=("torch", "onnx"),
        default="torch",
        help="torch (default), or onnx: CKPT is then the "
        "model.onnx styletransfer-export wrote (model.style.onnx beside it), run by onnxruntime (no --mask)",
    )
    add("--device", default="auto", help="auto (default), cpu, cuda, cuda:1 ...")
    add(
        "--batch-size",
        type=int,
        default=1,
        help="contents of the same size stylised together (default 1; a batch never mixes sizes)",
    )
    add(
        "--max-tile",
        type=max_tile,
        default="auto",
        metavar="N",
        help="stylise an image with a side over N px in "
        "overlapping N x N tiles with the whole image's statistics, for models that tile (bounded memory, any size); "
        "default auto: N "
        "from the free device memory (RAM on a CPU); 0 never tiles",
    )
    add(
        "--transform",
        metavar="NAME",
        help="for models with a feature transform (the AdaIN family): stylise with NAME (adain, adamean, adastd, "
        "efdm, wct) instead of the one the model was trained with, e.g. WCT behind an AdaIN-trained decoder",
    )
    add(
        "--precision",
        choices=PRECISIONS,
        default=PRECISIONS[0],
        help="as training's trainer.precision: 32-true (default) or bf16-mixed (bfloat16 autocast; GPU, slow on "
        "most CPUs)",
    )
    add(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels_last memory format (default on: faster on GPUs and CPUs; --no-channels-last for NCHW)",
    )
    add(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        metavar="MODE",
        help="torch.compile the stylise "
        "core (once per image size; MODE: default, reduce-overhead for CUDA graphs, max-autotune)",
    )
    add(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes decoding contents (default: one per core "
        f"but one, at most 8: {default_workers()} here; 0 decodes in the main thread)",
    )
    add(
        "--writers",
        type=int,
        default=default_writers(),
        help="threads encoding and writing results while the "
        f"next batch is stylised (default {default_writers()} here; 0 writes in the main thread)",
    )
    add("--quality", type=int, default=95, help="JPEG/WebP quality, 1-100 (default 95)")
    add("--ext", default="png", help="output image format: png (default), jpg or webp")
    add(
        "--video-frames",
        action="store_true",
        help="--content is a folder of one clip's frames (name order), "
        "written as one mp4 at --fps (a clip file, .mp4 .mov .mkv .webm .avi ..., needs no flag)",
    )
    add("--fps", type=float, default=24.0, help="frame rate of --video-frames (default 24)")
    add(
        "--temporal-smoothing",
        type=float,
        default=0.0,
        metavar="W",
        help="video: blend each result with the "
        "previous one warped along the content's optical flow, where reliable (W: its weight, in [0, 1); 0.5 "
        "steadies; default 0: frame by frame)",
    )
    add(
        "--warping-error",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="video: measure the written "
        "clip's flicker (warping error, printed and in <video>.temporal.json; costs two optical flows per frame)",
    )
    return parser


def stylise(args: argparse.Namespace) -> None:
    """Stylise as ``args`` say and, with ``--warping-error``, report the flicker of the videos written."""
    from styletransfer.apps.stylise import run_cli  # torch loads here, after --help and flag errors
    from styletransfer.eval.temporal import report_videos

    written = run_cli(args)
    if args.warping_error:
        report_videos(args.content, written, args.fps if args.video_frames else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``styletransfer-stylise``; returns 0, or 1 with a one-paragraph error on bad input."""
    return run_command(parse_command(build_parser(), argv, LOG_FORMAT), stylise)


if __name__ == "__main__":
    sys.exit(main())
