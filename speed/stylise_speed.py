"""Time AdaIN stylising: a plain-PyTorch baseline, the Styliser under each speed setting, and the folder CLI.

    python speed/stylise_speed.py                          # 512 px, batch 16, on the GPU if there is one
    python speed/stylise_speed.py --device cpu --size 64 --batch 2 --steps 3 --folder-images 8
    python speed/stylise_speed.py --profile                # plus the top CUDA kernels of each variant

Random weights (timing only). Rows, all in this one process after warm-up, the device synchronised only around
the timed loop:

* baseline: naoto0804/pytorch-AdaIN's nn.Sequential VGG (to relu4_1) and decoder, style features cached, fp32
  (TF32 convolutions on GPUs), written out here;
* ours: ``Styliser.stylise`` in fp32, bf16, bf16 + channels_last (the style image given to every call, so encoded
  every call), then + cached style statistics (``encode_styles`` once, passed as ``Controls(style_codes=...)``),
  fp32 + channels_last + statistics (the CLI's CPU default), + torch.compile;
* the folder CLI end to end (``python -m styletransfer.cli.stylise`` in a subprocess over generated JPEGs): img/s with
  start-up (wall clock), img/s after the first batch (the CLI's own figure) and its ratio to the core rate, then
  the same with ``--workers 0 --writers 0`` (decode, stylise and write one after another, as before);
* peak memory stylising one 4096 x 4096 image (bf16 + channels_last, CUDA only).

Each row runs in its own try/except: a failing row prints its error and the rest go on. The table comes last.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from reference import calc_mean_std, reference_decoder, reference_vgg  # speed/reference.py
from timing import print_top_kernels, sync, timed  # speed/timing.py
from torch import Tensor, nn

from styletransfer.methods.adain import AdaINDecoder, Styliser
from styletransfer.methods.adain.checkpoint import save_decoder
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.protocol.controls import Controls

ROOT = Path(__file__).resolve().parents[1]
Row = dict


def baseline_nets() -> tuple[nn.Sequential, nn.Sequential]:
    """naoto0804's encoder (1x1 conv, then reflection pad + conv + ReLU, ceil max-pool) and decoder, random."""
    return reference_vgg().eval(), reference_decoder().eval()


