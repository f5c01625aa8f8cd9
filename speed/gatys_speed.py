"""Time Neural Style (Gatys) L-BFGS iterations under each speed setting and end to end through Lightning.

    python speed/gatys_speed.py                                  # 500 iterations at 512 px on the GPU
    python speed/gatys_speed.py --device cpu --size 64 --iterations 10
    python speed/gatys_speed.py --profile                        # plus the top-15 CUDA kernels of the best setting

Rows (random encoder weights, two generated images; each row in this one process, after untimed warm-up
iterations in which compilation and CUDA-graph capture happen; the device is synchronised only around the timed
loop): a plain-PyTorch baseline written here (a VGG-19 nn.Sequential with the encoder's weights, Gram losses and
torch.optim.LBFGS as neural-style-pt runs it: one step with max_iter iterations), then GatysModule's loss with
torch.optim.LBFGS in float32 (today's path, one sync per iteration for the NaN check), bf16 + channels_last, the
sync-free device L-BFGS, + torch.compile, + a CUDA graph per iteration; on CUDA the best setting again at 2048 px
for its peak memory; last `train.py experiment=gatys_fast` through Lightning (composed in-process), timed from
its second Lightning step. The table comes last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torchvision
from hydra import compose, initialize_config_dir
from PIL import Image
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import print_top_kernels, sync  # noqa: E402  (speed/timing.py)

from styletransfer.engine.instantiate import register_resolvers  # noqa: E402
from styletransfer.engine.precision import autocast_dtype  # noqa: E402
from styletransfer.methods.gatys import GatysModule  # noqa: E402
from styletransfer.methods.gatys.fast import FastLoop  # noqa: E402
from styletransfer.methods.gatys.lbfgs import DeviceLBFGS  # noqa: E402
from styletransfer.methods.gatys.losses import GramStyleLoss  # noqa: E402
from styletransfer.nn.encoder import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from styletransfer.training import run as train  # noqa: E402

RANDOM_ENCODER = {"weights": "random", "seed": 0, "fallback": None, "download": False}
STYLE_AT = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}  # torchvision indices
CONTENT_AT = 22  # relu4_2
#: The variants: label, GatysModule settings (``bf16``: as under trainer.precision=bf16-mixed), optimiser ("torch" =
#: torch.optim.LBFGS, "device" = DeviceLBFGS).
VARIANTS = [
    ("ours fp32, torch LBFGS (today)", {}, "torch"),
    ("ours bf16 + channels_last", {"bf16": True, "channels_last": True}, "torch"),
    ("+ device L-BFGS", {"bf16": True, "channels_last": True, "optimizer": "device_lbfgs"}, "device"),
    ("+ compile", {"bf16": True, "channels_last": True, "optimizer": "device_lbfgs", "compile": "default"}, "device"),
    ("+ CUDA graph", {"bf16": True, "channels_last": True, "optimizer": "device_lbfgs", "compile": "default",
                      "cuda_graph": True}, "device"),
]


def images(size: int) -> tuple[Tensor, Tensor]:
    """A smooth content and a striped style image (1, 3, size, size) in [0, 1], the same every run."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    content = torch.stack([x, y, (x + y) / 2])[None]
    gen = torch.Generator().manual_seed(0)
    style = (torch.stack([torch.sin(20 * x + c) * torch.cos(9 * y - c) for c in range(3)])[None] * 0.4 + 0.5
             + 0.05 * torch.randn(1, 3, size, size, generator=gen)).clamp(0, 1)
    return content, style


def timed(device: torch.device, run: Callable[[int], None], warmup: int, iterations: int) -> float:
    """Seconds per iteration of ``run(n)`` (n iterations) after ``run(warmup)``. On CUDA the peak memory is reset
    after the warm-up: the table shows the steady state, not cudnn.benchmark's one-off workspace trials."""
    run(warmup)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    run(iterations)
    sync(device)
    return (time.perf_counter() - start) / iterations


