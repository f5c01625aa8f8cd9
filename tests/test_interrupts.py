"""Ctrl-C and SIGTERM end a real training process at a step boundary with everything saved, and it resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SKIMAGE_DATA, run_hydra_app

TINY = ["trainer=cpu", "logger=csv", "encoder.weights=random", "trainer.max_steps=100000",
        "callbacks.model_checkpoint.every_n_train_steps=2", "trainer.val_check_interval=1000"]


def _start(run_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TINY, *overrides, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"training ended before {path} appeared:\n{process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.2)


def _data(method: str, photo_dirs: tuple[Path, Path]) -> list[str]:
    """Each method's data at the smallest size its encoder takes (16 px crops; 32 px for Gatys' relu5_1), behind a slim
    network: what is under test is where a stop happens and what it saves."""
    content, style = photo_dirs
    if method == "adain":
        return ["data=folders", f"data.content_dir={content}", f"data.style_dir={style}", "data.batch_size=2",
                "data.short_side=20", "data.crop_size=16", "data.val_pairs=1", "data.num_workers=0",
                "decoder=configurable", "decoder.width=0.25"]
    if method == "fast":
        return ["method=fast", "data=folders", f"data.content_dir={content}",
                f"method.styles=[{style / 'style_0.jpg'}]", "data.batch_size=2", "data.short_side=20",
                "data.crop_size=16", "data.num_workers=0", "method.width=0.25", "method.residual_blocks=1"]
    return ["method=gatys", "data=pair", f"data.content={SKIMAGE_DATA / 'astronaut.png'}",
            f"data.style={SKIMAGE_DATA / 'coffee.png'}", "data.long_side=32", "method.snapshot_every=0"]


def _signal_in_process(run_dir: Path, signum: int, overrides: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """``train.py`` run in this process (as ``__main__``), sent ``signum`` from a thread once its step-2 checkpoint
    exists, as the subprocess tests' parent does: (exit status, stderr)."""
    checkpoint, done = run_dir / "checkpoints" / "step_000002.ckpt", threading.Event()

    def send() -> None:
        while not checkpoint.exists() and not done.wait(0.05):
            pass
        if not done.is_set():
            os.kill(os.getpid(), signum)

    stray = signal.signal(signum, lambda *_: None)  # a signal after the run's own handler is gone is harmless here
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        with pytest.raises(SystemExit) as exited:
            run_hydra_app("train.py", *TINY, *overrides, f"hydra.run.dir={run_dir}", monkeypatch=monkeypatch)
    finally:
        done.set()
        sender.join(timeout=10)
        signal.signal(signum, stray)
    return exited.value.code, capsys.readouterr().err


@pytest.mark.slow
# A real train.py process for each signal (the exit status and stderr are the process's); the third method's stop and
# saves are the same code in any process, so Gatys runs in this one, the signal sent to it likewise from outside
# the training loop.
@pytest.mark.parametrize("method, signum, process",
                         [("adain", signal.SIGINT, True), ("fast", signal.SIGTERM, True),
                          ("gatys", signal.SIGTERM, False)])
def test_a_signal_stops_after_the_step_saves_and_exits_non_zero(photo_dirs, tmp_path, method, signum, process,
                                                                  monkeypatch, capsys):
    run_dir = tmp_path / "run"
    if process:
        running = _start(run_dir, *_data(method, photo_dirs))
        _wait_for(run_dir / "checkpoints" / "step_000002.ckpt", running)
        running.send_signal(signum)
        _, stderr = running.communicate(timeout=120)
        status = running.returncode
    else:
        status, stderr = _signal_in_process(run_dir, signum, _data(method, photo_dirs), monkeypatch, capsys)
    assert status == 128 + signum, stderr[-3000:]
    name = signal.Signals(signum).name
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"interrupted: {name} at step" in stderr and f"ckpt_path={last}" in stderr
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] >= 2
    assert f"{name} at step {checkpoint['global_step']}:" in stderr
    if method in ("adain", "fast"):
        file = "decoder.pth" if method == "adain" else "network.pth"
        exported = torch.load(run_dir / "checkpoints" / file, map_location="cpu", weights_only=True)
        assert exported["step"] == checkpoint["global_step"]
    else:
        assert (run_dir / "stylised.png").is_file()


