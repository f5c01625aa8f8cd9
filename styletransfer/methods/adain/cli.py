"""The stylise command line: ``styletransfer-stylise`` (or ``python -m styletransfer.stylise``).

    styletransfer-stylise CKPT --content photo.jpg --style a.jpg b.jpg --weights 0.7 0.3 --alpha 0.8 -o out/

CKPT is a Lightning ``.ckpt`` of this project, its exported ``decoder.pth``, or the original release's
``decoder.pth`` with ``--encoder-weights vgg_normalised.pth``. A folder of contents is decoded by worker processes,
stylised in same-size batches and written by a thread pool, all at once (``pipeline``); files that cannot be read
or written are skipped and named at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from styletransfer.data.images import find_images, load_image_tensor, load_rgb, pil_to_tensor
from styletransfer.methods.adain.model import check_controls
from styletransfer.methods.adain.pipeline import decoded, run_folder
from styletransfer.methods.adain.styliser import Styliser
from styletransfer.runtime.devices import resolve_device
from styletransfer.runtime.errors import ConfigError, StyleTransferError

log = logging.getLogger(__name__)

#: Old spellings of flags and commands that still work, with a warning: old -> new.
RENAMED_FLAGS = {"--preserve-color": "--preserve-colour"}
OLD_COMMAND = "styletransfer-stylize"


def _encoder_arg(args: argparse.Namespace) -> dict | None:
    if args.encoder_weights is None:
        return None
    return {"weights": args.encoder_weights, "seed": args.encoder_seed, "download": False}


def _mask_tensor(path: Path) -> Tensor:
    return pil_to_tensor(load_rgb(path).convert("L").convert("RGB"))[0]


def output_stems(contents: Sequence[Path], root: Path | None) -> dict[Path, Path]:
    """Each content's output stem: its path under ``root`` (a folder's subfolders are mirrored) without the
    extension, which is kept in the name (``photo_bmp``) when two contents of one folder share a stem."""
    relative = {path: path.relative_to(root) if root is not None else Path(path.name) for path in contents}
    stems = Counter((rel.parent, rel.stem.lower()) for rel in relative.values())
    return {
        path: rel.parent / (f"{rel.stem}_{rel.suffix.lstrip('.').lower()}" if stems[(rel.parent, rel.stem.lower())] > 1
                            else rel.stem)
        for path, rel in relative.items()
    }


def _output_name(stem: Path, args: argparse.Namespace) -> Path:
    """``<stem>_stylised_<style>[+<style>...]`` plus the controls that differ from the defaults, so runs
    with other controls into the same folder do not overwrite each other."""
    name = f"{stem.name}_stylised_{'+'.join(s.stem for s in args.style)}"
    if args.weights:
        name += "_w" + "-".join(f"{w:g}" for w in args.weights)
    if args.mask:
        name += "_masked"
    if args.alpha != 1.0:
        name += f"_alpha{args.alpha:g}"
    if args.preserve_colour:
        name += "_colour"
    return stem.parent / f"{name}.{args.ext.lstrip('.')}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="styletransfer-stylise",
        description="Stylise an image or a folder of images with an AdaIN checkpoint (this project's .ckpt or "
        "decoder.pth, or the original release's decoder.pth with --encoder-weights vgg_normalised.pth).",
    )
    add = parser.add_argument
    add("checkpoint", type=Path, help="checkpoints/last.ckpt, checkpoints/decoder.pth or the release's decoder.pth")
    add("--content", "-c", type=Path, required=True, help="a content image or a folder of them (recursive)")
    add("--style", "-s", type=Path, nargs="+", required=True, help="one style image, or several to interpolate/mask")
    add("--weights", "-w", type=float, nargs="+", help="interpolation weights, one per style, summing to 1")
    add("--mask", "-m", type=Path, nargs="+", help="one mask image per style (white = that style's region)")
    add("--alpha", "-a", type=float, default=1.0, help="content-style trade-off in [0, 1] (default 1)")
    add("--preserve-colour", action="store_true", help="match each style's colours to the content first "
        "(--preserve-color also works)")
    add("--output", "-o", type=Path, default=Path("stylised"), help="output folder (default ./stylised)")
    add("--content-size", type=int, default=None, help="resize the content's shorter side first (default: keep)")
    add("--style-size", type=int, default=512, help="resize the styles' shorter side (default 512; 0 keeps)")
    add("--output-size", type=int, nargs=2, metavar=("H", "W"), help="output size (default: the content's)")
    add("--encoder-weights", default=None, help="encoder for decoder files: imagenet, random or a path (the release "
        "needs vgg_normalised.pth); default: the one recorded in the file")
    add("--encoder-seed", type=int, default=0, help="seed of a random encoder (default 0)")
    add("--device", default="auto", help="auto (default), cpu, cuda, cuda:1 ...")
    add("--batch-size", type=int, default=1, help="contents of the same size stylised together (default 1; "
        "a batch never mixes sizes)")
    add("--bf16", action="store_true", help="bfloat16 autocast (GPU; slow on most CPUs)")
    add("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="channels_last memory format "
        "(default on: faster on GPUs and CPUs; --no-channels-last for NCHW)")
    add("--compile", nargs="?", const="default", default=None, metavar="MODE", help="torch.compile the stylise "
        "core (once per image size; MODE: default, reduce-overhead for CUDA graphs, max-autotune)")
    add("--workers", type=int, default=default_workers(), help="processes decoding contents (default: one per core "
        f"but one, at most 8: {default_workers()} here; 0 decodes in the main thread)")
    add("--writers", type=int, default=default_writers(), help="threads encoding and writing results while the "
        f"next batch is stylised (default {default_writers()} here; 0 writes in the main thread)")
    add("--quality", type=int, default=95, help="JPEG/WebP quality, 1-100 (default 95)")
    add("--ext", default="png", help="output image format: png (default), jpg or webp")
    return parser


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """Decoding processes: one per core but the one that drives the device, at least 1, at most 8."""
    return max(1, min(8, _cores() - 1))


def default_writers() -> int:
    """Encoding threads: half the cores, at least 1, at most 8 (Pillow releases the GIL while encoding)."""
    return max(1, min(8, _cores() // 2))


def _renamed(argv: Sequence[str]) -> list[str]:
    """``argv`` with old flag spellings replaced by the current ones, warning once per old flag."""
    out = []
    for arg in argv:
        flag, sep, value = arg.partition("=")
        if flag in RENAMED_FLAGS:
            warnings.warn(f"{flag} is renamed {RENAMED_FLAGS[flag]}; the old spelling will go", FutureWarning, stacklevel=3)
            arg = RENAMED_FLAGS[flag] + sep + value
        out.append(arg)
    return out


def _check_args(args: argparse.Namespace) -> list[float] | None:
    """Errors for bad flags before any model is loaded; returns the interpolation weights (None with masks)."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers < 0 or args.writers < 0:
        raise ConfigError(f"--workers and --writers must be >= 0, got {args.workers} and {args.writers}")
    if not 1 <= args.quality <= 100:
        raise ConfigError(f"--quality must be in 1-100, got {args.quality}")
    try:
        return check_controls(len(args.style), args.weights, args.alpha, args.mask)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (flags --style, --weights, --mask, --alpha)") from None


