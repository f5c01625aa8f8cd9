"""AdaIN behind a torchvision backbone (issue 22): the encoder's file sets the bottleneck and style layers, the
configurable decoder takes the bottleneck's channels and stride (8 or 16) and gives the content's size, a tiny run
lowers the loss, and the model files rebuild the backbone for stylising, export and evaluation."""

from __future__ import annotations

import contextlib
import io

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from adain_checkpoints import write_backbone_decoder
from conftest import compose
from torch.utils.data import DataLoader

from styletransfer.data.images import load_image_tensor, save_image
from styletransfer.data.sample import SampleDataModule
from styletransfer.engine.instantiate import instantiate_checked
from styletransfer.methods.adain import AdaINModule
from styletransfer.methods.adain.checkpoint import load_model
from styletransfer.methods.adain.decoders import ConfigurableDecoder, build_decoder, decoder_record
from styletransfer.methods.adain.model import encode
from styletransfer.methods.adain.styliser import Styliser
from styletransfer.nn.backbones import BackboneEncoder
from styletransfer.runtime.errors import ConfigError, EncoderMismatchError

RANDOM = ["encoder.weights=random", "encoder.download=false"]


def _module(*overrides: str, **settings) -> AdaINModule:
    cfg = compose("train", "method=adain", *overrides)
    from omegaconf import OmegaConf

    return instantiate_checked(cfg.method, encoder=OmegaConf.to_container(cfg.encoder, resolve=True), **settings)


@pytest.mark.parametrize(
    "overrides, bottleneck, style_layers, channels, stride",
    [
        (["encoder=resnet50"], "layer2", ["relu", "layer1", "layer2"], 512, 8),
        (["encoder=resnet50", "method.bottleneck=layer3"], "layer3", ["relu", "layer1", "layer2"], 1024, 16),
        (["encoder=convnext_tiny"], "features.3", ["features.0", "features.1", "features.3"], 192, 8),
    ],
)
def test_the_encoder_file_sets_the_layers_and_the_decoder_takes_the_bottleneck(
    overrides, bottleneck, style_layers, channels, stride
):
    model = _module(*overrides, *RANDOM)
    assert isinstance(model.encoder, BackboneEncoder) and model.bottleneck == bottleneck
    assert model.style_layers == style_layers and model.hparams["bottleneck"] == bottleneck
    # decoder=mirror (the default) fits VGG's relu4_1 only: behind a backbone it is the configurable decoder
    assert isinstance(model.decoder, ConfigurableDecoder)
    record = decoder_record(model.decoder)
    assert (record["in_channels"], record["stride"]) == (channels, stride) and model.hparams["decoder"] == record
    content = torch.rand(1, 3, 37, 53)
    assert model.stylise(content, torch.rand(1, 3, 40, 40)).shape == content.shape


def test_the_vgg_default_keeps_the_paper_layers_and_the_mirror():
    model = _module("encoder.weights=random")
    assert model.bottleneck == "relu4_1" and model.style_layers == ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
    assert decoder_record(model.decoder) == {"name": "mirror"}


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["encoder=resnet50", "method.bottleneck=layer1"], "=layer1 is resnet50 layer1 (256 channels, stride 4)"),
        (["method.bottleneck=relu3_1"], "method.bottleneck=relu3_1 is vgg19 relu3_1 (256 channels, stride 4)"),
        (["encoder=resnet50", "method.style_layers=[relu1_1]"], "method.style_layers=['relu1_1']"),
        (["encoder=resnet50", "method.bottleneck=layer9"], "method.bottleneck=['layer9']: resnet50 has no node"),
        (["encoder=resnet50", "decoder=configurable", "decoder.stride=16"], "does not fit the encoder's resnet50"),
        (["encoder=resnet50", "decoder=configurable", "decoder.in_channels=256"], "256 input channels at stride 8"),
    ],
)
def test_a_bottleneck_or_decoder_that_cannot_work_is_refused_in_one_line(overrides, words):
    with pytest.raises(ConfigError) as info:
        _module(*overrides, *RANDOM)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.fixture(scope="module")
def resnet() -> BackboneEncoder:
    return BackboneEncoder(["layer2", "layer3"], "resnet50", weights="random")


