"""Files the project writes and reads: permissions, crash safety, weights-only resume, settings checked at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import RANDOM_ENCODER, compose, run_hydra_app, train_in_process
from pytorch_lightning.callbacks import ModelCheckpoint

from styletransfer.data import SampleDataModule
from styletransfer.engine.finite import StopOnNonFiniteLoss
from styletransfer.engine.instantiate import instantiate_group
from styletransfer.methods.adain import AdaINDecoder, AdaINModule, Styliser
from styletransfer.methods.adain.checkpoint import save_decoder
from styletransfer.nn.checkpoints import LatestCheckpoint, SafeCheckpointIO
from styletransfer.nn.encoder import build_encoder
from styletransfer.nn.weights import safe_load, save_atomic
from styletransfer.runtime.errors import CheckpointError, ConfigError, NonFiniteLossError, RunDirectoryBusyError
from styletransfer.runtime.files import atomic_open, remove_stale_temporaries, run_directory_lock, write_text_atomic

#: The decoder of the AdaIN runs here: slim, its size not being under test.
SLIM_DECODER = {"name": "configurable", "width": 0.25}


def _folders(photo_dirs: tuple[Path, Path]) -> list[str]:
    """A train.py run of seconds on the photo folders: 16 px crops (the smallest VGG's relu4_1 takes), a slim
    decoder, the random encoder."""
    content, style = photo_dirs
    return ["data=folders", f"data.content_dir={content}", f"data.style_dir={style}", "data.batch_size=2",
            "data.short_side=20", "data.crop_size=16", "decoder=configurable", "decoder.width=0.25",
            "encoder.weights=random", "trainer=cpu"]


class _Payload:
    """Pickles to a call of ``Path.touch(marker)``: proof that unpickling ran code when the marker appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = write_text_atomic(tmp_path / "run_config.yaml", "a: 1\n")
        with atomic_open(tmp_path / "decoder.pth", "wb", sync=True) as handle:
            torch.save({"w": torch.zeros(2)}, handle)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode
    assert (tmp_path / "decoder.pth").stat().st_mode & 0o777 == mode


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".last.ckpt.k3j2.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "last.ckpt").write_bytes(b"whole")
    assert remove_stale_temporaries(tmp_path) == [tmp_path / ".last.ckpt.k3j2.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_checkpoint_io_round_trip_and_a_failed_save_keeps_the_previous_file(tmp_path):
    io = SafeCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.arange(3.0)}, "global_step": 4}, path)
    loaded = io.load_checkpoint(path)
    assert loaded["global_step"] == 4 and torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
    with pytest.raises(AttributeError):  # torch.save cannot pickle a local lambda: the write fails half-way
        io.save_checkpoint({"state_dict": {}, "bad": lambda: 0}, path)
    assert io.load_checkpoint(path)["global_step"] == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_resume_refuses_code_even_when_the_environment_forces_unsafe_loading(tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, evil)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match="refused"):
        SafeCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert not marker.exists()


@pytest.mark.parametrize("content, match", [(b"", r"is empty \(0 bytes\): an interrupted copy or download"),
                                            (np.random.default_rng(0).bytes(64), "not a PyTorch checkpoint")],
                         ids=["empty", "random-bytes"])
