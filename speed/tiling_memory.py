"""Peak memory and time of tiled AdaIN stylisation of one large image (issue 14: 8000 x 6000 in bounded memory).

    python speed/tiling_memory.py                                         # 8000 x 6000, --max-tile auto and 1024
    python speed/tiling_memory.py --device cpu --size 2000 1500 --max-tile 1024
    python speed/tiling_memory.py --device cpu --size 64 48 --max-tile 256 0   # a smoke run

Random weights (memory and timing only). Each row runs in a fresh child process (so ``ru_maxrss`` is that row's
peak resident memory): it builds the model, makes a uint8 content of the given size on the host, caches the style
statistics, then times ``apps.tiling.stylise_any_size(model, content, controls, max_tile=...)`` and its conversion to
uint8. Printed per row:
the tile side, the windows, seconds, peak RSS (and peak CUDA memory on a GPU), and the bound the design promises:

    RSS before the run + 18 B per image pixel (uint8 input, float32 output, uint8 result)
    + the model's ``tiling().bytes_per_pixel`` per tile pixel (CPU; on CUDA the tile's cost is on the device instead)

``--max-tile 0`` is the untiled baseline (expect it to exceed the bound, or to run out of memory, at large sizes).
A failing row prints its error and the others go on; the table comes last.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from styletransfer.apps import tiling
from styletransfer.methods.adain import AdaINDecoder, Styliser
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.protocol.controls import Controls
from styletransfer.runtime.devices import device_name, resolve_device

#: Host bytes per image pixel that do not depend on the tile: uint8 input, float32 output, uint8 result.
IMAGE_BYTES_PER_PIXEL = 3 + 12 + 3


def _rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> dict:
    """One row, in this (child) process: stylise a (height, width) uint8 image with ``args.max_tile[0]``."""
    device = resolve_device(args.device)
    torch.manual_seed(0)
    styliser = Styliser(VGGEncoder(["relu4_1"], weights="random", seed=0), AdaINDecoder(),
                        channels_last=args.channels_last, bf16=args.bf16).to(device)
    width, height = args.size
    content = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8)
    controls = Controls(style_codes=styliser.encode_styles([torch.rand(1, 3, 256, 256)]))
    max_tile = args.max_tile[0] if args.max_tile[0] == "auto" else int(args.max_tile[0])
    needs = styliser.tiling()
    side = tiling.tile_side(max_tile, needs, device, 1, height * width)
    tiled = bool(side) and max(height, width) > side
    windows = len(tiling.spans(height, side, needs)) * len(tiling.spans(width, side, needs)) if tiled else 1
    before = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = tiling.stylise_any_size(styliser, content, controls=controls, max_tile=max_tile)
    result = result.mul(255).round_().to(torch.uint8).cpu()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    tile_cost = needs.bytes_per_pixel * (min(side, height) * min(side, width) if tiled else height * width)
    bound = before + (IMAGE_BYTES_PER_PIXEL * height * width + (tile_cost if device.type == "cpu" else 0)) / 2**20
    return {"max_tile": str(max_tile), "side": side if tiled else 0, "windows": windows, "seconds": seconds,
            "rss_before_mib": before, "peak_rss_mib": _rss_mib(), "bound_mib": bound, "shape": list(result.shape),
            "cuda_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def run_row(args: argparse.Namespace, max_tile: str) -> dict:
    """Run one row in a child process; returns its figures or {"error": ...}."""
    command = [sys.executable, __file__, "--child", "--device", args.device, "--size", *map(str, args.size),
               "--max-tile", max_tile, "--channels-last" if args.channels_last else "--no-channels-last"]
    command += ["--bf16"] if args.bf16 else []
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"max_tile": max_tile, "error": tail[:100]}
    return json.loads(lines[-1])


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "-" if value is None else format(value, fmt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    parser.add_argument("--size", type=int, nargs=2, default=(8000, 6000), metavar=("W", "H"), help="image size")
    parser.add_argument("--max-tile", nargs="+", default=["auto", "1024"], help="one row per value (auto, 0, N)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per row before it is stopped")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    device = resolve_device(args.device)
    print(f"# tiling_memory: {device_name(device)}, torch {torch.__version__}, image {args.size[0]} x {args.size[1]}, "
          f"bf16={args.bf16}, channels_last={args.channels_last}")
    rows = []
    for max_tile in args.max_tile:
        try:
            row = run_row(args, max_tile)
        except Exception as exc:  # a row that fails (or times out) is reported, the others go on
            row = {"max_tile": max_tile, "error": f"{type(exc).__name__}: {exc}"[:100]}
        print(json.dumps(row))
        rows.append(row)
    print("\n| --max-tile | tile px | windows | seconds | peak RSS MiB | bound MiB | within | CUDA peak MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        if "error" in row:
            print(f"| {row['max_tile']} | error: {row['error']} | | | | | | |")
            continue
        within = "yes" if row["peak_rss_mib"] <= row["bound_mib"] else "no"
        print(f"| {row['max_tile']} | {row['side'] or 'untiled'} | {row['windows']} | {row['seconds']:.1f} | "
              f"{row['peak_rss_mib']:.0f} | {row['bound_mib']:.0f} | {within} | {_cell(row, 'cuda_peak_mib', '.0f')} |")


if __name__ == "__main__":
    main()
