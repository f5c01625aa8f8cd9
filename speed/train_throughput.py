"""AdaIN training throughput: the reference step, our step per speed setting, the data path and train.py end to end.

    python speed/train_throughput.py                      # batch 8 at 256 px on the GPU (issue 10's setting)
    python speed/train_throughput.py --profile            # also the top-15 CUDA kernels of the reference and best step
    python speed/train_throughput.py --device cpu --size 64 --batch 2 --steps 5

Rows (all in this one process, random weights, VGG-19 to relu4_1 with reflection padding as AdaIN's normalised VGG):

a. reference: the reference PyTorch code's step written out here (nn.Sequential VGG and decoder with ReflectionPad2d,
   calc_mean_std, MSE losses, Adam; TF32 on); the ratio column is relative to it;
b. ours: ``AdaINModule.losses`` + backward + its optimiser (fused Adam on CUDA) and lr schedule, per speed setting
   (fp32, bf16, bf16 + channels_last, then + torch.compile modes; compile rows need a GPU unless --compile-on-cpu);
   the fastest is the "best step";
c. the data path alone, from ``speed/data_path.py`` (folders, caches, CPU and GPU decode);
d. ``train.py`` end to end through Lightning (the real Hydra config, generated JPEG folders, csv logger, no
   validation or checkpoints while timed) with the best step's settings, and a CPU row: our step driven by a plain
   loop vs. by Lightning on the same in-memory batches (issue 10: ratio <= 1.05). On a GPU the train.py rows also
   count the host-device syncs of the timed steps (``torch.cuda.set_sync_debug_mode``) and name their source lines.

Every row runs in its own try/except: an error is printed in its row and the script goes on. Timings synchronise
the GPU only around the timed region; peak memory is per row (CUDA only).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch import Tensor
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import data_path  # noqa: E402  (speed/data_path.py)
from reference import reference_decoder, reference_losses, reference_vgg  # noqa: E402  (speed/reference.py)
from timing import print_top_kernels, self_time, sync, timed  # noqa: E402  (speed/timing.py)

from styletransfer.engine.instantiate import register_resolvers  # noqa: E402
from styletransfer.methods.adain import AdaINModule  # noqa: E402
from styletransfer.training import run  # noqa: E402

ENCODER = {"weights": "random", "seed": 0, "fallback": None, "download": False, "arch": "vgg_normalised"}
DEFAULT_MODES = ("default", "reduce-overhead")


@dataclass
class Row:
    """One line of the final table."""

    label: str
    seconds: float | None = None
    peak_mib: float | None = None
    note: str = ""
    settings: dict = field(default_factory=dict)


def error_text(exc: BaseException) -> str:
    return f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:100]


#: Ops whose time is a copy (a layout or dtype conversion), listed by input shape under --profile.
COPY_OPS = ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous")


def profile(label: str, step: Callable[[], None], device: torch.device, top: int = 15) -> None:
    """Print the ``top`` kernels by self time (CUDA kernels on a GPU, CPU ops otherwise) with their share, then the
    costliest copies by input shape."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    step()
    sync(device)
    with torch_profile(activities=activities, record_shapes=True) as prof:
        for _ in range(3):
            step()
        sync(device)
    print_top_kernels(prof, label, 3, device, top)
    copies = [e for e in prof.key_averages(group_by_input_shape=True)
              if e.key in COPY_OPS and self_time(e, device) > 0]
    if copies:
        print(f"\nprofile: {label}: copies by input shapes (where layout and dtype conversions come from)")
        print("| op | input shapes | calls/step | self ms/step |\n| --- | --- | --- | --- |")
        for event in sorted(copies, key=lambda e: self_time(e, device), reverse=True)[:8]:
            shapes = str(event.input_shapes)[:90]
            print(f"| {event.key} | {shapes} | {event.count / 3:.0f} | {self_time(event, device) / 3e3:.3f} |")


