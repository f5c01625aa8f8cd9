"""Universal style transfer (``method=wct``) against its authors' code, training, model files and the command.

The reference is sunshineatnoon/PytorchWCT at commit ee9d813: ``util.py`` (``WCT.whiten_and_color`` and
``WCT.transform``), ``WCT.py`` (``styleTransfer``: the cascade relu5_1 -> relu1_1, each level encoding the previous
level's image, the style encoded at every level) and ``modelsNIPS.py`` (``encoder1..5``: the vgg_normalised trunk
with floor max-pooling; ``decoder1..5``: reflection padding, 3x3 convolutions, ReLU, ``UpsamplingNearest2d(2)``),
written out from the published code (the whitening and colouring in tests/wct_reference.py), on the same random
weights. The authors decompose with ``torch.svd``, ours with ``torch.linalg.eigh``, both in float64: results agree
to float64 rounding carried through float32 convolutions, checked at 1e-5 of the image's range.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import RANDOM_ENCODER
from torch import nn
from wct_reference import reference_wct

from styletransfer.methods.wct.cascade import blend_codes, cascade, cascade_steps, encode_style
from styletransfer.methods.wct.checkpoint import save_decoders
from styletransfer.methods.wct.decoders import LEVELS, build_decoders
from styletransfer.methods.wct.styler import WCTStyler
from styletransfer.nn.encoder import build_encoder
from styletransfer.nn.pooling import MaxPool2d
from styletransfer.protocol.controls import Controls
from styletransfer.runtime.errors import ConfigError

# ---------------------------------------------------------------- the authors' computation, written out


#: modelsNIPS.py decoder1..decoder5: each 3x3 convolution (in, out) in order, "up" for UpsamplingNearest2d(2).
REF_DECODERS = {
    "relu1_1": [(64, 3)],
    "relu2_1": [(128, 64), "up", (64, 64), (64, 3)],
    "relu3_1": [(256, 128), "up", (128, 128), (128, 64), "up", (64, 64), (64, 3)],
    "relu4_1": [(512, 256), "up", (256, 256), (256, 256), (256, 256), (256, 128), "up", (128, 128), (128, 64),
                "up", (64, 64), (64, 3)],
    "relu5_1": [(512, 512), "up", (512, 512), (512, 512), (512, 512), (512, 256), "up", (256, 256), (256, 256),
                (256, 256), (256, 128), "up", (128, 128), (128, 64), "up", (64, 64), (64, 3)],
}  # fmt: skip


def ref_decoder(level, ours):
    """modelsNIPS decoder for ``level``: ReflectionPad2d(1), Conv2d(3x3), ReLU after every convolution but the
    last, UpsamplingNearest2d(scale_factor=2); its weights copied from our decoder's convolutions in order."""
    convs = iter(m for m in ours if isinstance(m, nn.Conv2d))
    layers = []
    plan = REF_DECODERS[level]
    for i, step in enumerate(plan):
        if step == "up":
            layers.append(nn.UpsamplingNearest2d(scale_factor=2))
            continue
        conv = nn.Conv2d(step[0], step[1], 3, 1, 0)
        source = next(convs)
        conv.weight, conv.bias = nn.Parameter(source.weight.clone()), nn.Parameter(source.bias.clone())
        layers += [nn.ReflectionPad2d((1, 1, 1, 1)), conv] + ([nn.ReLU(inplace=True)] if i < len(plan) - 1 else [])
    assert next(convs, None) is None
    return nn.Sequential(*layers)


def ref_encoder(level, encoder):
    """modelsNIPS encoderK: the vgg_normalised trunk up to ``level`` with nn.MaxPool2d(2, 2) (floor mode)."""
    modules = [nn.MaxPool2d(kernel_size=2, stride=2) if isinstance(m, MaxPool2d) else copy.deepcopy(m)
               for m in encoder.trunk[: encoder._index[level] + 1]]
    return nn.Sequential(*modules)