# ---- the plain-PyTorch baseline (neural-style-pt's structure) -------------------------------------------------
def baseline(device: torch.device, size: int, trunk: nn.Sequential) -> Callable[[int], None]:
    """neural-style-pt in plain PyTorch: VGG-19 features (the encoder's weights), Gram MSE at relu1_1..relu5_1,
    MSE at relu4_2, TV, and torch.optim.LBFGS(max_iter=n, tolerances off) stepped once for n iterations."""
    vgg = torchvision.models.vgg19().features[:30].to(device).eval().requires_grad_(False)
    vgg.load_state_dict(trunk.state_dict())
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def features(img: Tensor) -> dict[int, Tensor]:
        out, x = {}, (img - mean) / std
        for i, layer in enumerate(vgg):
            x = layer(x)
            out[i] = x
        return out

    def gram(f: Tensor) -> Tensor:
        n, c, h, w = f.shape
        flat = f.reshape(n, c, h * w)
        return flat @ flat.transpose(1, 2) / (c * h * w)

    content, style = (t.to(device) for t in images(size))
    with torch.no_grad():
        target_c = features(content)[CONTENT_AT]
        target_s = {i: gram(f) for i, f in features(style).items() if i in STYLE_AT.values()}
    img = content.clone().requires_grad_()

    def closure() -> Tensor:
        optimizer.zero_grad()
        f = features(img)
        loss = (f[CONTENT_AT] - target_c).pow(2).mean()
        loss = loss + 1e6 * sum((gram(f[i]) - t).pow(2).mean() for i, t in target_s.items()) / len(target_s)
        loss = loss + (img[..., 1:, :] - img[..., :-1, :]).pow(2).sum() / img.numel()
        loss = loss + (img[..., :, 1:] - img[..., :, :-1]).pow(2).sum() / img.numel()
        loss.backward()
        return loss

    optimizer = torch.optim.LBFGS([img], lr=1.0, max_iter=1, history_size=100, tolerance_grad=-1,
                                  tolerance_change=-1)

    def run(n: int) -> None:
        optimizer.param_groups[0]["max_iter"] = n
        optimizer.param_groups[0]["max_eval"] = n * 5 // 4
        optimizer.step(closure)

    return run


# ---- ours ------------------------------------------------------------------------------------------------------
def ours(device: torch.device, size: int, settings: dict, optimiser: str) -> Callable[[int], None]:
    """GatysModule's losses at ``size`` px with ``settings`` and torch's or the device L-BFGS (no Lightning)."""
    settings = dict(settings)
    bf16 = settings.pop("bf16", False)  # trainer.precision=bf16-mixed, which setup("fit") reads into the module
    module = GatysModule(RANDOM_ENCODER, snapshot_every=0, output_name=None, **settings).to(device)
    module._low_precision = autocast_dtype("bf16-mixed" if bf16 else "32-true")
    if module.hparams.channels_last:
        module.encoder.to(memory_format=torch.channels_last)
    content, style = (t.to(device) for t in images(size))
    with torch.no_grad():  # the targets GatysModule._prepare_scale computes, without a data module
        module._content_targets = dict(module.encoder(content, module.content_layers))
        module._style_losses = {k: GramStyleLoss.from_features(v)
                                for k, v in module.encoder(style, module.style_layers).items()}
    module._scale_ready = module.scale_index
    image = nn.Parameter(content.clone())
    if optimiser == "device":
        loop = FastLoop(module.losses, image, 0)
        optimizer = DeviceLBFGS([image], lr=1.0, history_size=100, cuda_graph=module.hparams.cuda_graph)

        def run_device(n: int) -> None:
            loop.run(optimizer, n, lambda: None)

        return run_device
    optimizer = torch.optim.LBFGS([image], lr=1.0, max_iter=1, history_size=100)

    def closure() -> Tensor:
        optimizer.zero_grad()
        total = module.losses(image)["loss/total"]
        total.backward()
        return total

    def run(n: int) -> None:
        for _ in range(n):
            if not torch.isfinite(optimizer.step(closure)):  # today's per-step NaN check (a host sync)
                raise FloatingPointError("loss is not finite")

    return run


