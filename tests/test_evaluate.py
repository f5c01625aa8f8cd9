"""Evaluation: the metrics, the benchmark runner's files, and `evaluate.py` as a user runs it (composed with
Hydra and run in this process; its command line in a subprocess)."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from adain_checkpoints import write_malicious_checkpoint
from conftest import RANDOM_ENCODER, compose, run_hydra_app
from omegaconf import OmegaConf
from PIL import Image

from styletransfer.data.images import load_image_tensor, save_image
from styletransfer.eval import metrics as M
from styletransfer.eval.benchmark import load_benchmark
from styletransfer.eval.report import CSV_COLUMNS
from styletransfer.eval.run import checkpoint_labels, evaluate, evaluate_candidate, run
from styletransfer.eval.scorer import EVAL_LAYERS, UNAVAILABLE, Scorer
from styletransfer.methods.adain.styliser import Styliser
from styletransfer.nn.encoder import VGGEncoder, build_encoder
from styletransfer.protocol.candidate import model_candidate
from styletransfer.protocol.registry import load_model
from styletransfer.runtime.errors import CheckpointError, ConfigError, EncoderMismatchError
from styletransfer.runtime.files import write_csv_atomic, write_json_atomic


@pytest.fixture(scope="module")
def random_vgg() -> VGGEncoder:
    """The metrics' VGG-19 encoder with random weights (seed 0), built once for the tests that only run it (each
    build was 0.15 CPU seconds). Its weights come from its own seeded generator, so it is the encoder each test built
    itself; the tests draw their inputs before that build, or seed torch again after it."""
    return VGGEncoder(EVAL_LAYERS, weights="random", seed=0)


def test_metrics_on_identical_images(random_vgg):
    torch.manual_seed(0)
    image = torch.rand(2, 3, 48, 48)
    encoder = random_vgg
    feats = encoder(image)
    for layer in ("relu4_1", "relu4_2"):
        assert torch.equal(M.content_distance(feats[layer], feats[layer]), torch.zeros(2))
    torch.testing.assert_close(M.ssim_luminance(image, image), torch.ones(2))
    assert torch.equal(M.summed_over_layers(M.mean_std_distance, feats, feats, ["relu1_1", "relu4_1"]), torch.zeros(2))
    assert torch.equal(M.summed_over_layers(M.gram_distance, feats, feats, ["relu1_1", "relu5_1"]), torch.zeros(2))
    torch.testing.assert_close(M.cfsd(feats["relu3_1"], feats["relu3_1"]), torch.zeros(2))


def _cfsd_by_hand(content: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """StyleID's CFSD written out for (N, C, H, W) maps: rows of softmax((F/C)(F/C)^T), KL(content || result) summed."""
    c = content.shape[1]
    total = []
    for fc, fr in zip(content.double(), result.double()):
        fc, fr = fc.flatten(1).T / c, fr.flatten(1).T / c  # (positions, C)
        p, q = torch.softmax(fc @ fc.T, dim=1), torch.softmax(fr @ fr.T, dim=1)
        total.append((p * (p.log() - q.log())).sum())
    return torch.stack(total)


