"""What each AdaIN decoder costs: parameters, FLOPs at 512 px and CPU latency, the mirror beside configurable ones.

    python speed/decoders.py                       # 512 px, 2 threads, median of 5 runs
    python speed/decoders.py --side 128 --runs 2   # a quick check
    python speed/decoders.py --encoders            # encoder + decoder behind each backbone's bottleneck

The decoder alone (the encoder is the same for every row): relu4_1 features of a 512 x 512 image (1, 512, 64, 64) ->
the (1, 3, 512, 512) image, batch 1, float32, eager, random weights. FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add; convolutions only, as it counts). Latency is the
median of ``--runs`` timed calls after one warm-up, with ``torch.set_num_threads(--threads)``. The table comes last,
with the machine's processor and load named.

With ``--encoders``: each encoder to its bottleneck (random weights) and the decoder that method=adain trains behind
it, the whole image -> bottleneck -> image path at ``--side`` px, parameters and FLOPs of each part, latency of both
together and its ratio to VGG-19 with the mirror (measured in the same run).
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
from styletransfer.nn.encoders import build_any_encoder, feature_info

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


#: (label, encoder network, bottleneck, decoder group; None: the mirror) for ``--encoders``.
ENCODERS: list[tuple[str, str, str, dict | None]] = [
    ("VGG-19 relu4_1, mirror (paper)", "vgg19", "relu4_1", None),
    ("VGG-19 relu4_1, width 0.25", "vgg19", "relu4_1", {"width": 0.25}),
    ("ResNet-50 layer2, width 1", "resnet50", "layer2", {}),
    ("ResNet-50 layer2, width 0.25", "resnet50", "layer2", {"width": 0.25}),
    ("ResNet-50 layer3 (stride 16), width 1", "resnet50", "layer3", {}),
    ("ConvNeXt-Tiny features.3, width 1", "convnext_tiny", "features.3", {}),
    ("ConvNeXt-Tiny features.5 (stride 16), width 1", "convnext_tiny", "features.5", {}),
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


def _flops(call) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return counter.get_total_flops() / 1e9


def measure_path(network: str, bottleneck: str, group: dict | None, side: int, runs: int) -> tuple[float, ...]:
    """(encoder parameters, encoder GFLOPs, decoder parameters, decoder GFLOPs, median ms of both) of one path."""
    torch.manual_seed(0)
    encoder = build_any_encoder({"weights": "random", "network": network}, [bottleneck])
    channels, stride = feature_info(encoder, [bottleneck])[bottleneck]
    config = None if group is None else {"name": "configurable", **group}
    decoder = build_decoder(config, channels, stride).eval()
    image = torch.rand(1, 3, side, side)
    with torch.no_grad():
        features = encoder(image, [bottleneck])[bottleneck]
        enc_flops = _flops(lambda: encoder(image, [bottleneck]))
        dec_flops = _flops(lambda: decoder(features, (side, side)))
        times = []
        for run in range(runs + 1):  # the first is a warm-up
            start = time.perf_counter()
            decoder(encoder(image, [bottleneck])[bottleneck], (side, side))
            times.append(time.perf_counter() - start) if run else None
    params = [sum(p.numel() for p in module.parameters()) for module in (encoder, decoder)]
    return params[0], enc_flops, params[1], dec_flops, 1000 * statistics.median(times)


def encoders_table(args: argparse.Namespace) -> None:
    rows = []
    for label, network, bottleneck, group in ENCODERS:
        rows.append((label, *measure_path(network, bottleneck, group, args.side, args.runs)))
        print(f"{label}: {rows[-1][1:]}", flush=True)
    base = rows[0][-1]
    print(
        f"\n{processor()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, {args.side} px, "
        f"batch 1, float32, median of {args.runs}; load average {os.getloadavg()[0]:.2f} at the end\n"
    )
    header = "encoder, bottleneck, decoder | encoder parameters | encoder GFLOPs | decoder parameters | decoder GFLOPs"
    print(f"| {header} | CPU ms, both | vs VGG-19 + mirror |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, enc_p, enc_f, dec_p, dec_f, ms in rows:
        print(
            f"| {label} | {enc_p / 1e6:.2f} M | {enc_f:.1f} | {dec_p / 1e6:.2f} M | {dec_f:.1f} | {ms:.0f} | "
            f"{ms / base:.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=512, help="image side in px (default 512)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per decoder; the median is shown (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--encoders", action="store_true", help="encoder + decoder behind each backbone instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.encoders:
        encoders_table(args)
        return
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