@pytest.mark.parametrize(
    "bottleneck, settings",
    [("layer2", {}), ("layer3", {}), ("layer3", {"width": 0.25, "residual_blocks": 2, "upsample": "pixel_shuffle"})],
)
def test_the_decoder_for_a_bottleneck_gives_the_contents_size(resnet, bottleneck, settings):
    """Sizes that are not multiples of the bottleneck's stride (8 or 16), behind the real backbone's maps; one
    decoder per layout serves every size."""
    channels, stride = resnet.feature_info([bottleneck])[bottleneck]
    decoder = build_decoder({"name": "configurable", **settings}, channels, stride)
    for size in [(37, 53), (50, 70), (33, 47)]:
        features = encode(resnet, torch.rand(1, 3, *size), bottleneck=bottleneck)
        assert features.shape[1] == channels and features.shape[-1] == -(-size[1] // stride), size
        assert decoder(features, size).shape == (1, 3, *size)
        assert decoder(features).shape[-2:] == (features.shape[-2] * stride, features.shape[-1] * stride), size


def _lively(encoder: BackboneEncoder, bottleneck: str, **settings) -> Styliser:
    """A Styliser behind ``encoder`` at ``bottleneck`` with a seeded configurable decoder (width 0.25), its last
    convolution rescaled per colour channel so that results have contrast (std about 0.15 around 0.5; a random
    decoder's output hardly varies, which would make any agreement trivial)."""
    channels, stride = encoder.feature_info([bottleneck])[bottleneck]
    torch.manual_seed(0)
    model = Styliser(encoder, build_decoder({"name": "configurable", "width": 0.25, **settings}, channels, stride),
                     bottleneck=bottleneck)  # fmt: skip
    last = model.decoder.stages[-1][-1]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        raw = model.decoder(encode(encoder, torch.rand(1, 3, 64, 64, generator=g), bottleneck=bottleneck), (64, 64))
        scale = 0.15 / raw.std(dim=(0, 2, 3))
        last.weight.mul_(scale[:, None, None, None])
        last.bias.mul_(scale).add_(0.5 - scale * raw.mean(dim=(0, 2, 3)))
    return model


@pytest.mark.parametrize(
    "bottleneck, size, tile, margin",
    [("layer2", (48, 520), 320, 88), ("layer3", (32, 800), 640, 240)],
)
def test_a_backbone_model_tiles_as_it_stylises_whole(resnet, monkeypatch, bottleneck, size, tile, margin):
    """Windows on the bottleneck's grid (8 or 16 px) with the measured reach as margin (ResNet-50 to layer2: 84 px,
    to layer3: 228 px, rounded up to the stride) give the untiled result up to float rounding (measured 1.6e-5 and
    9e-5), three windows along the width; a window stylised with its own statistics differs."""
    from styletransfer.apps import tiling

    model = _lively(resnet, bottleneck)
    needs = model.tiling()
    stride = resnet.feature_info([bottleneck])[bottleneck][1]
    assert needs is not None and (needs.align, needs.margin) == (stride, margin)
    monkeypatch.setattr(tiling, "MIN_TILE", 128)  # below the command's 256 px to keep the images small
    assert tiling.smallest_tile(needs) == 2 * margin + tiling.BLEND + 2 * stride
    assert len(tiling.spans(size[1], tile, needs)) == 3
    g = torch.Generator().manual_seed(1)
    content = F.interpolate(torch.rand(1, 3, size[0] // 8, size[1] // 8, generator=g), size=size, mode="bicubic")
    content, style = content.clamp(0, 1), torch.rand(1, 3, 64, 64, generator=g)
    untiled = model.stylise(content, [style])
    tiled = tiling.stylise_any_size(model, content, [style], max_tile=tile)
    assert float(untiled.std()) > 0.05
    assert float((tiled - untiled).abs().max()) <= 2e-4
    # a window with its own statistics would not do: the pass over the whole image matters
    window = tiling.spans(size[1], tile, needs)[1]
    alone = model.stylise(content[..., window.start : window.end], [style])
    kept = (alone - untiled[..., window.start : window.end])[..., margin:-margin]
    assert float(kept.abs().mean()) > 1e-3
    with pytest.raises(ConfigError, match=f"at least {tiling.smallest_tile(needs)} px for this model"):
        tiling.stylise_any_size(model, content, [style], max_tile=tiling.smallest_tile(needs) - stride)


def test_a_stride_16_decoder_adds_one_stage_and_keeps_the_stride_8_layout():
    eight, sixteen = build_decoder({"name": "configurable"}), build_decoder({"name": "configurable"}, 1024, 16)
    assert len(sixteen.ups) == 4 == len(eight.ups) + 1
    assert sixteen.head[1].in_channels == 1024 and sixteen.head[1].out_channels == 512
    assert list(eight.state_dict()) == list(build_decoder({"name": "configurable", "stride": 8}).state_dict())
    # a record from before stride was recorded is of stride 8
    assert decoder_record(build_decoder({"name": "configurable", "in_channels": 512}))["stride"] == 8


def test_a_tiny_run_behind_resnet50_lowers_the_loss_and_its_files_rebuild_it(tmp_path):
    """``train.py method=adain encoder=resnet50 encoder.weights=random`` (the paper's lr 1e-4), 14 steps on one
    batch of the sample set, with a narrow configurable decoder: the default one (the same module at width 1) trains
    and rebuilds from its decoder.pth in test_the_quickstart_behind_resnet50_trains_and_stylises."""
    pl.seed_everything(0)
    datamodule = SampleDataModule(root=str(tmp_path / "sample"), short_side=40, crop_size=32, batch_size=2, val_pairs=2)
    decoder = ["decoder=configurable", "decoder.width=0.25", "decoder.residual_blocks=2"]
    model = _module("encoder=resnet50", *RANDOM, *decoder)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    pairs = [{"content": batch["content"][i], "style": batch["style"][i]} for i in range(2)]
    with torch.no_grad():
        before = model.losses(batch["content"], batch["style"])["loss/total"].item()
    trainer = pl.Trainer(
        max_steps=14, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
        enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=DataLoader(pairs * 14, batch_size=2))
    with torch.no_grad():
        after = model.losses(batch["content"], batch["style"])["loss/total"].item()
    assert after < 0.9 * before, (before, after)

    trainer.save_checkpoint(tmp_path / "last.ckpt")
    content, style = torch.rand(1, 3, 45, 61), torch.rand(1, 3, 40, 40)
    expected = model.eval().stylise(content, style)
    for path in (tmp_path / "last.ckpt", tmp_path / "checkpoints" / "decoder.pth"):
        styliser = Styliser.from_checkpoint(path)
        assert isinstance(styliser.encoder, BackboneEncoder) and styliser.describe()["bottleneck"] == "layer2"
        assert styliser.encoder.spec["fingerprint"] == model.encoder.spec["fingerprint"]
        assert decoder_record(styliser.decoder) == decoder_record(model.decoder)
        assert torch.equal(styliser.stylise(content, style), expected)
    resumed = AdaINModule.load_from_checkpoint(tmp_path / "last.ckpt")
    assert resumed.bottleneck == "layer2" and decoder_record(resumed.decoder) == decoder_record(model.decoder)


def _result(folder) -> torch.Tensor:
    """The one image the stylise command wrote into ``folder``."""
    (path,) = folder.iterdir()
    return load_image_tensor(path)


@pytest.mark.slow
def test_the_stylise_command_runs_and_tiles_a_backbone_model_and_refuses_another_encoder(tmp_path, capsys):
    """ResNet-50 to layer3 (stride 16, a 240 px margin): ``--max-tile 576`` stylises a 48 x 600 image in two
    windows as it stylises it whole; a tile below two margins, the blend and the alignment is refused in one line."""
    from styletransfer.cli.stylise import main as stylise_main

    path = write_backbone_decoder(tmp_path / "decoder.pth", "resnet50", "layer3", width=0.25)
    save_image(torch.rand(3, 50, 70), tmp_path / "c.png")
    big = F.interpolate(torch.rand(1, 3, 6, 75), size=(48, 600), mode="bicubic")[0].clamp(0, 1)
    save_image(big, tmp_path / "b.png")
    save_image(torch.rand(3, 40, 40), tmp_path / "s.png")
    # the 40 px style as it is (--style-short-side 0): the default 512 px costs each call ResNet-50 at 512 x 512
    common = [str(path), "--style", str(tmp_path / "s.png"), "--device", "cpu", "--style-short-side", "0"]
    assert stylise_main([*common, "--content", str(tmp_path / "c.png"), "-o", str(tmp_path / "out")]) == 0
    assert _result(tmp_path / "out").shape == (3, 50, 70)
    tiles = [*common, "--content", str(tmp_path / "b.png")]
    assert stylise_main([*tiles, "--max-tile", "576", "-o", str(tmp_path / "tiled")]) == 0
    assert stylise_main([*tiles, "--max-tile", "0", "-o", str(tmp_path / "whole")]) == 0
    tiled, whole = _result(tmp_path / "tiled"), _result(tmp_path / "whole")
    assert tiled.shape == whole.shape == (3, 48, 600) and float((tiled - whole).abs().max()) <= 1.5 / 255
    assert stylise_main([*tiles, "--max-tile", "256", "-o", str(tmp_path / "small")]) == 1
    assert "at least 544 px for this model" in capsys.readouterr().err
    with pytest.raises(EncoderMismatchError, match=r"\(resnet50, weights='random'.* seed 4.*\(resnet50, weights="):
        load_model(path, {"weights": "random", "seed": 4})


@pytest.mark.slow
@pytest.mark.parametrize("network, bottleneck", [("resnet50", "layer2.0"), ("convnext_tiny", "features.3.0")])
@pytest.mark.usefixtures("one_onnx_registry")  # conftest: one registry of torchlib functions
def test_a_backbone_model_exports_with_check_and_runs_in_onnxruntime(tmp_path, network, bottleneck):
    """Each network's ops (ResNet's batch norms, max pooling and downsampling shortcuts, ConvNeXt's layer norms,
    permutes and its downsampling layer) through the ONNX exporter, at the first block of the stride-8 stage (a
    bottleneck may name any node): the export traces every block up to it, and each further block repeats ops the
    graph already holds (the rest of layer2 or features.3 cost 1.5-2 s more, layer3's six more blocks a third more
    again; its stride-16 decoder has one more stage of the same upsampling and tiles and stylises through the
    command above). The image graph alone (``--part image``), which
    holds the backbone and the decoder: the style graph is the same encoder without them (StyleGraph, checked with
    both graphs behind VGG by test_export.py), so onnxruntime stylises with the PyTorch model's style code."""
    from styletransfer.apps.onnx_runtime import OnnxModel
    from styletransfer.cli.export import main as export_main
    from styletransfer.protocol.controls import Controls
    from styletransfer.protocol.registry import load_model as load_any

    path = write_backbone_decoder(tmp_path / "decoder.pth", network, bottleneck, width=0.25)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = export_main([str(path), "-o", str(tmp_path / "model.onnx"), "--part", "image", "--check"])
    assert code == 0 and "check passed" in stdout.getvalue(), stdout.getvalue()
    g = torch.Generator().manual_seed(0)
    content, style = torch.rand(1, 3, 50, 70, generator=g), torch.rand(3, 40, 40, generator=g)
    model = load_any(path)
    controls = Controls(style_codes=model.encode_styles([style]))
    ours = model.stylise(content, [style], controls)
    theirs = OnnxModel(tmp_path / "model.onnx").stylise(content, [style], controls)
    assert ours.shape == theirs.shape == (1, 3, 50, 70) and float((ours - theirs).abs().max()) <= 1 / 255


@pytest.mark.slow
def test_the_quickstart_behind_resnet50_trains_and_stylises(tmp_path):
    """The issue's command, ``python train.py experiment=quickstart encoder=resnet50 encoder.weights=random``
    (2 steps), then ``styletransfer-stylise`` on its decoder.pth (the 40 px style as it is, ``--style-short-side 0``:
    the default 512 px cost the call ResNet-50 at 512 x 512)."""
    import yaml
    from conftest import train_in_process

    from styletransfer.cli.stylise import main as stylise_main

    run = tmp_path / "quick"
    train_in_process("experiment=quickstart", "encoder=resnet50", "encoder.weights=random", "trainer=cpu",
                     "trainer.max_steps=2", f"data.root={tmp_path / 'sample'}", run_dir=run)  # fmt: skip
    recorded = yaml.safe_load((run / "run_config.yaml").read_text())
    assert recorded["encoder_used"]["network"] == "resnet50" and recorded["method"]["bottleneck"] == "layer2"
    save_image(torch.rand(3, 50, 70), tmp_path / "c.png")
    save_image(torch.rand(3, 40, 40), tmp_path / "s.png")
    style = ["--style", str(tmp_path / "s.png"), "--style-short-side", "0"]
    images = ["--content", str(tmp_path / "c.png"), *style, "--device", "cpu"]
    assert stylise_main([str(run / "checkpoints" / "decoder.pth"), *images, "-o", str(tmp_path / "out")]) == 0
    assert _result(tmp_path / "out").shape == (3, 50, 70)
    # the export --check of a backbone model: test_a_backbone_model_exports_with_check_and_runs_in_onnxruntime