#: Tries a second signal of each kind given on the command line (after the output folder), each in a child forked
#: after the one import of the handler (Lightning's import is most of a process's cost); a child's stdout and stderr
#: go to files in the folder, its exit status is printed as a shell reads it ("SIGNUM STATUS").
_SECOND_SIGNAL = """
import os, signal, sys, time, traceback
from styletransfer.engine.interrupt import StopOnSignal

def second_signal(signum):
    stopper = StopOnSignal()
    stopper.setup(None, None, "fit")
    os.kill(os.getpid(), signum)
    assert stopper.received is not None
    print("first signal noted", flush=True)
    os.kill(os.getpid(), signum)
    time.sleep(5)
    print("still running", flush=True)

for signum in map(int, sys.argv[2:]):
    pid = os.fork()
    if pid == 0:
        for fd, stream in ((1, "out"), (2, "err")):
            os.dup2(os.open(os.path.join(sys.argv[1], f"{signum}.{stream}"), os.O_WRONLY | os.O_CREAT), fd)
        try:
            second_signal(signum)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(signum, os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.mark.slow
def test_a_second_signal_stops_at_once_with_the_shells_status_and_one_line(tmp_path):
    """The first signal asks for a stop after the step (and a save); a second one of the same kind stops at once:
    exit 128 + signal (130 for Ctrl-C, not Lightning's 1), one line saying nothing was saved, no traceback."""
    signums = (signal.SIGINT, signal.SIGTERM)
    result = subprocess.run([sys.executable, "-c", _SECOND_SIGNAL, str(tmp_path), *(str(int(s)) for s in signums)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)  # 60 s each, as when apart
    assert result.returncode == 0, result.stderr
    statuses = dict(line.split() for line in result.stdout.splitlines())
    for signum in signums:
        stdout, stderr = ((tmp_path / f"{int(signum)}.{stream}").read_text() for stream in ("out", "err"))
        assert statuses[str(int(signum))] == str(128 + signum), (signum, stderr)
        assert stdout.strip() == "first signal noted" and "Traceback" not in stderr, (signum, stdout, stderr)
        lines = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
        assert len(lines) == 1 and "stopped at once without saving" in lines[0], (signum, stderr)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_sanity_check_still_stops_after_a_step_and_saves(tmp_path, signum):
    """A signal while Lightning sanity-checks the validation loop (before any training step): SIGTERM used to set
    Lightning's own flag and end the first step with exit status 0 and nothing saved, SIGINT Lightning's
    KeyboardInterrupt (exit 1). Both now stop after the first step, which is saved (in-process, the signal sent by
    the validation step to this process)."""
    import pytorch_lightning as pl
    from batch_recorder import BatchRecorder

    from styletransfer.engine.interrupt import StopOnSignal

    class SignalInSanityCheck(BatchRecorder):
        def validation_step(self, batch, batch_idx):
            if self.trainer.sanity_checking:
                os.kill(os.getpid(), signum)

    data = torch.utils.data.DataLoader([{"content": torch.rand(3, 4, 4), "style": torch.rand(3, 4, 4)}] * 4,
                                       batch_size=1)
    stopper = StopOnSignal()
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=1,
                         default_root_dir=tmp_path, callbacks=[stopper])
    trainer.fit(SignalInSanityCheck(), train_dataloaders=data, val_dataloaders=data)
    assert stopper.received == signum and trainer.global_step == 1 and not trainer.received_sigterm
    assert {s: signal.getsignal(s) for s in before} == before  # handlers given back


def test_the_second_signals_line_names_the_runs_own_checkpoint(tmp_path, monkeypatch, capsys):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from styletransfer.engine.interrupt import StopOnSignal

    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    stopper = StopOnSignal()
    trainer = pl.Trainer(accelerator="cpu", logger=False, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpts")])
    stopper.setup(trainer, None, "fit")
    try:
        stopper._handle(signal.SIGINT, None)
        stopper._handle(signal.SIGINT, None)
    finally:
        stopper.teardown(trainer, None, "fit")
    assert exits == [130] and f"ckpt_path={tmp_path / 'ckpts' / 'last.ckpt'}" in capsys.readouterr().err
