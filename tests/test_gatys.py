"""Neural Style (Gatys): losses against hand computations, the LightningModule's optimisation, coarse-to-fine,
colour preservation, outputs, bad inputs, and `python train.py method=gatys` end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from conftest import RANDOM_ENCODER, SKIMAGE_DATA, run_train
from styletransfer.nn.colour import rgb_to_luma_chroma
from styletransfer.data.images import ImageLoadError
from styletransfer.data.pair import PairDataModule
from styletransfer.methods.gatys.losses import (
    gram_loss,
    normalise_layer_weights,
    prepare_style_target,
    style_statistic_loss,
    style_statistics,
    tv_loss,
    wasserstein2_loss,
)
from styletransfer.nn.stats import gram_matrix, sqrtm_psd
from styletransfer.runtime.errors import NonFiniteLossError
from styletransfer.methods.gatys import GatysModule

#: Shallow layers keep the module tests fast; the paper's default layers are exercised in the L-BFGS/Adam test.
FAST = {"content_layers": ["relu2_1"], "style_layers": ["relu1_1", "relu2_1", "relu3_1"]}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photos from scikit-image, made small: a square content, a landscape one, and two styles."""
    root = tmp_path_factory.mktemp("gatys_photos")
    out = {}
    for key, name, size in [("astronaut", "astronaut.png", (64, 64)), ("coffee", "coffee.png", (96, 64)),
                            ("chelsea", "chelsea.png", (90, 60)), ("rocket", "rocket.jpg", (64, 96))]:
        out[key] = root / f"{key}.png"
        Image.open(SKIMAGE_DATA / name).convert("RGB").resize(size).save(out[key])
    return out


def _fit(model: GatysModule, data: PairDataModule, tmp_path: Path, steps: int | None, callbacks=()) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=-1 if steps is None else steps, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks),
    )
    trainer.fit(model, datamodule=data)
    return trainer


# ---- losses ----------------------------------------------------------------------------------------------------

def test_gram_matrix_and_loss_equal_hand_computation() -> None:
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    expected = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / (2 * 1 * 2)
    assert torch.allclose(gram_matrix(features)[0], expected)
    target = torch.tensor([[1.0, 2.0], [2.0, 6.0]])
    hand = ((1.25 - 1) ** 2 + (2.75 - 2) ** 2 * 2 + (6.25 - 6) ** 2) / 4
    assert gram_loss(features, target).item() == pytest.approx(hand)


def test_tv_loss_equals_hand_computation() -> None:
    image = torch.tensor([[0.0, 1.0], [3.0, 5.0]]).view(1, 1, 2, 2)
    # dx: 1-0, 5-3 ; dy: 3-0, 5-1 ; divided by the 4 pixels
    assert tv_loss(image, power=2).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert tv_loss(image, power=1).item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert tv_loss(torch.full((2, 3, 5, 5), 0.3)).item() == 0.0


def test_wasserstein2_equals_closed_form_for_diagonal_gaussians() -> None:
    # Two channels over 4 positions: means (1, 2), variances (1, 4), uncorrelated.
    features = torch.tensor([[0.0, 2.0, 0.0, 2.0], [0.0, 0.0, 4.0, 4.0]]).view(1, 2, 2, 2)
    t_mean, t_cov = torch.tensor([0.0, 2.0]), torch.diag(torch.tensor([4.0, 1.0]))
    eps = 1e-4  # added to the feature covariance's diagonal
    std, t_std = torch.tensor([1.0, 2.0]).pow(2).add(eps).sqrt(), torch.tensor([2.0, 1.0])
    hand = ((1.0 - 0.0) ** 2 + 0.0 + ((std - t_std) ** 2).sum().item()) / 2
    assert wasserstein2_loss(features, t_mean, t_cov).item() == pytest.approx(hand, rel=1e-4)
    same = wasserstein2_loss(features, features.mean((2, 3))[0], torch.diag(torch.tensor([1.0, 4.0])) + eps * torch.eye(2))
    assert abs(same.item()) < 1e-4