# ---------------------------------------------------------------- a. the reference step (naoto0804/pytorch-AdaIN)


def reference_step(device: torch.device, content: Tensor, style: Tensor) -> Callable[[], None]:
    """The reference training step (``reference_losses``, Adam, its lr decay) as a closure."""
    vgg = reference_vgg().to(device).requires_grad_(False)
    decoder = reference_decoder().to(device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-4)
    state = {"iteration": 0}

    def step() -> None:
        for group in optimizer.param_groups:
            group["lr"] = 1e-4 / (1.0 + 5e-5 * state["iteration"])
        loss = reference_losses(vgg, decoder, content, style)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state["iteration"] += 1

    return step


# ---------------------------------------------------------------- b. our step


def our_step(device: torch.device, content: Tensor, style: Tensor, bf16: bool, channels_last: bool,
             compile_mode: str | bool) -> Callable[[], None]:
    """``AdaINModule.losses`` + backward + its own optimiser and schedule, as one closure."""
    model = AdaINModule(encoder=ENCODER, channels_last=channels_last, compile=compile_mode).to(device)
    model.setup("fit")
    configured = model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss = model.losses(content, style)["loss/total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    return step


def step_variants(args: argparse.Namespace, device: torch.device) -> list[tuple[str, dict]]:
    """(label, settings) of the rows of part b; compile rows only where they run in reasonable time."""
    variants = [("fp32", {"bf16": False, "channels_last": False, "compile_mode": False}),
                ("bf16", {"bf16": True, "channels_last": False, "compile_mode": False}),
                ("bf16 + channels_last", {"bf16": True, "channels_last": True, "compile_mode": False})]
    for mode in args.compile_modes:
        variants.append((f"bf16 + channels_last + compile({mode})",
                         {"bf16": True, "channels_last": True, "compile_mode": mode}))
    return variants


# ---------------------------------------------------------------- d. train.py and Lightning


class StepTimer(pl.Callback):
    """Records perf_counter at the start of training batch ``start_step`` and at the end of training; the last
    instance's result is kept on the class (the callback is built by Hydra inside ``training.run``)."""

    last: tuple[int, float] | None = None

    def __init__(self, start_step: int) -> None:
        self.start_step = int(start_step)
        self._start: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx) -> None:
        if trainer.global_step == self.start_step and self._start is None:
            sync(pl_module.device)
            self._start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync(pl_module.device)
        if self._start is not None:
            StepTimer.last = (trainer.global_step - self.start_step, time.perf_counter() - self._start)


class SyncSites(pl.Callback):
    """From training batch ``start_step`` on (CUDA only), ``torch.cuda.set_sync_debug_mode("warn")``: every operation
    that makes the host wait for the GPU warns, and the warnings' source lines are counted (kept on the class)."""

    found: Counter[str] = Counter()

    def __init__(self, start_step: int) -> None:
        self.start_step = int(start_step)
        self._recording: warnings.catch_warnings | None = None
        self._caught: list[warnings.WarningMessage] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx) -> None:
        if trainer.global_step == self.start_step and self._recording is None and pl_module.device.type == "cuda":
            SyncSites.found = Counter()
            self._recording = warnings.catch_warnings(record=True)
            self._caught = self._recording.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._recording is not None:
            torch.cuda.set_sync_debug_mode(0)
            self._recording.__exit__(None, None, None)
            SyncSites.found.update(f"{Path(w.filename).name}:{w.lineno}" for w in self._caught
                                   if "synchronizing" in str(w.message))
            self._recording = None


def sync_note(steps: int) -> str:
    """The host-device syncs :class:`SyncSites` saw, per timed step and by source line ("" on a CPU)."""
    if not SyncSites.found:
        return ""
    sites = ", ".join(f"{site} x{count}" for site, count in SyncSites.found.most_common(6))
    return f"{sum(SyncSites.found.values()) / steps:.2f} syncs/step: {sites}"