def top_kernels(fn: Callable[[], object], device: torch.device, label: str, count: int = 15) -> None:
    """Print the ``count`` CUDA kernels with the most self time over three calls of ``fn``, with their share."""
    if device.type != "cuda":
        print(f"[profile {label}] skipped: CUDA only")
        return
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            fn()
        sync(device)
    print_top_kernels(prof, label, 3, device, count)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def measure(label: str, make: Callable[[], Callable[[], object]], args: argparse.Namespace,
            device: torch.device) -> Row:
    """One row: build the call, time it, optionally profile it; any error lands in the row."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        fn = make()
        seconds, _ = timed(fn, device, args.steps, args.warmup)
        row = {"variant": label, "img/s": args.batch / seconds, "peak MiB": peak_mib(device), "note": ""}
        if args.profile:
            top_kernels(fn, device, label)
    except Exception as exc:  # a failing variant must not stop the others
        row = {"variant": label, "img/s": None, "peak MiB": peak_mib(device),
               "note": f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:100]}
    print(f"{label:44s} " + (f"{row['img/s']:9.1f} img/s" if row["img/s"] else row["note"]), flush=True)
    return row


def baseline_call(device: torch.device, content: Tensor, style: Tensor) -> Callable[[], object]:
    vgg, dec = (net.to(device) for net in baseline_nets())
    with torch.no_grad():
        s_feat = vgg(style)

    @torch.no_grad()
    def call() -> Tensor:
        c_feat = vgg(content)
        c_mean, c_std = calc_mean_std(c_feat)
        s_mean, s_std = calc_mean_std(s_feat)
        return dec((c_feat - c_mean) / c_std * s_std + s_mean).clamp(0, 1)

    return call


def ours_call(device: torch.device, content: Tensor, style: Tensor, bf16: bool, channels_last: bool,
              stats: bool, compile: str | None) -> Callable[[], object]:
    torch.manual_seed(0)
    styliser = Styliser(VGGEncoder(["relu4_1"], weights="random", seed=0), AdaINDecoder(), bf16=bf16,
                        channels_last=channels_last, compile=compile or False).to(device)
    if not stats:
        return lambda: styliser.stylise(content, [style])
    controls = Controls(style_codes=styliser.encode_styles([style]))
    return lambda: styliser.stylise(content, controls=controls)


def core_rows(args: argparse.Namespace, device: torch.device) -> list[Row]:
    gen = torch.Generator().manual_seed(0)
    content = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device)
    style = torch.rand(1, 3, args.size, args.size, generator=gen).to(device)
    variants = [("fp32", False, False, False, None), ("bf16", True, False, False, None),
                ("bf16 + channels_last", True, True, False, None),
                ("bf16 + channels_last + cached stats", True, True, True, None),
                ("fp32 + channels_last + cached stats", False, True, True, None)]
    variants += [(f"bf16 + channels_last + stats + compile ({mode})", True, True, True, mode)
                 for mode in args.compile_modes]
    rows = [measure("baseline (naoto0804 nn.Sequential, fp32)", lambda: baseline_call(device, content, style),
                    args, device)]
    for label, bf16, cl, stats, mode in variants:
        if bf16 and args.no_bf16:  # a row all the same, so that the rows keep their places
            rows.append({"variant": f"ours {label}", "img/s": None, "peak MiB": None, "note": "skipped: --no-bf16"})
            continue
        rows.append(measure(f"ours {label}", lambda: ours_call(device, content, style, bf16, cl, stats, mode),
                            args, device))
    return rows


def make_folder(root: Path, count: int, size: int) -> tuple[Path, Path, Path]:
    """(decoder.pth from random weights, a folder of ``count`` smooth random JPEGs, a style JPEG)."""
    torch.manual_seed(0)
    decoder = root / "decoder.pth"
    save_decoder(AdaINDecoder(), VGGEncoder(["relu4_1"], weights="random", seed=0).spec, decoder)
    rng = np.random.default_rng(0)
    folder = root / "contents"
    folder.mkdir()
    for i in range(count):
        small = rng.integers(0, 256, (size // 16 + 1, size // 16 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(folder / f"{i:04d}.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "style.jpg", quality=90)
    return decoder, folder, root / "style.jpg"


def run_cli(decoder: Path, folder: Path, style: Path, out: Path, flags: list[str]) -> tuple[float, float]:
    """(wall seconds, img/s after the first batch) of one ``python -m styletransfer.cli.stylise`` run; the wall time
    includes imports and model loading, the rate is what the CLI prints from its own clock."""
    command = [sys.executable, "-m", "styletransfer.cli.stylise", str(decoder), "--content", str(folder), "--style",
               str(style), "-o", str(out), "--style-short-side", "0", "--ext", "jpg", *flags]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    written = len(list(out.rglob("*.jpg")))
    expected = len(list(folder.glob("*.jpg")))
    if written != expected:
        raise RuntimeError(f"wrote {written} of {expected} images")
    steady = re.search(r"([0-9.]+) img/s after the first batch", done.stdout)
    return seconds, float(steady.group(1)) if steady else float("nan")


def cli_rows(args: argparse.Namespace, device: torch.device, core: float | None) -> list[Row]:
    """The CLI over ``--folder-images`` JPEGs, overlapped and sequential, vs the core rate."""
    flags = ["--device", device.type, "--batch-size", str(args.batch)] + (["--bf16"] if device.type == "cuda" else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        decoder, folder, style = make_folder(root, args.folder_images, args.size)
        for label, extra in (("CLI overlapped (defaults)", []), ("CLI sequential (--workers 0 --writers 0)",
                                                                 ["--workers", "0", "--writers", "0"])):
            try:
                wall, steady = run_cli(decoder, folder, style, root / f"out_{len(rows)}", flags + extra)
                ratio = f"; {steady / core:.2f} of the core rate" if core else ""
                rows.append({"variant": label, "img/s": steady, "peak MiB": None,
                             "note": f"{args.folder_images / wall:.1f} img/s with start-up ({wall:.1f} s){ratio}"})
            except Exception as exc:
                rows.append({"variant": label, "img/s": None, "peak MiB": None,
                             "note": f"error: {type(exc).__name__}: {exc}"[:100]})
            print(f"{label:44s} {rows[-1]['note']}", flush=True)
    return rows


def big_image_row(device: torch.device, side: int) -> Row:
    label = f"one {side} x {side} image, bf16 + channels_last"
    if device.type != "cuda":
        return {"variant": label, "img/s": None, "peak MiB": None, "note": "skipped: CUDA only"}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        styliser = Styliser(VGGEncoder(["relu4_1"], weights="random", seed=0), AdaINDecoder(), bf16=True,
                            channels_last=True).to(device)
        gen = torch.Generator().manual_seed(0)
        style = torch.rand(1, 3, 512, 512, generator=gen).to(device)
        controls = Controls(style_codes=styliser.encode_styles([style]))
        content = torch.rand(1, 3, side, side, generator=gen).to(device)
        seconds, _ = timed(lambda: styliser.stylise(content, controls=controls), device, 1, 1)
        row = {"variant": label, "img/s": 1 / seconds, "peak MiB": peak_mib(device), "note": f"{seconds:.2f} s"}
    except torch.cuda.OutOfMemoryError as exc:
        row = {"variant": label, "img/s": None, "peak MiB": peak_mib(device),
               "note": f"error: OutOfMemoryError: {str(exc).splitlines()[0]}"[:100]}
    except Exception as exc:
        row = {"variant": label, "img/s": None, "peak MiB": peak_mib(device),
               "note": f"error: {type(exc).__name__}: {exc}"[:100]}
    print(f"{label:44s} {row['note']}", flush=True)
    return row


def print_table(rows: list[Row], base: float | None) -> None:
    print("\n| variant | img/s | vs baseline | peak MiB | note |\n| --- | --- | --- | --- | --- |")
    for row in rows:
        rate = f"{row['img/s']:.1f}" if row["img/s"] else "-"
        ratio = f"{row['img/s'] / base:.2f}x" if row["img/s"] and base else "-"
        peak = f"{row['peak MiB']:.0f}" if row["peak MiB"] is not None else "-"
        print(f"| {row['variant']} | {rate} | {ratio} | {peak} | {row['note']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=512, help="square image side in pixels (default 512)")
    parser.add_argument("--batch", type=int, default=16, help="contents per call (default 16)")
    parser.add_argument("--steps", type=int, default=20, help="timed calls per variant (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (compilation happens here)")
    parser.add_argument("--profile", action="store_true", help="print each variant's top-15 CUDA kernels")
    parser.add_argument("--compile-modes", nargs="*", default=["default"],
                        help="torch.compile modes to time (default: default; none: skip compile)")
    parser.add_argument("--folder-images", type=int, default=200, help="JPEGs for the CLI rows (0 skips them)")
    parser.add_argument("--big", type=int, default=4096, help="side of the one-image memory row (0 skips it)")
    parser.add_argument("--no-bf16", action="store_true",
                        help="skip the bf16 rows (bf16 autocast is slow on a CPU; the quick smoke run skips them)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # fixed shapes, as the CLI sets on CUDA
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"AdaIN stylise, batch {args.batch} at {args.size} px, {name}, torch {torch.__version__}", flush=True)
    rows = core_rows(args, device)
    base = rows[0]["img/s"]
    # The core rate of what the CLI's flags run: bf16 + channels_last on CUDA, fp32 + channels_last on a CPU.
    eager = rows[4 if device.type == "cuda" else 5]["img/s"]
    if args.folder_images > args.batch:
        rows += cli_rows(args, device, eager)
    if args.big:
        rows.append(big_image_row(device, args.big))
    with contextlib.suppress(Exception):
        torch.cuda.synchronize()
    print_table(rows, base)


if __name__ == "__main__":
    main()