def test_wasserstein2_gradient_with_fewer_positions_than_channels() -> None:
    """Deep layers of small images give nearly singular covariances; the gradient must still be right."""
    g = torch.Generator().manual_seed(0)
    features = torch.rand(1, 16, 2, 3, generator=g, dtype=torch.float64).requires_grad_()
    stats = style_statistics(torch.rand(1, 16, 3, 2, generator=g), "wasserstein2")
    target = prepare_style_target(stats, "wasserstein2")
    loss = style_statistic_loss(features, target, "wasserstein2")
    loss.backward()
    step = -features.grad / features.grad.norm() * 1e-4
    with torch.no_grad():
        plus = style_statistic_loss(features + step, target, "wasserstein2")
        minus = style_statistic_loss(features - step, target, "wasserstein2")
    assert (plus - minus).item() / 2 == pytest.approx((features.grad * step).sum().item(), rel=0.05)
    assert plus < loss < minus


def test_matrix_square_root_and_its_gradient() -> None:
    a = torch.randn(5, 5, dtype=torch.float64)
    spd = (a @ a.T + 0.1 * torch.eye(5, dtype=torch.float64)).float()
    root = sqrtm_psd(spd)
    assert torch.allclose(root @ root, spd, atol=1e-4)
    x = spd.clone().requires_grad_()
    sqrtm_psd(x).trace().backward()  # d tr(sqrt(A)) / dA = A^(-1/2) / 2
    assert torch.allclose(x.grad, torch.linalg.inv(root) / 2, atol=1e-3)


def test_style_layer_weights() -> None:
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert normalise_layer_weights("equal", layers) == [0.2] * 5
    weights = normalise_layer_weights([256, 64, 16, 4, 1], layers)
    assert sum(weights) == pytest.approx(1.0) and weights[0] / weights[1] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="3 entries for 5 style layers"):
        normalise_layer_weights([1, 2, 3], layers)


# ---- optimisation ------------------------------------------------------------------------------------------------

MODERN = {"optimizer": "adam", "lr": 0.02, "style_statistic": "wasserstein2", "style_weight": 1.0,
          "content_weight": 0.015, "tv_weight": 2.0, "style_layer_weights": [16, 4, 1]}


@pytest.mark.parametrize("settings", [{}, {**MODERN, **FAST}], ids=["lbfgs-gram-defaults", "adam-wasserstein2"])
def test_optimisers_lower_the_total_loss(photos, tmp_path, settings) -> None:
    """L-BFGS with the paper's layers and default weights, and Adam with the modern preset's losses, on a 32 px
    image: a few iterations lower the total loss and move the pixels."""
    model = GatysModule(RANDOM_ENCODER, snapshot_every=0, **settings)
    optimizer = model.hparams.optimizer
    data = PairDataModule(photos["astronaut"], photos["coffee"], long_side=32)
    totals = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            totals.append(float(outputs["loss"]))

    _fit(model, data, tmp_path, steps=6, callbacks=[Record()])
    with torch.no_grad():
        final = float(model.losses(model.image)["loss/total"])
    assert len(totals) == 6 and all(math.isfinite(t) for t in totals)
    assert final < 0.7 * totals[0], (totals, final)
    moved = (model.image.detach() - data.load_content(32)).abs().mean()
    assert moved > 1e-3
    if optimizer == "adam":
        assert model.image.min() >= 0 and model.image.max() <= 1  # clamped after every Adam step


def test_output_and_snapshots_are_written(photos, tmp_path) -> None:
    model = GatysModule(RANDOM_ENCODER, snapshot_every=2, init="noise", **FAST)
    data = PairDataModule(photos["coffee"], photos["chelsea"], long_side=40)
    _fit(model, data, tmp_path, steps=4)
    with Image.open(tmp_path / "stylised.png") as image:
        assert image.size == (40, 27)  # the content's aspect ratio, longer side data.long_side
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["step_00002.png", "step_00004.png"]


def test_coarse_to_fine_ends_at_the_last_scale_with_adam_state_carried(photos, tmp_path) -> None:
    model = GatysModule(RANDOM_ENCODER, optimizer="adam", lr=0.02, scales=[24, 40], steps_per_scale=[3, 2],
                        ema_decay=0.9, snapshot_every=0, **FAST)
    data = PairDataModule(photos["coffee"], photos["chelsea"], long_side=64)
    trainer = _fit(model, data, tmp_path, steps=None)  # steps_per_scale sets the length: 5 iterations
    assert trainer.global_step == 5 and model.scale_index == 1
    assert tuple(model.image.shape) == (1, 3, 27, 40)
    state = trainer.optimizers[0].state[model.image]
    assert state["exp_avg"].shape == model.image.shape and int(state["step"]) == 5
    with Image.open(tmp_path / "stylised.png") as image:
        assert image.size == (40, 27)