def test_resume_from_a_broken_file_names_it(tmp_path, content, match):
    broken = tmp_path / "last.ckpt"
    broken.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        SafeCheckpointIO().load_checkpoint(broken)
    assert str(broken) in str(info.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        SafeCheckpointIO().load_checkpoint(tmp_path / "missing.ckpt")


class _RunsCode:
    """Unpickling it would call ``os.system`` (never unpickled here)."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/styletransfer-should-never-exist",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_plain_pickle_that_runs_code_is_named_as_such_without_advice_to_unprotect(tmp_path, protocol, recwarn):
    """A plain (not zip) pickle holding code: protocol 4's FRAME opcode stops the weights-only unpickler before the
    code, so PyTorch's own message says "Unsupported operand" and ends in advice to pass weights_only=False."""
    import pickle

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "payload": _RunsCode()}, protocol=protocol))
    with pytest.raises(CheckpointError) as info:
        safe_load(path)
    message = str(info.value)
    assert "holds objects whose loading would run code" in message and "Nothing from the file was run" in message
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]  # PyTorch's advice is not shown either
    assert "weights_only" not in message and not Path("/tmp/styletransfer-should-never-exist").exists()
    path.write_bytes(pickle.dumps({"state_dict": {}, "step": 3}, protocol=protocol))  # harmless, but not PyTorch's
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint") as info:
        safe_load(path)
    assert "weights_only" not in str(info.value)


def test_truncated_checkpoint_names_the_file(tmp_path):
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.ckpt is incomplete: a PyTorch file whose end is missing"):
        SafeCheckpointIO().load_checkpoint(truncated)


@pytest.mark.parametrize("setting, value", [("style_weight", float("nan")), ("content_weight", float("inf")),
                                            ("lr", -1.0), ("lr_decay", -1.0), ("betas", [0.9])])
def test_adain_numeric_settings_are_checked_at_start(setting, value):
    with pytest.raises(ConfigError, match=f"method.{setting}="):
        AdaINModule(encoder=RANDOM_ENCODER, **{setting: value})


def test_a_second_run_into_a_busy_directory_stops_naming_the_first(tmp_path):
    run_dir = tmp_path / "run"
    with run_directory_lock(run_dir):
        with pytest.raises(RunDirectoryBusyError, match=f"pid {os.getpid()} on "):
            with run_directory_lock(run_dir):
                pass
    with run_directory_lock(run_dir):  # released when the first run ends
        assert (run_dir / ".run.owner").is_file()
    assert not (run_dir / ".run.owner").exists()


def test_resume_refuses_nan_in_the_optimiser_state(tmp_path):
    path = tmp_path / "last.ckpt"
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.tensor([0.0, float("nan")])}}}
    torch.save({"state_dict": {"w": torch.zeros(2)}, "optimizer_states": [state]}, path)
    with pytest.raises(CheckpointError, match=r"optimizer_states\.0\.state\.0\.exp_avg") as info:
        SafeCheckpointIO().load_checkpoint(path)
    assert str(path) in str(info.value)


def test_stylise_refuses_a_decoder_with_nan_weights(tmp_path):
    decoder = AdaINDecoder()
    with torch.no_grad():
        decoder[1].weight[0, 0, 0, 0] = float("nan")
    encoder = build_encoder(RANDOM_ENCODER, ["relu4_1"])
    save_decoder(decoder, encoder.spec, tmp_path / "decoder.pth")
    with pytest.raises(CheckpointError, match=r"NaN or infinite values \(1\.weight\)"):
        Styliser.from_checkpoint(tmp_path / "decoder.pth")


class _BreaksAtStep3(AdaINModule):
    """AdaIN whose loss turns NaN from step 3 on, as a diverging run's does."""

    def losses(self, content, style):
        out = super().losses(content, style)
        if self.training and self.global_step >= 3:
            out["loss/total"] = out["loss/total"] * float("nan")
        return out


def test_a_nan_loss_stops_adain_and_nothing_broken_is_saved(tmp_path):
    pl.seed_everything(0)
    datamodule = SampleDataModule(root=str(tmp_path / "sample"), short_side=20, crop_size=16, batch_size=2,
                                  val_pairs=0, n_content=4, n_style=2)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="step_{step:06d}",
                                  auto_insert_metric_name=False, every_n_train_steps=2, save_top_k=-1, save_last=True)
    trainer = pl.Trainer(max_steps=20, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                         callbacks=[checkpoints, StopOnNonFiniteLoss(check_every=10)])
    with pytest.raises(NonFiniteLossError, match="not finite from step 3") as info:
        trainer.fit(_BreaksAtStep3(encoder=RANDOM_ENCODER, decoder=SLIM_DECODER), datamodule=datamodule)
    assert f"Last good checkpoint: {tmp_path / 'checkpoints' / 'last.ckpt'}" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")) == ["last.ckpt", "step_000002.ckpt"]
    for name in ("last.ckpt", "step_000002.ckpt"):  # finite (or loading raises) and from before the loss broke
        assert SafeCheckpointIO().load_checkpoint(tmp_path / "checkpoints" / name)["global_step"] == 2
    assert Styliser.from_checkpoint(tmp_path / "checkpoints" / "decoder.pth").kind == "exported"