def train_py_row(args: argparse.Namespace, device: torch.device, settings: dict, data: str, data_overrides: list[str],
                 work: Path) -> float:
    """Seconds per step of ``training.run`` on the composed config (steps after ``args.warmup``); the host-device
    syncs of those steps are left in :class:`SyncSites`."""
    register_resolvers()
    steps = args.warmup + args.steps
    precision = "bf16-mixed" if settings.get("bf16") else "32-true"
    overrides = [
        "method=adain", f"data={data}", "logger=csv", "encoder.weights=random", "encoder.arch=vgg_normalised",
        *data_overrides, f"data.crop_size={args.size}", f"data.batch_size={args.batch}", f"data.num_workers={args.workers}",
        f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}", f"trainer.precision={precision}",
        f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps + 1}", "trainer.num_sanity_val_steps=0",
        "+trainer.limit_val_batches=0", "data.val_pairs=0", f"callbacks.model_checkpoint.every_n_train_steps={steps + 1}",
        f"method.channels_last={str(bool(settings.get('channels_last'))).lower()}",
        f"method.compile={settings.get('compile_mode') or False}", "method.export_decoder=false",
        f"+callbacks.step_timer._target_={__name__}.StepTimer", f"+callbacks.step_timer.start_step={args.warmup}",
        f"+callbacks.sync_sites._target_={__name__}.SyncSites", f"+callbacks.sync_sites.start_step={args.warmup}",
        f"paths.output_dir={work}",
    ]
    StepTimer.last = None
    SyncSites.found = Counter()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    run(cfg)
    if StepTimer.last is None or StepTimer.last[0] <= 0:
        raise RuntimeError("the step timer saw no timed steps")
    return StepTimer.last[1] / StepTimer.last[0]


def lightning_vs_plain(args: argparse.Namespace, work: Path, repeats: int = 2) -> tuple[float, float]:
    """(plain-loop, Lightning) seconds per step of our fp32 step on the CPU, on the same in-memory batches (one
    epoch long enough for every step, as a real dataset's); the two alternate ``repeats`` times and the faster
    run of each counts, so machine drift does not favour either."""
    gen = torch.Generator().manual_seed(0)
    size, batch, total = args.cpu_size, args.cpu_batch, args.warmup + args.steps
    batches = [{"content": torch.rand(batch, 3, size, size, generator=gen),
                "style": torch.rand(batch, 3, size, size, generator=gen)} for _ in range(4)]
    plain_runs, lightning_runs = [], []
    for _ in range(repeats):
        model = AdaINModule(encoder=ENCODER, export_decoder=False)
        configured = model.configure_optimizers()
        optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
        state = {"i": 0}

        def plain() -> None:
            data = batches[state["i"] % len(batches)]
            state["i"] += 1
            loss = model.losses(data["content"], data["style"])["loss/total"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()

        plain_runs.append(timed(plain, torch.device("cpu"), args.steps, args.warmup)[0])
        StepTimer.last = None
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=total, max_epochs=-1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[StepTimer(args.warmup)], default_root_dir=str(work / "plain_vs_pl"),
                             log_every_n_steps=10)
        loader = DataLoader([batches[i % len(batches)] for i in range(total)], batch_size=None, shuffle=False)
        trainer.fit(AdaINModule(encoder=ENCODER, export_decoder=False), train_dataloaders=loader)
        if StepTimer.last is None:
            raise RuntimeError("the step timer saw no timed steps")
        lightning_runs.append(StepTimer.last[1] / StepTimer.last[0])
    return min(plain_runs), min(lightning_runs)


# ---------------------------------------------------------------- main