def ref_style_transfer(encoders, decoders, contentImg, styleImg, alphas):  # WCT.py styleTransfer (ee9d813)
    """Im5, Im4, Im3, Im2, Im1: each level's decoded image (the last is the result)."""
    image, images = contentImg, []
    for level in ("relu5_1", "relu4_1", "relu3_1", "relu2_1", "relu1_1"):
        sF = encoders[level](styleImg).data.cpu().squeeze(0)
        cF = encoders[level](image).data.cpu().squeeze(0)
        csF = reference_wct(cF, sF, alphas[level])
        image = decoders[level](csF)
        images.append(image)
    return images


@pytest.fixture(scope="module")
def parts():
    """A random vgg_normalised VGG-19 to relu5_1 (the authors' encoder) and five random decoders."""
    torch.manual_seed(0)
    encoder = build_encoder({**RANDOM_ENCODER, "arch": "vgg_normalised"}, list(LEVELS))
    return encoder, build_decoders(LEVELS).eval()


@pytest.fixture(scope="module")
def lively_encoder(parts):
    """The random encoder with its first (1x1, preprocessing) convolution scaled by 30, as the release's scales
    [0, 1] to caffe's 0-255: feature covariances far above the identity the content's gets, so that whitening and
    colouring are far from the identity. With the raw random weights they are not, and even a whitening with the
    wrong sign of exponent stays within 1e-5 of the authors' images (measured)."""
    encoder = copy.deepcopy(parts[0])
    with torch.no_grad():
        encoder.trunk[0].weight.mul_(30.0)
        encoder.trunk[0].bias.mul_(30.0)
    return encoder


@pytest.mark.parametrize("alpha, factors", [(1.0, {}), (0.8, {"relu5_1": 0.5, "relu1_1": 0.25})])
def test_the_cascade_equals_the_authors_code(parts, lively_encoder, alpha, factors):
    """Content 64 x 48, style 48 x 64 (other sizes), through both cascades on the same weights: every level's
    decoded image within 1e-5 of its range (measured here: equal; a biased covariance, a whitening exponent of the
    wrong sign or the matrices' order swapped each miss by 1e-4 to 7 times the range). Per-level alpha is the scalar
    times each level's factor, which the authors' ``transform`` takes level by level."""
    encoder, decoders = lively_encoder, parts[1]
    g = torch.Generator().manual_seed(1)
    content, style = torch.rand(1, 3, 48, 64, generator=g), torch.rand(1, 3, 64, 48, generator=g)
    styler = WCTStyler(encoder, decoders, level_alphas=factors)
    alphas = {level: alpha * factors.get(level, 1.0) for level in LEVELS}
    with torch.no_grad():
        expected = ref_style_transfer({lv: ref_encoder(lv, encoder) for lv in LEVELS},
                                      {lv: ref_decoder(lv, decoders[lv]) for lv in LEVELS}, content, style, alphas)
        code = encode_style(encoder, style, styler.levels)
        ours = list(cascade_steps(encoder, decoders, content, code, alphas, styler.levels))
    assert [level for level, _ in ours] == ["relu5_1", "relu4_1", "relu3_1", "relu2_1", "relu1_1"]
    for (level, image), reference in zip(ours, expected):
        scale = float(reference.abs().max())
        assert image.shape == reference.shape == content.shape and scale > 0, level
        torch.testing.assert_close(image, reference, rtol=0, atol=1e-5 * scale, msg=level)
    scale = float(expected[-1].abs().max())
    clamped = styler.stylise(content, [style], Controls(alpha=alpha))
    torch.testing.assert_close(clamped, expected[-1].clamp(0, 1), rtol=0, atol=1e-5 * scale)