def run_cli(args: argparse.Namespace) -> list[Path]:
    """Stylise every content with the given controls; returns the written files. Contents that cannot be read or
    written are skipped and named; decoding, stylising and writing overlap (``pipeline``)."""
    weights = _check_args(args)
    device = resolve_device(args.device, "--device")
    styliser = Styliser.from_checkpoint(args.checkpoint, _encoder_arg(args), device, channels_last=args.channels_last,
                                        bf16=args.bf16, compile=args.compile or False)
    contents = find_images(args.content) if args.content.is_dir() else [args.content]
    stems = output_stems(contents, args.content if args.content.is_dir() else None)
    # Decoding starts now, in the workers, while the styles are read and encoded.
    decoded_contents = decoded(contents, args.content_size, args.workers, pin=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # a folder run repeats a few shapes: pick the fastest kernels once
    styles = [load_image_tensor(p, size=args.style_size or None) for p in args.style]
    controls = {
        "styles": styles, "weights": weights, "alpha": args.alpha, "preserve_colour": args.preserve_colour,
        "masks": [_mask_tensor(p) for p in args.mask] if args.mask else None,
        "output_size": tuple(args.output_size) if args.output_size else None,
        "style_stats": None if args.preserve_colour else styliser.style_stats(styles),
    }
    run = run_folder(styliser, decoded_contents, contents, lambda path: args.output / _output_name(stems[path], args),
                     controls, args.batch_size, args.writers, args.quality)
    for reason in run.skipped:
        log.warning("skipped: %s", reason)
    if run.skipped:
        print(f"skipped {len(run.skipped)} image(s):\n  " + "\n  ".join(run.skipped), file=sys.stderr)
    if not run.written:
        raise ConfigError(f"no image could be stylised from {args.content}")
    steady = f"; {run.steady_images / run.steady_seconds:.1f} img/s after the first batch" if run.steady_seconds else ""
    print(f"wrote {len(run.written)} image(s) to {args.output}{steady}")
    return run.written


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``styletransfer-stylise``; returns 0, or 1 with a one-paragraph error on bad input."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(_renamed(sys.argv[1:] if argv is None else argv))
    try:
        run_cli(args)
    except StyleTransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main_old_name(argv: Sequence[str] | None = None) -> int:
    """``styletransfer-stylize``, the old spelling of the command: warns, then runs ``styletransfer-stylise``."""
    warnings.warn(f"{OLD_COMMAND} is renamed styletransfer-stylise; the old name will go", FutureWarning, stacklevel=2)
    return main(argv)