def data_rows(args: argparse.Namespace, device: torch.device,
              work: Path) -> tuple[list[Row], tuple[Path, Path], dict[str, Path]]:
    """Part c: the data path alone; returns its rows, the JPEG folders and the prepared caches (for part d)."""
    short_side = 2 * args.size  # the paper's ratio (512 -> 256 crops)
    folders = data_path.make_jpeg_folders(work / "jpegs", args.images)
    try:
        caches, _ = data_path.prepare_caches(folders, work / "caches", short_side=short_side)
    except Exception as exc:  # noqa: BLE001 - a benchmark row reports its error and the script goes on
        return [Row("c. data path: prepare caches", note=error_text(exc))], folders, {}
    rows = []
    try:
        for label, ms, _, _ in data_path.data_path_rows(folders, caches, device, batches=args.steps,
                                                        workers=args.workers, warmup=args.warmup, batch=args.batch,
                                                        crop=args.size, short_side=short_side):
            rows.append(Row(f"c. data {label}", ms / 1e3 if ms == ms else None, note="" if ms == ms else "error"))
    except Exception as exc:  # noqa: BLE001
        rows.append(Row("c. data path", note=error_text(exc)))
    return rows, folders, caches


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256, help="crop size in pixels (paper: 256)")
    parser.add_argument("--batch", type=int, default=8, help="content/style pairs per step (paper: 8)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (compilation happens here; default 5 on CUDA, 2 on a CPU)")
    parser.add_argument("--compile-modes", nargs="*", default=None,
                        help=f"torch.compile modes of part b (default on CUDA: {' '.join(DEFAULT_MODES)}; on a "
                             "CPU none: inductor takes minutes there)")
    parser.add_argument("--profile", action="store_true", help="print the top-15 kernels of the reference and best step")
    parser.add_argument("--skip-train-py", action="store_true", help="skip part d (train.py end to end)")
    parser.add_argument("--no-bf16", action="store_true",
                        help="skip part b's bf16 rows (bf16 autocast is slow on a CPU; the quick smoke run skips them)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where to generate the JPEG folders (default: temp)")
    parser.add_argument("--workers", default="auto", help="data-loading workers of parts c and d (auto: data.num_workers=auto)")
    parser.add_argument("--images", type=int, default=None,
                        help="640x480 JPEGs per folder for parts c and d (default 1200 on CUDA, as issue 10 measured; 32 on a CPU)")
    parser.add_argument("--cpu-size", type=int, default=64, help="image size of the CPU Lightning-vs-plain row")
    parser.add_argument("--cpu-batch", type=int, default=2, help="batch of the CPU Lightning-vs-plain row")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 5 if torch.device(args.device).type == "cuda" else 2
    if args.images is None:
        args.images = 1200 if torch.device(args.device).type == "cuda" else 32
    if args.compile_modes is None:
        args.compile_modes = list(DEFAULT_MODES) if torch.device(args.device).type == "cuda" else []
    return args


