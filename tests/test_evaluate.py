"""Evaluation: the metrics, the benchmark runner's files, and `python evaluate.py` as a user runs it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from adain_checkpoints import RANDOM_ENCODER, train_tiny_run, write_malicious_checkpoint
from PIL import Image

from styletransfer.eval import metrics as M
from styletransfer.data.images import save_image
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.eval.benchmark import load_benchmark
from styletransfer.eval.report import CSV_COLUMNS
from styletransfer.eval.run import checkpoint_labels, evaluate, run
from styletransfer.eval.scorer import EVAL_LAYERS, UNAVAILABLE, Scorer
from styletransfer.methods.adain.candidate import file_candidate
from styletransfer.runtime.errors import CheckpointError, EncoderMismatchError
from styletransfer.runtime.files import write_csv_atomic, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def test_metrics_on_identical_images():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 48, 48)
    encoder = VGGEncoder(EVAL_LAYERS, weights="random", seed=0)
    feats = encoder(image)
    for layer in ("relu4_1", "relu4_2"):
        assert torch.equal(M.content_distance(feats[layer], feats[layer]), torch.zeros(2))
    torch.testing.assert_close(M.ssim_luminance(image, image), torch.ones(2))
    assert torch.equal(M.summed_over_layers(M.mean_std_distance, feats, feats, ["relu1_1", "relu4_1"]), torch.zeros(2))
    assert torch.equal(M.summed_over_layers(M.gram_distance, feats, feats, ["relu1_1", "relu5_1"]), torch.zeros(2))
    torch.testing.assert_close(M.cfsd(feats["relu3_1"], feats["relu3_1"]), torch.zeros(2))


def test_metrics_grow_with_difference():
    torch.manual_seed(1)
    content = torch.rand(1, 3, 48, 48)
    other = (content + 0.3 * torch.randn_like(content)).clamp(0, 1)
    encoder = VGGEncoder(EVAL_LAYERS, weights="random", seed=0)
    fc, fo = encoder(content), encoder(other)
    assert float(M.content_distance(fo["relu4_1"], fc["relu4_1"])[0]) > 0
    assert float(M.ssim_luminance(other, content)[0]) < 0.9
    assert float(M.cfsd(fc["relu3_1"], fo["relu3_1"])[0]) > 0
    # Bounded CFSD (downsampled maps, chunked rows) stays defined and close in kind.
    assert float(M.cfsd(fc["relu3_1"], fo["relu3_1"], max_positions=16, chunk_rows=3)[0]) >= 0


def test_frechet_distance_and_art_fid():
    torch.manual_seed(2)
    a = torch.randn(64, 8)
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert M.frechet_distance(a, a + 2.0) == pytest.approx(8 * 4.0, rel=1e-6)
    assert M.art_fid(0.5, 10.0) == pytest.approx(16.5)
    with pytest.raises(ValueError, match="at least 2"):
        M.frechet_distance(a[:1], a)
    # Same value as the usual scipy formula (sqrtm of the covariance product), with correlated features.
    from scipy import linalg

    b = torch.randn(80, 8) @ torch.randn(8, 8) + 0.5
    sa, sb = torch.cov(a.T).double().numpy(), torch.cov(b.T).double().numpy()
    diff = (a.mean(0) - b.mean(0)).double().numpy()
    expected = diff @ diff + sa.trace() + sb.trace() - 2 * linalg.sqrtm(sa @ sb).real.trace()
    assert M.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_checkpoint_labels_are_short_and_unique():
    assert checkpoint_labels(["runs/a/checkpoints/last.ckpt", "runs/b/checkpoints/last.ckpt"]) == ["a/checkpoints/last",
                                                                                                   "b/checkpoints/last"]
    assert checkpoint_labels(["x/last.ckpt", "x/decoder.pth"]) == ["last", "decoder"]


@pytest.fixture(scope="module")
def run_files(tmp_path_factory) -> tuple[Path, Path]:
    return train_tiny_run(tmp_path_factory.mktemp("adain_run"))


@pytest.fixture(scope="module")
def bench_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """Two contents (one of odd size), two styles, and one broken style file that must be skipped and named."""
    root = tmp_path_factory.mktemp("bench")
    g = torch.Generator().manual_seed(0)
    save_image(torch.rand(3, 32, 40, generator=g), root / "content" / "c1.png")
    save_image(torch.rand(3, 36, 32, generator=g), root / "content" / "c2.png")
    save_image(torch.rand(3, 32, 32, generator=g), root / "style" / "s1.png")
    save_image(torch.rand(3, 40, 32, generator=g), root / "style" / "s2.png")
    (root / "style" / "s3_broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    return root / "content", root / "style"


def test_lpips_and_fid_computed_when_weights_are_given(tmp_path, run_files, bench_dirs, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty cache: only configured files count
    torch.manual_seed(0)
    alex = tmp_path / "alexnet.pth"
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    torch.save({**{f"features.{i}.weight": torch.randn(s) * 0.05 for i, s in shapes.items()},
                **{f"features.{i}.bias": torch.zeros(s[0]) for i, s in shapes.items()}}, alex)  # torchvision's keys
    inception = tmp_path / "art_inception.pth"
    torch.save(torchvision.models.Inception3(aux_logits=False, init_weights=False).state_dict(), inception)
    content_dir, style_dir = bench_dirs
    bench = load_benchmark({"name": "t", "content_dir": str(content_dir), "style_dir": str(style_dir), "size": 32,
                            "max_contents": 1})
    scorer = Scorer(VGGEncoder(EVAL_LAYERS, weights="random"), torch.device("cpu"),
                    {"lpips_weights": str(alex), "inception_weights": str(inception), "inception_size": 80})
    assert scorer.unavailable == {}
    candidate = file_candidate(run_files[0], "last", torch.device("cpu"))
    summary = evaluate([candidate], bench, scorer, torch.device("cpu"), tmp_path / "out", warmup=0, sweep_alphas=())
    model = summary["models"][0]
    assert model["aggregate"]["lpips"]["mean"] > 0
    assert isinstance(model["set_metrics"]["fid"], float)
    assert model["set_metrics"]["art_fid"] == pytest.approx(
        (1 + model["aggregate"]["lpips"]["mean"]) * (1 + model["set_metrics"]["fid"]))
    assert not (tmp_path / "out" / "alpha_sweep.png").exists()


def run_evaluate(*overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_evaluate_py_writes_every_file_for_two_checkpoints(tmp_path, run_files, bench_dirs):
    ckpt, exported = run_files
    content_dir, style_dir = bench_dirs
    out = tmp_path / "eval"
    result = run_evaluate(
        f"ckpt=[{ckpt},{exported}]", f"benchmark.content_dir={content_dir}", f"benchmark.style_dir={style_dir}",
        "benchmark.size=32", "metric_encoder.weights=random", "metric_encoder.download=false", "trainer=cpu", "logger=csv",
        "timing.warmup=1", "alpha_sweep.pairs=1", f"hydra.run.dir={out}", f"paths.root_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("metrics.csv", "summary.json", "report.md", "grid.png", "alpha_sweep.png"):
        assert (out / name).is_file(), name

    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 2 * 4  # two checkpoints x (2 contents x 2 readable styles), in a stable order
    assert [(r["model"], r["content"], r["style"]) for r in rows[:4]] == [
        ("last", "c1.png", "s1.png"), ("last", "c1.png", "s2.png"), ("last", "c2.png", "s1.png"), ("last", "c2.png", "s2.png")]
    assert {r["lpips"] for r in rows} == {UNAVAILABLE}
    assert all(float(r["content_relu4_1"]) >= 0 and float(r["seconds"]) > 0 for r in rows)

    summary = json.loads((out / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["last", "decoder"]
    assert summary["encoder"]["used"] == "random" and summary["encoder"]["fingerprint"]
    for key in ("lpips", "fid", "art_fid"):
        assert summary["unavailable"][key]  # a reason, never a number
    for model in summary["models"]:
        assert model["set_metrics"] == {"fid": UNAVAILABLE, "art_fid": UNAVAILABLE}
        assert set(model["aggregate"]["ssim"]) == {"mean", "median"}
        assert model["timing"]["device"].startswith("cpu") and model["timing"]["images_per_second"] > 0
        assert model["alpha_sweep"]["alpha"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # The two files hold the same decoder behind the same encoder: same scores.
    assert summary["models"][0]["aggregate"]["style_mean_std"]["mean"] == pytest.approx(
        summary["models"][1]["aggregate"]["style_mean_std"]["mean"], rel=1e-5)
    assert any("s3_broken.jpg" in s for s in summary["benchmark"]["skipped"])

    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| last ") or line.startswith("| decoder ")]
    assert len(table) == 4  # two rows in the metrics table, two in the speed table
    assert "unavailable" in report and "s3_broken.jpg" in report
    # grid: 3 rows (styles + 2 contents) x 3 columns (contents + 2 styles) of 128 px cells with 2 px padding
    assert Image.open(out / "grid.png").size == (3 * 128 + 4 * 2, 3 * 128 + 4 * 2)
    assert (out / "grid_last.png").is_file() and (out / "grid_decoder.png").is_file()
    assert list((out / "csv").rglob("metrics.csv")), "aggregates also go to the chosen logger"


def test_evaluate_py_refuses_a_pickle_that_runs_code(tmp_path, bench_dirs):
    content_dir, style_dir = bench_dirs
    marker = tmp_path / "code_ran"
    ckpt = write_malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    result = run_evaluate(f"ckpt={ckpt}", f"benchmark.content_dir={content_dir}", f"benchmark.style_dir={style_dir}",
                          "encoder.weights=random", "trainer=cpu", "logger=none", f"hydra.run.dir={tmp_path / 'eval'}",
                          timeout=120)
    assert result.returncode != 0
    assert str(ckpt) in result.stderr and "refused" in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "eval" / "summary.json").exists()


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="evaluate", overrides=list(overrides))


@pytest.mark.parametrize("case", ["missing", "not_a_checkpoint", "mismatch"])
def test_bad_checkpoints_are_named(tmp_path, run_files, bench_dirs, case):

    content_dir, style_dir = bench_dirs
    seed, error = "metric_encoder.seed=0", CheckpointError
    if case == "missing":
        ckpt = tmp_path / "nope.ckpt"
    elif case == "not_a_checkpoint":
        ckpt = tmp_path / "image.ckpt"
        save_image(torch.rand(3, 8, 8), tmp_path / "image.png")
        ckpt.write_bytes((tmp_path / "image.png").read_bytes())
    else:
        ckpt, seed, error = run_files[1], "metric_encoder.seed=7", EncoderMismatchError  # another random encoder
    cfg = _compose(f"ckpt={ckpt}", f"benchmark.content_dir={content_dir}", f"benchmark.style_dir={style_dir}",
                   "metric_encoder.weights=random", seed, "trainer=cpu", "logger=none", f"paths.output_dir={tmp_path / 'eval'}")
    with pytest.raises(error, match=str(ckpt)):
        run(cfg)
    assert not (tmp_path / "eval" / "summary.json").exists()


def test_default_benchmark_is_generated_deterministically(tmp_path):
    cfg = {"name": "default", "content_dir": None, "style_dir": None, "root": str(tmp_path / "benchmark"),
           "n_content": 2, "n_style": 2, "generate_size": 32, "size": 32}
    first = load_benchmark(cfg)
    second = load_benchmark(cfg)
    assert first.name == "default" and len(first.pairs) == 4
    assert [p.name for p, _ in first.contents] == [p.name for p, _ in second.contents]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first.styles, second.styles))
    with pytest.raises(ValueError, match="benchmark.style_dir"):
        load_benchmark({**cfg, "content_dir": str(tmp_path)})


def test_json_and_csv_are_written_atomically_as_standard_json(tmp_path) -> None:
    """summary.json / trial_status.json: NaN and inf become null (Python's NaN is not JSON); no temporary left."""

    path = write_json_atomic(tmp_path / "out" / "summary.json", {"a": float("nan"), "b": [float("inf"), 1.5],
                                                                 "p": tmp_path})
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard {c}")) == {
        "a": None, "b": [None, 1.5], "p": str(tmp_path)}
    write_csv_atomic(tmp_path / "out" / "t.csv", ["x", "y"], [[1, None]])
    assert (tmp_path / "out" / "t.csv").read_text().splitlines() == ["x,y", "1,"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["summary.json", "t.csv"]
