"""Resume is exact: the training data (order, style pairing, crops) continue where a checkpoint stopped.

Fast tests check that every draw is a pure function of (seed, epoch, index), that the training loader's position
round-trips through ``state_dict``, and that Lightning resumes a tiny model with the very batches it would have seen,
from periodic checkpoints and from the one a stop (Ctrl-C, SIGTERM) writes. The slow one kills a real ``train.py``
with SIGKILL after a checkpoint, resumes it, and requires the following losses and the final weights to equal the
uninterrupted run's, bitwise on the CPU.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from batch_recorder import BatchRecorder
from conftest import ROOT, train_in_process
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint

from styletransfer.data import ContentStyleDataModule
from styletransfer.data.datasets import ContentStyleDataset
from styletransfer.data.images import find_images
from styletransfer.data.resumable import DrawKey, ResumableDataLoader, SeededShuffle
from styletransfer.data.transforms import TrainTransform
from styletransfer.runtime.errors import ConfigError

STEPS = 8


def _images(root: Path, n_content: int = 6, n_style: int = 3, broken: bool = True) -> tuple[Path, Path]:
    """Random PNGs of 36-48 px (sizes vary, so resizing and crops matter), plus one unreadable content file."""
    rng = np.random.default_rng(0)
    folders = {"content": n_content, "style": n_style}
    for kind, n in folders.items():
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            width, height = rng.integers(36, 49, 2)
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / kind / f"{kind}_{i}.png")
    if broken:
        (root / "content" / "zz_broken.png").write_bytes(b"not an image")
    return root / "content", root / "style"


def _take(loader, count: int) -> list[dict]:
    """The next ``count`` batches; iterating the loader again continues the epoch, or starts the next one."""
    out: list[dict] = []
    while len(out) < count:
        for batch in loader:
            out.append(batch)
            if len(out) == count:
                break
    return out


def _same(first: list[dict], second: list[dict]) -> bool:
    return len(first) == len(second) and all(
        torch.equal(a["content"], b["content"]) and torch.equal(a["style"], b["style"]) for a, b in zip(first, second))


# ---------------------------------------------------------------- fast: pure draws and loader state


def test_items_are_a_pure_function_of_seed_epoch_and_index(tmp_path):
    content, style = _images(tmp_path, broken=False)
    files, styles = find_images(content), find_images(style)
    one = ContentStyleDataset(files, styles, TrainTransform(40, 32), seed=5)
    two = ContentStyleDataset(files, styles, TrainTransform(40, 32), seed=5)
    torch.manual_seed(1)
    first = one[DrawKey(5, 3, 2)]
    torch.manual_seed(2)  # the global generator plays no part
    assert torch.equal(first["content"], two[DrawKey(5, 3, 2)]["content"])
    assert torch.equal(first["style"], two[DrawKey(5, 3, 2)]["style"])
    assert torch.equal(one[2]["content"], two[DrawKey(5, 0, 2)]["content"])  # a plain index: epoch 0, own seed
    crops = {one[DrawKey(5, epoch, 2)]["content"].sum().item() for epoch in range(8)}
    assert len(crops) > 1  # other epochs draw other crops
    with pytest.raises(ConfigError, match="data.seed"):
        ContentStyleDataset(files, styles, TrainTransform(40, 32), seed=-1)


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch(tmp_path):
    content, style = _images(tmp_path, n_content=7, broken=False)
    dataset = ContentStyleDataset(find_images(content), find_images(style), TrainTransform(40, 32), seed=5)
    sampler = SeededShuffle(dataset, seed=5)
    orders = [sampler.order(epoch) for epoch in range(4)]
    assert all(sorted(order) == list(range(7)) for order in orders) and len({tuple(o) for o in orders}) > 1
    assert SeededShuffle(dataset, seed=5).order(2) == orders[2]
    shards = [SeededShuffle(dataset, seed=5, num_replicas=2, rank=rank).order(2) for rank in (0, 1)]
    padded = orders[2] + orders[2][:1]  # as DistributedSampler: padded to a multiple of the ranks, interleaved
    assert shards == [padded[0::2], padded[1::2]]
    sampler.set_epoch(2)
    assert list(sampler) == [DrawKey(5, 2, index) for index in orders[2]]


def _module(content: Path, style: Path, workers: int = 0, seed: int = 11) -> ContentStyleDataModule:
    return ContentStyleDataModule(str(content), str(style), short_side=40, crop_size=32, batch_size=2,
                                  num_workers=workers, val_pairs=0, persistent_workers=False, seed=seed)


@pytest.mark.parametrize("done", [1, 3, 4])  # mid-epoch, an epoch's end (3 batches an epoch), into the next
def test_loader_state_round_trips(tmp_path, done):
    content, style = _images(tmp_path)  # 7 files, one unreadable: 3 batches of 2 an epoch
    expected = _take(_module(content, style).train_dataloader(), 9)
    assert not _same(expected[:3], expected[3:6])  # each epoch its own order, pairs and crops
    interrupted = _module(content, style).train_dataloader()
    seen = _take(interrupted, done)
    state = interrupted.state_dict()
    assert all(type(value) is int for value in state.values())  # loads with torch.load(weights_only=True)
    resumed = _module(content, style, seed=99).train_dataloader()  # the checkpoint's seed wins
    resumed.load_state_dict(state)
    assert _same(seen + _take(resumed, 9 - done), expected)


def test_batches_do_not_depend_on_worker_count(tmp_path):
    content, style = _images(tmp_path)
    assert _same(_take(_module(content, style).train_dataloader(), 6),
                 _take(_module(content, style, workers=2).train_dataloader(), 6))


def test_loader_refuses_a_foreign_state(tmp_path):
    content, style = _images(tmp_path)
    loader = _module(content, style).train_dataloader()
    assert isinstance(loader, ResumableDataLoader)
    with pytest.raises(ConfigError, match="ckpt_path"):
        loader.load_state_dict({"epoch": "one"})


# ---------------------------------------------------------------- Lightning resumes the data where they stopped


class _StopAt(pl.Callback):
    """What Ctrl-C / SIGTERM do (styletransfer.engine.interrupt): stop after step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.should_stop = True


