"""Training runs as `train.py` makes them: the config composed with Hydra and the job run in this process; the
command line itself (``--help``, a failing run's exit code and message, DDP's processes) in a subprocess."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.hub
import yaml
from conftest import ROOT, run_hydra_app, run_train, train_in_process

from styletransfer.runtime.errors import ConfigError, EncoderWeightsError

#: A run of seconds: 16 px crops (the smallest VGG's relu4_1 takes) and a slim decoder, neither being under test here.
TINY = [
    "trainer=cpu",
    "data.batch_size=2",
    "data.short_side=24",
    "data.crop_size=16",
    "decoder=configurable",
    "decoder.width=0.25",
    "data.num_workers=0",
    "data.val_pairs=2",
    "logger=csv",
    "trainer.log_every_n_steps=1",
]


#: The quickstart's sample data, fewer and smaller (its size is not what the quickstart test checks).
SMALL_SAMPLE = ["data.n_content=2", "data.n_style=2", "data.short_side=24", "data.crop_size=16", "data.batch_size=2",
                "data.val_pairs=1", "decoder=configurable", "decoder.width=0.25"]


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


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch.hub's cache pointed at an empty folder, so the ImageNet VGG-19 is not there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch_home"


def test_train_writes_checkpoint_grid_resumes_at_the_right_step_and_shows_no_warning_a_user_cannot_act_on(
        photo_dirs, tmp_path, caplog):
    """A run with validation, checkpoints and unreadable files, then its resumption. Lightning's "modules in eval
    mode" (the frozen encoder, on purpose), its own deprecated pytree call and its litlogger advert are not shown to
    the user (checked on the first run, which has every part: validation, checkpoints, the progress bar)."""
    import warnings

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
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        metrics = train_in_process(*common, "trainer.max_steps=3", run_dir=run1)
    assert "truncated.jpg" in caplog.text and "not_an_image.png" in caplog.text
    shown = [str(w.message) for w in caught]
    assert not [m for m in shown if "eval mode" in m or "LeafSpec" in m], shown
    assert caplog.records and not [r for r in caplog.records if "litlogger" in r.getMessage()]

    last = run1 / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert checkpoint["hyper_parameters"]["encoder"]["used"] == "random"
    assert any(k.startswith("decoder.") for k in checkpoint["state_dict"])
    exported = torch.load(run1 / "checkpoints" / "decoder.pth", map_location="cpu", weights_only=True)
    assert exported["format"] == "styletransfer.adain_decoder" and exported["step"] == 3
    assert sorted(p.name for p in (run1 / "val_grids").glob("*.png")) == ["step_000002.png", "step_000003.png"]
    assert sorted(p.name for p in (run1 / "checkpoints").glob("step_*.ckpt")) == ["step_000002.ckpt"]
    header, *rows = (run1 / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    columns = header.split(",")
    for column in ["loss/total", "loss/content", "loss/style", "loss/style/relu1_1", "lr", "data/skipped"]:
        assert column in columns
    # The returned metrics are the last logged values: the total is content + 10 x style (configs/method/adain.yaml).
    assert metrics["loss/total"] == pytest.approx(metrics["loss/content"] + 10 * metrics["loss/style"], rel=1e-5)
    run_config = yaml.safe_load((run1 / "run_config.yaml").read_text())
    assert run_config["encoder_used"]["fallback_used"] is False
    assert run_config["paths"]["output_dir"] == str(run1)

    run2 = tmp_path / "run2"
    train_in_process(*common, "trainer.max_steps=5", f"ckpt_path={last}", run_dir=run2)
    resumed = torch.load(run2 / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 5
    header, *rows = (run2 / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    step_col = header.split(",").index("step")
    logged_steps = {int(row.split(",")[step_col]) for row in rows}
    assert min(logged_steps) >= 3, "the resumed run restarted from step 0"


def test_real_run_never_uses_a_random_encoder_silently(photo_dirs, tmp_path, empty_torch_home):
    run = tmp_path / "run"
    with pytest.raises(EncoderWeightsError) as info:
        train_in_process(*folders(*photo_dirs), "encoder.download=false", *TINY, "trainer.max_steps=1", run_dir=run)
    error = info.value
    assert str(empty_torch_home) in str(error) and "encoder.weights=random" in str(error)
    assert not (run / "checkpoints").exists()


def test_real_run_error_is_an_exit_code_and_a_message_naming_the_cache(photo_dirs, tmp_path, monkeypatch, capsys):
    """The command line of the test above (``python train.py ...``, run in this process): exit status 1 and the
    cache path on stderr."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(SystemExit) as exit_:
        run_hydra_app("train.py", *folders(*photo_dirs), "encoder.download=false", *TINY, "trainer.max_steps=1",
                      f"hydra.run.dir={tmp_path / 'run'}", monkeypatch=monkeypatch)
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    assert str(tmp_path / "torch_home") in captured.err and "encoder.weights=random" in captured.err
    assert not (tmp_path / "run" / "checkpoints").exists()
    # Said once, as text (no traceback, no repr with literal \n), and recorded in the run's log.
    output = captured.out + captured.err
    assert output.count("error: VGG-19 ImageNet weights are not in torch.hub's cache") == 1
    assert "Traceback" not in output and "\\n" not in output
    assert "error: VGG-19 ImageNet weights are not in torch.hub's cache" in (tmp_path / "run" / "train.log").read_text()