def test_train_into_a_directory_another_run_holds_stops_at_start(photo_dirs, tmp_path):
    run_dir = tmp_path / "run"
    content, style = photo_dirs
    with run_directory_lock(run_dir):
        with pytest.raises(RunDirectoryBusyError, match=str(run_dir)):
            train_in_process("data=folders", f"data.content_dir={content}", f"data.style_dir={style}",
                             "encoder.weights=random", "trainer=cpu", "logger=csv", "trainer.max_steps=1",
                             run_dir=run_dir)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "run_config.yaml").exists()


def test_last_ckpt_is_the_newest_periodic_checkpoint_itself_and_stays_so_after_a_resume_into_the_same_folder(
        photo_dirs, tmp_path):
    """A run's last.ckpt is its final state and its periodic saves' hard link. Resuming from a periodic checkpoint
    (as after a kill -9) into the same run folder: the resumed run's periodic checkpoints become last.ckpt (Lightning's
    own link would have been named last-v1.ckpt, leaving last.ckpt at the older step), and decoder.pth follows."""
    run_dir = tmp_path / "run"
    common = [*_folders(photo_dirs), "data.num_workers=0", "data.val_pairs=0", "logger=csv",
              "callbacks.model_checkpoint.every_n_train_steps=2"]
    train_in_process(*common, "trainer.max_steps=3", run_dir=run_dir)
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["decoder.pth", "last.ckpt", "step_000002.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 3  # the final state
    assert torch.load(checkpoints / "step_000002.ckpt", weights_only=True)["global_step"] == 2
    # Every run's periodic saves make last.ckpt a hard link to the new step file: one inode, swapped in by a rename.
    callbacks = instantiate_group(compose("train", output_dir=tmp_path / "composed").callbacks)
    periodic = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    assert len(periodic) == 1 and isinstance(periodic[0], LatestCheckpoint) and periodic[0].last_link
    linker = LatestCheckpoint(dirpath=tmp_path)
    for _ in range(2):  # the second time last.ckpt is that file already: no temporary link may stay behind
        linker.link_last(_Zero(), str(checkpoints / "step_000002.ckpt"))
        assert os.path.samefile(tmp_path / "last.ckpt", checkpoints / "step_000002.ckpt")
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []

    train_in_process(*common, "trainer.max_steps=5", f"ckpt_path={checkpoints / 'step_000002.ckpt'}", run_dir=run_dir)
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "decoder.pth", "last.ckpt", "step_000002.ckpt", "step_000004.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 5
    assert torch.load(checkpoints / "decoder.pth", weights_only=True)["step"] == 5


class _Zero:
    """The bits of a rank-zero trainer that ``link_last`` uses."""

    is_global_zero = True

    class strategy:  # noqa: N801 -- mimics trainer.strategy
        @staticmethod
        def barrier() -> None:
            return None


def test_a_flipped_bit_in_a_saved_tensor_is_caught_naming_the_file(tmp_path):
    path = tmp_path / "decoder.pth"
    marker = torch.full((64,), 1234.5678)
    save_atomic({"weight": marker, "step": 3}, path)
    assert safe_load(path)["step"] == 3
    data = bytearray(path.read_bytes())
    at = bytes(data).find(marker.numpy().tobytes())
    assert at >= 0
    data[at + 17] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(path)):
        safe_load(path)


