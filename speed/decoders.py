"""What each AdaIN decoder costs: parameters, FLOPs at 512 px and CPU latency, the mirror beside configurable ones.

    python speed/decoders.py                       # 512 px, 2 threads, median of 5 runs
    python speed/decoders.py --side 128 --runs 2   # a quick check

The decoder alone (the encoder is the same for every row): relu4_1 features of a 512 x 512 image (1, 512, 64, 64) ->
the (1, 3, 512, 512) image, batch 1, float32, eager, random weights. FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add; convolutions only, as it counts). Latency is the
median of ``--runs`` timed calls after one warm-up, with ``torch.set_num_threads(--threads)``. The table comes last,
with the machine's processor and load named.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from styletransfer.methods.adain.decoders import build_decoder

SETTINGS: list[tuple[str, dict | None]] = [
    ("mirror (paper)", None),
    ("width 1, nearest", {"width": 1.0}),
    ("width 0.5, nearest", {"width": 0.5}),
    ("width 0.25, nearest", {"width": 0.25}),
    ("width 1, 2 residual", {"width": 1.0, "residual_blocks": 2}),
    ("width 1, pixel shuffle", {"width": 1.0, "upsample": "pixel_shuffle"}),
    ("width 0.5, 2 residual, pixel shuffle", {"width": 0.5, "residual_blocks": 2, "upsample": "pixel_shuffle"}),
    ("width 0.25, 2 residual, pixel shuffle", {"width": 0.25, "residual_blocks": 2, "upsample": "pixel_shuffle"}),
]


def processor() -> str:
    """The CPU's model name (Linux), else what platform says."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(group: dict | None, side: int, runs: int) -> tuple[int, float, float]:
    """(parameters, GFLOPs, median ms) of one decoder."""
    torch.manual_seed(0)
    config = None if group is None else {"name": "configurable", **group}
    decoder = build_decoder(config).eval()
    features = torch.randn(1, 512, side // 8, side // 8)
    params = sum(p.numel() for p in decoder.parameters())
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            decoder(features, (side, side))
        decoder(features, (side, side))  # warm-up
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            decoder(features, (side, side))
            times.append(time.perf_counter() - start)
    return params, counter.get_total_flops() / 1e9, 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=512, help="image side in px (default 512)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per decoder; the median is shown (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for label, group in SETTINGS:
        params, gflops, ms = measure(group, args.side, args.runs)
        rows.append((label, params, gflops, ms))
        print(f"{label}: {params} parameters, {gflops:.1f} GFLOPs, {ms:.0f} ms", flush=True)
    mirror_ms = rows[0][3]
    print()
    print(
        f"{processor()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, "
        f"{args.side} px, batch 1, float32, median of {args.runs}; load average {os.getloadavg()[0]:.2f} at start"
    )
    print()
    print(f"| decoder | parameters | GFLOPs at {args.side} px | CPU ms | vs mirror |")
    print("|---|---:|---:|---:|---:|")
    for label, params, gflops, ms in rows:
        print(f"| {label} | {params / 1e6:.2f} M | {gflops:.1f} | {ms:.0f} | {ms / mirror_ms:.2f}x |")


if __name__ == "__main__":
    main()
