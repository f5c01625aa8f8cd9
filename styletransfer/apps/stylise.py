"""What the stylise command does once :mod:`styletransfer.cli.stylise` parsed its arguments.

    styletransfer-stylise MODEL --content photo.jpg --style a.jpg b.jpg --weights 0.7 0.3 --alpha 0.8 -o out/

MODEL is a model file of any feed-forward method (loaded through the registry: e.g. an AdaIN run's ``.ckpt``, its
exported ``decoder.pth``, or the original release's ``decoder.pth`` with ``--encoder-weights vgg_normalised.pth``);
with ``--runtime onnx`` it is the image graph ``styletransfer-export`` wrote (``model.onnx``, a style graph
``model.style.onnx`` beside it), run by onnxruntime through the same folder pipeline. Controls the model does not
declare are refused before any image is read. A folder of contents is decoded by worker processes, stylised in
same-size batches and written by a thread pool, all at once (``pipeline``); files that cannot be read or written
are skipped and named at the end.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from styletransfer.apps.interrupts import Terminated, signal_of, sigterm_raises
from styletransfer.apps.onnx_runtime import OnnxModel
from styletransfer.apps.pipeline import decoded, run_folder
from styletransfer.apps.video import VideoStopped, check_smoothing, stylise_video
from styletransfer.data.images import find_images, load_image_tensor, load_rgb, pil_to_tensor
from styletransfer.data.video import is_video_path, open_clip
from styletransfer.protocol.controls import Controls, check_controls, check_weights, refuse_unsupported
from styletransfer.protocol.model import StyleModel
from styletransfer.protocol.registry import load_model
from styletransfer.runtime.devices import resolve_device
from styletransfer.runtime.errors import ConfigError, MaskRegionError, RunInterrupted
from styletransfer.runtime.files import check_writable_folder

log = logging.getLogger(__name__)


#: The command-line flag of each load option, named when a model refuses the option.
OPTION_FLAGS = {"transform": "--transform", "level_alphas": "--level-alpha"}


def encoder_arg(args: argparse.Namespace) -> dict | None:
    """The encoder for decoder files from --encoder-weights and --encoder-seed (None: the one recorded in the file)."""
    if args.encoder_weights is None:
        return None
    return {"weights": args.encoder_weights, "seed": args.encoder_seed, "download": False}


def _mask_tensor(path: Path) -> Tensor:
    return pil_to_tensor(load_rgb(path).convert("L").convert("RGB"))[0]


def _mask_named(args: argparse.Namespace, exc: MaskRegionError) -> ConfigError:
    """A model's refusal of a mask's region, naming the mask's file."""
    return ConfigError(f"--mask {args.mask[exc.mask]}: {exc.reason}")


def output_stems(contents: Sequence[Path], root: Path | None) -> dict[Path, Path]:
    """Each content's output stem: its path under ``root`` (a folder's subfolders are mirrored) without the
    extension, which is kept in the name (``photo_bmp``) when two contents of one folder share a stem."""
    relative = {path: path.relative_to(root) if root is not None else Path(path.name) for path in contents}
    stems = Counter((rel.parent, rel.stem.lower()) for rel in relative.values())
    return {
        path: rel.parent
        / (f"{rel.stem}_{rel.suffix.lstrip('.').lower()}" if stems[(rel.parent, rel.stem.lower())] > 1 else rel.stem)
        for path, rel in relative.items()
    }


def unique_paths(paths: Sequence[Path]) -> list[Path]:
    """``paths`` with a clash renamed ``<name>_2``, ``<name>_3``...: no two alike when compared case-insensitively
    (some filesystems are), the first keeping its name; the order is the contents' (sorted), so reruns agree."""
    taken: set[str] = set()
    out = []
    for path in paths:
        candidate, number = path, 1
        while str(candidate).lower() in taken:
            number += 1
            candidate = path.with_name(f"{path.stem}_{number}{path.suffix}")
        taken.add(str(candidate).lower())
        out.append(candidate)
    return out


def stylised_stem(content_stem: str, style_stems: Sequence[str]) -> str:
    """``<content>_stylised_<style>[+<style>...]``: the name (without extension) of a result stylised with the
    default controls; ``evaluate.py outputs=DIR`` pairs result files to benchmark pairs by it."""
    name = f"{content_stem}_stylised"
    if style_stems:
        name += "_" + "+".join(style_stems)
    return name