def test_a_full_disk_names_the_file_and_keeps_the_previous_version(tmp_path):
    """A real file size limit (``ulimit -f``: RLIMIT_FSIZE, SIGXFSZ ignored): EFBIG, reported as a CheckpointError.
    Set in this process around the one save and put back at once (a child process spent 2.2 CPU-s importing torch
    for it); only the soft limit is lowered, so the previous one can always be restored."""
    import resource
    import signal

    path = tmp_path / "last.ckpt"
    save_atomic({"weight": torch.zeros(4)}, path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        try:
            save_atomic({"weight": torch.ones(100_000)}, path)
        except CheckpointError as exc:
            error = exc
        else:
            error = None
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert error is not None, "a 400 kB save under a 4 kB file size limit succeeded"
    assert str(path) in str(error) and "file size limit" in str(error)
    assert torch.equal(safe_load(path)["weight"], torch.zeros(4))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_new_run_into_a_finished_runs_folder_is_refused_and_overwrites_nothing(photo_dirs, tmp_path, monkeypatch,
                                                                                   capsys):
    """Without ckpt_path, a second run into a finished run's folder would replace its last.ckpt, decoder.pth and
    .hydra/ (hostile probe, issue 24): train.py refuses before Hydra writes, naming the resume; so does the job."""
    run_dir = tmp_path / "run"
    common = [*_folders(photo_dirs), "logger=csv", "data.val_pairs=0"]
    run_hydra_app("train.py", *common, "trainer.max_steps=1", f"hydra.run.dir={run_dir}", monkeypatch=monkeypatch)
    kept = {p: p.read_bytes() for p in [run_dir / "checkpoints" / "last.ckpt", run_dir / ".hydra" / "config.yaml"]}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_hydra_app("train.py", *common, "trainer.max_steps=1", f"hydra.run.dir={run_dir}", monkeypatch=monkeypatch)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}" in err and "already holds a run's checkpoints" in err
    assert all(path.read_bytes() == data for path, data in kept.items())
    with pytest.raises(ConfigError, match="already holds a run's checkpoints"):
        train_in_process(*common, "trainer.max_steps=1", run_dir=run_dir)
    assert all(path.read_bytes() == data for path, data in kept.items())


def test_train_py_into_a_busy_directory_writes_nothing_there(photo_dirs, tmp_path, monkeypatch):
    """The other run is another process: train.py refuses before Hydra writes .hydra/ or a log into its folder."""
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom styletransfer.runtime.files import run_directory_lock\n"
         "with run_directory_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n", str(run_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in run_dir.iterdir())
        content, style = photo_dirs
        with pytest.raises(SystemExit) as exit_info:
            run_hydra_app("train.py", "data=folders", f"data.content_dir={content}", f"data.style_dir={style}",
                          "encoder.weights=random", "trainer=cpu", "logger=csv", "trainer.max_steps=1",
                          f"hydra.run.dir={run_dir}", monkeypatch=monkeypatch)
        assert exit_info.value.code == 1
        assert sorted(p.name for p in run_dir.iterdir()) == before == [".run.lock", ".run.owner"]
    finally:
        holder.kill()
        holder.wait()


def test_train_py_into_a_folder_it_cannot_write_is_one_line_naming_hydra_run_dir(tmp_path, monkeypatch, capsys):
    """A run directory on a read-only disk (or, as here, under a file) stopped with Hydra's traceback of mkdir
    (hostile probe rerun, issue 24): one line naming hydra.run.dir and the reason, exit status 1."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        run_hydra_app("train.py", "experiment=quickstart", "encoder.weights=random", "trainer.max_steps=1",
                      f"hydra.run.dir={blocker / 'run'}", monkeypatch=monkeypatch)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"hydra.run.dir {blocker / 'run'}: cannot write there" in err
    assert "Traceback" not in err
