"""Files the project writes and reads: permissions, crash safety, weights-only resume, settings checked at start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import RANDOM_ENCODER
from styletransfer.methods.adain import AdaINModule
from styletransfer.nn.weights import SafeCheckpointIO
from styletransfer.runtime.errors import CheckpointError, ConfigError, RunDirectoryBusyError
from styletransfer.runtime.files import atomic_open, remove_stale_temporaries, run_directory_lock, write_text_atomic


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


@pytest.mark.parametrize("content, match", [(b"", "not a PyTorch checkpoint"), (os.urandom(64), "not a PyTorch checkpoint")])
def test_resume_from_a_broken_file_names_it(tmp_path, content, match):
    broken = tmp_path / "last.ckpt"
    broken.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        SafeCheckpointIO().load_checkpoint(broken)
    assert str(broken) in str(info.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        SafeCheckpointIO().load_checkpoint(tmp_path / "missing.ckpt")


def test_truncated_checkpoint_names_the_file(tmp_path):
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.ckpt"):
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