def _output_name(stem: Path, args: argparse.Namespace) -> Path:
    """``<stem>_stylised_<style>[+<style>...]`` plus the controls that differ from the defaults, so runs
    with other controls into the same folder do not overwrite each other."""
    name = stylised_stem(stem.name, [s.stem for s in args.style or []])
    if args.style_name:
        name += "_" + "+".join(args.style_name)
    if args.weights:
        name += "_w" + "-".join(f"{w:g}" for w in args.weights)
    if args.mask:
        name += "_masked"
    if args.alpha != 1.0:
        name += f"_alpha{args.alpha:g}"
    for level, factor in (args.level_alpha or {}).items():
        name += f"_{level}x{factor:g}"
    if args.preserve_colour:
        name += "_colour"
    return stem.parent / f"{name}.{args.ext.lstrip('.')}"


def _missing_only(targets: Sequence[Path], args: argparse.Namespace) -> list[Path]:
    """The ``targets`` still to write: results already in ``-o`` (an earlier run, or another model's results of the
    same names) are refused in one line unless ``--overwrite`` (all are written) or ``--skip-existing`` (only the
    missing ones); decided before the model loads, so a refused run costs nothing."""
    existing = [path for path in targets if path.exists()]
    if not existing or args.overwrite:
        return list(targets)
    if not args.skip_existing:
        raise ConfigError(
            f"{args.output} already holds {len(existing)} of this run's {len(targets)} result(s) (the first: "
            f"{existing[0]}): add --skip-existing to stylise only the missing ones, --overwrite to replace them, or "
            "choose another -o"
        )
    print(f"--skip-existing: {len(existing)} of {len(targets)} result(s) are already in {args.output}, kept")
    return [path for path in targets if not path.exists()]


