"""What the stylise command line does once its arguments are parsed (``styletransfer.stylise`` parses them).

    styletransfer-stylise CKPT --content photo.jpg --style a.jpg b.jpg --weights 0.7 0.3 --alpha 0.8 -o out/

CKPT is a Lightning ``.ckpt`` of this project, its exported ``decoder.pth``, or the original release's
``decoder.pth`` with ``--encoder-weights vgg_normalised.pth``; with ``--runtime onnx`` it is the image graph
``styletransfer-export`` wrote (``model.onnx``, its style graph ``model.style.onnx`` beside it), run by onnxruntime
through the same folder pipeline. A folder of contents is decoded by worker processes,
stylised in same-size batches and written by a thread pool, all at once (``pipeline``); files that cannot be read
or written are skipped and named at the end.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from styletransfer.data.images import find_images, load_image_tensor, load_rgb, pil_to_tensor
from styletransfer.data.video import is_video_path, open_clip
from styletransfer.methods.adain.model import check_controls
from styletransfer.methods.adain.onnx_runtime import OnnxStyliser
from styletransfer.methods.adain.pipeline import decoded, run_folder
from styletransfer.methods.adain.styliser import Styliser
from styletransfer.methods.adain.video import check_smoothing, stylise_video
from styletransfer.runtime.devices import resolve_device
from styletransfer.runtime.errors import ConfigError

log = logging.getLogger(__name__)


def encoder_arg(args: argparse.Namespace) -> dict | None:
    """The encoder for decoder files from --encoder-weights and --encoder-seed (None: the one recorded in the file)."""
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


#: Flags the ONNX runtime cannot honour, and why (masked AdaIN needs per-region content statistics inside the graph).
ONNX_REFUSED = {
    "mask": "--mask needs masked AdaIN (per-region content statistics inside the graph), which the exported image "
            "graph does not have: use --runtime torch",
    "output_size": "--output-size: the image graph returns the content's size; resize with --content-size or use "
                   "--runtime torch",
    "bf16": "--bf16 is a PyTorch autocast option: export with styletransfer-export --fp16 instead",
    "compile": "--compile is a PyTorch option: use --runtime torch",
}


def _load_styliser(args: argparse.Namespace) -> Styliser | OnnxStyliser:
    """The model CKPT names: a PyTorch Styliser, or with ``--runtime onnx`` the exported image graph and the style
    graph beside it in onnxruntime (refusing the flags it cannot honour)."""
    if args.runtime == "onnx":
        refused = [why for flag, why in ONNX_REFUSED.items() if getattr(args, flag)]
        if refused:
            raise ConfigError(f"not with --runtime onnx: {'; '.join(refused)}")
        return OnnxStyliser.beside(args.checkpoint, args.device)
    if args.runtime != "torch":
        raise ConfigError(f"--runtime must be torch or onnx, got {args.runtime!r}")
    device = resolve_device(args.device, "--device")
    return Styliser.from_checkpoint(args.checkpoint, encoder_arg(args), device, channels_last=args.channels_last,
                                    bf16=args.bf16, compile=args.compile or False)


def _controls(args: argparse.Namespace, styliser: Styliser | OnnxStyliser, weights: list[float] | None,
              styles: list[Tensor]) -> dict:
    """The keyword arguments of ``Styliser.stylise`` the flags ask for (the styles' statistics computed once)."""
    return {
        "styles": styles, "weights": weights, "alpha": args.alpha, "preserve_colour": args.preserve_colour,
        "masks": [_mask_tensor(p) for p in args.mask] if args.mask else None,
        "output_size": tuple(args.output_size) if args.output_size else None,
        "style_stats": None if args.preserve_colour else styliser.style_stats(styles),
    }


def _run_video(args: argparse.Namespace, styliser: Styliser | OnnxStyliser, controls: dict) -> list[Path]:
    """Stylise the clip (or, with --video-frames, the folder of frames) ``--content`` names into one mp4."""
    clip = open_clip(args.content, args.fps if args.video_frames else None)
    stem = Path(clip.path.name if clip.is_folder else clip.path.stem)
    output = args.output / _output_name(stem, args).with_suffix(".mp4")
    run = stylise_video(styliser, clip, output, controls, args.batch_size, args.temporal_smoothing, args.content_size)
    print(f"wrote {run.path} ({run.frames} frames at {float(clip.rate):g} fps{', audio copied' if clip.audio else ''})")
    if clip.frames and run.frames != clip.frames:
        print(f"warning: {clip.path} lists {clip.frames} frames but {run.frames} could be decoded (a truncated clip?)",
              file=sys.stderr)
    return [run.path]


def run_cli(args: argparse.Namespace) -> list[Path]:
    """Stylise every content with the given controls; returns the written files. Contents that cannot be read or
    written are skipped and named; decoding, stylising and writing overlap (``pipeline``)."""
    weights = _check_args(args)
    video = args.video_frames or is_video_path(args.content)
    if args.temporal_smoothing and not video:
        raise ConfigError("--temporal-smoothing applies to videos: --content a clip, or a folder of frames with "
                          "--video-frames")
    check_smoothing(args.temporal_smoothing)
    styliser = _load_styliser(args)
    if video:
        styles = [load_image_tensor(p, size=args.style_size or None) for p in args.style]
        return _run_video(args, styliser, _controls(args, styliser, weights, styles))
    device = styliser.device
    contents = find_images(args.content) if args.content.is_dir() else [args.content]
    stems = output_stems(contents, args.content if args.content.is_dir() else None)
    # Decoding starts now, in the workers, while the styles are read and encoded.
    decoded_contents = decoded(contents, args.content_size, args.workers, pin=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # a folder run repeats a few shapes: pick the fastest kernels once
    styles = [load_image_tensor(p, size=args.style_size or None) for p in args.style]
    controls = _controls(args, styliser, weights, styles)
    if args.runtime == "torch":
        controls["max_tile"] = args.max_tile  # an image with a longer side is stylised in tiles (``tiling``)
    elif args.max_tile not in ("auto", 0):
        raise ConfigError("--max-tile needs --runtime torch: the ONNX image graph stylises whole images")
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