def test_metrics_equal_hand_computations(random_vgg):
    torch.manual_seed(1)
    content = torch.rand(1, 3, 48, 48)
    other = (content + 0.3 * torch.randn_like(content)).clamp(0, 1)
    encoder = random_vgg
    fc, fo = encoder(content), encoder(other)
    by_hand = ((fo["relu4_1"] - fc["relu4_1"]) ** 2).mean()
    torch.testing.assert_close(M.content_distance(fo["relu4_1"], fc["relu4_1"]), by_hand.reshape(1))
    assert float(M.ssim_luminance(other, content)[0]) < 0.9
    # SSIM of two flat greys a, b (luminance a, b; no variance): (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 x 1)^2,
    # here (0.0024 + 0.0001) / (0.004 + 0.0001) = 0.6098 (0.6 without C1).
    grey = torch.full((1, 3, 24, 24), 0.02), torch.full((1, 3, 24, 24), 0.06)
    assert float(M.ssim_luminance(*grey)[0]) == pytest.approx(0.0025 / 0.0041, rel=1e-4)
    # Only the luminance (BT.601: 0.299 R + 0.587 G + 0.114 B) counts: a flat colour of luminance 0.5 against grey 0.5.
    colour = torch.tensor([1.0, 0.3, (0.5 - 0.299 - 0.587 * 0.3) / 0.114]).view(1, 3, 1, 1).expand(1, 3, 24, 24)
    assert float(M.ssim_luminance(colour, torch.full((1, 3, 24, 24), 0.5))[0]) == pytest.approx(1.0, abs=1e-4)
    # CFSD: exact at full resolution (12 x 12 relu3_1 positions), with the rows in chunks or all at once.
    expected = _cfsd_by_hand(fc["relu3_1"], fo["relu3_1"]).float()
    torch.testing.assert_close(M.cfsd(fc["relu3_1"], fo["relu3_1"]), expected)
    torch.testing.assert_close(M.cfsd(fc["relu3_1"], fo["relu3_1"], chunk_rows=5), expected)
    # Bounded to 16 positions, the 12 x 12 maps are area-averaged to 4 x 4 (3 x 3 blocks) first.
    pooled = _cfsd_by_hand(F.avg_pool2d(fc["relu3_1"], 3), F.avg_pool2d(fo["relu3_1"], 3)).float()
    torch.testing.assert_close(M.cfsd(fc["relu3_1"], fo["relu3_1"], max_positions=16, chunk_rows=3), pooled)


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
    # Fewer vectors than dimensions (5 + 7 <= 40: taken in the vectors' space): the same value as the two
    # eigendecompositions of the d x d covariances, tr((S_a^1/2 S_b S_a^1/2)^1/2), written out here.
    few_a, few_b = torch.randn(5, 40).double(), (torch.randn(7, 40) @ torch.randn(40, 40) + 0.5).double()

    def root(matrix: torch.Tensor) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh((matrix + matrix.T) / 2)
        return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T

    sa, sb = torch.cov(few_a.T), torch.cov(few_b.T)
    diff = few_a.mean(0) - few_b.mean(0)
    expected = diff @ diff + sa.trace() + sb.trace() - 2 * root(root(sa) @ sb @ root(sa)).trace()
    assert M.frechet_distance(few_a, few_b) == pytest.approx(float(expected), rel=1e-6)
    assert M.frechet_distance(few_a, few_a) == pytest.approx(0.0, abs=1e-6)


def test_checkpoint_labels_are_short_and_unique():
    assert checkpoint_labels(["runs/a/checkpoints/last.ckpt", "runs/b/checkpoints/last.ckpt"]) == ["a/checkpoints/last",
                                                                                                   "b/checkpoints/last"]
    assert checkpoint_labels(["x/last.ckpt", "x/decoder.pth"]) == ["last", "decoder"]


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