# ---- through Lightning -----------------------------------------------------------------------------------------
class FirstStepTimer(pl.Callback):
    """Wall time from the start of the second Lightning step (after compilation and capture) to the end."""

    found: dict[str, float] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == 1:
            sync(module.device)
            FirstStepTimer.found.update(start=time.perf_counter(), first=trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        sync(module.device)
        FirstStepTimer.found.update(end=time.perf_counter(), last=trainer.global_step)


def end_to_end(device: torch.device, size: int, iterations: int, work: Path) -> float:
    """``train.py experiment=gatys_fast`` composed in-process on two generated images; seconds per iteration from
    the second Lightning step on (the first holds compilation and CUDA-graph capture)."""
    paths = []
    for name, tensor in zip(("content", "style"), images(size)):
        paths.append(work / f"{name}.png")
        Image.fromarray((tensor[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(paths[-1])
    overrides = [
        "experiment=gatys_fast", f"data.content={paths[0]}", f"data.style={paths[1]}", f"data.long_side={size}",
        "encoder.weights=random", "logger=csv", f"trainer.max_steps={iterations + 50}", f"paths.output_dir={work}/run",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        "+callbacks.timer._target_=__main__.FirstStepTimer",
    ]
    if device.type == "cpu":
        overrides += ["trainer.precision=32-true", "method.compile=false", "method.channels_last=false"]
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    train(cfg)
    found = FirstStepTimer.found
    return (found["end"] - found["start"]) / (found["last"] - found["first"])


# ---- table -----------------------------------------------------------------------------------------------------
def measure(label: str, device: torch.device, rows: list, base: list, job: Callable[[], float],
            iterations: int) -> None:
    """Run one row (``job`` returns seconds per iteration), catching any error into the row."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        seconds = job()
    except Exception as exc:  # a row's failure (OOM, compile error) is reported in the row, the others go on
        traceback.print_exc(limit=3)
        message = str(exc).splitlines()[0][:100] if str(exc) else ""
        rows.append(f"| {label} | error: {type(exc).__name__}: {message} | | | |")
        print(rows[-1], flush=True)
        return
    base.append(base[0] if base else seconds)
    peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}" if device.type == "cuda" else "n/a"
    rows.append(f"| {label} | {seconds * 1e3:.2f} | {seconds * iterations:.2f} | {base[0] / seconds:.2f}x | {peak} |")
    print(rows[-1], flush=True)


def profile(device: torch.device, size: int, warmup: int) -> None:
    """Top-15 CUDA kernels by self time (with their share) over 20 iterations of the best setting."""
    run = ours(device, size, VARIANTS[-1][1], VARIANTS[-1][2])
    run(warmup)
    sync(device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run(20)
        sync(device)
    print_top_kernels(prof, "best setting, per iteration", 20, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (the paper: 512)")
    parser.add_argument("--iterations", type=int, default=500, help="timed L-BFGS iterations per row")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations first (compile and capture)")
    parser.add_argument("--big", type=int, default=2048, help="side of the peak-memory row (CUDA only; 0: skip)")
    parser.add_argument("--profile", action="store_true", help="print the top-15 CUDA kernels of the best setting")
    parser.add_argument("--no-lightning", action="store_true", help="skip the end-to-end Lightning row")
    parser.add_argument("--no-bf16", action="store_true",
                        help="run the bf16 rows in float32 (bf16 autocast is slow on a CPU; the quick smoke run does)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # as trainer.benchmark=true (the default trainer config)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"Neural Style L-BFGS, {args.size} px, {args.iterations} timed iterations, {name}, torch {torch.__version__}")
    rows: list[str] = []
    base: list[float] = []
    trunk = GatysModule(RANDOM_ENCODER).encoder.trunk
    n, w = args.iterations, args.warmup
    measure("plain PyTorch baseline (neural-style-pt)", device, rows, base,
            lambda: timed(device, baseline(device, args.size, trunk), w, n), n)
    for label, settings, optimiser in VARIANTS:
        if settings.get("cuda_graph") and device.type != "cuda":
            rows.append(f"| {label} | skipped: CUDA only | | | |")
            print(rows[-1], flush=True)
            continue
        if args.no_bf16 and settings.get("bf16"):  # the same rows in float32
            label, settings = label.replace("bf16 + ", ""), {k: v for k, v in settings.items() if k != "bf16"}
        measure(label, device, rows, base, lambda: timed(device, ours(device, args.size, settings, optimiser), w, n), n)
    if device.type == "cuda" and args.big:
        label, settings, optimiser = VARIANTS[-1]
        measure(f"{label} at {args.big} px (memory; {min(n, 10)} iterations)", device, rows, base,
                lambda: timed(device, ours(device, args.big, settings, optimiser), 4, min(n, 10)), n)
    if not args.no_lightning:
        with tempfile.TemporaryDirectory() as work:
            measure("train.py experiment=gatys_fast (Lightning, from step 2)", device, rows, base,
                    lambda: end_to_end(device, args.size, n, Path(work)), n)
    if args.profile and device.type == "cuda":
        profile(device, args.size, w)
    print(f"\nNeural Style, {args.size} px, {name}, torch {torch.__version__}")
    print(f"| variant | ms/iteration | s per {n} iterations | vs baseline | peak GiB |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
