"""ONNX export (styletransfer-export) and the onnxruntime path of styletransfer-stylise (--runtime onnx).

Tiny models behind the random encoder (the session's ``adain_run``), images of 48-80 px."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from styletransfer.apps.onnx_runtime import OnnxModel, style_graph_path  # noqa: E402
from styletransfer.cli.export import main as export_main  # noqa: E402
from styletransfer.cli.stylise import main as stylise_main  # noqa: E402
from styletransfer.data.images import load_image_tensor  # noqa: E402
from styletransfer.methods.adain import Styliser  # noqa: E402
from styletransfer.methods.adain.checkpoint import save_decoder  # noqa: E402
from styletransfer.methods.adain.model import AdaINDecoder  # noqa: E402
from styletransfer.nn.upsampling import upsample_to  # noqa: E402
from styletransfer.protocol.controls import Controls  # noqa: E402
from styletransfer.runtime.errors import CheckpointError  # noqa: E402


def _image(path: Path, height: int, width: int, seed: int) -> Path:
    """A smooth colour image (gradients plus noise), so colour statistics and features are not degenerate."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin((x + y) / 7.0 + seed)], -1)
    pixels = (base * 0.8 + rng.random((height, width, 3)) * 0.2) * 255
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export_images")
    return {"content": _image(root / "content.png", 53, 77, 0), "a": _image(root / "a.png", 64, 64, 1),
            "b": _image(root / "b.png", 48, 70, 2)}


@pytest.fixture(scope="module")
def lively(adain_run, tmp_path_factory) -> Path:
    """The tiny run's decoder file, its last conv scaled so that its output spans [0, 1] (the tiny run's is near 0):
    where a wrong upsampling row or a lost control would show."""
    styliser = Styliser.from_checkpoint(adain_run[1])
    with torch.no_grad():
        styliser.decoder[-1].weight.mul_(20.0)
        styliser.decoder[-1].bias.fill_(0.5)
    path = tmp_path_factory.mktemp("lively") / "lively.pth"
    save_decoder(styliser.decoder, styliser.encoder_spec, path)
    return path


@pytest.fixture(scope="module")
def exported(lively, tmp_path_factory, one_onnx_registry) -> tuple[Path, str]:
    """model.onnx + model.style.onnx of the lively decoder, exported with --check; (path, the command's stdout)."""
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = export_main([str(lively), "-o", str(out), "--check"])
    assert code == 0, stdout.getvalue()
    return out, stdout.getvalue()


@pytest.mark.slow
def test_export_check_passes_at_two_sizes(exported):
    path, stdout = exported
    assert path.is_file() and style_graph_path(path).is_file()
    assert "check 64x48" in stdout and "check 77x53" in stdout and "check passed" in stdout
    runner = OnnxModel.beside(path)
    shapes = {i.name: i.shape for i in runner.image.get_inputs()}
    assert shapes["content"][1] == 3 and all(isinstance(d, str) for d in np.array(shapes["content"])[[0, 2, 3]])
    assert [o.shape for o in runner.style.get_outputs()] == [[1, 512, 1, 1]] * 2


