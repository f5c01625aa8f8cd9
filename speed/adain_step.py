"""Time AdaIN training steps under each speed setting and print ms/step and the ratio to fp32.

    python speed/adain_step.py                    # the paper's batch 8 at 256 px, on the GPU if there is one
    python speed/adain_step.py --size 64 --batch 2 --steps 5 --device cpu

Random encoder weights (timing only). The variants are the settings a user picks: trainer.precision=bf16-mixed,
method.channels_last=true, method.compile=true (alone and combined). Each variant runs in this one process, after warm-up, with the
device synchronised only around the timed loop.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from styletransfer.methods.adain import AdaINModule

RANDOM_ENCODER = {"weights": "random", "seed": 0, "fallback": None, "download": False}


def time_variant(device: torch.device, size: int, batch: int, steps: int, warmup: int,
                 bf16: bool, channels_last: bool, compile: bool) -> float:
    """Mean seconds per optimiser step (forward, backward, Adam) of one configuration."""
    model = AdaINModule(encoder=RANDOM_ENCODER, channels_last=channels_last, compile=compile).to(device)
    model.setup("fit")
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    content = torch.rand(batch, 3, size, size, generator=gen).to(device)
    style = torch.rand(batch, 3, size, size, generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss = model.losses(content, style)["loss/total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256, help="crop size in pixels (paper: 256)")
    parser.add_argument("--batch", type=int, default=8, help="content/style pairs per step (paper: 8)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # as trainer.benchmark=true (the default trainer config)
    variants = [("fp32", False, False, False), ("bf16", True, False, False), ("bf16 + channels_last", True, True, False)]
    if not args.no_compile:
        variants += [("bf16 + compile", True, False, True), ("bf16 + channels_last + compile", True, True, True)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"AdaIN training step, batch {args.batch} at {args.size} px, {name}, torch {torch.__version__}")
    print(f"{'variant':34s} {'ms/step':>9s} {'it/s':>7s} {'vs fp32':>8s}")
    base = None
    for label, bf16, channels_last, compile in variants:
        seconds = time_variant(device, args.size, args.batch, args.steps, args.warmup, bf16, channels_last, compile)
        base = base or seconds
        print(f"{label:34s} {seconds * 1e3:9.1f} {1 / seconds:7.2f} {base / seconds:7.2f}x")


if __name__ == "__main__":
    main()
