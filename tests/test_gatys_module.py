"""Neural Style (Gatys): the LightningModule's optimisation (first steps against the optimisers' formulas),
outputs and snapshots, coarse-to-fine, several contents and styles, colour preservation, in-memory pairs, the
evaluation candidate, bad inputs, the non-finite stop, when metrics are logged, and `python train.py method=gatys`
end to end."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import RANDOM_ENCODER, train_in_process
from gatys_helpers import FAST, fit, small_photos
from PIL import Image
from pytorch_lightning.loggers import CSVLogger

from styletransfer.data.images import ImageLoadError, load_image_tensor, save_image
from styletransfer.data.pair import PairDataModule
from styletransfer.methods.gatys import GatysModule
from styletransfer.methods.gatys.plugin import config_candidate
from styletransfer.nn.colour import rgb_to_luma_chroma
from styletransfer.nn.stats import gram_matrix
from styletransfer.runtime.errors import ConfigError, NonFiniteLossError


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    return small_photos(tmp_path_factory.mktemp("gatys_photos"))


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

    fit(model, data, tmp_path, steps=6, callbacks=[Record()])
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
    fit(model, data, tmp_path, steps=4)
    with Image.open(tmp_path / "stylised.png") as image:
        assert image.size == (40, 27)  # the content's aspect ratio, longer side data.long_side
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["step_00002.png", "step_00004.png"]


def test_coarse_to_fine_ends_at_the_last_scale_with_adam_state_carried(photos, tmp_path) -> None:
    model = GatysModule(RANDOM_ENCODER, optimizer="adam", lr=0.02, scales=[24, 40], steps_per_scale=[3, 2],
                        ema_decay=0.9, snapshot_every=0, **FAST)
    data = PairDataModule(photos["coffee"], photos["chelsea"], long_side=64)
    trainer = fit(model, data, tmp_path, steps=None)  # steps_per_scale sets the length: 5 iterations
    assert trainer.global_step == 5 and model.scale_index == 1
    assert tuple(model.image.shape) == (1, 3, 27, 40)
    state = trainer.optimizers[0].state[model.image]
    assert state["exp_avg"].shape == model.image.shape and int(state["step"]) == 5
    with Image.open(tmp_path / "stylised.png") as image:
        assert image.size == (40, 27)

def test_several_contents_and_blended_styles(photos, tmp_path) -> None:
    model = GatysModule(RANDOM_ENCODER, style_blend=[0.7, 0.3], init="style", snapshot_every=0, **FAST)
    data = PairDataModule([photos["astronaut"], photos["coffee"]], [photos["chelsea"], photos["rocket"]],
                          long_side=32)
    fit(model, data, tmp_path, steps=2)
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
    fit(model, data, tmp_path, steps=3)
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
    fit(model, data, tmp_path, steps=1)
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
    candidate = config_candidate({"_target_": "styletransfer.methods.gatys.GatysModule", **FAST}, RANDOM_ENCODER,
                                {"steps": 2}, torch.device("cpu"))
    result = candidate.stylise(content, style, 1.0)
    assert os.listdir(".") == [] and result.shape == (1, 3, 32, 48)
    model = GatysModule(RANDOM_ENCODER, snapshot_every=0, **FAST)
    fit(model, PairDataModule(photos["coffee"], photos["rocket"], long_side=48), tmp_path / "files", steps=2)
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
        fit(GatysModule(RANDOM_ENCODER, snapshot_every=0), small, tmp_path, steps=3)
    # mean/std needs a 2x2 map at the deepest style layer (relu5_1 is 1/16): enough px for Gram is not enough
    medium = PairDataModule(photos["chelsea"], photos["chelsea"], long_side=24)
    with pytest.raises(ValueError, match="only 1[6-7] px on its shorter side; the layers used need >= 32 px"):
        fit(GatysModule(RANDOM_ENCODER, style_statistic="mean_std", snapshot_every=0), medium, tmp_path, steps=1)
    model = GatysModule(RANDOM_ENCODER, style_blend=[0.5, 0.3, 0.2], snapshot_every=0, **FAST)
    data = PairDataModule(photos["coffee"], [photos["chelsea"], photos["rocket"]], long_side=32)
    with pytest.raises(ValueError, match="style_blend=.*3 weight.*2 style image"):
        fit(model, data, tmp_path, steps=3)
    assert model.image is None and not (tmp_path / "stylised.png").exists()


def test_non_finite_loss_stops_with_message_and_keeps_last_good_image(photos, tmp_path) -> None:
    model = GatysModule(RANDOM_ENCODER, snapshot_every=0, **FAST)
    data = PairDataModule(photos["coffee"], photos["chelsea"], long_side=32)

    class Poison(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                module.hparams.style_weight = float("nan")

    with pytest.raises(NonFiniteLossError, match=r"not finite at step 2 .*last good image is in .*stylised.png"):
        fit(model, data, tmp_path, steps=5, callbacks=[Poison()])
    assert (tmp_path / "stylised.png").is_file()


@pytest.mark.parametrize("settings, rows", [({}, [2, 5, 6]), ({"optimizer": "device_lbfgs", "iterations_per_step": 2},
                                                              [2, 3])], ids=["lbfgs", "device_lbfgs"])
def test_metrics_are_logged_at_logger_steps_and_the_final_ones_are_the_last_steps(photos, tmp_path, settings,
                                                                                   rows) -> None:
    """The module logs only on the Lightning steps whose metrics reach the loggers (log_every_n_steps=3; each
    self.log costs host time) and on the last step, so the run's final metrics are the last iteration's (the
    loggers get them too: the module stops the run there). 7 iterations: 7 Lightning steps (rows 0 to 6) with
    L-BFGS, 4 with the device L-BFGS (2 + 2 + 2 + 1 iterations)."""
    model = GatysModule(RANDOM_ENCODER, snapshot_every=0, output_name=None, **FAST, **settings)
    logged, per_step = [], []
    original_log = model.log

    def recording_log(name, value, *args, **kwargs):
        if name == "loss/total":
            logged.append(float(value.detach()))
        return original_log(name, value, *args, **kwargs)

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            per_step.append(float(outputs["loss"] if outputs else module._loop.losses["loss/total"]))

    model.log = recording_log
    data = PairDataModule(photos["astronaut"], photos["coffee"], long_side=32)
    trainer = fit(model, data, tmp_path, steps=7, callbacks=[Record()], logger=CSVLogger(tmp_path),
                  log_every_n_steps=3)
    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in written] == rows
    assert [float(row["loss/total"]) for row in written] == [per_step[step] for step in rows]
    assert all(row["loss/style/relu3_1"] and float(row["scale"]) == 32 for row in written)
    assert logged == [per_step[step] for step in rows] and rows[-1] == len(per_step) - 1
    assert float(trainer.callback_metrics["loss/total"]) == per_step[-1] != per_step[-2]

# ---- end to end through Hydra ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_py_method_gatys_writes_the_image(photos, tmp_path) -> None:
    run_dir = tmp_path / "run"
    train_in_process(  # train.py's job in this process: the process itself is not under test
        "method=gatys", "data=pair", f"data.content={photos['astronaut']}", f"data.style={photos['coffee']}",
        "encoder.weights=random", "trainer=cpu", "trainer.max_steps=4", "data.long_side=32", "logger=csv",
        "method.snapshot_every=2", run_dir=run_dir,
    )
    with Image.open(run_dir / "stylised.png") as image:
        assert image.size == (32, 32)
    assert (run_dir / "snapshots" / "step_00004.png").is_file()
    metrics = (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert all(key in metrics for key in ("loss/total", "loss/content", "loss/style", "loss/tv"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert list(ckpt["state_dict"]) == ["image"]  # the encoder is rebuilt from its config, not stored