def _fit(content: Path, style: Path, root: Path, *callbacks, ckpt_path: Path | None = None) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=root,
                         enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
                         callbacks=list(callbacks))
    trainer.fit(BatchRecorder(), datamodule=_module(content, style), ckpt_path=ckpt_path)
    return trainer


def test_lightning_resumes_from_periodic_and_stop_checkpoints_with_the_same_batches(tmp_path):
    content, style = _images(tmp_path / "images")  # 3 batches an epoch
    every_step = ModelCheckpoint(dirpath=tmp_path / "ckpts", filename="{step}", every_n_train_steps=1, save_top_k=-1,
                                 auto_insert_metric_name=False)
    expected = _fit(content, style, tmp_path / "whole", every_step).lightning_module.seen
    assert len(expected) == STEPS
    for step in (2, 3, 4, 6):  # mid-epoch, an epoch's end, just after, another epoch's end
        resumed = _fit(content, style, tmp_path / f"from{step}", ckpt_path=tmp_path / "ckpts" / f"{step}.ckpt")
        assert _same(resumed.lightning_module.seen, expected[step:]), f"resumed from step {step}"
    for step in (3, 4):  # a stop writes a checkpoint that counts the epoch as finished; the data must not skip
        stopped = _fit(content, style, tmp_path / f"stop{step}", _StopAt(step))
        stopped.save_checkpoint(tmp_path / f"stop{step}.ckpt")
        resumed = _fit(content, style, tmp_path / f"stopped{step}", ckpt_path=tmp_path / f"stop{step}.ckpt")
        assert _same(resumed.lightning_module.seen, expected[step:]), f"resumed after a stop at step {step}"


# ---------------------------------------------------------------- slow: SIGKILL a real run and resume it


def _overrides(content: Path, style: Path, workers: int, *extra: str, steps: int = STEPS) -> list[str]:
    """A run of 16 px crops (the smallest VGG's relu4_1 takes) behind a slim network: what is under test is where the
    data and the optimiser resume, not the network's size."""
    return ["trainer=cpu", "logger=csv", "encoder.weights=random", "data=folders", f"data.content_dir={content}",
            f"data.style_dir={style}", "data.batch_size=2", "data.short_side=20", "data.crop_size=16",
            "data.val_pairs=1", f"data.num_workers={workers}", f"trainer.max_steps={steps}",
            "trainer.log_every_n_steps=1", "trainer.val_check_interval=1000",
            "callbacks.model_checkpoint.every_n_train_steps=2", *extra]


