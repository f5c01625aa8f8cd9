"""The ``decoder=`` group: the mirror stays AdaINDecoder, the configurable decoder keeps the output size rule, files
record the decoder and rebuild it, tiling's margin covers the decoder's reach, and a narrow decoder trains."""

from __future__ import annotations

import contextlib
import io

import pytest
import pytorch_lightning as pl
import torch
from conftest import RANDOM_ENCODER, compose
from omegaconf import OmegaConf

from styletransfer.data.images import save_image
from styletransfer.data.sample import SampleDataModule
from styletransfer.engine.instantiate import instantiate_checked
from styletransfer.methods.adain.checkpoint import load_model, save_decoder
from styletransfer.methods.adain.decoders import (
    ConfigurableDecoder,
    build_decoder,
    decoder_config,
    decoder_record,
)
from styletransfer.methods.adain.model import AdaINDecoder, encode
from styletransfer.methods.adain.tiled import MARGIN, margin_for
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.runtime.errors import CheckpointError, ConfigError

VARIANTS = [
    {"width": 1.0, "residual_blocks": 0, "upsample": "nearest"},
    {"width": 0.5, "residual_blocks": 2, "upsample": "nearest"},
    {"width": 0.25, "residual_blocks": 0, "upsample": "pixel_shuffle"},
    {"width": 0.25, "residual_blocks": 2, "upsample": "pixel_shuffle"},
]


def configurable(**settings) -> ConfigurableDecoder:
    decoder = build_decoder({"name": "configurable", **settings})
    assert isinstance(decoder, ConfigurableDecoder)
    return decoder


def spec() -> dict:
    return dict(VGGEncoder(["relu4_1"], weights="random", seed=0).spec)


def test_the_default_group_builds_the_mirror_itself():
    cfg = compose("train", "method=adain")
    group = OmegaConf.to_container(cfg.method.decoder, resolve=True)
    torch.manual_seed(0)
    reference = AdaINDecoder()
    torch.manual_seed(0)
    built = build_decoder(group)
    assert type(built) is AdaINDecoder and decoder_config(group) == {"name": "mirror"}
    assert list(built.state_dict()) == list(reference.state_dict())
    features = torch.randn(1, 512, 5, 7)
    assert torch.equal(built(features, (37, 53)), reference(features, (37, 53)))


def test_the_group_reaches_the_module_and_its_record():
    cfg = compose("train", "method=adain", "decoder=configurable", "decoder.width=0.5", "decoder.residual_blocks=1")
    model = instantiate_checked(cfg.method, encoder=RANDOM_ENCODER)
    assert isinstance(model.decoder, ConfigurableDecoder)
    record = {"name": "configurable", "in_channels": 512, "width": 0.5, "residual_blocks": 1, "upsample": "nearest",
              "stride": 8}
    assert dict(model.hparams["decoder"]) == record == decoder_record(model.decoder)
    assert model.decoder.head[1].out_channels == 128


@pytest.mark.parametrize("settings", VARIANTS, ids=lambda s: "-".join(map(str, s.values())))
@pytest.mark.parametrize("map_size", [(6, 9), (7, 10)])  # relu4_1 of 53 x 77 with floor (torchvision) / ceil pooling
def test_each_variant_gives_the_contents_size(settings, map_size):
    decoder = configurable(**settings)
    out = decoder(torch.randn(2, 512, *map_size), output_size=(53, 77))
    assert out.shape == (2, 3, 53, 77)
    assert decoder(torch.randn(1, 512, 4, 5)).shape == (1, 3, 32, 40)  # no size: x8, as the mirror


def test_width_scales_the_channels_and_other_encoders_plug_in():
    narrow = configurable(width=0.25, in_channels=256)
    convs = [m for m in narrow.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].in_channels == 256 and {c.out_channels for c in convs} == {64, 32, 16, 3}
    full = sum(p.numel() for p in AdaINDecoder().parameters())
    assert sum(p.numel() for p in configurable().parameters()) == full  # width 1, no extras: the mirror's size
    assert sum(p.numel() for p in narrow.parameters()) < full / 10  # about width^2 (the input conv: width)


