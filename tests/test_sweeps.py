"""Sweeps: Optuna searches and grids through `python train.py -m`, the trials table, failed trials, launchers."""

from __future__ import annotations

import csv
import gc
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RANDOM_ENCODER, ROOT, run_hydra_app
from omegaconf import OmegaConf
from PIL import Image

from styletransfer.eval.benchmark import load_benchmark
from styletransfer.eval.run import evaluate_candidate
from styletransfer.eval.scorer import EVAL_LAYERS, Scorer
from styletransfer.nn.encoder import build_encoder
from styletransfer.protocol.candidate import model_candidate
from styletransfer.protocol.registry import load_model
from styletransfer.sweeps.table import STATUS_FILE, collect_trials, write_sweep_report

#: A tiny benchmark to score trials on: 1 content x 2 styles at 32 px.
BENCH = {"n_content": 1, "n_style": 2, "generate_size": 32, "short_side": 32}


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """One sample data set and one benchmark for every sweep of this module (generated once)."""
    return tmp_path_factory.mktemp("sweep_data")


@pytest.fixture(autouse=True)
def frozen_heap() -> Iterator[None]:
    """The test process's heap (every module and object the suite made before) out of the garbage collector's reach
    while a test runs (``gc.freeze``), put back after: each trial's ``gc.collect()`` (``sweeps.trial``, which frees
    the finished trial's cycles before the next) then walks what the sweep itself allocated, as in a ``train.py -m``
    process, instead of the whole suite's heap (0.25 s a trial). Nothing a trial leaves is frozen."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def tiny(shared: Path, sweep_dir: Path, crop: int = 16) -> list[str]:
    """The overrides that make a trial take seconds on a CPU: 16 px crops, the smallest VGG's relu4_1 takes (32 px
    where a trial's style layers may reach relu5_1, whose statistics need 2 x 2 positions)."""
    return [
        "data=sample", f"data.root={shared / 'sample'}", "data.n_content=4", "data.n_style=2", "data.val_pairs=2",
        "logger=csv", "encoder.weights=random", "trainer=cpu", "trainer.max_steps=2", "data.batch_size=2",
        f"data.short_side={crop + crop // 4}", f"data.crop_size={crop}", "data.num_workers=0",
        f"hydra.sweep.dir={sweep_dir}",
    ]


#: Slim networks for the trials (their size is not what a sweep test checks): AdaIN's decoder, fast style's network.
SLIM_ADAIN = ["decoder=configurable", "decoder.width=0.25"]
SLIM_FAST = ["method.width=0.25", "method.residual_blocks=1"]
#: No validation pairs for the sweeps whose subject is the table and failed trials (a trial's validation pass was a
#: tenth of such a test): the Optuna search's trials keep theirs.
NO_VAL = "data.val_pairs=0"


def bench_overrides(shared: Path) -> list[str]:
    return [f"objective.benchmark.root={shared / 'bench'}"] + [f"objective.benchmark.{k}={v}" for k, v in BENCH.items()]


