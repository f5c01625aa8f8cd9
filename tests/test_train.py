"""`train.py` end to end through Hydra, as a user runs it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import RANDOM_ENCODER, run_train

TINY = [
    "trainer=cpu",
    "data.batch_size=2",
    "data.short_side=48",
    "data.crop_size=32",
    "data.num_workers=0",
    "data.val_pairs=2",
    "logger=csv",
    "trainer.log_every_n_steps=1",
]


def folders(content, style) -> list[str]:
    """Overrides that train on two folders."""
    return ["data=folders", f"data.content_dir={content}", f"data.style_dir={style}"]


def folders_with_broken_files(photo_dirs, tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "content", tmp_path / "style"
    shutil.copytree(photo_dirs[0], content)
    shutil.copytree(photo_dirs[1], style)
    (content / "truncated.jpg").write_bytes((photo_dirs[1] / "style_0.jpg").read_bytes()[:200])
    (style / "not_an_image.png").write_bytes(b"this is text, not a PNG")
    return content, style


def test_help_lists_the_config_groups():
    proc = run_train("--help")
    assert proc.returncode == 0, proc.stderr
    for group in ["method: adain", "data: coco_wikiart, folders", "trainer: cpu, ddp, default, gpu", "logger:"]:
        assert group in proc.stdout


def test_train_writes_checkpoint_grid_and_resumes_at_the_right_step(photo_dirs, tmp_path):
    content, style = folders_with_broken_files(photo_dirs, tmp_path)
    common = [
        "method=adain",
        *folders(content, style),
        "encoder.weights=random",
        *TINY,
        "trainer.val_check_interval=2",
        "callbacks.model_checkpoint.every_n_train_steps=2",
    ]
    run1 = tmp_path / "run1"
    proc = run_train(*common, "trainer.max_steps=3", f"hydra.run.dir={run1}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "truncated.jpg" in log and "not_an_image.png" in log

    last = run1 / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert checkpoint["hyper_parameters"]["encoder"]["used"] == "random"
    assert any(k.startswith("decoder.") for k in checkpoint["state_dict"])
    exported = torch.load(run1 / "checkpoints" / "decoder.pth", map_location="cpu", weights_only=True)
    assert exported["format"] == "styletransfer.adain_decoder" and exported["step"] == 3
    assert sorted(p.name for p in (run1 / "val_grids").glob("*.png")) == ["step_000002.png", "step_000003.png"]
    columns = (run1 / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ["loss/total", "loss/content", "loss/style", "loss/style/relu1_1", "lr", "data/skipped"]:
        assert column in columns
    run_config = yaml.safe_load((run1 / "run_config.yaml").read_text())
    assert run_config["encoder_used"]["fallback_used"] is False

    run2 = tmp_path / "run2"
    proc = run_train(*common, "trainer.max_steps=5", f"ckpt_path={last}", f"hydra.run.dir={run2}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    resumed = torch.load(run2 / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 5
    header, *rows = (run2 / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    step_col = header.split(",").index("step")
    logged_steps = {int(row.split(",")[step_col]) for row in rows}
    assert min(logged_steps) >= 3, "the resumed run restarted from step 0"


def test_real_run_never_uses_a_random_encoder_silently(photo_dirs, tmp_path):
    proc = run_train(
        *folders(*photo_dirs),
        "encoder.download=false",
        *TINY,
        "trainer.max_steps=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"TORCH_HOME": str(tmp_path / "torch_home")},
    )
    assert proc.returncode != 0
    assert str(tmp_path / "torch_home") in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_quickstart_falls_back_to_random_with_a_banner_and_records_it(tmp_path):
    run = tmp_path / "quick"
    proc = run_train(
        "experiment=quickstart",
        "trainer=cpu",
        "trainer.max_steps=2",
        f"data.root={tmp_path / 'sample'}",
        f"hydra.run.dir={run}",
        env={"TORCH_HOME": str(tmp_path / "torch_home")},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "RANDOM" in proc.stderr
    recorded = yaml.safe_load((run / "run_config.yaml").read_text())
    assert recorded["encoder_used"]["fallback_used"] is True
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert list((run / "val_grids").glob("*.png"))


def test_wandb_default_logs_offline_without_credentials(photo_dirs, tmp_path):
    run = tmp_path / "run"
    env = {"HOME": str(tmp_path), "WANDB_MODE": "", "WANDB_API_KEY": "", "NETRC": str(tmp_path / "none")}
    proc = run_train(
        *folders(*photo_dirs),
        "encoder.weights=random",
        *[o for o in TINY if not o.startswith("logger")],
        "trainer.max_steps=1",
        f"hydra.run.dir={run}",
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert list((run / "wandb").glob("offline-run-*"))
    assert "wandb sync" in proc.stdout + proc.stderr


def test_ddp_on_two_cpu_processes(photo_dirs, tmp_path):
    run = tmp_path / "ddp"
    proc = run_train(
        *folders(*photo_dirs),
        "encoder.weights=random",
        *TINY,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.batch_size=1",
        "trainer.max_steps=2",
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert list((run / "val_grids").glob("*.png"))


def test_tensorboard_logger_gets_losses_and_the_validation_grid(photo_dirs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    proc = run_train(
        *folders(*photo_dirs),
        "encoder.weights=random",
        *[o for o in TINY if not o.startswith("logger")],
        "logger=tensorboard",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    events = EventAccumulator(str(next((run / "tensorboard").rglob("events.out.tfevents.*"))))
    events.Reload()
    assert "val/grid" in events.Tags()["images"]
    assert {"loss/total", "loss/style", "lr"} <= set(events.Tags()["scalars"])