@pytest.mark.parametrize(
    "group, words",
    [
        ({"name": "mirror", "width": 0.5}, "decoder.width=0.5 needs decoder=configurable"),
        ({"name": "configurable", "width": 0.1}, "decoder.width=0.1 must be in [0.25, 1.0]"),
        ({"name": "configurable", "residual_blocks": -1}, "decoder.residual_blocks=-1"),
        ({"name": "configurable", "upsample": "bilinear"}, "nearest, pixel_shuffle"),
        ({"name": "configurable", "depth": 3}, "decoder.depth is not a decoder setting"),
        ({"name": "unet"}, "choose decoder=mirror or decoder=configurable"),
    ],
)
def test_bad_settings_name_the_setting_and_the_fix(group, words):
    with pytest.raises(ConfigError) as info:
        decoder_config(group)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_file_round_trip_rebuilds_the_same_decoder(tmp_path):
    torch.manual_seed(1)
    decoder = configurable(width=0.25, residual_blocks=2, upsample="pixel_shuffle")
    save_decoder(decoder, spec(), tmp_path / "decoder.pth")
    _, loaded, kind = load_model(tmp_path / "decoder.pth")
    assert kind == "exported" and isinstance(loaded, ConfigurableDecoder)
    assert decoder_record(loaded) == decoder_record(decoder)
    features = torch.randn(1, 512, 6, 9)
    assert torch.equal(loaded(features, (53, 77)), decoder(features, (53, 77)))


def test_a_file_without_a_record_is_the_mirror_and_mismatches_name_both(tmp_path):
    save_decoder(AdaINDecoder(), spec(), tmp_path / "mirror.pth")
    old = torch.load(tmp_path / "mirror.pth", weights_only=True)
    del old["decoder_config"]  # a file from before decoder=
    torch.save(old, tmp_path / "old.pth")
    assert type(load_model(tmp_path / "old.pth")[1]) is AdaINDecoder

    save_decoder(configurable(width=0.25), spec(), tmp_path / "narrow.pth")
    narrow = torch.load(tmp_path / "narrow.pth", weights_only=True)
    del narrow["decoder_config"]
    torch.save(narrow, tmp_path / "unrecorded.pth")
    with pytest.raises(CheckpointError, match=r"do not fit the decoder it records, mirror \(no decoder record"):
        load_model(tmp_path / "unrecorded.pth")
    narrow["decoder_config"] = {**decoder_record(configurable(width=0.25)), "width": 0.5}
    torch.save(narrow, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"wrong.pth do not fit the decoder it records, configurable \(width 0.5"):
        load_model(tmp_path / "wrong.pth")