def test_quickstart_falls_back_to_random_with_a_banner_and_records_it(tmp_path, empty_torch_home, caplog):
    run = tmp_path / "quick"
    with caplog.at_level(logging.WARNING):
        train_in_process("experiment=quickstart", "trainer=cpu", "trainer.max_steps=2",
                         f"data.root={tmp_path / 'sample'}", *SMALL_SAMPLE, run_dir=run)
    assert caplog.text.count("VGG ENCODER IS RANDOM") == 1, "the banner, once"
    assert "MEANINGLESS" in caplog.text and str(empty_torch_home) in caplog.text
    recorded = yaml.safe_load((run / "run_config.yaml").read_text())
    assert recorded["encoder_used"]["fallback_used"] is True and recorded["encoder_used"]["used"] == "random"
    assert recorded["task_name"] == "quickstart" and recorded["data"]["_target_"].endswith("SampleDataModule")
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert list((run / "val_grids").glob("*.png"))


def test_wandb_default_logs_offline_without_credentials(photo_dirs, tmp_path, monkeypatch, caplog):
    wandb = pytest.importorskip("wandb")
    run = tmp_path / "run"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "")  # unset for the run; restored afterwards (the run sets it to offline)
    monkeypatch.setenv("WANDB_API_KEY", "")
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # wandb leaves pytest's capture of stdout/stderr alone
    try:
        with caplog.at_level(logging.WARNING):
            train_in_process(*folders(*photo_dirs), "encoder.weights=random",
                             *[o for o in TINY if not o.startswith("logger")], "trainer.max_steps=1", run_dir=run)
    finally:
        wandb.finish()
    assert list((run / "wandb").glob("offline-run-*"))
    assert "logging offline" in caplog.text and "wandb sync" in caplog.text


def test_tensorboard_logger_gets_losses_and_the_validation_grid(photo_dirs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train_in_process(
        *folders(*photo_dirs),
        "encoder.weights=random",
        *[o for o in TINY if not o.startswith("logger")],
        "logger=tensorboard",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        run_dir=run,
    )
    events = EventAccumulator(str(next((run / "tensorboard").rglob("events.out.tfevents.*"))))
    events.Reload()
    assert "val/grid" in events.Tags()["images"]
    assert {"loss/total", "loss/style", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss/total")] == [0, 1]


@pytest.mark.slow
@pytest.mark.parametrize("script, groups", [
    ("train.py", ["method: adain", "data: cache, coco_wikiart, folders", "trainer: cpu, ddp, default, gpu", "logger:"]),
    ("evaluate.py", ["benchmark:", "encoder:"]),
])
def test_help_lists_the_config_groups_without_loading_torch(script, groups):
    """``--help`` answers from the config alone: the entry points import the training and evaluation code (torch,
    Lightning) only once Hydra has composed a job."""
    code = ("import runpy, sys\nsys.argv = sys.argv[1:]\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as exc:\n    print('exit', exc.code, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / script), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.stdout.strip().splitlines()[-1] == "exit 0 False", proc.stdout[-2000:] + proc.stderr[-2000:]
    for group in groups:
        assert group in proc.stdout


@pytest.mark.slow
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


def test_the_progress_bar_counts_steps_towards_max_steps(photo_dirs, tmp_path, capsys):
    train_in_process(*folders(*photo_dirs), "encoder.weights=random", *TINY, "data.val_pairs=0",
                     "trainer.max_steps=6", "callbacks.progress_bar.refresh_rate=2", run_dir=tmp_path / "run")
    captured = capsys.readouterr()
    bar = (captured.out + captured.err).replace("\r", "\n")
    for step in (2, 4, 6):  # one bar for the run, though 6 steps at batch 2 over 4 photos span 3 epochs
        assert f"step: {100 * step / 6:3.0f}%" in bar and f"| {step}/6 [" in bar
    assert "Epoch " not in bar and "it/s" in bar and "loss/total=" in bar


def test_a_key_added_with_a_typo_names_the_setting_meant(photo_dirs, tmp_path):
    """Hydra answers `trainer.max_step=5` with "append with +trainer.max_step"; the run then names the key meant
    instead of a TypeError from the Trainer."""
    with pytest.raises(ConfigError, match=r"^max_step is not a setting of Trainer: did you mean max_steps\?"):
        train_in_process(*folders(*photo_dirs), "encoder.weights=random", *TINY, "+trainer.max_step=5",
                         run_dir=tmp_path / "run")


@pytest.mark.parametrize("overrides, key", [
    (["method=fast", "data=sample"], "method.styles"),
    (["data=folders"], "data.content_dir"),
])
def test_a_setting_the_user_must_give_is_named_in_one_line(overrides, key, tmp_path):
    """A setting left at ``???`` (no default: fast style's style images, a folder's path) is one ConfigError naming
    the key and the fix, not omegaconf's MissingMandatoryValue traceback; nothing is trained."""
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)} must be given \(it has no default\): add {key}=\.\.\."):
        train_in_process(*overrides, "encoder.weights=random", *TINY, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("script, typo, meant", [
    ("train.py", "trainer.max_step=5", "did you mean trainer.max_steps?"),
    ("train.py", "metod=gatys", "did you mean method?"),
    ("evaluate.py", "benchmark.short_sid=64", "did you mean benchmark.short_side?"),
    ("train.py", "method=gatys data.content=x.png data.style=y.jpg", "it is one of data=pair; add that choice"),
])
def test_a_typo_that_hydra_refuses_names_the_key_meant(script, typo, meant, monkeypatch, capsys):
    """Hydra refuses the key before our code runs and suggests +KEY (which would fail later): the entry point adds
    one line naming the key meant, and exits 1 as Hydra does."""
    with pytest.raises(SystemExit) as exited:
        run_hydra_app(script, *typo.split(), "trainer=cpu", monkeypatch=monkeypatch, full_error=False)
    assert exited.value.code == 1
    hints = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hint:")]
    assert len(hints) == 1 and meant in hints[0], hints