def test_resuming_from_a_checkpoint_continues_exactly(photos, tmp_path) -> None:
    """Checkpoints taken mid-scale and at a scale change (Adam, EMA) resume to the uninterrupted run's image."""

    class StopAt(pl.Callback):
        def __init__(self, step: int) -> None:
            self.step = step

        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step >= self.step:
                trainer.should_stop = True

    def run(root: Path, stop: int | None = None, ckpt: Path | None = None) -> GatysModule:
        torch.manual_seed(0)
        model = GatysModule(RANDOM_ENCODER, optimizer="adam", lr=0.05, scales=[24, 40], steps_per_scale=[3],
                            ema_decay=0.9, snapshot_every=0, **FAST)
        data = PairDataModule(photos["coffee"], photos["chelsea"], long_side=64)
        save = pl.callbacks.ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_train_steps=1)
        trainer = pl.Trainer(max_steps=-1, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=root,
                             callbacks=[save] + ([StopAt(stop)] if stop else []))
        trainer.fit(model, datamodule=data, ckpt_path=ckpt)
        return model

    full = run(tmp_path / "full")
    for stop in (2, 3):  # mid-scale (pixels clamped, EMA updated) and right after the move to the second scale
        run(tmp_path / f"part{stop}", stop=stop)
        resumed = run(tmp_path / f"resumed{stop}", ckpt=tmp_path / f"part{stop}" / f"epoch=0-step={stop}.ckpt")
        assert resumed.scale_index == 1 and resumed.image.shape == full.image.shape
        assert torch.equal(resumed.image, full.image)
        assert torch.equal(resumed.output(), full.output())


def test_scale_series_and_step_split() -> None:
    model = GatysModule(RANDOM_ENCODER, scale_start=128, snapshot_every=0, **FAST)
    assert model.scale_sizes(512) == [128, 181, 256, 362, 512]
    assert model.step_schedule(3, 10) == [3, 3, 4]
    modern = GatysModule(RANDOM_ENCODER, steps_per_scale=[1000, 500], snapshot_every=0, **FAST)
    assert modern.step_schedule(5, -1) == [1000, 500, 500, 500, 500]
    with pytest.raises(ValueError, match="trainer.max_steps=15 is fewer than the 3000 iterations"):
        modern.step_schedule(5, 15)