def _kill_after(command: list[str], checkpoint: Path, log: Path, timeout: float = 240.0) -> Future:
    """Start ``command`` and SIGKILL it as soon as ``checkpoint`` exists (written atomically: it is whole), watched
    from a thread so that this process can train meanwhile; the future's result() raises what went wrong."""
    stderr = open(log, "w")  # a file: a pipe left unread could fill and stall the run
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "HYDRA_FULL_ERROR": "1"},
                               stdout=subprocess.DEVNULL, stderr=stderr)

    def watch() -> None:
        deadline = time.monotonic() + timeout
        try:
            while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            process.kill()
            process.wait(timeout=60)
            stderr.close()
        assert process.returncode == -signal.SIGKILL, f"the run ended by itself:\n{log.read_text()[-3000:]}"
        assert checkpoint.exists(), f"{checkpoint} did not appear in {timeout} s"

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(watch)
    pool.shutdown(wait=False)  # the thread runs on until watch() returns
    return future


def _metrics(run_dir: Path) -> dict[int, dict[str, str]]:
    """Per logged step, the csv logger's row (values as written: float reprs, so equal strings are equal bits)."""
    with open(run_dir / "csv" / "version_0" / "metrics.csv", newline="") as handle:
        return {int(row["step"]): row for row in csv.DictReader(handle) if row.get("loss/total")}


def _final_state(run_dir: Path) -> tuple[dict, list]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == STEPS
    return checkpoint["state_dict"], checkpoint["optimizer_states"]


@pytest.mark.slow
# One real kill, with loader workers, mid-epoch (3 batches an epoch). Resuming at an epoch's end, from a stop
# checkpoint and with 0 workers is checked in-process above (same batches), which keeps the suite short.
# Fast neural style: a network trained for two styles in turn (by global step), content-only data, no validation,
# killed after an odd step so the resumed run must pick up the second style.
# Only the killed run is a train.py process (SIGKILL is the subject); the uninterrupted run (meanwhile) and the
# resumed one train in this process, so the killed process's steps must equal this process's bit for bit too.
@pytest.mark.parametrize("workers, kill_at, method", [(2, 4, "adain"), (0, 3, "fast")])
def test_a_killed_run_resumes_bitwise(tmp_path, workers, kill_at, method):
    content, style = _images(tmp_path / "images")
    extra = ["decoder=configurable", "decoder.width=0.25"]
    if method == "fast":
        extra = ["method=fast", f"method.styles=[{style / 'style_0.png'},{style / 'style_1.png'}]", "data.val_pairs=0",
                 "callbacks.model_checkpoint.every_n_train_steps=3", "method.width=0.25", "method.residual_blocks=1"]
    whole, killed, resumed = tmp_path / "whole", tmp_path / "killed", tmp_path / "resumed"
    checkpoint = killed / "checkpoints" / f"step_{kill_at:06d}.ckpt"
    command = [sys.executable, str(ROOT / "train.py"), *_overrides(content, style, workers, *extra, steps=1000),
               f"hydra.run.dir={killed}"]
    watcher = _kill_after(command, checkpoint, tmp_path / "killed.log")
    train_in_process(*_overrides(content, style, workers, *extra), run_dir=whole)  # shares nothing with it
    watcher.result(timeout=300)
    train_in_process(*_overrides(content, style, workers, *extra), f"ckpt_path={checkpoint}", run_dir=resumed)

    expected, got = _metrics(whole), _metrics(resumed)
    assert sorted(got) == list(range(kill_at, STEPS)) and sorted(expected) == list(range(STEPS))
    for step in got:
        for key in ("loss/total", "loss/content", "loss/style", "data/skipped"):
            assert got[step][key] == expected[step][key], (step, key, got[step][key], expected[step][key])
    weights, optimiser = _final_state(resumed)
    expected_weights, expected_optimiser = _final_state(whole)
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[k], expected_weights[k]) for k in weights)  # the decoder, and the frozen encoder
    adam, expected_adam = optimiser[0]["state"], expected_optimiser[0]["state"]
    assert all(torch.equal(adam[i][k], expected_adam[i][k]) for i in expected_adam for k in expected_adam[i])