def _reach(decoder: torch.nn.Module, side: int = 320, width: int = 32) -> int:
    """How far (px) an input pixel changes one output pixel, encoder and decoder together, by the gradient, along
    the rows of a ``side`` x ``width`` image (the reach along one axis does not depend on the other's size: a narrow
    strip costs a tenth of the square); the reach must end inside the image, or it would be cut short."""
    torch.manual_seed(0)
    encoder = VGGEncoder(["relu4_1"], weights="random", seed=0, arch="vgg_normalised")
    image = torch.rand(1, 3, side, width, requires_grad=True)
    out = decoder(encode(encoder, image), (side, width))
    centre = side // 2
    out[..., centre, width // 2].sum().backward()
    rows = image.grad.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
    assert 0 < rows.min() and rows.max() < side - 1, "the reach meets the image's border: make side larger"
    return int(max(centre - rows.min(), rows.max() - centre))


@pytest.mark.parametrize(
    "settings",
    [None, {"residual_blocks": 2, "upsample": "nearest"}, {"residual_blocks": 2, "upsample": "pixel_shuffle"}],
)
def test_the_tiling_margin_covers_the_decoders_reach(settings):
    decoder = AdaINDecoder() if settings is None else configurable(width=0.25, **settings)
    reach = _reach(decoder)
    assert reach <= margin_for(decoder)
    if settings is not None:
        assert reach > MARGIN  # the mirror's margin would not do: the decoder's own is needed


def test_a_narrow_decoder_trains_and_its_checkpoint_rebuilds_it(tmp_path):
    """12 steps on 16 px crops (the smallest relu4_1 takes; the width, not the size, is under test): the loss ends
    at 0.85, 0.82, 0.50 and 0.72 of the first over seeds 0-3 (24 px crops gave 0.68-0.85)."""
    pl.seed_everything(0)
    datamodule = SampleDataModule(root=str(tmp_path / "sample"), short_side=20, crop_size=16, batch_size=2, val_pairs=2)
    model = instantiate_checked(
        compose("train", "method=adain", "decoder=configurable", "decoder.width=0.25").method,
        encoder=RANDOM_ENCODER,
        lr=3e-3,
        style_layers=["relu1_1", "relu2_1"],
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    batch = datamodule.on_after_batch_transfer(batch, 0)
    with torch.no_grad():
        before = model.losses(batch["content"], batch["style"])["loss/total"].item()
    trainer = pl.Trainer(
        max_steps=12, accelerator="cpu", logger=False, enable_progress_bar=False, limit_val_batches=0,
        default_root_dir=tmp_path, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    with torch.no_grad():
        after = model.losses(batch["content"], batch["style"])["loss/total"].item()
    assert after < 0.9 * before, (before, after)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    _, loaded, kind = load_model(tmp_path / "last.ckpt")
    assert kind == "lightning" and decoder_record(loaded)["width"] == 0.25
    features = torch.randn(1, 512, 3, 4)
    assert torch.equal(loaded(features, (24, 30)), model.decoder.eval()(features, (24, 30)))


@pytest.mark.slow
@pytest.mark.usefixtures("one_onnx_registry")  # conftest: one registry of torchlib functions
def test_a_configurable_decoder_exports_with_check_and_stylises_tiled(tmp_path):
    """The narrow pixel-shuffle decoder with a residual block through the ONNX exporter and --check at both sizes;
    only the image graph (``--part image``): the decoder is in it alone, and the style graph (the encoder) is the
    one a mirror decoder's model exports, checked with both graphs by test_export.py. The command then stylises a
    120 x 300 image in 256 px tiles as it does whole."""
    from styletransfer.cli.export import main as export_main
    from styletransfer.cli.stylise import main as stylise_main

    torch.manual_seed(2)
    decoder = configurable(width=0.25, residual_blocks=1, upsample="pixel_shuffle")
    save_decoder(decoder, spec(), tmp_path / "decoder.pth")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = export_main([str(tmp_path / "decoder.pth"), "-o", str(tmp_path / "model.onnx"), "--part", "image",
                           "--check"])
    assert code == 0 and "check passed" in stdout.getvalue(), stdout.getvalue()
    save_image(torch.rand(3, 120, 300), tmp_path / "big.png")
    save_image(torch.rand(3, 32, 32), tmp_path / "s.png")
    common = [str(tmp_path / "decoder.pth"), "--content", str(tmp_path / "big.png"), "--style", str(tmp_path / "s.png"),
              "--device", "cpu", "--style-short-side", "0"]  # fmt: skip
    assert stylise_main([*common, "--max-tile", "256", "-o", str(tmp_path / "tiled")]) == 0
    assert stylise_main([*common, "--max-tile", "0", "-o", str(tmp_path / "whole")]) == 0
    from styletransfer.data.images import load_image_tensor

    tiled, whole = (load_image_tensor(next((tmp_path / d).iterdir())) for d in ("tiled", "whole"))
    assert tiled.shape == whole.shape == (3, 120, 300)
    assert float((tiled - whole).abs()[..., 16:-16, 16:-16].max()) <= 1.5 / 255