def print_table(rows: list[Row], base: float | None, title: str) -> None:
    print(f"\n{title}\n\n| row | ms/step | it/s | vs reference | peak MiB | note |\n| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        if row.seconds is None:
            print(f"| {row.label} | - | - | - | - | {row.note} |")
            continue
        ratio = f"{base / row.seconds:.2f}x" if base and not row.label.startswith("c.") else "-"
        peak = f"{row.peak_mib:.0f}" if row.peak_mib is not None else "-"
        print(f"| {row.label} | {row.seconds * 1e3:.1f} | {1 / row.seconds:.1f} | {ratio} | {peak} | {row.note} |")


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # as trainer.benchmark=true
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    title = (f"AdaIN training throughput, batch {args.batch} at {args.size} px, {args.steps} steps after "
             f"{args.warmup} warm-up, {name}, torch {torch.__version__}")
    print(title)
    gen = torch.Generator().manual_seed(0)
    content = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device)
    style = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device)
    rows: list[Row] = []
    steps: dict[str, Callable[[], None]] = {}

    def measure(label: str, build: Callable[[], Callable[[], None]], settings: dict | None = None) -> None:
        try:
            step = build()
            seconds, peak = timed(step, device, args.steps, args.warmup)
            rows.append(Row(label, seconds, peak, settings=settings or {}))
            steps[label] = step
        except Exception as exc:  # noqa: BLE001 - a benchmark row reports its error and the script goes on
            rows.append(Row(label, note=error_text(exc), settings=settings or {}))
        print(f"  {label}: {rows[-1].seconds * 1e3:.1f} ms/step" if rows[-1].seconds else f"  {label}: {rows[-1].note}",
              flush=True)

    measure("a. reference (plain PyTorch, fp32/TF32)", lambda: reference_step(device, content, style))
    for label, settings in step_variants(args, device):
        if settings["bf16"] and args.no_bf16:
            rows.append(Row(f"b. ours {label}", note="skipped: --no-bf16"))
            print(f"  b. ours {label}: {rows[-1].note}", flush=True)
            continue
        measure(f"b. ours {label}", lambda s=settings: our_step(device, content, style, **s), settings)
    ours = [row for row in rows if row.label.startswith("b.") and row.seconds is not None]
    best = min(ours, key=lambda row: row.seconds) if ours else None
    if best is not None:
        best.note = "best step (issue 10: <= 6.7 ms at batch 8, 256 px)"
    if args.profile:
        for label in [rows[0].label] + ([best.label] if best is not None else []):
            if label in steps:
                try:
                    profile(label, steps[label], device)
                except Exception as exc:  # noqa: BLE001
                    print(f"profile: {label}: {error_text(exc)}")
    steps.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    work_context = tempfile.TemporaryDirectory() if args.data_dir is None else contextlib.nullcontext(args.data_dir)
    with work_context as work_dir:
        work = Path(work_dir)
        data_rows_, folders, caches = data_rows(args, device, work)
        rows += data_rows_
        if not args.skip_train_py:
            rows += train_py_rows(args, device, best, folders, caches, work)
    base = rows[0].seconds
    print_table(rows, base, title)


def train_py_rows(args: argparse.Namespace, device: torch.device, best: Row | None, folders: tuple[Path, Path],
                  caches: dict[str, Path], work: Path) -> list[Row]:
    """Part d: train.py with the best step's settings on data=folders (and data=cache when it exists), then the
    CPU Lightning-vs-plain row."""
    out: list[Row] = []
    settings = best.settings if best is not None else {}
    described = ", ".join(f"{k}={v}" for k, v in settings.items())
    data_overrides = {"folders": ("folders", [f"data.content_dir={folders[0]}", f"data.style_dir={folders[1]}",
                                              f"data.short_side={2 * args.size}"])}
    for fmt, cache in caches.items():
        data_overrides[f"cache_{fmt}"] = ("cache", [f"data.cache={cache}"])
    for name, (data, extra) in data_overrides.items():
        label = f"d. train.py data={data}{f' ({name[6:]})' if data == 'cache' else ''} ({described or 'fp32'})"
        try:
            seconds = train_py_row(args, device, settings, data, extra, work / name)
            out.append(Row(label, seconds, note=sync_note(args.steps)))
        except Exception as exc:  # noqa: BLE001
            out.append(Row(label, note=error_text(exc)))
        print(f"  {label}: {out[-1].note or f'{out[-1].seconds * 1e3:.1f} ms/step'}", flush=True)
    try:
        plain_s, lightning_s = lightning_vs_plain(args, work)
        ratio = lightning_s / plain_s
        verdict = "ok" if ratio <= 1.05 else "over the 1.05 target"
        out.append(Row(f"d. cpu plain loop, ours fp32, batch {args.cpu_batch} at {args.cpu_size} px", plain_s))
        out.append(Row("d. cpu Lightning loop, same", lightning_s,
                       note=f"Lightning / plain = {ratio:.3f} ({verdict}; issue 10: <= 1.05)"))
    except Exception as exc:  # noqa: BLE001
        out.append(Row("d. cpu Lightning vs plain loop", note=error_text(exc)))
    return out


if __name__ == "__main__":
    main()