def test_export_upsampling_is_the_decoders_exact_size_upsampling():
    """The export's gather upsampling equals F.interpolate inside AdaINDecoder(output_size=...) bit for bit, at
    sizes that are not multiples of 8."""
    torch.manual_seed(0)
    decoder = AdaINDecoder().eval()
    for height, width in [(16, 16), (53, 77), (61, 34), (100, 27)]:
        features = torch.rand(2, 512, height // 8, width // 8)
        with torch.no_grad():
            exported = decoder(features, (height, width), upsample=upsample_to)
            assert torch.equal(exported, decoder(features, (height, width)))


@pytest.mark.slow
def test_onnx_stylise_equals_torch(lively, exported, images, tmp_path):
    """Two interpolated styles, alpha < 1, with and without colour preservation, at a size that is not a multiple of
    8: the Python API within 1e-3, and the command line's files within one 8-bit level (styles at their own sizes,
    --style-short-side 0: both runtimes read them with the same code, and 512 px styles took seconds a runtime)."""
    torch_model = Styliser.from_checkpoint(lively)
    onnx_model = OnnxModel.beside(exported[0])
    content = load_image_tensor(images["content"])
    styles = [load_image_tensor(images["a"]), load_image_tensor(images["b"])]
    for colour in (False, True):
        controls = {"weights": [0.3, 0.7], "alpha": 0.6, "preserve_colour": colour}
        expected = torch_model.stylise(content, styles, Controls(**controls))
        got = onnx_model.stylise(content, styles, Controls(**controls))
        assert got.shape == expected.shape == (1, 3, 53, 77) and float(expected.std()) > 0.2
        assert float((got - expected).abs().max()) < 1e-3
    args = ["-c", str(images["content"]), "-s", str(images["a"]), str(images["b"]), "-w", "0.3", "0.7",
            "--alpha", "0.6", "--style-short-side", "0", "--workers", "0", "--writers", "0"]
    assert stylise_main([str(exported[0]), "--runtime", "onnx", *args, "-o", str(tmp_path / "onnx")]) == 0
    assert stylise_main([str(lively), *args, "-o", str(tmp_path / "torch")]) == 0
    [onnx_file], [torch_file] = (list((tmp_path / d).iterdir()) for d in ("onnx", "torch"))
    assert onnx_file.name == torch_file.name
    diff = (load_image_tensor(onnx_file) - load_image_tensor(torch_file)).abs().max()
    assert float(diff) <= 1.0 / 255 + 1e-6


@pytest.mark.slow
def test_export_of_a_random_encoder_run_warns(adain_run, exported, tmp_path, caplog, one_onnx_registry, monkeypatch):
    """A run behind the random encoder exports with a warning; with its own registry of torchlib's functions the
    export writes, byte for byte, the style graph that ``exported`` wrote with conftest's ``one_onnx_registry`` (which
    the suite's exports use). The run's .ckpt and the lively decoder.pth share the random encoder, and a style graph
    is the encoder alone: one export of the run, not two (each was 2.5 CPU seconds)."""
    if one_onnx_registry is not None:
        from torch.onnx._internal.exporter._registration import ONNXRegistry

        monkeypatch.setattr(ONNXRegistry, "from_torchlib", one_onnx_registry)
    with caplog.at_level(logging.WARNING):
        assert export_main([str(adain_run[0]), "-o", str(tmp_path / "m.onnx"), "--part", "style"]) == 0
    assert any("RANDOM VGG encoder" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "m.style.onnx").is_file() and not (tmp_path / "m.onnx").exists()
    assert (tmp_path / "m.style.onnx").read_bytes() == style_graph_path(exported[0]).read_bytes()


@pytest.mark.slow
@pytest.mark.usefixtures("one_onnx_registry")  # conftest: one registry of torchlib functions
def test_fp16_export_passes_its_tolerance(adain_run, tmp_path, capsys):
    out = tmp_path / "half.onnx"
    assert export_main([str(adain_run[0]), "-o", str(out), "--fp16", "--part", "image", "--check"]) == 0
    printed = capsys.readouterr().out
    assert "fp16" in printed and "check passed" in printed and not style_graph_path(out).exists()
    dtypes = {init.data_type for init in onnx.load(str(out)).graph.initializer if len(init.dims) == 4}
    assert dtypes == {onnx.TensorProto.FLOAT16}  # conv weights are half
    assert [i.type for i in OnnxModel(out).image.get_inputs()][0] == "tensor(float)"


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(exported, images, tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    assert export_main([str(junk), "-o", str(tmp_path / "x.onnx")]) == 1
    assert str(junk) in _error(capsys)
    model = str(exported[0])
    common = ["-c", str(images["content"]), "-o", str(tmp_path / "out"), "--workers", "0", "--writers", "0"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert stylise_main([model, "--runtime", "onnx", "-s", str(broken), *common]) == 1
    assert "cannot read image" in _error(capsys)
    assert stylise_main([model, "--runtime", "onnx", "-s", str(images["a"]), "--alpha", "1.5", *common]) == 1
    assert "alpha must be in [0, 1]" in _error(capsys)
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_bytes(b"\x00\x01 definitely not protobuf")
    (tmp_path / "model.style.onnx").write_bytes(b"nor this")
    assert stylise_main([str(not_onnx), "--runtime", "onnx", "-s", str(images["a"]), *common]) == 1
    assert "is not an ONNX model" in _error(capsys)
    assert stylise_main([model, "--runtime", "onnx", "-s", str(images["a"]), "--mask", str(images["b"]), *common]) == 1
    assert "does not support --mask: leave it out or use --runtime torch" in _error(capsys)
    assert stylise_main([model, "--runtime", "onnx", "-s", str(images["a"]), "--precision", "bf16-mixed",
                         "--compile", *common]) == 1
    assert "--precision bf16-mixed is a PyTorch autocast option" in (line := _error(capsys)) and "--compile" in line
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(Path(model).read_bytes())
    assert stylise_main([str(lonely), "--runtime", "onnx", "-s", str(images["a"]), *common]) == 1
    assert "style graph" in _error(capsys)


@pytest.mark.slow
def test_a_flipped_weight_byte_in_an_exported_graph_is_refused(exported, tmp_path):
    """Every exported graph records the SHA-256 of its initialisers; a changed weight (a corrupted disk, a bad copy)
    is refused naming the file, never used."""
    model = onnx.load(str(exported[0]))
    weight = max(model.graph.initializer, key=lambda init: len(init.raw_data))
    raw = bytearray(weight.raw_data)
    raw[len(raw) // 2] ^= 0x01
    weight.raw_data = bytes(raw)
    damaged = tmp_path / "model.onnx"
    onnx.save(model, str(damaged))
    (tmp_path / "model.style.onnx").write_bytes(style_graph_path(exported[0]).read_bytes())
    with pytest.raises(CheckpointError, match=f"{damaged} is damaged: its weights do not match"):
        OnnxModel.beside(damaged)
    assert OnnxModel.beside(exported[0]).style is not None  # the untouched export opens
