"""Shared fixtures and helpers: the project root, the random encoder, tiny image folders, one tiny AdaIN run per
session, and three ways to run the entry points.

* :func:`compose` + ``styletransfer.training.run`` / ``styletransfer.eval.run.run``: in-process, one config composed
  with Hydra's compose API (what most tests use);
* :func:`run_hydra_app`: ``train.py`` / ``evaluate.py`` run in this process as ``__main__`` with a command line, for
  what only the Hydra app does (multirun sweeps with their sweeper and callbacks, evaluate.py's old spellings);
* :func:`run_train` / :func:`run_script`: a real ``python train.py ...`` subprocess, only where the command line
  itself is under test (``--help``, the exit code and stderr of an error, DDP); those tests are marked ``slow``.
"""

from __future__ import annotations

import logging
import os
import runpy
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styletransfer.runtime.machine import usable_cores

ROOT = Path(__file__).resolve().parents[1]
SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"
#: oneDNN instruction-set limits (ONEDNN_MAX_CPU_ISA) under which bf16 convolutions still run natively.
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX10", "ALL")


def native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AVX512_BF16 or AMX) and oneDNN may use them. Elsewhere bf16
    is emulated, several times slower than float32: a test whose subject needs bf16 hardware runs its long form
    only where this holds, and a short form everywhere (``ONEDNN_MAX_CPU_ISA=AVX2`` stands in for an older CPU)."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if limit and not limit.startswith(_BF16_ISAS):
        return False
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
# Inductor compiles kernels in one process instead of starting a pool of compile workers: on a few cores the pool's
# start costs more than it saves (the compiled-graph tests measured 17 s instead of 22 s on 2 cores).
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
# A shell without job control starts a background command (``pytest ... &`` in a script) with SIGINT ignored, and
# Python then installs no KeyboardInterrupt handler: the tests of Ctrl-C (sent to this process, or to a command it
# starts, which would inherit the ignoring) need the handler a terminal's pytest has.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# train.py and evaluate.py set this before Hydra composes; configs/paths/default.yaml reads it.
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
# Most tests are too small for a second thread to pay: ``pytest -n auto`` (pytest-xdist) runs one test per core,
# each worker's torch, and the processes its tests start, taking its share of the cores (two workers of two threads
# each on two cores were slower than one process; docs/testing.md has the figures).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    import torch  # a worker's: the controller of ``-n`` imports neither torch nor Lightning (seconds before any test)

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // _WORKERS)))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_configure(config: pytest.Config) -> None:
    """``-n`` without ``--dist``: each test module on one worker (pytest-xdist's ``loadfile``), so that its
    module-scoped export or trained run is made once. Set here, not in ``addopts``, so that ``pytest`` alone runs
    without xdist."""
    given = any(str(arg).startswith("--dist") or arg == "-d" for arg in config.invocation_params.args)
    if getattr(config.option, "dist", "no") == "load" and not given:
        config.option.dist = "loadfile"


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Lightning's PossibleUserWarning (its advice for runs as small as the tests': fewer batches than the logging
    interval, frozen modules in eval mode, no ``max_epochs``) is ignored in the tests, once collecting them has
    loaded Lightning (here: the filters set while collecting end with it).

    Under ``-n`` each warning is rebuilt in the controller from its category's module, and this category's import
    is Lightning's and torch's: 7 CPU seconds of the two cores in the middle of the run. Tests that look for
    warnings set ``warnings.simplefilter("always")`` (or ``recwarn``), which comes before this filter."""
    if "lightning_fabric" in sys.modules:
        from lightning_fabric.utilities.warnings import PossibleUserWarning

        warnings.filterwarnings("ignore", category=PossibleUserWarning)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which plain pytest runs without
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``pytest -n auto``: a worker per core this process may use, at most 4 (each holds its own torch and fixtures)."""
    return max(1, min(4, usable_cores()))


#: The encoder settings every test run uses: random weights, never a download.
RANDOM_ENCODER = {"weights": "random", "seed": 0, "fallback": None, "download": False}


# ---------------------------------------------------------------- data and model files


@pytest.fixture(scope="session")
def photo_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """Content: real photos shipped with scikit-image; style: procedural colour textures; both small."""
    root = tmp_path_factory.mktemp("photos")
    content, style = root / "content", root / "style"
    content.mkdir()
    style.mkdir()
    for name in ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]:
        Image.open(SKIMAGE_DATA / name).convert("RGB").resize((96, 80)).save(content / f"{Path(name).stem}.png")
    rng = np.random.default_rng(0)
    for i in range(3):
        y, x = np.mgrid[0:72, 0:88] / 10.0
        waves = np.stack([np.sin(x * (i + 1) + c) * np.cos(y * (3 - i) - c) for c in range(3)], -1)
        noise = rng.normal(0, 0.1, waves.shape)
        Image.fromarray(((waves + noise) * 100 + 128).clip(0, 255).astype(np.uint8)).save(style / f"style_{i}.jpg")
    return content, style