def test_blending_styles_blends_their_means_and_covariances(parts):
    """Weights (1, 0) give the first style alone; (0.3, 0.7) give the cascade with the weighted means and
    covariances at every level (a cascade of three levels: the blending is the same at every level)."""
    encoder, decoders = parts
    styler = WCTStyler(encoder, decoders, levels=["relu3_1", "relu2_1", "relu1_1"])
    g = torch.Generator().manual_seed(2)
    content, a, b = (torch.rand(1, 3, 32, 48, generator=g) for _ in range(3))
    codes = styler.encode_styles([a, b])
    torch.testing.assert_close(styler.stylise(content, controls=Controls(style_codes=codes, weights=[1, 0])),
                               styler.stylise(content, [a]))
    assert sorted(codes[0]) == ["relu1_1", "relu2_1", "relu3_1"]
    mixed = {lv: tuple(0.3 * x + 0.7 * y for x, y in zip(codes[0][lv], codes[1][lv])) for lv in styler.levels}
    assert all(torch.equal(blend_codes(codes, [0.3, 0.7])[lv][i], mixed[lv][i]) for lv in styler.levels for i in (0, 1))
    alphas = dict.fromkeys(styler.levels, 1.0)
    with torch.no_grad():
        expected = cascade(encoder, decoders, content, mixed, alphas, styler.levels).clamp(0, 1)
    torch.testing.assert_close(styler.stylise(content, [a, b], Controls(weights=[0.3, 0.7])), expected)
    assert not torch.equal(styler.stylise(content, [a]), styler.stylise(content, [b]))