@pytest.mark.slow
def test_lpips_and_fid_computed_when_weights_are_given(tmp_path, adain_run, bench_dirs, random_vgg, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty cache: only configured files count
    torch.manual_seed(0)
    alex = tmp_path / "alexnet.pth"
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    torch.save({**{f"features.{i}.weight": torch.randn(s) * 0.05 for i, s in shapes.items()},
                **{f"features.{i}.bias": torch.zeros(s[0]) for i, s in shapes.items()}}, alex)  # torchvision's keys
    inception = tmp_path / "art_inception.pth"
    torch.save(torchvision.models.Inception3(aux_logits=False, init_weights=False).state_dict(), inception)
    content_dir, style_dir = bench_dirs
    bench = load_benchmark({"name": "t", "content_dir": str(content_dir), "style_dir": str(style_dir), "short_side": 32,
                            "max_contents": 1})
    scorer = Scorer(random_vgg, torch.device("cpu"),
                    {"lpips_weights": str(alex), "inception_weights": str(inception), "inception_size": 80})
    assert scorer.unavailable == {}
    candidate = model_candidate(load_model(adain_run[0], device=torch.device("cpu")), "last")
    summary = evaluate([candidate], bench, scorer, torch.device("cpu"), tmp_path / "out", warmup=0, sweep_alphas=())
    model = summary["models"][0]
    # By hand: each pair stylised as the runner does (seeded), LPIPS of result vs content averaged over the pairs,
    # FID between the Inception features of the 2 results (r1, r2) and of their 2 styles (s1, s2).
    lpips, result_feats, style_feats = [], [], []
    for ci, si in bench.pairs:
        content, style = bench.contents[ci][1][None], bench.styles[si][1][None]
        torch.manual_seed(0)
        result = candidate.stylise(content, style, 1.0)
        lpips.append(float(scorer.lpips(result, content)[0]))
        result_feats.append(scorer.inception(result)[0].double())
        style_feats.append(scorer.inception(style)[0].double())
    assert len(lpips) == 2 and float(scorer.lpips(content, content)[0]) == 0.0
    assert model["aggregate"]["lpips"]["mean"] == pytest.approx(statistics.fmean(lpips), rel=1e-6)
    # Two vectors per set: each covariance is rank one, S_r = u u^T with u = (r1 - r2) / sqrt(2) (S_s = v v^T
    # likewise), so tr((S_r^1/2 S_s S_r^1/2)^1/2) = |u . v| and FID = |mean_r - mean_s|^2 + |u|^2 + |v|^2 - 2 |u . v|.
    (r1, r2), (s1, s2) = result_feats, style_feats
    u, v = (r1 - r2) / 2 ** 0.5, (s1 - s2) / 2 ** 0.5
    mean_gap = (r1 + r2) / 2 - (s1 + s2) / 2
    expected_fid = float(mean_gap @ mean_gap + u @ u + v @ v - 2 * (u @ v).abs())
    assert model["set_metrics"]["fid"] == pytest.approx(expected_fid, rel=1e-5)
    assert model["set_metrics"]["art_fid"] == pytest.approx(
        (1 + model["aggregate"]["lpips"]["mean"]) * (1 + model["set_metrics"]["fid"]))
    assert not (tmp_path / "out" / "alpha_sweep.png").exists()


def _benchmark_overrides(bench_dirs) -> list[str]:
    content_dir, style_dir = bench_dirs
    return [f"benchmark.content_dir={content_dir}", f"benchmark.style_dir={style_dir}", "benchmark.short_side=32"]


def test_one_report_scores_models_of_every_feed_forward_method(tmp_path, adain_run, bench_dirs):
    """AdaIN, a fast-style network (its own style: the pair's style is not an input) and WCT (two levels) in one
    table (issues 21 and 23): every pair scored per model, alpha swept only where a model has the control (two
    alphas: the sweep's values and figure are test_evaluate_writes_every_file_for_two_checkpoints' subject)."""
    from styletransfer.methods.fast.checkpoint import save_network
    from styletransfer.methods.fast.network import TransformerNet
    from styletransfer.methods.wct.checkpoint import save_decoders
    from styletransfer.methods.wct.decoders import build_decoders

    torch.manual_seed(0)
    save_network(TransformerNet(), ["starry"], {}, tmp_path / "network.pth")
    levels = ["relu1_1", "relu2_1"]
    wct_encoder = build_encoder(RANDOM_ENCODER, levels)
    save_decoders(dict(build_decoders(levels).items()), wct_encoder.spec, tmp_path / "decoders.pth")
    out = tmp_path / "eval"
    cfg = compose(
        "evaluate", f"ckpt=[{adain_run[1]},{tmp_path / 'network.pth'},{tmp_path / 'decoders.pth'}]",
        *_benchmark_overrides(bench_dirs), "metric_encoder.weights=random", "metric_encoder.download=false",
        "trainer=cpu", "logger=none", "timing.warmup=0", "alpha_sweep.pairs=1", "alpha_sweep.values=[0.0,1.0]",
        f"paths.root_dir={tmp_path}", output_dir=out,
    )
    summary = run(cfg)
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows[::4]] == ["decoder", "network", "decoders"] and len(rows) == 3 * 4
    assert all(math.isfinite(float(r["content_relu4_1"])) for r in rows)
    fast = [r for r in rows if r["model"] == "network"]
    assert fast[0]["content_relu4_1"] == fast[1]["content_relu4_1"]  # c1 with either style: one result
    assert [m["info"]["method"] for m in summary["models"]] == ["adain", "fast", "wct"]
    assert ["alpha_sweep" in m for m in summary["models"]] == [True, False, True]


def test_one_report_scores_the_default_adain_beside_one_behind_a_backbone(tmp_path, adain_run, bench_dirs):
    """AdaIN behind VGG-19 (the session's tiny run) and behind ResNet-50's layer3 (stride 16) in one table, each
    rebuilt from its decoder.pth's record and named with its network and bottleneck (issue 22). No alpha sweep: the
    sweep and its figure are the subject of the tests above."""
    from adain_checkpoints import write_backbone_decoder

    backbone = write_backbone_decoder(tmp_path / "resnet" / "decoder.pth", "resnet50", "layer3", width=0.25)
    out = tmp_path / "eval"
    cfg = compose(
        "evaluate", f"ckpt=[{adain_run[1]},{backbone}]", *_benchmark_overrides(bench_dirs),
        "metric_encoder.weights=random", "metric_encoder.download=false", "trainer=cpu", "logger=none",
        "timing.warmup=0", "alpha_sweep.values=[]", f"paths.root_dir={tmp_path}", output_dir=out,
    )  # fmt: skip
    summary = run(cfg)
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 4 and len({r["model"] for r in rows}) == 2
    assert all(math.isfinite(float(r["content_relu4_1"])) for r in rows)
    infos = [m["info"] for m in summary["models"]]
    assert [(i["encoder"]["network"], i["bottleneck"]) for i in infos] == [("vgg19", "relu4_1"), ("resnet50", "layer3")]
    report = (out / "report.md").read_text()
    assert "network vgg19, bottleneck relu4_1; decoder mirror" in report
    assert "network resnet50, bottleneck layer3; decoder configurable (width 0.25," in report