def test_several_contents_and_blended_styles(photos, tmp_path) -> None:
    model = GatysModule(RANDOM_ENCODER, style_blend=[0.7, 0.3], init="style", snapshot_every=0, **FAST)
    data = PairDataModule([photos["astronaut"], photos["coffee"]], [photos["chelsea"], photos["rocket"]],
                          long_side=32)
    _fit(model, data, tmp_path, steps=2)
    assert model.image.shape == (2, 3, 32, 32)  # the second content is cropped to the first's size
    for name in ("stylised_0.png", "stylised_1.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size == (32, 32)


def test_luminance_only_transfer_keeps_content_chroma(photos, tmp_path) -> None:
    model = GatysModule(RANDOM_ENCODER, preserve_colour="luminance", snapshot_every=0, **FAST)
    data = PairDataModule(photos["chelsea"], photos["rocket"], long_side=32)
    _fit(model, data, tmp_path, steps=3)
    assert model.image.shape[1] == 1  # only the luminance is optimised
    content = data.load_content(32)
    result = model.output().cpu()
    inside = ((result > 0.02) & (result < 0.98)).all(1)  # pixels not clipped when the colours were put back
    chroma, c_chroma = rgb_to_luma_chroma(result)[:, 1:], rgb_to_luma_chroma(content)[:, 1:]
    assert inside.float().mean() > 0.5
    assert torch.allclose(chroma.permute(1, 0, 2, 3)[:, inside], c_chroma.permute(1, 0, 2, 3)[:, inside], atol=1e-4)


def test_histogram_matching_recolours_the_style_to_the_content(photos, tmp_path) -> None:
    model = GatysModule(RANDOM_ENCODER, preserve_colour="histogram", snapshot_every=0, **FAST)
    data = PairDataModule(photos["astronaut"], photos["chelsea"], long_side=32)
    _fit(model, data, tmp_path, steps=1)
    content, styles = model._images_at(0)
    assert torch.allclose(styles[0].mean((2, 3)), content.mean((2, 3)), atol=0.03)


# ---- failures: bad input before any optimisation, non-finite loss ----------------------------------------------

def test_missing_and_unreadable_files_fail_before_optimisation(photos, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="data.content: .*nope.jpg does not exist"):
        PairDataModule(tmp_path / "nope.jpg", photos["coffee"])
    with pytest.raises(FileNotFoundError, match="data.style: .*missing.png does not exist"):
        PairDataModule(photos["coffee"], [photos["chelsea"], tmp_path / "missing.png"])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    data = PairDataModule(photos["coffee"], broken, long_side=32)
    with pytest.raises(ImageLoadError, match="broken.jpg.*data.style"):
        data.setup("fit")


def test_blend_length_and_layer_names_fail_before_optimisation(photos, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"method.style_layers=.*unknown VGG-19 layer\(s\) \['relu6_1'\]"):
        GatysModule(RANDOM_ENCODER, style_layers=["relu1_1", "relu6_1"])
    with pytest.raises(ValueError, match="method.content_layers"):
        GatysModule(RANDOM_ENCODER, content_layers=["conv4_5"])
    with pytest.raises(ValueError, match="method.style_layer_weights: .*2 entries for 5 style layers"):
        GatysModule(RANDOM_ENCODER, style_layer_weights=[2, 1])
    small = PairDataModule(photos["coffee"], photos["chelsea"], long_side=16)
    with pytest.raises(ValueError, match="data.content at scale 16 px is only 11 px .* need >= 16 px"):
        _fit(GatysModule(RANDOM_ENCODER, snapshot_every=0), small, tmp_path, steps=3)
    # mean/std needs a 2x2 map at the deepest style layer (relu5_1 is 1/16): enough px for Gram is not enough
    medium = PairDataModule(photos["chelsea"], photos["chelsea"], long_side=24)
    with pytest.raises(ValueError, match="only 1[6-7] px on its shorter side; the layers used need >= 32 px"):
        _fit(GatysModule(RANDOM_ENCODER, style_statistic="mean_std", snapshot_every=0), medium, tmp_path, steps=1)
    model = GatysModule(RANDOM_ENCODER, style_blend=[0.5, 0.3, 0.2], snapshot_every=0, **FAST)
    data = PairDataModule(photos["coffee"], [photos["chelsea"], photos["rocket"]], long_side=32)
    with pytest.raises(ValueError, match="style_blend=.*3 weight.*2 style image"):
        _fit(model, data, tmp_path, steps=3)
    assert model.image is None and not (tmp_path / "stylised.png").exists()


def test_non_finite_loss_stops_with_message_and_keeps_last_good_image(photos, tmp_path) -> None:
    model = GatysModule(RANDOM_ENCODER, snapshot_every=0, **FAST)
    data = PairDataModule(photos["coffee"], photos["chelsea"], long_side=32)

    class Poison(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                module.hparams.style_weight = float("nan")

    with pytest.raises(NonFiniteLossError, match=r"not finite at step 2 .*last good image is in .*stylised.png"):
        _fit(model, data, tmp_path, steps=5, callbacks=[Poison()])
    assert (tmp_path / "stylised.png").is_file()


# ---- end to end through Hydra ------------------------------------------------------------------------------------

def test_train_py_method_gatys_writes_the_image(photos, tmp_path) -> None:
    run_dir = tmp_path / "run"
    result = run_train(
        "method=gatys", "data=pair", f"data.content={photos['astronaut']}", f"data.style={photos['coffee']}",
        "encoder.weights=random", "trainer=cpu", "trainer.max_steps=4", "data.long_side=32", "logger=csv",
        "method.snapshot_every=2", f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(run_dir / "stylised.png") as image:
        assert image.size == (32, 32)
    assert (run_dir / "snapshots" / "step_00004.png").is_file()
    metrics = (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert all(key in metrics for key in ("loss/total", "loss/content", "loss/style", "loss/tv"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert list(ckpt["state_dict"]) == ["image"]  # the encoder is rebuilt from its config, not stored