def _check_args(args: argparse.Namespace) -> list[float] | None:
    """Errors for bad flags before any model is loaded; returns the interpolation weights (None with masks)."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers < 0 or args.writers < 0:
        raise ConfigError(f"--workers and --writers must be >= 0, got {args.workers} and {args.writers}")
    if not 1 <= args.quality <= 100:
        raise ConfigError(f"--quality must be in 1-100, got {args.quality}")
    if args.content_short_side is not None and args.content_short_side < 1:
        raise ConfigError(
            f"--content-short-side must be >= 1 px, got {args.content_short_side}: leave it out to keep the size"
        )
    if args.style_short_side < 0:
        raise ConfigError(f"--style-short-side must be >= 0 px (0 keeps the size), got {args.style_short_side}")
    if not args.content.exists():
        raise ConfigError(f"--content {args.content} does not exist (resolved: {args.content.resolve()})")
    if args.runtime == "torch" and args.checkpoint.suffix.lower() == ".onnx":
        raise ConfigError(f"{args.checkpoint} is an ONNX model: add --runtime onnx")
    if args.output.exists() and not args.output.is_dir():
        raise ConfigError(f"--output {args.output} is a file: give a folder (it is made if missing)")
    check_writable_folder(args.output, "--output")
    if not args.style:
        # a model without style input: _refused checks the rest once it is loaded; weights blend its own styles
        return None if args.weights is None else [float(w) for w in args.weights]
    try:
        return check_controls(len(args.style), args.weights, args.alpha, args.mask)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (flags --style, --weights, --mask, --alpha)") from None


def _onnx_refused(args: argparse.Namespace) -> list[str]:
    """The PyTorch options set in ``args`` that the ONNX runtime cannot honour, each with what to do instead."""
    refused = []
    if args.precision != "32-true":
        refused.append(
            f"--precision {args.precision} is a PyTorch autocast option: export with styletransfer-export --fp16"
        )
    if args.compile:
        refused.append("--compile is a PyTorch option: use --runtime torch")
    if args.transform:
        refused.append("--transform is fixed in the exported graphs: export a model with that transform")
    if args.level_alpha:
        refused.append("--level-alpha is for models with levels (method=wct), which run with --runtime torch")
    return refused


def _refused(args: argparse.Namespace, model: StyleModel) -> None:
    """One line naming every flag the loaded model does not support (its declared capabilities)."""
    flags = {"alpha": args.alpha, "preserve_colour": args.preserve_colour, "output_size": args.output_size}
    asked = Controls(weights=args.weights, masks=args.mask, **flags).asked(args.style)
    runtime = " in onnxruntime" if args.runtime == "onnx" else ""
    elsewhere = "use --runtime torch" if args.runtime == "onnx" else ""
    refuse_unsupported(
        model.capabilities, f"{args.checkpoint} ({model.method} model{runtime})", asked, elsewhere=elsewhere
    )


def _load_model(args: argparse.Namespace) -> StyleModel:
    """The model MODEL names, through the registry; with ``--runtime onnx`` the exported graphs in onnxruntime
    (refusing the PyTorch options)."""
    if args.runtime == "onnx":
        refused = _onnx_refused(args)
        if refused:
            raise ConfigError(f"not with --runtime onnx: {'; '.join(refused)}")
        model: StyleModel = OnnxModel.beside(args.checkpoint, args.device)
        if model.warning():  # load_model warns for the PyTorch runtime
            log.warning("%s", model.warning())
    elif args.runtime != "torch":
        raise ConfigError(f"--runtime must be torch or onnx, got {args.runtime!r}")
    else:

        def styles_given(method: str, takes_styles: bool) -> None:  # before the model (and its encoder) is built
            if takes_styles and not args.style:
                raise ConfigError(f"{args.checkpoint} ({method} model) needs at least one style image (--style)")

        model = load_model(
            args.checkpoint,
            encoder_arg(args),
            resolve_device(args.device, "--device"),
            check=styles_given,
            channels_last=args.channels_last,
            bf16=args.precision == "bf16-mixed",
            compile=args.compile or False,
            transform=args.transform,
            level_alphas=args.level_alpha,
            flags=OPTION_FLAGS,
        )
    _refused(args, model)
    return model


def _named_weights(args: argparse.Namespace, model: StyleModel, weights: list[float] | None) -> list[float] | None:
    """``--style-name``: the weights over a model's own styles (``describe()["styles"]``) for the names given, with
    ``--weights`` over those names when several; otherwise ``weights`` as they are, checked against a model's own
    styles here (one per style), before any content is read or anything written."""
    names = list(model.describe().get("styles") or [])
    if not args.style_name:
        own = not model.capabilities.style_input and len(names) > 1
        return check_weights(weights, len(names)) if own and weights is not None else weights
    if model.capabilities.style_input or len(names) < 2:
        raise ConfigError(
            f"--style-name: {args.checkpoint} has no named styles of its own to choose from: leave --style-name out"
        )
    unknown = [name for name in args.style_name if name not in names]
    if unknown:
        raise ConfigError(f"--style-name {unknown[0]}: {args.checkpoint} has the styles {', '.join(names)}")
    chosen = check_weights(weights, len(args.style_name))
    return [sum(w for name, w in zip(args.style_name, chosen) if name == style) for style in names]


def _controls(
    args: argparse.Namespace, model: StyleModel, weights: list[float] | None, styles: list[Tensor]
) -> Controls:
    """The controls the flags ask for (the styles' codes computed once)."""
    return Controls(
        weights=weights,
        alpha=args.alpha,
        preserve_colour=args.preserve_colour,
        masks=[_mask_tensor(p) for p in args.mask] if args.mask else None,
        output_size=tuple(args.output_size) if args.output_size else None,
        style_codes=None if args.preserve_colour or not styles else model.encode_styles(styles),
    )


def _video_output(args: argparse.Namespace) -> Path:
    """The mp4 a clip (or, with --video-frames, a folder of frames) is stylised into."""
    stem = Path(args.content.name if args.content.is_dir() else args.content.stem)
    return args.output / _output_name(stem, args).with_suffix(".mp4")


def _run_video(
    args: argparse.Namespace, styliser: StyleModel, styles: list[Tensor], controls: Controls, output: Path
) -> list[Path]:
    """Stylise the clip (or, with --video-frames, the folder of frames) ``--content`` names into ``output``."""
    clip = open_clip(args.content, args.fps if args.video_frames else None)
    run = stylise_video(
        styliser, clip, output, styles, controls, args.batch_size, args.temporal_smoothing, args.content_short_side
    )
    print(f"wrote {run.path} ({run.frames} frames at {float(clip.rate):g} fps{', audio copied' if clip.audio else ''})")
    if clip.frames and run.frames != clip.frames:
        print(
            f"warning: {clip.path} lists {clip.frames} frames but {run.frames} could be decoded (a truncated clip?)",
            file=sys.stderr,
        )
    return [run.path]


def run_cli(args: argparse.Namespace) -> list[Path]:
    """Stylise every content with the given controls; returns the written files. Contents that cannot be read or
    written are skipped and named; decoding, stylising and writing overlap (``pipeline``)."""
    weights = _check_args(args)
    video = args.video_frames or is_video_path(args.content)
    if args.temporal_smoothing and not video:
        raise ConfigError(
            "--temporal-smoothing applies to videos: --content a clip, or a folder of frames with --video-frames"
        )
    check_smoothing(args.temporal_smoothing)
    if video:
        if not _missing_only([_video_output(args)], args):
            return []
        styliser = _load_model(args)
        weights = _named_weights(args, styliser, weights)
        styles = [load_image_tensor(p, size=args.style_short_side or None) for p in args.style]
        try:
            controls = _controls(args, styliser, weights, styles)
            return _run_video(args, styliser, styles, controls, _video_output(args))
        except VideoStopped as exc:  # a mask's region too small at the frames' size: the first batch stops
            if not isinstance(exc.__cause__, MaskRegionError):
                raise
            raise ConfigError(f"{_mask_named(args, exc.__cause__)}; {args.content}: {exc.where}") from None
    contents = find_images(args.content) if args.content.is_dir() else [args.content]
    output = args.output.resolve()  # an output folder inside the content folder: its earlier results are not inputs
    contents = [path for path in contents if not path.resolve().is_relative_to(output)] or contents
    stems = output_stems(contents, args.content if args.content.is_dir() else None)
    # every content's name is decided against all the others, then those already written are refused or dropped
    outputs = dict(zip(contents, unique_paths([args.output / _output_name(stems[p], args) for p in contents])))
    missing = set(_missing_only(list(outputs.values()), args))
    if not missing:
        return []
    contents = [path for path in contents if outputs[path] in missing]
    styliser = _load_model(args)
    weights = _named_weights(args, styliser, weights)
    device = styliser.device
    # Decoding starts now, in the workers, while the styles are read and encoded.
    decoded_contents = decoded(
        contents,
        args.content_short_side,
        args.workers,
        pin=device.type == "cuda",
        min_side=styliser.capabilities.min_side,
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # a folder run repeats a few shapes: pick the fastest kernels once
    styles = [load_image_tensor(p, size=args.style_short_side or None) for p in args.style]
    controls = _controls(args, styliser, weights, styles)
    if styliser.tiling() is None and args.max_tile not in ("auto", 0):
        runtime = " in onnxruntime" if args.runtime == "onnx" else ""
        raise ConfigError(
            f"--max-tile: {args.checkpoint} ({styliser.method} model{runtime}) stylises whole images only: "
            "leave --max-tile out"
        )
    started = time.time()
    try:
        with sigterm_raises():
            run = run_folder(
                styliser,
                decoded_contents,
                contents,
                outputs.__getitem__,
                styles,
                controls,
                args.batch_size,
                args.writers,
                args.quality,
                args.max_tile,  # an image with a longer side is stylised in tiles (``tiling``) if the model can be
            )
    except MaskRegionError as exc:  # the images written before are whole
        raise _mask_named(args, exc) from None
    except (KeyboardInterrupt, Terminated) as exc:  # every image is written whole (atomically): count them, say so
        signum = signal_of(exc)
        done = [p for p in map(outputs.__getitem__, contents) if p.is_file() and p.stat().st_mtime >= started - 1]
        raise RunInterrupted(
            f"{signal.Signals(signum).name} after {len(done)} of {len(contents)} image(s) written to {args.output} "
            "(each written image is whole); run the same command with --skip-existing for the rest",
            signum,
        ) from None
    if not run.written and len(contents) == len(outputs):  # nothing made nor kept: each reason once, in the one error
        raise ConfigError(f"no image could be stylised from {args.content}: {'; '.join(run.skipped)}")
    if run.skipped:
        print(f"skipped {len(run.skipped)} image(s):\n  " + "\n  ".join(run.skipped), file=sys.stderr)
    rate = run.steady_images / run.steady_seconds if run.steady_images and run.steady_seconds else None
    steady = f"; {rate:.1f} img/s after the first batch" if rate else ""
    if len(run.written) == 1:
        print(f"wrote {run.written[0]}")
    else:
        print(f"wrote {len(run.written)} image(s) to {args.output}{steady}")
    if run.unwritten:  # a full disk is not a skipped input: the command did not do its work, exit status 1
        raise ConfigError(
            f"{len(run.unwritten)} result(s) could not be written to {args.output} ({run.unwritten[0]}); the "
            f"{len(run.written)} written are whole: free space (or choose another -o), then run the same command with "
            "--skip-existing for the rest"
        )
    return run.written