@pytest.fixture(scope="session")
def adain_run(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoints/last.ckpt, checkpoints/decoder.pth) of a one-step AdaIN training with RANDOM_ENCODER, made once
    per session for the stylise and evaluate tests."""
    from adain_checkpoints import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("adain_run"))


def vgg16_features_file(path: Path):
    """torchvision's VGG-16 ``features`` (its ``make_layers(cfgs["D"])``) with ``vgg16()``'s initialisation, drawn
    from the global RNG, saved to ``path`` as a VGG-16 weights file (``features.*`` keys); returns the layers (eval
    mode). Built without ``vgg16()``'s classifier, whose 120 M parameters were most of the time of a build."""
    import torch
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"]).eval()
    for conv in (m for m in features if isinstance(m, torch.nn.Conv2d)):  # as torchvision's VGG.__init__
        torch.nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        torch.nn.init.zeros_(conv.bias)
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return features


@pytest.fixture(scope="session")
def one_onnx_registry() -> Iterator[object]:
    """Every ONNX export of this test process translates with one registry of torchlib's functions.

    ``torch.onnx.export(dynamo=True)`` builds the registry again at each export: about 1 CPU second, most of it
    onnxscript parsing the source of each of its 500 functions for a signature (torch 2.14, onnxscript 0.7). The
    registry depends only on the opset and is only read during an export, so the files are byte for byte the same
    (``test_export`` checks it). Modules that export use this fixture, which gives torch's own builder; should a
    later torch keep the registry elsewhere, exports are unchanged, only slower."""
    try:
        from torch.onnx._internal.exporter._registration import ONNXRegistry
    except ImportError:
        yield None
        return
    build, built = ONNXRegistry.__dict__["from_torchlib"], {}

    def from_torchlib(cls, *args, **kwargs):
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = build.__func__(cls, *args, **kwargs)
        return built[key]

    ONNXRegistry.from_torchlib = classmethod(from_torchlib)
    try:
        yield build
    finally:
        ONNXRegistry.from_torchlib = build


# ---------------------------------------------------------------- in-process runs


def compose(config_name: str, *overrides: str, output_dir: Path | None = None):
    """The config ``train.py`` / ``evaluate.py`` would compose from ``overrides``, through Hydra's compose API.

    ``paths.output_dir`` is normally ``${hydra:runtime.output_dir}``, which only a Hydra app sets: give
    ``output_dir`` (the run directory) to set it. The result has no ``hydra`` node, as the config a Hydra app hands
    to its task function; ``HydraConfig`` stays unset, so ``styletransfer`` sees a single run.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from styletransfer.engine.instantiate import register_resolvers

    register_resolvers()  # train.py does this before Hydra composes (${sweep_name:})
    extra = [] if output_dir is None else [f"paths.output_dir={output_dir}"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=[*overrides, *extra])


def train_in_process(*overrides: str, run_dir: Path) -> dict[str, float]:
    """``python train.py OVERRIDES hydra.run.dir=RUN_DIR`` in this process: compose, then the training job."""
    from styletransfer.training import run

    return run(compose("train", *overrides, output_dir=run_dir))


def evaluate_in_process(*overrides: str, run_dir: Path) -> dict:
    """``python evaluate.py OVERRIDES hydra.run.dir=RUN_DIR`` in this process; returns summary.json's content."""
    from styletransfer.eval.run import run

    return run(compose("evaluate", *overrides, output_dir=run_dir))


@contextmanager
def _hydra_app_state() -> Iterator[None]:
    """Undo what a Hydra app leaves behind in this process: its logging handlers (console and ``<job>.log``), the
    global Hydra instance and ``HydraConfig``."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hydra_cfg = HydraConfig.instance().cfg
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        HydraConfig.instance().cfg = hydra_cfg
        GlobalHydra.instance().clear()


def run_hydra_app(script: str, *argv: str, monkeypatch: pytest.MonkeyPatch, full_error: bool = True) -> None:
    """``python SCRIPT ARGV`` in this process: the script runs as ``__main__`` with ``sys.argv`` set, so Hydra parses
    the command line, runs the job(s) (``-m``: the sweeper, the launcher and the callbacks) and returns. An error
    the app reports ends it with SystemExit, as on the command line; ``full_error=False`` lets Hydra report its own
    errors as it does for a user (a message and exit status 1) instead of raising them."""
    if full_error:
        monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    else:
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", [str(ROOT / script), *argv])
    with _hydra_app_state():
        runpy.run_path(str(ROOT / script), run_name="__main__")


# ---------------------------------------------------------------- subprocesses


def run_script(script: str, *args: str, cwd: Path | None = None, env: dict | None = None,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python SCRIPT ARGS`` as a user would; return the completed process (output captured)."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_train(*overrides: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run `python train.py OVERRIDES` as a user would; return the completed process (output captured)."""
    return run_script("train.py", *overrides, cwd=cwd, env=env, timeout=timeout)