def read_table(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


#: Matplotlib's tab:blue (completed trials) and tab:red (failed trials) in the plot.
BLUE, RED = (31, 119, 180), (214, 39, 40)


def check_plot(sweep_dir: Path, panels: int, completed: bool = True, failed: bool = False) -> None:
    """objective_vs_params.png: a PNG of one 450 x 380 px panel per varying parameter (3 a row, 100 dpi) with a blue
    point for completed trials and a red cross for failed ones."""
    with Image.open(sweep_dir / "objective_vs_params.png") as image:
        assert image.format == "PNG"
        columns, rows = min(3, panels), math.ceil(panels / 3)
        assert image.size == (450 * columns, 380 * rows)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    assert (pixels != 255).any(axis=1).mean() > 0.01  # axes, labels and points drawn, not a blank canvas

    def has(colour: tuple[int, int, int]) -> bool:
        return bool((np.abs(pixels - colour).max(axis=1) <= 40).any())

    assert has(BLUE) == completed and has(RED) == failed


@pytest.mark.slow
def test_optuna_search_writes_trials_table_and_best_parameters(shared, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    run_hydra_app("train.py", "-m", "hparams_search=adain_optuna", "hydra.sweeper.n_trials=2",
                  *tiny(shared, sweep, crop=32), *SLIM_ADAIN, *bench_overrides(shared), monkeypatch=monkeypatch)

    rows = read_table(sweep)
    assert len(rows) == 2
    for key in ("method.style_weight", "method.content_weight", "method.lr", "method.style_layers"):
        assert key in rows[0], rows[0].keys()
    assert [r["status"] for r in rows] == ["completed"] * 2
    objectives = [float(r["objective"]) for r in rows]
    assert all(math.isfinite(v) for v in objectives)
    # The objective is the configured weighted sum of the benchmark terms, recorded per term.
    for row in rows:
        assert float(row["objective"]) == pytest.approx(float(row["content_relu4_1"]) + float(row["style_mean_std"]))

    best = OmegaConf.to_container(OmegaConf.load(sweep / "optimization_results.yaml"))
    assert best["best_value"] == pytest.approx(min(objectives))
    best_row = rows[objectives.index(min(objectives))]
    assert best["best_params"]["method.lr"] == pytest.approx(float(best_row["method.lr"]))
    assert "**Best: trial" in (sweep / "trials.md").read_text()
    params = ("method.style_weight", "method.content_weight", "method.lr", "method.style_layers")
    check_plot(sweep, panels=max(1, sum(len({r[k] for r in rows}) > 1 for k in params)))

    # Every trial: its status file, and wandb's group set to the sweep directory's name.
    trial_dir = sweep / best_row["directory"]
    status = json.loads((trial_dir / STATUS_FILE).read_text())
    assert status["status"] == "completed" and status["objective"] == pytest.approx(min(objectives))
    run_config = OmegaConf.load(trial_dir / "run_config.yaml")
    assert run_config.logger.wandb.group == sweep.name

    # The objective is what evaluate.py's benchmark reports for the trial's checkpoint.

    device = torch.device("cpu")
    bench = load_benchmark({"name": "default", "root": str(shared / "bench"), **BENCH})
    scorer = Scorer(build_encoder(RANDOM_ENCODER, EVAL_LAYERS), device)
    candidate = model_candidate(load_model(trial_dir / "checkpoints" / "last.ckpt", RANDOM_ENCODER, device), "best")
    aggregate = evaluate_candidate(candidate, bench, scorer, device, 1.0, warmup=0, seed=0, keep=set())["aggregate"]
    expected = aggregate["content_relu4_1"]["mean"] + aggregate["style_mean_std"]["mean"]
    assert status["objective"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_optuna_trial_with_a_bad_setting_is_recorded_failed_and_the_sweep_goes_on(shared, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    # The config's search space replaced by one categorical parameter, which the grid sampler tries in full;
    # relu9_9 is not a VGG-19 layer, so that trial fails.
    run_hydra_app("train.py", "-m", "hparams_search=adain_optuna", "hydra/sweeper/sampler=grid",
                  "hydra.sweeper.params=null", 'method.style_layers=choice("[relu1_1,relu2_1]","[relu1_1,relu9_9]")',
                  *tiny(shared, sweep), *SLIM_ADAIN, NO_VAL, *bench_overrides(shared),
                  monkeypatch=monkeypatch)

    rows = {r["method.style_layers"]: r for r in read_table(sweep)}
    assert set(rows) == {"[relu1_1,relu2_1]", "[relu1_1,relu9_9]"}
    good, bad = rows["[relu1_1,relu2_1]"], rows["[relu1_1,relu9_9]"]
    assert good["status"] == "completed" and math.isfinite(float(good["objective"]))
    assert bad["status"] == "failed" and bad["objective"] == ""
    assert "ConfigError" in bad["reason"] and "method.style_layers" in bad["reason"] and "relu9_9" in bad["reason"]
    status = json.loads((sweep / bad["directory"] / STATUS_FILE).read_text())
    assert status["status"] == "failed" and "relu9_9" in status["reason"]
    assert "relu9_9" in (sweep / bad["directory"] / "train.log").read_text()  # the traceback is in the trial's log

    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_params["method.style_layers"] == "[relu1_1,relu2_1]"
    assert best.best_value == pytest.approx(float(good["objective"]))
    md = (sweep / "trials.md").read_text()
    assert "1 failed" in md and "relu9_9" in md
    check_plot(sweep, panels=1, completed=True, failed=True)


@pytest.mark.slow
def test_grid_multirun_writes_the_table_and_records_a_nan_trial(shared, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    # lr=1e12 blows the decoder's weights up after one Adam step: the loss becomes NaN/inf.
    run_hydra_app("train.py", "-m", "method.lr=1e-4,1e12", *tiny(shared, sweep), *SLIM_ADAIN, NO_VAL,
                  monkeypatch=monkeypatch)

    rows = {float(r["method.lr"]): r for r in read_table(sweep)}
    assert set(rows) == {1e-4, 1e12}
    assert rows[1e-4]["status"] == "completed" and math.isfinite(float(rows[1e-4]["loss/total"]))
    assert rows[1e12]["status"] == "failed"
    assert "NonFiniteLossError" in rows[1e12]["reason"] and "not finite" in rows[1e12]["reason"]
    assert rows[1e-4]["objective"] == ""  # a grid without +objective=... has none; loss/total is plotted
    assert "| method.lr |" in (sweep / "trials.md").read_text()
    check_plot(sweep, panels=1, completed=True, failed=True)


@pytest.mark.slow
def test_a_fast_style_grid_scores_its_trials_and_records_a_nan_trial(shared, tmp_path, monkeypatch):
    """method=fast in a grid with the benchmark objective: the completed trial is scored (its network, which takes
    no style image, stylises the benchmark's contents) and lr=1e12 is recorded failed."""
    sweep, style = tmp_path / "sweep", tmp_path / "waves.png"
    y, x = np.mgrid[0:40, 0:48] / 5.0
    waves = np.stack([np.sin(x + c) * np.cos(y - c) for c in range(3)], -1)
    Image.fromarray((waves * 120 + 128).clip(0, 255).astype(np.uint8)).save(style)
    run_hydra_app("train.py", "-m", "method=fast", f"method.styles=[{style}]", "method.lr=1e-3,1e12",
                  *tiny(shared, sweep), *SLIM_FAST, NO_VAL, "+objective=adain", *bench_overrides(shared),
                  monkeypatch=monkeypatch)

    rows = {float(r["method.lr"]): r for r in read_table(sweep)}
    assert rows[1e-3]["status"] == "completed" and math.isfinite(float(rows[1e-3]["objective"]))
    assert float(rows[1e-3]["objective"]) == pytest.approx(
        float(rows[1e-3]["content_relu4_1"]) + float(rows[1e-3]["style_mean_std"]))
    assert rows[1e12]["status"] == "failed" and "not finite" in rows[1e12]["reason"]
    network = sweep / rows[1e-3]["directory"] / "checkpoints" / "network.pth"
    assert load_model(network, RANDOM_ENCODER, torch.device("cpu")).describe()["styles"] == ["waves"]
    check_plot(sweep, panels=1, completed=True, failed=True)


def test_table_marks_killed_and_unrecorded_trials(tmp_path):
    """Trials whose process died (status left "running") or that never reached train.py are not lost."""
    for num, status in enumerate([{"status": "completed", "objective": 2.0}, {"status": "running"}, None]):
        trial = tmp_path / str(num)
        (trial / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create([f"method.style_layers=[relu{num + 1}_1]", "trainer=cpu"]),
                       trial / ".hydra" / "overrides.yaml")
        if status is not None:
            (trial / STATUS_FILE).write_text(json.dumps({"trial": num, **status}))
    trials = write_sweep_report(tmp_path, declared=["method.style_layers"])
    assert [t.status for t in trials] == ["completed", "failed", "unknown"]
    assert "killed" in trials[1].reason and STATUS_FILE in trials[2].reason
    rows = read_table(tmp_path)
    assert [r["method.style_layers"] for r in rows] == ["[relu1_1]", "[relu2_1]", "[relu3_1]"]
    assert "trainer" not in rows[0]  # constant overrides are not parameters
    assert len(collect_trials(tmp_path)) == 3
    check_plot(tmp_path, panels=1, completed=True, failed=True)


def test_slurm_launcher_config_composes_on_the_submitit_plugin():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=adain_optuna", "hydra/launcher=slurm",
                                          "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.timeout_min == 240  # configs/hydra/launcher/slurm.yaml's four hours
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.callbacks.sweep_table._target_ == "styletransfer.sweeps.table.SweepTableCallback"


def test_stop_on_non_finite_loss_names_the_first_bad_step():
    from types import SimpleNamespace

    from styletransfer.engine.finite import StopOnNonFiniteLoss
    from styletransfer.runtime.errors import NonFiniteLossError

    guard = StopOnNonFiniteLoss(check_every=10)
    trainer = SimpleNamespace(global_step=7, checkpoint_callback=None)  # global_step counts the batch just trained
    guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.5)}, None, 0)  # finite: nothing happens
    trainer.global_step = 8
    guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(float("nan"))}, None, 0)  # step 7 broke: recorded
    trainer.global_step = 9
    guard.on_train_batch_end(trainer, None, torch.tensor(float("inf")), None, 0)  # a later bad step is not the first
    trainer.global_step = 10
    with pytest.raises(NonFiniteLossError, match="not finite from step 7.*none was written.*method.lr"):
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.0)}, None, 0)  # read every 10 steps
    # Before a checkpoint is saved the flag is read at once, whatever the step.
    guard = StopOnNonFiniteLoss(check_every=10)
    trainer = SimpleNamespace(global_step=3, checkpoint_callback=SimpleNamespace(last_model_path="/run/last.ckpt"))
    guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(float("inf"))}, None, 0)
    with pytest.raises(NonFiniteLossError, match="not finite from step 2.*Last good checkpoint: /run/last.ckpt"):
        guard.on_save_checkpoint(trainer, None, {})
