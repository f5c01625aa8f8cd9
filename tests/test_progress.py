"""The training loop reads values back from the device only on logging steps: the progress bar shows the loss
without Lightning's per-step ``.item()`` of progress-bar metrics (each one waits for all queued GPU work)."""

from __future__ import annotations

import os
import traceback
from collections import Counter
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import train_in_process

from styletransfer.engine.progress import StepProgressBar


class StepProbe(pl.Callback):
    """Notes which training step is running, for the ``Tensor.item`` counter below."""

    step = -1

    def on_train_batch_start(self, trainer: pl.Trainer, *_: object) -> None:
        StepProbe.step = trainer.global_step


def test_steps_that_do_not_log_read_nothing_back(monkeypatch, photo_dirs, tmp_path):
    """Only logging steps (every trainer.log_every_n_steps, and the last) may wait for the device. Lightning's
    progress-bar metrics made an .item() on every step once the loss had been logged once."""
    content, style = photo_dirs
    reads: Counter[int] = Counter()
    item = torch.Tensor.item

    def counting_item(self: torch.Tensor) -> float:
        files = [frame.filename for frame in traceback.extract_stack(limit=12)]
        if not any(f"torch{os.sep}{part}" in name for name in files for part in ("optim", f"utils{os.sep}data")):
            reads[StepProbe.step] += 1  # not the CPU-only Adam step counter or the loader's crop draws
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    # 16 px crops (the smallest VGG's relu4_1 takes) behind a slim decoder: what is counted is reads, not pixels.
    train_in_process("data=folders", f"data.content_dir={content}", f"data.style_dir={style}", "data.short_side=20",
                     "data.crop_size=16", "decoder=configurable", "decoder.width=0.25", "data.batch_size=2",
                     "data.num_workers=0", "data.val_pairs=0",
                     "encoder.weights=random", "trainer=cpu", "logger=csv", "trainer.max_steps=10",
                     "trainer.log_every_n_steps=3", "trainer.num_sanity_val_steps=0",
                     "callbacks.progress_bar.refresh_rate=1", "callbacks.stop_on_nan.check_every=1000",
                     "+callbacks.step_probe._target_=test_progress.StepProbe", run_dir=tmp_path)
    assert reads[2] > 0 and reads[5] > 0, "logging steps do read the device (the loggers take numbers)"
    assert {step: reads[step] for step in (0, 1, 3, 4, 6, 7)} == dict.fromkeys((0, 1, 3, 4, 6, 7), 0), reads


def test_bar_shows_the_chosen_metrics_as_numbers():
    bar = StepProgressBar(shown=("loss/total",))
    trainer = SimpleNamespace(callback_metrics={"loss/total": torch.tensor(1.5), "loss/content": torch.tensor(2.0)})
    bar.read_shown(trainer)
    assert bar.values == {"loss/total": 1.5}
    trainer.callback_metrics["loss/total"] = torch.tensor(0.25)
    bar.read_shown(trainer)
    assert bar.values == {"loss/total": 0.25}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bar_reads_gpu_values_at_a_later_refresh_without_waiting():
    bar = StepProgressBar(shown=("loss/total",))
    trainer = SimpleNamespace(callback_metrics={"loss/total": torch.tensor(3.0, device="cuda")})
    bar.read_shown(trainer)
    torch.cuda.synchronize()
    bar.read_shown(trainer)
    assert bar.values == {"loss/total": 3.0}