def test_bad_styles_levels_and_controls_are_one_line(parts):
    encoder, decoders = parts
    styler = WCTStyler(encoder, decoders)
    content = torch.rand(1, 3, 32, 32)
    for call, message in (
        (lambda: styler.stylise(content, [torch.full((3, 40, 40), 0.5)]), "style 0 has no variation at relu5_1"),
        (lambda: styler.stylise(content, [torch.rand(3, 16, 40)]), "style 0: 40x16 px is too small"),
        (lambda: styler.stylise(torch.rand(3, 24, 40), [torch.rand(3, 40, 40)]), "content: 40x24 px is too small"),
        (lambda: styler.stylise(content, [content], Controls(masks=[content[0, 0]])), "does not support masks"),
        (lambda: styler.onnx_graphs(), "ONNX has no operator for"),
        (lambda: WCTStyler(encoder, {"relu1_1": decoders["relu1_1"]}, levels=["relu2_1"]), "no decoder for relu2_1"),
        (lambda: WCTStyler(encoder, decoders, level_alphas={"relu5_1": 2}),
         r"level_alphas \(--level-alpha\): relu5_1=2 must be a number in \[0, 1\]"),
        (lambda: WCTStyler(encoder, decoders, levels=["relu6_1"]), r"levels=\['relu6_1'\]: unknown level"),
    ):
        with pytest.raises(ConfigError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------- training, files and the command


@pytest.fixture(scope="module")
def content_dir(tmp_path_factory):
    from conftest import SKIMAGE_DATA
    from PIL import Image

    root = tmp_path_factory.mktemp("wct") / "content"
    root.mkdir()
    for name in ["astronaut.png", "coffee.png", "chelsea.png"]:
        Image.open(SKIMAGE_DATA / name).convert("RGB").resize((48, 40)).save(root / f"{name[:-4]}.png")
    return root


@pytest.fixture(scope="module")
def tiny_run(content_dir, tmp_path_factory):
    """A run of two levels for 10 steps (lr 1e-3) on three photos: its run directory."""
    from conftest import train_in_process

    run = tmp_path_factory.mktemp("wct_run")
    train_in_process("method=wct", "method.levels=[relu1_1,relu2_1]", "method.lr=1e-3", "data=folders",
                     f"data.content_dir={content_dir}", "encoder.weights=random", "trainer=cpu", "logger=none",
                     "trainer.max_steps=10", "data.short_side=32", "data.crop_size=32", "data.batch_size=3",
                     "data.num_workers=0", run_dir=run)
    return run


def test_a_tiny_run_lowers_the_reconstruction_loss(tiny_run):
    from styletransfer.methods.wct import WCTModule

    torch.manual_seed(42)  # the run's seed: the same initial decoders
    module = WCTModule(RANDOM_ENCODER, levels=["relu1_1", "relu2_1"])
    batch = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = module.losses(batch)
    exported = torch.load(tiny_run / "checkpoints" / "decoders.pth", weights_only=True)
    assert exported["levels"] == ["relu2_1", "relu1_1"] and exported["encoder"]["weights"] == "random"
    for level, state in exported["decoders"].items():
        module.decoders[level].load_state_dict(state)
    with torch.no_grad():
        after = module.losses(batch)
    assert float(after["loss/total"]) < 0.7 * float(before["loss/total"]), (before, after)
    assert all(float(after[f"loss/{lv}/pixel"]) < float(before[f"loss/{lv}/pixel"]) for lv in ("relu1_1", "relu2_1"))


def test_the_model_files_round_trip(tiny_run, tmp_path):
    """The exported decoders and the Lightning checkpoint stylise alike; another encoder, or broken weights, are
    refused in one line naming the file."""
    from styletransfer.nn.weights import CHECKSUM_KEY, save_atomic
    from styletransfer.protocol.registry import load_model
    from styletransfer.runtime.errors import CheckpointError, EncoderMismatchError

    exported, lightning = tiny_run / "checkpoints" / "decoders.pth", tiny_run / "checkpoints" / "last.ckpt"
    model, again = load_model(exported), load_model(lightning)
    assert model.method == again.method == "wct" and (model.kind, again.kind) == ("exported", "lightning")
    assert model.describe()["levels"] == ["relu2_1", "relu1_1"] and model.warning() and "RANDOM" in model.warning()
    g = torch.Generator().manual_seed(3)
    content, style = torch.rand(2, 3, 24, 20, generator=g), torch.rand(3, 28, 36, generator=g)
    out = model.stylise(content, [style], Controls(alpha=0.7))
    assert out.shape == content.shape and torch.equal(out, again.stylise(content, [style], Controls(alpha=0.7)))
    assert model.stylise(content, [style], Controls(output_size=(30, 26))).shape == (2, 3, 30, 26)
    with pytest.raises(EncoderMismatchError, match="not the one this decoder was trained behind"):
        load_model(exported, {**RANDOM_ENCODER, "seed": 1})
    broken = torch.load(exported, weights_only=True)
    broken["decoders"]["relu1_1"]["1.weight"][0, 0, 0, 0] = float("nan")
    save_atomic({k: v for k, v in broken.items() if k != CHECKSUM_KEY}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="broken.pth hold NaN"):
        load_model(tmp_path / "broken.pth")


def _one_error(capsys, message: str) -> None:
    """The command wrote one ``error:`` line, holding ``message``, and no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, (message, err)


def test_the_command_stylises_a_folder_and_refuses_what_wct_lacks(parts, tiny_run, content_dir, tmp_path, capsys):
    """A five-level model file (random decoders) through styletransfer-stylise: two styles blended, alpha,
    colour preservation. Masks, tiling, export, --compile and --transform are refused in one line (shown with the
    tiny run's two-level file). A folder of two of the photos: each image's five-level cascade is 0.5 s."""
    import shutil

    from PIL import Image

    from styletransfer.cli.export import main as export_main
    from styletransfer.cli.stylise import main as stylise_main

    encoder, decoders = parts
    save_decoders(dict(decoders.items()), encoder.spec, tmp_path / "decoders.pth")
    styles = []
    for k in range(2):
        styles.append(tmp_path / f"style{k}.png")
        pixels = torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(k)) * 255
        Image.fromarray(pixels.byte().numpy()).save(styles[-1])
    (tmp_path / "content").mkdir()
    for photo in sorted(content_dir.iterdir())[:2]:
        shutil.copy(photo, tmp_path / "content")
    options = ["--content", str(tmp_path / "content"), "--device", "cpu", "--workers", "0", "--writers", "0",
               "--style-short-side", "0", "--style", *map(str, styles)]
    assert stylise_main([str(tmp_path / "decoders.pth"), *options, "--weights", "0.5", "0.5", "--alpha", "0.6",
                         "--preserve-colour", "-o", str(tmp_path / "out")]) == 0
    written = sorted((tmp_path / "out").iterdir())
    assert len(written) == 2 and Image.open(written[0]).size == (48, 40)
    capsys.readouterr()
    small = str(tiny_run / "checkpoints" / "decoders.pth")
    for extra, message in ((["--mask", str(styles[0]), str(styles[1])], "does not support --mask"),
                           (["--max-tile", "32"], "stylises whole images only"),
                           (["--compile"], "leave --compile out"),
                           (["--transform", "wct"], "has no transform option")):
        one = options if "--mask" in extra else options[:-1]  # one style but for the masks
        assert stylise_main([small, *one, *extra, "-o", str(tmp_path / "bad")]) == 1
        _one_error(capsys, message)
    assert export_main([small, "-o", str(tmp_path / "wct.onnx")]) == 1
    _one_error(capsys, "cannot be exported")
    assert not (tmp_path / "wct.onnx").exists()
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_level_alpha_from_the_command_line(tiny_run, content_dir, tmp_path, capsys):
    """--level-alpha relu2_1=0.5,relu1_1=0 with --alpha 0.8 writes what load_model(level_alphas=...) stylises
    (within one 8-bit level), which differs from --alpha alone; bad levels or factors, models without levels and
    the ONNX runtime are refused in one line naming the flag."""
    from PIL import Image

    from styletransfer.cli.stylise import main as stylise_main
    from styletransfer.data.images import load_image_tensor
    from styletransfer.methods.adain import AdaINDecoder
    from styletransfer.methods.adain.checkpoint import save_decoder
    from styletransfer.protocol.registry import load_model

    model_file = tiny_run / "checkpoints" / "decoders.pth"
    style = tmp_path / "style.png"
    pixels = torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(7)) * 255
    Image.fromarray(pixels.byte().numpy()).save(style)
    content = content_dir / "coffee.png"
    options = ["--content", str(content), "--style", str(style), "--style-short-side", "0", "--device", "cpu",
               "--workers", "0", "--writers", "0", "--alpha", "0.8"]
    assert stylise_main([str(model_file), *options, "--level-alpha", "relu2_1=0.5, relu1_1=0",
                         "-o", str(tmp_path / "out")]) == 0
    [written] = (tmp_path / "out").iterdir()
    assert written.name == "coffee_stylised_style_alpha0.8_relu2_1x0.5_relu1_1x0.png"
    images = load_image_tensor(content)[None], [load_image_tensor(style)]
    factors = {"relu2_1": 0.5, "relu1_1": 0.0}
    expected = load_model(model_file, level_alphas=factors).stylise(*images, controls=Controls(alpha=0.8))
    assert float((load_image_tensor(written)[None] - expected).abs().max()) <= 1.0 / 255 + 1e-6
    assert float((load_model(model_file).stylise(*images, controls=Controls(alpha=0.8)) - expected).abs().max()) > 0.05
    capsys.readouterr()
    adain_file = tmp_path / "decoder.pth"
    save_decoder(AdaINDecoder(), build_encoder(RANDOM_ENCODER, ["relu4_1"]).spec, adain_file)
    for model, flag, message in (
        (model_file, "relu5_1=1", "level_alphas (--level-alpha): relu5_1 is not a level of this model"),
        (model_file, "relu2_1=2", "level_alphas (--level-alpha): relu2_1=2.0 must be a number in [0, 1]"),
        (adain_file, "relu4_1=0.5", "is a adain model, which has no level_alphas option (--level-alpha)"),
    ):
        assert stylise_main([str(model), *options, "--level-alpha", flag, "-o", str(tmp_path / "bad")]) == 1
        _one_error(capsys, message)
    assert stylise_main([str(model_file), *options, "--runtime", "onnx", "--level-alpha", "relu1_1=1",
                         "-o", str(tmp_path / "bad")]) == 1
    _one_error(capsys, "--level-alpha is for models with levels (method=wct)")
    with pytest.raises(SystemExit):
        stylise_main([str(model_file), *options, "--level-alpha", "relu2_1"])
    assert "expected LEVEL=FACTOR pairs" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


@pytest.mark.parametrize("settings, message", [
    ({"levels": ["relu6_1"]}, r"method.levels=\['relu6_1'\]: unknown level"),
    ({"levels": []}, "method.levels=[]: no level given"),
    ({"pixel_weight": -1.0}, "method.pixel_weight=-1.0 must be a finite number >= 0"),
    ({"encoder": {**RANDOM_ENCODER, "network": "vgg16"}}, "use encoder=vgg19"),
])
def test_bad_settings_are_one_line_naming_them(settings, message):
    from styletransfer.methods.wct import WCTModule

    with pytest.raises(ConfigError, match=message.replace("[]", r"\[\]")) as info:
        WCTModule(**{"encoder": RANDOM_ENCODER, **settings})
    assert "\n" not in str(info.value)