def test_peak_memory_is_measured_per_model(bench_dirs, random_vgg):
    """Each timed model's peak memory (issue 21): on the CPU the process's peak resident set, reset before each
    model, so a model that holds 256 MiB more while it stylises reports at least that much more. One pair: a peak
    is the same after one as after four (each pair's 256 MiB written and freed were 0.25 s)."""
    from styletransfer.eval import memory
    from styletransfer.protocol.candidate import Candidate

    cpu = torch.device("cpu")
    if not memory.reset_peak(cpu):
        pytest.skip("this system cannot reset the peak resident set (/proc/self/clear_refs)")
    content_dir, style_dir = bench_dirs
    bench = load_benchmark({"name": "t", "content_dir": str(content_dir), "style_dir": str(style_dir),
                            "short_side": 32, "max_contents": 1, "max_styles": 1})
    assert len(bench.pairs) == 1
    scorer = Scorer(random_vgg, cpu)

    def light(content, style, alpha):
        return content.clone()

    def heavy(content, style, alpha):
        held = torch.ones(64 * 2**20)  # 256 MiB, written (resident) while the model runs
        return content.clone() + held[:1].sub(1.0)

    peaks = {}
    for name, fn in (("light", light), ("heavy", heavy), ("light again", light)):
        result = evaluate_candidate(Candidate(name, fn, {}), bench, scorer, cpu, 1.0, warmup=0, seed=0, keep=set())
        peaks[name] = result["timing"]["peak_memory_mib"]
        assert result["timing"]["peak_memory_kind"] == "process resident set"
    assert peaks["heavy"] - peaks["light"] >= 200, peaks
    assert peaks["heavy"] - peaks["light again"] >= 200, peaks  # reset between models: the heavy peak is gone


