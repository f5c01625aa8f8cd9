"""Neural Style (Gatys): losses, style-loss modules, settings, schedule and EMA against hand computations, the
LightningModule's optimisation (first steps against the optimisers' formulas), coarse-to-fine, colour
preservation, outputs, in-memory pairs, bad inputs, the evaluation candidate, and `python train.py method=gatys`
end to end."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from conftest import RANDOM_ENCODER, SKIMAGE_DATA, run_train
from styletransfer.data.images import ImageLoadError, load_image_tensor, save_image
from styletransfer.data.pair import PairDataModule
from styletransfer.methods.gatys import GatysModule, GatysSettings
from styletransfer.methods.gatys.candidate import gatys_candidate
from styletransfer.methods.gatys.losses import (
    STYLE_LOSSES,
    GramStyleLoss,
    MeanStdStyleLoss,
    Wasserstein2StyleLoss,
    gram_loss,
    normalise_layer_weights,
    tv_loss,
    wasserstein2_loss,
)
from styletransfer.methods.gatys.schedule import IterateEMA, resize_adam_state, scale_sizes, step_schedule
from styletransfer.nn.colour import rgb_to_luma_chroma
from styletransfer.nn.stats import gram_matrix, sqrtm_psd
from styletransfer.runtime.errors import ConfigError, NonFiniteLossError

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

def test_gram_matrix_and_losses_equal_hand_computation() -> None:
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    expected = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / (2 * 1 * 2)
    assert torch.allclose(gram_matrix(features)[0], expected)
    target = torch.tensor([[1.0, 2.0], [2.0, 6.0]])
    hand = ((1.25 - 1) ** 2 + (2.75 - 2) ** 2 * 2 + (6.25 - 6) ** 2) / 4
    assert gram_loss(features, target).item() == pytest.approx(hand)
    assert GramStyleLoss(target)(features).item() == pytest.approx(hand)
    assert STYLE_LOSSES == {"gram": GramStyleLoss, "mean_std": MeanStdStyleLoss, "wasserstein2": Wasserstein2StyleLoss}
    # mean/std: channels [1, 2, 3] (mean 2, unbiased variance 1) and [0, 0, 6] (mean 2, unbiased variance 12); eps 1e-5
    features = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]]).view(1, 2, 1, 3)
    loss = MeanStdStyleLoss(torch.tensor([1.0, 2.0]).view(1, 2, 1, 1), torch.tensor([1.0, 3.0]).view(1, 2, 1, 1))
    hand = (1.0 ** 2 + 0.0) / 2 + ((math.sqrt(1 + 1e-5) - 1) ** 2 + (math.sqrt(12 + 1e-5) - 3) ** 2) / 2
    assert loss(features).item() == pytest.approx(hand, rel=1e-6)


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
    same = wasserstein2_loss(features, features.mean((2, 3))[0], torch.diag(std.pow(2)))
    assert abs(same.item()) < 1e-4
    # the module takes raw moments (second = S_t + mu mu^T) and adds eps to the target covariance too
    module = Wasserstein2StyleLoss(t_mean[None].double(), (t_cov + t_mean[:, None] * t_mean[None, :])[None].double())
    t_std = t_std.pow(2).add(eps).sqrt()
    assert module(features).item() == pytest.approx((1.0 + ((std - t_std) ** 2).sum().item()) / 2, rel=1e-5)
    assert sorted(name for name, _ in module.named_buffers()) == ["cov", "cov_sqrt", "mean"]


def test_wasserstein2_gradient_with_fewer_positions_than_channels() -> None:
    """Deep layers of small images give nearly singular covariances; the gradient must still be right."""
    g = torch.Generator().manual_seed(0)
    features = torch.rand(1, 16, 2, 3, generator=g, dtype=torch.float64).requires_grad_()
    style_loss = Wasserstein2StyleLoss.from_features(torch.rand(1, 16, 3, 2, generator=g))
    loss = style_loss(features)
    loss.backward()
    step = -features.grad / features.grad.norm() * 1e-4
    with torch.no_grad():
        plus, minus = style_loss(features + step), style_loss(features - step)
    assert (plus - minus).item() / 2 == pytest.approx((features.grad * step).sum().item(), rel=0.05)
    assert plus < loss < minus


def test_matrix_square_root_and_its_gradient() -> None:
    a = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
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
    assert weights == pytest.approx([256 / 341, 64 / 341, 16 / 341, 4 / 341, 1 / 341])
    with pytest.raises(ValueError, match="3 entries for 5 style layers"):
        normalise_layer_weights([1, 2, 3], layers)


def test_blended_style_targets_are_the_blend_of_the_statistics() -> None:
    """Gram blends Gram matrices, mean/std means and stds, Wasserstein-2 raw moments (so an equal blend of two
    same-sized maps is the Gaussian fit of both together), then builds S_t and S_t^(1/2) once."""
    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.rand(1, 3, 2, 2, generator=g), torch.rand(1, 3, 2, 2, generator=g)
    flat1, flat2 = f1.reshape(3, 4), f2.reshape(3, 4)
    target = GramStyleLoss.blended([GramStyleLoss.statistics(f) for f in (f1, f2)], [0.25, 0.75]).gram
    assert torch.allclose(target[0], 0.25 * flat1 @ flat1.T / 12 + 0.75 * flat2 @ flat2.T / 12)
    mean_std = MeanStdStyleLoss.blended([MeanStdStyleLoss.statistics(f) for f in (f1, f2)], [0.25, 0.75])
    assert torch.allclose(mean_std.mean.flatten(), 0.25 * flat1.mean(1) + 0.75 * flat2.mean(1))
    stds = [(flat.var(1, unbiased=True) + 1e-5).sqrt() for flat in (flat1, flat2)]
    assert torch.allclose(mean_std.std.flatten(), 0.25 * stds[0] + 0.75 * stds[1])
    w2 = Wasserstein2StyleLoss.blended([Wasserstein2StyleLoss.statistics(f) for f in (f1, f2)], [0.5, 0.5])
    both = torch.cat([flat1, flat2], dim=1).double()
    centred = both - both.mean(1, keepdim=True)
    cov = centred @ centred.T / 8 + 1e-4 * torch.eye(3, dtype=torch.float64)
    assert torch.allclose(w2.mean[0], both.mean(1)) and torch.allclose(w2.cov[0], cov)
    assert torch.allclose(w2.cov_sqrt[0] @ w2.cov_sqrt[0], cov)


def test_iterate_ema_is_bias_corrected_and_checkpointed(tmp_path) -> None:
    """decay 0.5 over iterates 1, 2, 4: (0.25 * 1 + 0.5 * 2 + 1 * 4) / (0.25 + 0.5 + 1) = 3."""
    ema = IterateEMA(0.5)
    ema.reset(torch.zeros(1, 3, 2, 2))
    assert ema.value() is None  # nothing averaged yet: the output is the iterate
    for x in (1.0, 2.0, 4.0):
        ema.update(torch.full((1, 3, 2, 2), x))
    assert torch.allclose(ema.value(), torch.full((1, 3, 2, 2), 3.0))
    torch.save(ema.state_dict(), tmp_path / "ema.pt")
    restored = IterateEMA(0.5)
    restored.load_state_dict(torch.load(tmp_path / "ema.pt", weights_only=True))
    assert torch.equal(restored.value(), ema.value()) and restored.decay_power == 0.125
    off = IterateEMA(None)
    off.reset(torch.zeros(1))
    off.update(torch.ones(1))
    assert off.value() is None and off.state_dict() == {"ema": None, "ema_accum": 1.0}


def test_adam_state_resize_keeps_constants_and_the_step() -> None:
    step = torch.tensor(5.0)
    state = {"step": step, "exp_avg": torch.full((1, 3, 4, 6), -0.3), "exp_avg_sq": torch.full((1, 3, 4, 6), 0.2)}
    resized = resize_adam_state(state, (8, 12))
    assert resized["step"] is step and resized["exp_avg"].shape == (1, 3, 8, 12)
    assert torch.allclose(resized["exp_avg"], torch.tensor(-0.3))
    assert torch.allclose(resized["exp_avg_sq"], torch.tensor(0.2))


def test_settings_normalise_to_plain_hyper_parameters() -> None:
    settings = GatysSettings(style_layers=("relu1_1", "relu2_1"), style_layer_weights=(3, 1), scales=(24.0, 40),
                             preserve_colour="None", snapshot_every=None, betas=(0.9, 0.99), ema_decay=0)
    hp = settings.hparams()
    assert list(hp) == [name for name in GatysSettings.__dataclass_fields__ if name != "layer_weights"]
    assert settings.layer_weights == [0.75, 0.25]
    assert hp["style_layers"] == ["relu1_1", "relu2_1"] and hp["style_layer_weights"] == [3.0, 1.0]
    assert hp["scales"] == [24, 40] and all(type(side) is int for side in hp["scales"])
    assert hp["preserve_colour"] is None and hp["snapshot_every"] == 0 and hp["betas"] == [0.9, 0.99]
    assert type(hp["ema_decay"]) is float and type(hp["style_weight"]) is float


@pytest.mark.parametrize("key, value, message", [
    ("style_layers", ["relu1_1", "relu6_1"], "method.style_layers=['relu1_1', 'relu6_1']: unknown VGG-19 layer"),
    ("content_layers", ["conv4_5"], "method.content_layers=['conv4_5']"),
    ("style_layer_weights", [2, 1], "method.style_layer_weights: style layer weights [2.0, 1.0] have 2 entries"),
    ("style_statistic", "gramm", "method.style_statistic='gramm': choose one of gram, mean_std, wasserstein2"),
    ("optimizer", "sgd", "method.optimizer='sgd'"), ("init", "zeros", "method.init='zeros'"),
    ("colour_space", "lab", "method.colour_space='lab'"), ("preserve_colour", "x", "method.preserve_colour='x'"),
    ("style_weight", -1.0, "method.style_weight=-1.0 must be >= 0"), ("tv_power", 3, "method.tv_power=3"),
    ("style_blend", [-1, 2], "method.style_blend=[-1.0, 2.0]"), ("lr", 0, "method.lr=0 must be > 0"),
    ("betas", [0.9], "method.betas=[0.9]"), ("history_size", 0, "method.history_size=0"),
    ("ema_decay", 1.0, "method.ema_decay=1.0"), ("scales", 256, "method.scales must be a list"),
    ("scales", [0, 64], "method.scales=[0, 64]"), ("scale_start", 0, "method.scale_start=0"),
    ("steps_per_scale", [], "method.steps_per_scale=[]"), ("snapshot_every", -1, "method.snapshot_every=-1"),
])
def test_settings_name_the_bad_key(key, value, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        GatysSettings(**{key: value})


# ---- optimisation ------------------------------------------------------------------------------------------------

MODERN = {"optimizer": "adam", "lr": 0.02, "style_statistic": "wasserstein2", "style_weight": 1.0,
          "content_weight": 0.015, "tv_weight": 2.0, "style_layer_weights": [16, 4, 1]}


@pytest.mark.parametrize("settings", [{}, {**MODERN, **FAST}], ids=["lbfgs-gram-defaults", "adam-wasserstein2"])
def test_optimisers_lower_the_total_loss(photos, tmp_path, settings) -> None:
    """L-BFGS with the paper's layers and default weights, and Adam with the modern preset's losses, on a 32 px
    image: the first iteration is the optimiser's formula from the loss's gradient at the content (Adam: its
    bias-corrected moments are g and g^2, so every pixel moves by lr * g / (|g| + eps), then the clamp; L-BFGS:
    steepest descent scaled by lr * min(1, 1 / |g|_1)), and a few iterations lower the total loss."""
    model = GatysModule(RANDOM_ENCODER, snapshot_every=0, **settings)
    hp = model.hparams
    data = PairDataModule(photos["astronaut"], photos["coffee"], long_side=32)
    totals, images = [], []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0:
                images.append(module.image.detach().clone())

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            totals.append(float(outputs["loss"]))
            if batch_idx == 0:
                images.append(module.image.detach().clone())

    _fit(model, data, tmp_path, steps=6, callbacks=[Record()])
    start, after_one = images
    assert torch.equal(start, data.load_content(32))  # init=content
    x = start.clone().requires_grad_()
    losses = model.losses(x)
    assert losses["loss/content"].item() == 0.0 and losses["loss/total"].item() == pytest.approx(totals[0], rel=1e-5)
    (grad,) = torch.autograd.grad(losses["loss/total"], x)
    if hp.optimizer == "adam":
        expected = (start - hp.lr * grad / (grad.abs() + 1e-8)).clamp(0, 1)
    else:
        expected = start - hp.lr * min(1.0, 1.0 / grad.abs().sum().item()) * grad
    assert torch.allclose(after_one, expected, atol=1e-6), (after_one - expected).abs().max()
    with torch.no_grad():
        final = float(model.losses(model.image)["loss/total"])
    assert len(totals) == 6 and final < 0.7 * totals[0], (totals, final)
    if hp.optimizer == "adam":
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
    assert scale_sizes(512, None, 128, math.sqrt(2)) == [128, 181, 256, 362, 512]
    assert scale_sizes(512, [200, 300], 128, 2.0) == [200, 300] and scale_sizes(512, None, None, 2.0) == [512]
    assert step_schedule(3, 10, None) == [3, 3, 4]
    assert step_schedule(5, -1, [1000, 500]) == [1000, 500, 500, 500, 500]
    with pytest.raises(ConfigError, match="trainer.max_steps=15 is fewer than the 3000 iterations"):
        step_schedule(5, 15, [1000, 500])
    model = GatysModule(RANDOM_ENCODER, scale_start=128, steps_per_scale=[7], snapshot_every=0, **FAST)
    assert model.scale_sizes(300) == [128, 181, 256, 300] and model.step_schedule(2, None) == [7, 7]


def test_several_contents_and_blended_styles(photos, tmp_path) -> None:
    model = GatysModule(RANDOM_ENCODER, style_blend=[0.7, 0.3], init="style", snapshot_every=0, **FAST)
    data = PairDataModule([photos["astronaut"], photos["coffee"]], [photos["chelsea"], photos["rocket"]],
                          long_side=32)
    _fit(model, data, tmp_path, steps=2)
    assert model.image.shape == (2, 3, 32, 32)  # the second content is cropped to the first's size
    for name in ("stylised_0.png", "stylised_1.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size == (32, 32)
    styles = [style.unsqueeze(0) for style in data.load_styles(32)]
    with torch.no_grad():
        for layer in FAST["style_layers"]:
            grams = [gram_matrix(model.encoder(style, [layer])[layer]) for style in styles]
            assert torch.allclose(model._style_losses[layer].gram, 0.7 * grams[0] + 0.3 * grams[1], atol=1e-7)


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


def test_pair_from_tensors_loads_as_the_files_do(photos, tmp_path) -> None:
    """In-memory images give the file path's tensors at every size (same resize, crop and style scale): exactly
    for PNG-exact (8-bit) images, and any other image loads as its PNG would."""
    names = {"content": ["coffee", "astronaut"], "style": ["chelsea", "rocket"]}
    files = PairDataModule(*[[photos[k] for k in names[key]] for key in ("content", "style")], long_side=40,
                           style_scale=0.75)
    memory = PairDataModule.from_tensors(*[[load_image_tensor(photos[k]) for k in names[key]]
                                           for key in ("content", "style")], long_side=40, style_scale=0.75)
    files.setup("fit")
    memory.setup("fit")
    assert torch.equal(memory.content, files.content) and memory.content.shape == (2, 3, 27, 40)
    for side in (24, 40, 64):
        assert torch.equal(memory.load_content(side), files.load_content(side))
        assert all(torch.equal(m, f) for m, f in zip(memory.load_styles(side), files.load_styles(side), strict=True))
    assert memory.style_names == ["style 1", "style 2"] and files.style_names == ["chelsea.png", "rocket.png"]
    odd = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(0))  # not 8-bit exact
    save_image(odd, tmp_path / "odd.png")
    from_png = PairDataModule(tmp_path / "odd.png", tmp_path / "odd.png", long_side=30)
    from_memory = PairDataModule.from_tensors(odd[None], odd, long_side=30)
    assert torch.equal(from_memory.load_content(17), from_png.load_content(17))
    with pytest.raises(ConfigError, match=r"data.style: expected an image tensor shaped \(3, H, W\)"):
        PairDataModule.from_tensors(odd, odd[:2])


def test_evaluation_candidate_writes_nothing_and_equals_the_file_run(photos, tmp_path, monkeypatch) -> None:
    """evaluate.py's candidate optimises the pair in memory: no file is written, and the result is the one of
    the same pair optimised through train.py's file path."""
    content = load_image_tensor(photos["coffee"], size=32)[None]  # 32 x 48, as data.long_side=48 loads it
    style = load_image_tensor(photos["rocket"], size=32)[None]
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    candidate = gatys_candidate({"_target_": "styletransfer.methods.gatys.GatysModule", **FAST}, RANDOM_ENCODER,
                                {"steps": 2}, torch.device("cpu"))
    result = candidate.stylise(content, style, 1.0)
    assert os.listdir(".") == [] and result.shape == (1, 3, 32, 48)
    model = GatysModule(RANDOM_ENCODER, snapshot_every=0, **FAST)
    _fit(model, PairDataModule(photos["coffee"], photos["rocket"], long_side=48), tmp_path / "files", steps=2)
    assert torch.equal(result, model.output().clamp(0, 1))


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
    with pytest.raises(ConfigError, match=r"method.style_layers=.*unknown VGG-19 layer name\(s\) \['relu6_1'\]"):
        GatysModule(RANDOM_ENCODER, style_layers=["relu1_1", "relu6_1"])  # GatysSettings checks every key
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

@pytest.mark.slow
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
