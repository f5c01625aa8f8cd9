"""Linear Style Transfer (``method=linear``) against its authors' code, training, model files, the command and the
ONNX export.

The reference is sunshineatnoon/LinearStyleTransfer at commit 188e8e5: ``libs/Matrix.py`` (``CNN`` and
``MulLayer``) and ``libs/Criterion.py`` (``styleLoss``, ``GramMatrix``, ``LossCriterion``), written out below from the
published code (``size_average=False`` spelled ``reduction="sum"``) and run on the same weights and features.
"""

from __future__ import annotations

import pytest
import torch
from conftest import RANDOM_ENCODER
from torch import nn

from styletransfer.methods.linear.loss import STYLE_LAYERS, linear_losses
from styletransfer.methods.linear.styler import LinearStyler
from styletransfer.methods.linear.transform import LinearTransform
from styletransfer.nn.encoder import build_encoder
from styletransfer.nn.reconstruction import ReconstructionDecoder
from styletransfer.nn.reconstruction_file import save_decoders
from styletransfer.protocol.controls import Controls
from styletransfer.runtime.errors import ConfigError

# ---------------------------------------------------------------- the authors' computation, written out


class RefCNN(nn.Module):  # libs/Matrix.py CNN (r31, r41)
    def __init__(self, layer):
        super().__init__()
        if layer == "r31":
            self.convs = nn.Sequential(nn.Conv2d(256, 128, 3, 1, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(128, 64, 3, 1, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(64, 32, 3, 1, 1))
        elif layer == "r41":
            self.convs = nn.Sequential(nn.Conv2d(512, 256, 3, 1, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(256, 128, 3, 1, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(128, 32, 3, 1, 1))
        self.fc = nn.Linear(32 * 32, 32 * 32)

    def forward(self, x):
        out = self.convs(x)
        b, c, h, w = out.size()
        out = out.view(b, c, -1)
        out = torch.bmm(out, out.transpose(1, 2)).div(h * w)
        out = out.view(out.size(0), -1)
        return self.fc(out)


class RefMulLayer(nn.Module):  # libs/Matrix.py MulLayer
    def __init__(self, layer):
        super().__init__()
        self.snet = RefCNN(layer)
        self.cnet = RefCNN(layer)
        if layer == "r41":
            self.compress = nn.Conv2d(512, 32, 1, 1, 0)
            self.unzip = nn.Conv2d(32, 512, 1, 1, 0)
        elif layer == "r31":
            self.compress = nn.Conv2d(256, 32, 1, 1, 0)
            self.unzip = nn.Conv2d(32, 256, 1, 1, 0)

    def forward(self, cF, sF):
        cb, cc, ch, cw = cF.size()
        cFF = cF.view(cb, cc, -1)
        cMean = torch.mean(cFF, dim=2, keepdim=True)
        cMean = cMean.unsqueeze(3)
        cMean = cMean.expand_as(cF)
        cF = cF - cMean
        sb, sc, sh, sw = sF.size()
        sFF = sF.view(sb, sc, -1)
        sMean = torch.mean(sFF, dim=2, keepdim=True)
        sMean = sMean.unsqueeze(3)
        sMeanC = sMean.expand_as(cF)
        sMeanS = sMean.expand_as(sF)
        sF = sF - sMeanS
        sMatrix = self.snet(sF)
        cMatrix = self.cnet(cF)
        sMatrix = sMatrix.view(sMatrix.size(0), 32, 32)
        cMatrix = cMatrix.view(cMatrix.size(0), 32, 32)
        transmatrix = torch.bmm(sMatrix, cMatrix)
        compress_content = self.compress(cF)
        b, c, h, w = compress_content.size()
        compress_content = compress_content.view(b, c, -1)
        transfeature = torch.bmm(transmatrix, compress_content)
        out = self.unzip(transfeature.view(b, c, h, w))
        return out + sMeanC, transmatrix


class RefGramMatrix(nn.Module):  # libs/Criterion.py GramMatrix
    def forward(self, input):
        b, c, h, w = input.size()
        f = input.view(b, c, h * w)
        G = torch.bmm(f, f.transpose(1, 2))
        return G.div_(c * h * w)


class RefStyleLoss(nn.Module):  # libs/Criterion.py styleLoss
    def forward(self, input, target):
        ib, ic, ih, iw = input.size()
        iF = input.view(ib, ic, -1)
        iMean = torch.mean(iF, dim=2)
        iCov = RefGramMatrix()(input)
        tb, tc, th, tw = target.size()
        tF = target.view(tb, tc, -1)
        tMean = torch.mean(tF, dim=2)
        tCov = RefGramMatrix()(target)
        loss = nn.MSELoss(reduction="sum")(iMean, tMean) + nn.MSELoss(reduction="sum")(iCov, tCov)
        return loss / tb


def ref_criterion(tF, sF, cF, style_layers, content_layers, style_weight, content_weight):  # LossCriterion.forward
    totalContentLoss = 0
    for layer in content_layers:
        totalContentLoss += nn.MSELoss()(tF[layer], cF[layer].detach())
    totalContentLoss = totalContentLoss * content_weight
    totalStyleLoss = 0
    for layer in style_layers:
        totalStyleLoss += RefStyleLoss()(tF[layer], sF[layer].detach())
    totalStyleLoss = totalStyleLoss * style_weight
    return totalStyleLoss + totalContentLoss, totalStyleLoss, totalContentLoss


# ---------------------------------------------------------------- the maths


@pytest.mark.parametrize("layer, theirs, channels", [("relu3_1", "r31", 256), ("relu4_1", "r41", 512)])
def test_the_module_equals_the_authors_mullayer_bit_for_bit(layer, theirs, channels):
    torch.manual_seed(0)
    ours, ref = LinearTransform(layer), RefMulLayer(theirs)
    ref.load_state_dict(ours.state_dict(), strict=True)  # the same parameter names
    g = torch.Generator().manual_seed(1)
    content = torch.relu(torch.randn(2, channels, 9, 11, generator=g))
    style = torch.relu(torch.randn(2, channels, 7, 6, generator=g)) * 2 + 0.3
    with torch.no_grad():
        out, matrix = ours(content, style)
        ref_out, ref_matrix = ref(content.clone(), style.clone())
    assert torch.equal(out, ref_out) and torch.equal(matrix, ref_matrix)
    with torch.no_grad():  # one style for a batch of contents: its matrix and mean broadcast (convolutions of
        # another batch size may round differently: close, not equal)
        s_matrix, s_mean = ours.style_matrix(style[:1])
        single, _ = ours.transfer(content, s_matrix, s_mean)
        ref_single, _ = ref(content, style[:1].expand_as(style).contiguous())
    torch.testing.assert_close(single, ref_single, rtol=1e-5, atol=1e-6)


def test_the_loss_equals_the_authors_criterion():
    g = torch.Generator().manual_seed(2)
    shapes = {"relu1_1": (64, 16), "relu2_1": (128, 8), "relu3_1": (256, 4), "relu4_1": (512, 2)}

    def features(scale):
        return {k: torch.relu(torch.randn(3, c, s, s + 1, generator=g)) * scale for k, (c, s) in shapes.items()}

    output, style, content = features(1.0), features(1.5), features(0.7)
    ours = linear_losses(output, style, content, content_weight=1.0, style_weight=0.02)
    total, style_loss, content_loss = ref_criterion(output, style, content, STYLE_LAYERS, ["relu4_1"], 0.02, 1.0)
    torch.testing.assert_close(ours["loss/total"], total, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours["loss/style"], style_loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours["loss/content"], content_loss, rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def parts():
    """A random encoder to relu4_1, a module and a decoder of relu3_1, as a styler."""
    torch.manual_seed(0)
    encoder = build_encoder(RANDOM_ENCODER, list(STYLE_LAYERS))
    transform, decoder = LinearTransform("relu3_1"), ReconstructionDecoder("relu3_1")
    return LinearStyler(encoder, transform, decoder, source="parts", kind="test")


def test_blending_styles_blends_their_matrices_and_means(parts):
    g = torch.Generator().manual_seed(4)
    content, s0, s1 = torch.rand(2, 3, 24, 28, generator=g), torch.rand(3, 32, 30, generator=g), torch.rand(
        3, 26, 34, generator=g)
    codes = parts.encode_styles([s0, s1])
    blended = parts.stylise(content, [s0, s1], Controls(weights=[0.3, 0.7]))
    matrix = 0.3 * codes[0]["matrix"] + 0.7 * codes[1]["matrix"]
    mean = 0.3 * codes[0]["mean"] + 0.7 * codes[1]["mean"]
    with torch.no_grad():
        features = parts.encoder(content, ["relu3_1"])["relu3_1"]
        expected = parts.decoder(parts.transform.transfer(features, matrix, mean)[0], output_size=(24, 28))
    torch.testing.assert_close(blended, expected.clamp(0, 1), rtol=1e-5, atol=1e-6)
    assert torch.equal(parts.stylise(content, [s0, s1], Controls(weights=[1.0, 0.0])), parts.stylise(content, [s0]))
    assert torch.equal(parts.stylise(content, controls=Controls(style_codes=codes[:1])), parts.stylise(content, [s0]))
    assert parts.stylise(content, [s0], Controls(output_size=(30, 26))).shape == (2, 3, 30, 26)
    assert parts.stylise(content, [s0], Controls(preserve_colour=True)).shape == (2, 3, 24, 28)
    for controls, message in ((Controls(alpha=0.5), "does not support alpha: leave it out"),
                              (Controls(masks=[content[0, :1]]), "does not support masks: leave it out")):
        with pytest.raises(ConfigError, match=message) as info:
            parts.stylise(content, [s0], controls)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------- training, files and the command


@pytest.fixture(scope="module")
def decoder_file(tmp_path_factory):
    """A reconstruction decoders file behind the random encoder, as method=wct writes it: a random relu3_1 decoder
    with He-initialised convolutions, so that its image follows its input (PyTorch's default initialisation shrinks
    the signal at each layer: the image would be a near-constant grey that no module could style)."""
    torch.manual_seed(5)
    encoder = build_encoder(RANDOM_ENCODER, ["relu3_1"])
    decoder = ReconstructionDecoder("relu3_1")
    for module in decoder.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    path = tmp_path_factory.mktemp("linear_decoder") / "decoders.pth"
    save_decoders({"relu3_1": decoder}, encoder.spec, path)
    return path


@pytest.fixture(scope="module")
def tiny_run(photo_dirs, decoder_file, tmp_path_factory):
    """A relu3_1 run of 12 steps (lr 1e-3) on four photos and three textures, 16 px crops of them at 32 px (relu3_1
    is then 4 x 4; 32 px crops took twice the time, and one seed in four fell short of the loss bar): its run
    directory."""
    from conftest import train_in_process

    content, style = photo_dirs
    run = tmp_path_factory.mktemp("linear_run")
    train_in_process("method=linear", "method.layer=relu3_1", f"method.decoder={decoder_file}", "method.lr=1e-3",
                     "data=folders", f"data.content_dir={content}", f"data.style_dir={style}", "data.val_pairs=0",
                     "encoder.weights=random", "trainer=cpu", "logger=none", "trainer.max_steps=12",
                     "data.short_side=32", "data.crop_size=16", "data.batch_size=4", "data.num_workers=0",
                     run_dir=run)
    return run


def _images(folder, side: int = 32):
    """Every image of ``folder`` resized to side x side, as a batch in [0, 1]."""
    import numpy as np
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB").resize((side, side))) for p in sorted(folder.iterdir())]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def test_a_tiny_run_lowers_the_loss(tiny_run, decoder_file, photo_dirs):
    from styletransfer.methods.linear import LinearModule

    torch.manual_seed(42)  # the run's seed: the same initial module
    module = LinearModule(RANDOM_ENCODER, decoder=str(decoder_file), layer="relu3_1")
    content, style = _images(photo_dirs[0]), _images(photo_dirs[1])
    content, style = content[:3], style[:3]  # three pairs
    with torch.no_grad():
        before = module.losses(content, style)
    exported = torch.load(tiny_run / "checkpoints" / "linear.pth", weights_only=True)
    assert exported["layer"] == "relu3_1" and exported["encoder"]["weights"] == "random" and exported["step"] == 12
    module.transform.load_state_dict(exported["transform"])
    pairs = zip(module.reconstruction.state_dict().values(), exported["decoder"].values())
    assert all(torch.equal(a, b) for a, b in pairs)
    with torch.no_grad():
        after = module.losses(content, style)
    # 0.74 measured (the run's seed 42), 0.72-0.80 over seeds 42, 1, 2 and 3
    assert float(after["loss/total"]) < 0.85 * float(before["loss/total"]), (before, after)
    assert all(float(after[k]) < float(before[k]) for k in ("loss/content", "loss/style")), (before, after)


def test_the_model_files_round_trip(tiny_run, tmp_path):
    """The exported file and the Lightning checkpoint stylise alike; another encoder, or broken weights, are
    refused in one line naming the file."""
    from styletransfer.nn.weights import CHECKSUM_KEY, save_atomic
    from styletransfer.protocol.registry import load_model
    from styletransfer.runtime.errors import CheckpointError, EncoderMismatchError

    exported, lightning = tiny_run / "checkpoints" / "linear.pth", tiny_run / "checkpoints" / "last.ckpt"
    model, again = load_model(exported), load_model(lightning)
    assert model.method == again.method == "linear" and (model.kind, again.kind) == ("exported", "lightning")
    assert model.describe()["layer"] == "relu3_1" and model.warning() and "RANDOM" in model.warning()
    g = torch.Generator().manual_seed(3)
    content, style = torch.rand(2, 3, 24, 20, generator=g), torch.rand(3, 28, 36, generator=g)
    out = model.stylise(content, [style])
    assert out.shape == content.shape and torch.equal(out, again.stylise(content, [style]))
    with pytest.raises(EncoderMismatchError, match="not the one this model was trained behind"):
        load_model(exported, {**RANDOM_ENCODER, "seed": 1})
    broken = torch.load(exported, weights_only=True)
    broken["transform"]["unzip.weight"][0, 0, 0, 0] = float("nan")
    save_atomic({k: v for k, v in broken.items() if k != CHECKSUM_KEY}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="broken.pth hold NaN"):
        load_model(tmp_path / "broken.pth")


def _one_error(capsys, message: str) -> None:
    """The command wrote one ``error:`` line, holding ``message``, and no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, (message, err)


def test_the_command_stylises_files_and_refuses_what_linear_lacks(tiny_run, photo_dirs, tmp_path, capsys):
    from PIL import Image

    from styletransfer.cli.stylise import main as stylise_main

    content, style_dir = photo_dirs
    styles = sorted(style_dir.iterdir())[:2]
    model = str(tiny_run / "checkpoints" / "linear.pth")
    options = ["--content", str(content / "astronaut.png"), "--device", "cpu", "--workers", "0", "--writers", "0",
               "--style-short-side", "0", "--style", *map(str, styles)]  # the styles as written: 88 x 72 px
    assert stylise_main([model, *options, "--weights", "0.5", "0.5", "--preserve-colour",
                         "-o", str(tmp_path / "out")]) == 0
    written = sorted((tmp_path / "out").iterdir())
    assert len(written) == 1 and Image.open(written[0]).size == (96, 80)
    capsys.readouterr()
    for extra, message in ((["--mask", str(styles[0]), str(styles[1])], "does not support --mask"),
                           (["--alpha", "0.5"], "does not support --alpha"),
                           (["--max-tile", "32"], "stylises whole images only"),
                           (["--compile"], "leave --compile out")):
        one = options if "--mask" in extra else options[:-1]  # one style but for the masks
        assert stylise_main([model, *one, *extra, "-o", str(tmp_path / "bad")]) == 1
        _one_error(capsys, message)
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


# ---------------------------------------------------------------- ONNX export


@pytest.fixture(scope="module")
def lively(tiny_run, tmp_path_factory):
    """The tiny run's model file with the decoder's last convolution scaled so that its image spans [0, 1] (the tiny
    run's is a near-constant dark grey): where a wrong upsampling row, a lost style or colour would show."""
    from styletransfer.nn.weights import CHECKSUM_KEY, save_atomic

    model = torch.load(tiny_run / "checkpoints" / "linear.pth", weights_only=True)
    last = max((k for k in model["decoder"] if k.endswith(".weight")), key=lambda k: int(k.split(".")[0]))
    model["decoder"][last] *= 2.0
    model["decoder"][last.replace("weight", "bias")].fill_(0.7)
    path = tmp_path_factory.mktemp("linear_lively") / "linear.pth"
    save_atomic({k: v for k, v in model.items() if k != CHECKSUM_KEY}, path)
    return path


@pytest.fixture(scope="module")
def linear_export(lively, tmp_path_factory, one_onnx_registry):
    """The lively model file exported by ``styletransfer-export --check``: (model.onnx, the command's stdout)."""
    pytest.importorskip("onnxruntime")
    import contextlib
    import io

    from styletransfer.cli.export import main as export_main

    out = tmp_path_factory.mktemp("linear_onnx") / "model.onnx"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = export_main([str(lively), "-o", str(out), "--check"])
    assert code == 0, stdout.getvalue()
    return out, stdout.getvalue()


@pytest.mark.slow
def test_the_export_checks_and_declares_the_linear_code(linear_export):
    from styletransfer.apps.onnx_runtime import OnnxModel

    path, stdout = linear_export
    assert "check 64x48" in stdout and "check 77x53" in stdout and "check passed" in stdout
    runner = OnnxModel.beside(path)
    assert runner.method == "linear" and runner.code_names == ("style_matrix", "style_mean")
    assert runner.inputs == ("content", "style_matrix", "style_mean")  # no alpha: the method has none
    assert [o.shape for o in runner.style.get_outputs()] == [[1, 32, 32], [1, 256, 1, 1]]
    assert not runner.capabilities.alpha and runner.warning() and "RANDOM" in runner.warning()


@pytest.mark.slow
def test_onnx_stylise_equals_torch(lively, linear_export, photo_dirs, tmp_path, capsys):
    """Two blended styles, with and without colour preservation, at a size that is not a multiple of 8: the Python
    API within 1e-3, the command line's files within one 8-bit level (styles at their own sizes, --style-short-side
    0: both runtimes read them with the same code, and 512 px styles took seconds a runtime); --alpha is refused in
    one line."""
    from styletransfer.apps.onnx_runtime import OnnxModel
    from styletransfer.cli.stylise import main as stylise_main
    from styletransfer.data.images import load_image_tensor
    from styletransfer.protocol.registry import load_model

    model_file = lively
    torch_model, onnx_model = load_model(model_file), OnnxModel.beside(linear_export[0])
    content_dir, style_dir = photo_dirs
    content = load_image_tensor(content_dir / "coffee.png")[:, :53, :77]
    styles = [load_image_tensor(p) for p in sorted(style_dir.iterdir())[:2]]
    for colour in (False, True):
        controls = {"weights": [0.3, 0.7], "preserve_colour": colour}
        expected = torch_model.stylise(content, styles, Controls(**controls))
        got = onnx_model.stylise(content, styles, Controls(**controls))
        assert got.shape == expected.shape == (1, 3, 53, 77) and float(expected.std()) > 0.1
        assert float((got - expected).abs().max()) < 1e-3
    args = ["-c", str(content_dir / "astronaut.png"), "-s", *(str(p) for p in sorted(style_dir.iterdir())[:2]),
            "-w", "0.3", "0.7", "--style-short-side", "0", "--workers", "0", "--writers", "0"]
    assert stylise_main([str(linear_export[0]), "--runtime", "onnx", *args, "-o", str(tmp_path / "onnx")]) == 0
    assert stylise_main([str(model_file), "--device", "cpu", *args, "-o", str(tmp_path / "torch")]) == 0
    [onnx_file], [torch_file] = (list((tmp_path / d).iterdir()) for d in ("onnx", "torch"))
    assert onnx_file.name == torch_file.name
    diff = (load_image_tensor(onnx_file) - load_image_tensor(torch_file)).abs().max()
    assert float(diff) <= 1.0 / 255 + 1e-6
    capsys.readouterr()
    assert stylise_main([str(linear_export[0]), "--runtime", "onnx", *args[:4], "--alpha", "0.5",
                         "-o", str(tmp_path / "bad")]) == 1
    _one_error(capsys, "does not support --alpha")


def test_bad_settings_are_one_line_naming_them(decoder_file, tmp_path):
    from styletransfer.methods.linear import LinearModule

    torch.save({"format": "something else"}, tmp_path / "other.pth")
    cases = [
        ({"layer": "relu2_1"}, "method.layer='relu2_1': choose relu3_1 or relu4_1"),
        ({"decoder": ""}, "method.decoder is not set"),
        ({"decoder": str(tmp_path / "none.pth")}, "no such file"),
        ({"decoder": str(tmp_path / "other.pth")}, "is not a reconstruction decoders file"),
        ({"layer": "relu4_1"}, "has no relu4_1 decoder (it has relu3_1)"),
        ({"encoder": {**RANDOM_ENCODER, "seed": 3}}, "was trained behind another encoder"),
        ({"style_weight": -1.0}, "method.style_weight=-1.0 must be a finite number >= 0"),
    ]
    for settings, message in cases:
        with pytest.raises(ConfigError) as info:
            LinearModule(**{"encoder": RANDOM_ENCODER, "decoder": str(decoder_file), "layer": "relu3_1", **settings})
        assert message in str(info.value) and "\n" not in str(info.value), (message, str(info.value))


def test_content_only_data_is_refused_naming_the_style_setting(photo_dirs, decoder_file, tmp_path):
    """method=linear trains on content-style pairs: data.style_dir unset is one line naming it (it failed on the
    first batch's missing style)."""
    from conftest import train_in_process

    content, _ = photo_dirs
    with pytest.raises(ConfigError, match=r"method=linear trains on content-style pairs: give data.style_dir") as info:
        train_in_process("method=linear", "method.layer=relu3_1", f"method.decoder={decoder_file}", "data=folders",
                         f"data.content_dir={content}", "data.val_pairs=0", "encoder.weights=random", "trainer=cpu",
                         "logger=none", "trainer.max_steps=1", "data.batch_size=2", run_dir=tmp_path / "run")
    assert "\n" not in str(info.value)