def test_evaluate_writes_every_file_for_two_checkpoints(tmp_path, adain_run, bench_dirs, capsys):
    ckpt, exported = adain_run
    out = tmp_path / "eval"
    cfg = compose(
        "evaluate", f"ckpt=[{ckpt},{exported}]", *_benchmark_overrides(bench_dirs), "metric_encoder.weights=random",
        "metric_encoder.download=false", "trainer=cpu", "logger=csv", "timing.warmup=1", "alpha_sweep.pairs=1",
        f"paths.root_dir={tmp_path}", output_dir=out,
    )
    returned = run(cfg)
    for name in ("metrics.csv", "summary.json", "report.md", "grid.png", "alpha_sweep.png"):
        assert (out / name).is_file(), name
    progress = capsys.readouterr().err
    assert "evaluating last" in progress and "pair/s" in progress  # a progress bar per model, pairs counted

    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 2 * 4  # two checkpoints x (2 contents x 2 readable styles), in a stable order
    assert [(r["model"], r["content"], r["style"]) for r in rows[:4]] == [
        ("last", "c1.png", "s1.png"), ("last", "c1.png", "s2.png"),
        ("last", "c2.png", "s1.png"), ("last", "c2.png", "s2.png")]
    assert {r["lpips"] for r in rows} == {UNAVAILABLE}
    assert all(float(r["seconds"]) > 0 for r in rows)
    # A row's numbers are the metrics of the pair stylised by hand: the checkpoint's model on the benchmark's
    # tensors, scored with the configured metric encoder.
    bench = load_benchmark(OmegaConf.to_container(cfg.benchmark, resolve=True))
    metric_encoder = build_encoder(OmegaConf.to_container(cfg.metric_encoder, resolve=True), EVAL_LAYERS)
    styliser = Styliser.from_checkpoint(ckpt)
    for row, (ci, si) in zip(rows[:4], bench.pairs):
        content, style = bench.contents[ci][1][None], bench.styles[si][1][None]
        with torch.no_grad():
            result = styliser.stylise(content, style)
            fr, fc, fs = metric_encoder(result), metric_encoder(content), metric_encoder(style)
        assert float(row["content_relu4_1"]) == pytest.approx(float(M.content_distance(fr["relu4_1"], fc["relu4_1"])),
                                                              rel=1e-5)
        assert float(row["style_mean_std"]) == pytest.approx(float(M.summed_over_layers(
            M.mean_std_distance, fr, fs, ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])), rel=1e-5)
        assert float(row["ssim"]) == pytest.approx(float(M.ssim_luminance(result, content)), rel=1e-5)

    summary = json.loads((out / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == [m["label"] for m in returned["models"]] == ["last", "decoder"]
    assert summary["encoder"]["used"] == "random"
    assert summary["encoder"]["fingerprint"] == metric_encoder.spec["fingerprint"]
    # A reason naming the setting that would provide the weights, never a number.
    assert "metrics.lpips_weights" in summary["unavailable"]["lpips"]
    assert "metrics.inception_weights" in summary["unavailable"]["fid"]
    assert summary["unavailable"]["art_fid"] == "needs LPIPS and FID"
    for model in summary["models"]:
        seconds = [float(r["seconds"]) for r in rows if r["model"] == model["label"]]
        assert model["set_metrics"] == {"fid": UNAVAILABLE, "art_fid": UNAVAILABLE}
        assert set(model["aggregate"]["ssim"]) == {"mean", "median"}
        assert model["aggregate"]["content_relu4_1"]["mean"] == pytest.approx(
            statistics.fmean(float(r["content_relu4_1"]) for r in rows if r["model"] == model["label"]))
        assert model["timing"]["device"].startswith("cpu")
        assert model["timing"]["images_per_second"] == pytest.approx(1 / statistics.fmean(seconds))
        assert model["alpha_sweep"]["alpha"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # The two files hold the same decoder behind the same encoder: same scores.
    assert summary["models"][0]["aggregate"]["style_mean_std"]["mean"] == pytest.approx(
        summary["models"][1]["aggregate"]["style_mean_std"]["mean"], rel=1e-5)
    assert any("s3_broken.jpg" in s for s in summary["benchmark"]["skipped"])

    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| last ") or line.startswith("| decoder ")]
    assert len(table) == 4  # two rows in the metrics table, two in the speed table
    assert "unavailable" in report and "s3_broken.jpg" in report
    models = [line for line in report.splitlines() if line.startswith("- **")]  # trained behind a random encoder
    assert len(models) == 2 and all("encoder torchvision / RANDOM" in line for line in models), models
    # grid: 3 rows (styles + 2 contents) x 3 columns (contents + 2 styles) of 128 px cells with 2 px padding
    assert Image.open(out / "grid.png").size == (3 * 128 + 4 * 2, 3 * 128 + 4 * 2)
    assert (out / "grid_last.png").is_file() and (out / "grid_decoder.png").is_file()
    # alpha_sweep.png: a (2.2 x 5) x (2.2 x 2 models + 3.2) inch figure at 100 dpi, with something drawn on it.
    with Image.open(out / "alpha_sweep.png") as figure:
        assert figure.format == "PNG" and figure.size == (1100, 760)
        pixels = np.asarray(figure.convert("RGB"))
    assert (pixels != 255).any(axis=-1).mean() > 0.05
    assert list((out / "csv").rglob("metrics.csv")), "aggregates also go to the chosen logger"


def test_evaluate_command_line_sets_the_metric_encoder(tmp_path, adain_run, bench_dirs, monkeypatch):
    """evaluate.py run as __main__ in this process: `metric_encoder.*` chooses the metrics' encoder (the old name
    `encoder.*` is gone: Hydra refuses it)."""
    out = tmp_path / "eval"
    run_hydra_app("evaluate.py", f"ckpt={adain_run[0]}", *_benchmark_overrides(bench_dirs),
                  "metric_encoder.weights=random", "metric_encoder.seed=3", "trainer=cpu", "logger=none",
                  "timing.warmup=0", "alpha_sweep.values=[]", f"hydra.run.dir={out}", monkeypatch=monkeypatch)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["encoder"]["used"] == "random" and summary["encoder"]["seed"] == 3
    assert [m["label"] for m in summary["models"]] == ["last"] and "alpha_sweep" not in summary["models"][0]


def test_evaluate_py_refuses_a_pickle_that_runs_code(tmp_path, bench_dirs, monkeypatch, capsys):
    """``python evaluate.py ckpt=evil.ckpt`` (the script's command line, run in this process): exit status 1 and
    the file named on stderr, the pickle's code never run."""
    content_dir, style_dir = bench_dirs
    marker = tmp_path / "code_ran"
    ckpt = write_malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(SystemExit) as exit_:
        run_hydra_app("evaluate.py", f"ckpt={ckpt}", f"benchmark.content_dir={content_dir}",
                      f"benchmark.style_dir={style_dir}", "metric_encoder.weights=random", "trainer=cpu",
                      "logger=none", f"hydra.run.dir={tmp_path / 'eval'}", monkeypatch=monkeypatch)
    assert exit_.value.code == 1
    stderr = capsys.readouterr().err
    assert str(ckpt) in stderr and "refused" in stderr
    assert not marker.exists()
    assert not (tmp_path / "eval" / "summary.json").exists()


@pytest.mark.parametrize("case", ["missing", "not_a_checkpoint", "mismatch", "pickle_that_runs_code"])
def test_bad_checkpoints_are_named(tmp_path, adain_run, bench_dirs, case):
    chosen, error, match = ["metric_encoder.seed=0"], CheckpointError, ""
    if case == "missing":
        ckpt, match = tmp_path / "nope.ckpt", "does not exist"
    elif case == "not_a_checkpoint":
        ckpt = tmp_path / "image.ckpt"
        save_image(torch.rand(3, 8, 8), tmp_path / "image.png")
        ckpt.write_bytes((tmp_path / "image.png").read_bytes())
    elif case == "mismatch":
        # Another random encoder than the one the exported decoder records (the default is its own record).
        ckpt, error = adain_run[1], EncoderMismatchError
        chosen = ["model_encoder.weights=random", "model_encoder.seed=7"]
    else:
        ckpt, match = write_malicious_checkpoint(tmp_path / "evil.ckpt", tmp_path / "code_ran"), "refused"
    cfg = compose("evaluate", f"ckpt={ckpt}", *_benchmark_overrides(bench_dirs), "metric_encoder.weights=random",
                  *chosen, "trainer=cpu", "logger=none", output_dir=tmp_path / "eval")
    with pytest.raises(error, match=str(ckpt)) as info:
        run(cfg)
    assert match in str(info.value)
    assert not (tmp_path / "eval" / "summary.json").exists()
    assert not (tmp_path / "code_ran").exists()


def test_default_benchmark_is_generated_deterministically(tmp_path):
    cfg = {"name": "default", "content_dir": None, "style_dir": None, "root": str(tmp_path / "benchmark"),
           "n_content": 2, "n_style": 2, "generate_size": 32, "short_side": 32}
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


# ---- outputs=DIR: results made by another tool, scored in the same table (issue 21, item 4) ----


def _outputs_overrides(bench_dirs, tmp_path, *more: str) -> list[str]:
    """A benchmark at the images' own sizes (their tensors are exact 8-bit values: a copied content scores 0)."""
    content_dir, style_dir = bench_dirs
    return [f"benchmark.content_dir={content_dir}", f"benchmark.style_dir={style_dir}", "benchmark.short_side=null",
            "metric_encoder.weights=random", "metric_encoder.download=false", "trainer=cpu", "logger=none",
            "timing.warmup=0", "alpha_sweep.pairs=1", f"paths.root_dir={tmp_path}", *more]


def _write_results(folder: Path, bench_dirs, name, scale: int = 1, seed: int = 0) -> dict[tuple[str, str], Path]:
    """A random result per (content, readable style) pair, ``scale`` times the content's size; {(c, s): file}."""
    from PIL import Image as PILImage

    content_dir, _ = bench_dirs
    g = torch.Generator().manual_seed(seed)
    written = {}
    for content in ("c1", "c2"):
        w, h = PILImage.open(content_dir / f"{content}.png").size
        for style in ("s1", "s2"):
            path = folder / name(content, style)
            save_image(torch.rand(3, h * scale, w * scale, generator=g), path)
            written[(content, style)] = path
    return written


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_outputs_folders_score_what_their_images_score(tmp_path, bench_dirs):
    """outputs=[A,B]: A holds each content image itself as its result (styletransfer-stylise's names): content loss 0
    and SSIM 1; B holds random images at twice the size (named <content>__<style>): each row is the metrics of its
    file resized to the content's size, by hand, and the report says they were resized. Not timed, no alpha sweep."""
    from styletransfer.apps.stylise import stylised_stem

    content_dir, _ = bench_dirs
    same, other = tmp_path / "same", tmp_path / "other"
    same.mkdir()
    for content in ("c1", "c2"):
        for style in ("s1", "s2"):
            (same / f"{stylised_stem(content, [style])}.png").write_bytes((content_dir / f"{content}.png").read_bytes())
    files = _write_results(other, bench_dirs, lambda c, s: f"{c}__{s}.png", scale=2)
    out = tmp_path / "eval"
    cfg = compose("evaluate", f"outputs=[{same},{other}]", *_outputs_overrides(bench_dirs, tmp_path), output_dir=out)
    summary = run(cfg)
    rows = _rows(out)
    assert [r["model"] for r in rows] == ["same"] * 4 + ["other"] * 4
    assert all(float(r["content_relu4_1"]) == 0.0 and float(r["content_relu4_2"]) == 0.0 for r in rows[:4])
    assert all(float(r["ssim"]) == pytest.approx(1.0, abs=1e-5) for r in rows[:4])
    assert {r["seconds"] for r in rows} == {"not measured"}

    bench = load_benchmark(OmegaConf.to_container(cfg.benchmark, resolve=True))
    encoder = build_encoder(OmegaConf.to_container(cfg.metric_encoder, resolve=True), EVAL_LAYERS)
    for row, (ci, si) in zip(rows[4:], bench.pairs):
        content, style = bench.contents[ci][1][None], bench.styles[si][1][None]
        image = load_image_tensor(files[(bench.contents[ci][0].stem, bench.styles[si][0].stem)])
        assert image.shape[-2:] == tuple(2 * n for n in content.shape[-2:])
        result = F.interpolate(image[None], size=content.shape[-2:], mode="bilinear", antialias=True,
                               align_corners=False).clamp(0, 1)
        with torch.no_grad():
            fr, fc, fs = encoder(result), encoder(content), encoder(style)
        assert float(row["content_relu4_1"]) == pytest.approx(float(M.content_distance(fr["relu4_1"], fc["relu4_1"])),
                                                              rel=1e-5)
        assert float(row["style_mean_std"]) == pytest.approx(float(M.summed_over_layers(
            M.mean_std_distance, fr, fs, ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])), rel=1e-5)
        assert float(row["ssim"]) == pytest.approx(float(M.ssim_luminance(result, content)), rel=1e-5)

    models = {m["label"]: m for m in summary["models"]}
    assert models["same"]["info"]["external"] and models["same"]["info"]["path"] == str(same)
    assert models["same"]["info"]["pairing"] == "names" and models["other"]["info"]["resized"] == sorted(
        p.name for p in files.values())
    for model in models.values():
        assert model["timing"]["images_per_second"] == "not measured" and not model["timing"]["measured"]
        assert "seconds" not in model["aggregate"] and "alpha_sweep" not in model
    assert not (out / "alpha_sweep.png").exists()
    report = (out / "report.md").read_text()
    assert "| same | not measured | not measured | not measured | 0 |" in report
    assert "4 of 4 results resized to their content's size" in report


def test_outputs_paired_by_csv_score_as_paired_by_name(tmp_path, bench_dirs):
    """outputs.csv (content, style as file names or stems; result relative to the folder) pairs files of any name:
    the same images score the same as when paired by name."""
    by_name, by_csv = tmp_path / "by_name", tmp_path / "by_csv"
    _write_results(by_name, bench_dirs, lambda c, s: f"{c}__{s}.png")
    files = _write_results(by_csv, bench_dirs, lambda c, s: f"img_{c}{s}.png")
    (by_csv / "outputs.csv").write_text("content,style,result\n" + "".join(
        f"{c}.png,{s},{p.name}\n" for (c, s), p in files.items()))
    out = tmp_path / "eval"
    cfg = compose("evaluate", f"outputs=[{by_name},{by_csv}]", *_outputs_overrides(bench_dirs, tmp_path),
                  output_dir=out)
    summary = run(cfg)
    rows = _rows(out)
    metrics = ("content_relu4_1", "style_mean_std", "style_gram", "ssim", "cfsd")
    assert [[r[k] for k in metrics] for r in rows[:4]] == [[r[k] for k in metrics] for r in rows[4:]]
    assert [m["info"]["pairing"] for m in summary["models"]] == ["names", "csv"]


@pytest.mark.parametrize("case", ["missing", "unreadable", "aspect", "twice", "csv_column"])
def test_bad_outputs_folders_are_refused_in_one_line(tmp_path, bench_dirs, case):
    """A folder that cannot give one result per pair: one line naming the folder, the file or pairs, and the fix;
    nothing is written to the run directory."""
    folder = tmp_path / "results"
    files = _write_results(folder, bench_dirs, lambda c, s: f"{c}__{s}.png")
    if case == "missing":
        files[("c2", "s2")].unlink()
        files[("c1", "s2")].unlink()
        match = r"no result for 2 of 4 pairs \(c1__s2, c2__s2\): name each <content stem>_stylised_<style stem>"
    elif case == "unreadable":
        files[("c1", "s1")].write_bytes(b"\x89PNG not really")
        match = "c1__s1.png.*replace or remove the file"
    elif case == "aspect":
        save_image(torch.rand(3, 32, 32), files[("c1", "s1")])  # c1 is 40 x 32
        match = "c1__s1.png is 32x32, its content is 40x32"
    elif case == "twice":
        save_image(torch.rand(3, 32, 40), folder / "c1_stylised_s1.jpg")
        match = "c1__s1.png and c1_stylised_s1.jpg are both results of c1.png x s1.png: keep one"
    else:
        (folder / "outputs.csv").write_text("content,style,file\nc1,s1,c1__s1.png\n")
        match = "outputs.csv has no column result: its header must be content,style,result"
    out = tmp_path / "eval"
    cfg = compose("evaluate", f"outputs={folder}", *_outputs_overrides(bench_dirs, tmp_path), output_dir=out)
    with pytest.raises(ConfigError, match=match) as info:
        run(cfg)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()


def test_extra_files_in_an_outputs_folder_are_named_and_ignored(tmp_path, bench_dirs, caplog):
    folder = tmp_path / "results"
    _write_results(folder, bench_dirs, lambda c, s: f"{c}__{s}.png")
    save_image(torch.rand(3, 8, 8), folder / "c3__s1.png")
    (folder / "notes.txt").write_text("not an image: not a result either")
    out = tmp_path / "eval"
    with caplog.at_level("WARNING"):
        summary = run(compose("evaluate", f"outputs={folder}", *_outputs_overrides(bench_dirs, tmp_path),
                              output_dir=out))
    assert "1 file(s) match no benchmark pair, ignored: c3__s1.png" in caplog.text
    assert summary["models"][0]["info"]["extra_files"] == ["c3__s1.png"] and len(_rows(out)) == 4
    assert "1 file(s) matching no pair ignored: c3__s1.png" in (out / "report.md").read_text()


def test_checkpoints_and_outputs_in_one_report(tmp_path, adain_run, bench_dirs):
    """ckpt= and outputs= together: the model's rows, then the folder's; the folder is named apart from a checkpoint
    of the same name. The folder holds the model's own results written as 8-bit files: it scores as the model
    within that rounding. Two alphas in the sweep: its values and figure are the subject of the tests above."""
    ckpt = adain_run[0]
    model = model_candidate(load_model(ckpt, device=torch.device("cpu")), "last")
    bench = load_benchmark({"name": "t", "content_dir": str(bench_dirs[0]), "style_dir": str(bench_dirs[1]),
                            "short_side": None})
    folder = tmp_path / "runs" / "last"
    for ci, si in bench.pairs:
        torch.manual_seed(0)
        result = model.stylise(bench.contents[ci][1][None], bench.styles[si][1][None], 1.0)
        save_image(result[0], folder / f"{bench.contents[ci][0].stem}__{bench.styles[si][0].stem}.png")
    out = tmp_path / "eval"
    summary = run(compose("evaluate", f"ckpt={ckpt}", f"outputs={folder}",
                          *_outputs_overrides(bench_dirs, tmp_path, "alpha_sweep.values=[0.0,1.0]"), output_dir=out))
    rows = _rows(out)
    assert [m["label"] for m in summary["models"]] == ["last", "runs/last"]
    assert [r["model"] for r in rows] == ["last"] * 4 + ["runs/last"] * 4
    assert all(float(r["seconds"]) > 0 for r in rows[:4]) and {r["seconds"] for r in rows[4:]} == {"not measured"}
    for a, b in zip(rows[:4], rows[4:]):
        assert float(b["ssim"]) == pytest.approx(float(a["ssim"]), abs=1e-2)
    assert "alpha_sweep" in summary["models"][0] and "alpha_sweep" not in summary["models"][1]
    assert (out / "grid_last.png").is_file() and (out / "grid_runs_last.png").is_file()
