"""Stylise: loading every model format safely, the AdaIN test-time controls, and the command line."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from importlib.metadata import distribution
from pathlib import Path

import pytest
import torch
from adain_checkpoints import write_malicious_checkpoint, write_release_files
from conftest import RANDOM_ENCODER
from PIL import Image

from styletransfer.cli.stylise import main
from styletransfer.data.images import load_image_tensor, save_image
from styletransfer.methods.adain.model import AdaINDecoder, adain, encode
from styletransfer.methods.adain.styliser import Styliser
from styletransfer.nn.colour import colour_stats, match_colour
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.protocol.controls import Controls
from styletransfer.runtime.errors import CheckpointError, EncoderMismatchError


@pytest.fixture(scope="module")
def release_files(tmp_path_factory) -> tuple[Path, Path]:
    """(decoder.pth, vgg_normalised.pth) in the original release's exact key layout, random values."""
    return write_release_files(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def styliser() -> Styliser:
    torch.manual_seed(0)
    return Styliser(VGGEncoder(["relu4_1"], weights="random", seed=0), AdaINDecoder())


def _images(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 37, 53, generator=g), torch.rand(3, 32, 40, generator=g), torch.rand(3, 40, 32, generator=g)


@torch.no_grad()
def _by_hand(styliser: Styliser, content, styles, weights=(1.0,), alpha: float = 1.0):
    """AdaIN written out: t = alpha * sum_k w_k AdaIN(f(c), f(s_k)) + (1 - alpha) f(c), decoded at the content size."""
    c_feat = encode(styliser.encoder, content)
    target = sum(w * adain(c_feat, encode(styliser.encoder, s[None])) for w, s in zip(weights, styles))
    target = alpha * target + (1 - alpha) * c_feat
    return styliser.decoder(target, output_size=tuple(content.shape[-2:])).clamp(0, 1)


def test_alpha_zero_is_decoded_content_features(styliser):
    content, style, _ = _images()
    result = styliser.stylise(content, style, Controls(alpha=0.0))
    expected = styliser.decoder(encode(styliser.encoder, content), output_size=(37, 53)).clamp(0, 1)
    torch.testing.assert_close(result, expected)
    # alpha 1 is plain AdaIN; alpha 0.5 decodes the halfway point between the AdaIN target and the content features.
    torch.testing.assert_close(styliser.stylise(content, style, Controls(alpha=1.0)),
                               _by_hand(styliser, content, [style]))
    torch.testing.assert_close(styliser.stylise(content, style, Controls(alpha=0.5)),
                               _by_hand(styliser, content, [style], alpha=0.5))


def test_output_keeps_content_size_unless_told(styliser):
    content, style, _ = _images()
    assert styliser.stylise(content, style).shape == (2, 3, 37, 53)
    assert styliser.stylise(content[0], style, Controls(output_size=(24, 30))).shape == (1, 3, 24, 30)
    result = styliser.stylise(content, style)
    assert float(result.min()) >= 0.0 and float(result.max()) <= 1.0


@pytest.mark.parametrize(
    "weights, match",
    [([0.5, 0.6], "sum to 1"), ([1.0], "one per style"), ([0.2, 0.3, 0.5], "one per style"), ([1.5, -0.5], ">= 0"),
     (None, "need interpolation weights")],
)
def test_bad_interpolation_weights_error(styliser, weights, match):
    content, style_a, style_b = _images()
    with pytest.raises(ValueError, match=match):
        styliser.stylise(content, [style_a, style_b], Controls(weights=weights))


def test_interpolation_weights_blend_the_styles(styliser):
    content, style_a, style_b = _images()
    only_a = styliser.stylise(content, [style_a, style_b], Controls(weights=[1.0, 0.0]))
    torch.testing.assert_close(only_a, styliser.stylise(content, style_a))
    mixed = styliser.stylise(content, [style_a, style_b], Controls(weights=[0.3, 0.7]))
    torch.testing.assert_close(mixed, _by_hand(styliser, content, [style_a, style_b], weights=[0.3, 0.7]))


def test_masks_assign_styles_to_regions(styliser):
    content, style_a, style_b = _images()
    full, empty = torch.ones(37, 53), torch.zeros(37, 53)
    # A mask covering everything for style a is plain AdaIN with style a; regions in no mask keep the content.
    torch.testing.assert_close(styliser.stylise(content, [style_a, style_b], Controls(masks=[full, empty])),
                               styliser.stylise(content, style_a))
    torch.testing.assert_close(styliser.stylise(content, [style_a, style_b], Controls(masks=[empty, empty])),
                               styliser.stylise(content, style_a, Controls(alpha=0.0)))
    left = torch.zeros(10, 14)
    left[:, :7] = 1.0  # masks of any size are resized to the feature map
    halves = styliser.stylise(content, [style_a, style_b], Controls(masks=[left, 1 - left]))
    assert halves.shape == content.shape
    with pytest.raises(ValueError, match="one mask per style"):
        styliser.stylise(content, [style_a, style_b], Controls(masks=[left]))
    with pytest.raises(ValueError, match="not both"):
        styliser.stylise(content, [style_a, style_b], Controls(weights=[0.5, 0.5], masks=[left, 1 - left]))


def test_colour_preservation_uses_the_content_colours(styliser):
    content, style, _ = _images()
    red_style = style * torch.tensor([1.0, 0.1, 0.1]).view(3, 1, 1)
    preserved = styliser.stylise(content, red_style, Controls(preserve_colour=True))
    for i in range(2):
        # Each content is stylised with the style recoloured to that content's colour mean and covariance.
        recoloured = match_colour(red_style[None], content[i:i + 1])
        torch.testing.assert_close(colour_stats(recoloured)[0], colour_stats(content[i:i + 1])[0], atol=2e-3, rtol=0)
        torch.testing.assert_close(preserved[i:i + 1], styliser.stylise(content[i:i + 1], recoloured))
    assert not torch.allclose(preserved, styliser.stylise(content, red_style))


def test_lightning_checkpoint_and_exported_decoder_agree(adain_run):
    ckpt, exported = adain_run
    content, style, _ = _images()
    from_ckpt = Styliser.from_checkpoint(ckpt)
    from_export = Styliser.from_checkpoint(exported)
    assert (from_ckpt.kind, from_export.kind) == ("lightning", "exported")
    torch.testing.assert_close(from_ckpt.stylise(content, style), from_export.stylise(content, style))
    assert from_ckpt.encoder_spec["fingerprint"] == from_export.encoder_spec["fingerprint"]


def test_exported_decoder_with_another_encoder_is_refused(adain_run):
    _, exported = adain_run
    with pytest.raises(EncoderMismatchError, match=str(exported)):
        Styliser.from_checkpoint(exported, encoder={**RANDOM_ENCODER, "seed": 1})


def test_release_layout_files_load_and_stylise(release_files):
    decoder, vgg = release_files
    styliser = Styliser.from_checkpoint(decoder, encoder=str(vgg))
    assert styliser.kind == "release" and styliser.encoder.arch == "vgg_normalised"
    content, style, _ = _images()
    result = styliser.stylise(content, style)
    assert result.shape == (2, 3, 37, 53) and torch.isfinite(result).all()
    with pytest.raises(CheckpointError, match="vgg_normalised"):
        Styliser.from_checkpoint(decoder)


def test_pickle_that_runs_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    evil = write_malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        Styliser.from_checkpoint(evil)
    assert not marker.exists()
    photo = tmp_path / "photo.png"  # a real content: the command gets as far as loading the model
    save_image(torch.rand(3, 32, 32), photo)
    assert main([str(evil), "--content", str(photo), "--style", str(photo), "-o", str(tmp_path / "o")]) == 1
    assert f"refused to load checkpoint {evil}" in capsys.readouterr().err
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is live: an unsafe load does run it
    assert marker.exists()


def test_missing_or_non_checkpoint_files_name_the_file(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="does not exist"):
        Styliser.from_checkpoint(tmp_path / "nope.ckpt")
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        Styliser.from_checkpoint(text)
    tensors = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, tensors)
    with pytest.raises(CheckpointError, match="not a style-transfer checkpoint"):
        Styliser.from_checkpoint(tensors)
    save_image(torch.rand(3, 32, 32), tmp_path / "photo.png")  # contents are found before the model loads
    assert main([str(text), "--content", str(tmp_path / "photo.png"), "--style", str(tmp_path / "photo.png"), "-o",
                 str(tmp_path / "out")]) == 1
    assert str(text) in capsys.readouterr().err


@pytest.fixture()
def folders(tmp_path) -> tuple[Path, list[Path], list[Path]]:
    g = torch.Generator().manual_seed(3)
    contents = tmp_path / "contents"
    save_image(torch.rand(3, 32, 40, generator=g), contents / "a.png")
    save_image(torch.rand(3, 32, 40, generator=g), contents / "b.jpg")
    save_image(torch.rand(3, 36, 28, generator=g), contents / "sub" / "c.png")
    (contents / "broken.png").write_bytes(b"not a png")
    styles = [tmp_path / "s1.png", tmp_path / "s2.png"]
    for path in styles:
        save_image(torch.rand(3, 32, 32, generator=g), path)
    mask = torch.zeros(3, 20, 20)
    mask[:, :, :10] = 1.0
    masks = [tmp_path / "m1.png", tmp_path / "m2.png"]
    save_image(mask, masks[0])
    save_image(1 - mask, masks[1])
    return contents, styles, masks


@pytest.mark.parametrize(
    "controls",
    [[], ["--alpha", "0.5", "--preserve-colour"], ["STYLE2", "--weights", "0.3", "0.7"],
     ["STYLE2", "--mask", "M1", "M2"]],
    ids=["plain", "alpha-colour", "interpolation", "masks"],
)
def test_cli_stylises_a_folder_with_each_control(adain_run, folders, tmp_path, capsys, controls):
    contents, styles, masks = folders
    ckpt, _ = adain_run
    out = tmp_path / "out"
    extra = [{"STYLE2": str(styles[1]), "M1": str(masks[0]), "M2": str(masks[1])}.get(a, a) for a in controls]
    style_args = [str(styles[0])] + ([extra.pop(0)] if extra and extra[0] == str(styles[1]) else [])
    code = main([str(ckpt), "--content", str(contents), "--style", *style_args, *extra, "-o", str(out),
                 "--batch-size", "2", "--device", "cpu", "--style-short-side", "0", "--workers", "0"])
    assert code == 0  # decoded in the main thread: loader workers are test_stylise_folders' subject
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert len(written) == 3, written
    assert "broken.png" in capsys.readouterr().err
    # The content folder's subfolders are mirrored; each result has its content's size.
    sizes = {p.as_posix().split("_stylised_")[0]: Image.open(out / p).size for p in written}
    assert sizes == {"a": (40, 32), "b": (40, 32), "sub/c": (28, 36)}


def test_cli_runs_with_other_controls_do_not_overwrite_each_other(adain_run, folders, tmp_path):
    contents, styles, _ = folders
    ckpt, _ = adain_run
    out = tmp_path / "out"
    common = [str(ckpt), "--content", str(contents / "a.png"), "--style", str(styles[0]), "-o", str(out),
              "--device", "cpu", "--style-short-side", "0", "--workers", "0"]
    assert main(common) == 0
    assert main([*common, "--alpha", "0.5", "--preserve-colour"]) == 0
    stem = f"a_stylised_{styles[0].stem}"
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.png", f"{stem}_alpha0.5_colour.png"]


def test_every_command_is_a_console_script_of_styletransfer_cli(capsys):
    """One light module per command in styletransfer/cli, each registered; the old spellings are gone."""
    own = distribution("styletransfer").entry_points  # only this project's: other packages may be named alike
    scripts = {ep.name: ep.value for ep in own if ep.group == "console_scripts"}
    commands = sorted(p.stem for p in (Path(__file__).parents[1] / "styletransfer" / "cli").glob("*.py")
                      if p.stem not in ("__init__", "common"))
    assert scripts == {f"styletransfer-{name.replace('_', '-')}": f"styletransfer.cli.{name}:main" for name in commands}
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--preserve-colour" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["ckpt", "--content", "a.jpg", "--preserve-color"])


def test_release_files_through_the_cli(tmp_path, folders, release_files):
    contents, styles, _ = folders
    decoder, vgg = release_files
    out = tmp_path / "out"
    assert main([str(decoder), "--encoder-weights", str(vgg), "--content", str(contents / "a.png"), "--style",
                 str(styles[0]), "--style-short-side", "0", "-o", str(out)]) == 0
    assert load_image_tensor(next(out.iterdir())).shape == (3, 32, 40)


def test_a_missing_style_is_refused_before_the_model_is_built(adain_run, tmp_path, monkeypatch, capsys):
    """Hostile probe (issue 24): the missing --style was reported only after the model (and its encoder) loaded;
    the registry's check answers once the file is recognised."""
    import styletransfer.methods.adain.plugin as adain_plugin

    def never(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(adain_plugin, "load", never)
    Image.new("RGB", (32, 32)).save(tmp_path / "c.png")
    assert main([str(adain_run[1]), "--content", str(tmp_path / "c.png"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {adain_run[1]} (adain model) needs at least one style image (--style)"]


class _CtrlCWhileImporting(types.ModuleType):
    """A stand-in for a command's work module whose import is interrupted: any name taken from it raises
    KeyboardInterrupt, as a Ctrl-C while torch loads would."""

    def __getattr__(self, name):
        raise KeyboardInterrupt


@pytest.mark.parametrize("command, work", [
    ("stylise", "styletransfer.apps.stylise"), ("export", "styletransfer.apps.export"),
    ("demo", "styletransfer.apps.demo"),
])
def test_ctrl_c_while_the_work_loads_is_one_line_and_130(command, work, tmp_path, monkeypatch, capsys):
    """Hostile probe (issue 24): Ctrl-C during the imports printed a KeyboardInterrupt traceback."""
    main = importlib.import_module(f"styletransfer.cli.{command}").main
    monkeypatch.setitem(sys.modules, work, _CtrlCWhileImporting(work))
    argv = {"stylise": ["m.ckpt", "--content", str(tmp_path)], "export": ["m.ckpt", "-o", str(tmp_path / "m.onnx")],
            "demo": ["m.ckpt"]}[command]
    assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted: Ctrl-C"]


def test_help_and_flag_errors_answer_without_loading_torch():
    """Every command's ``--help`` (and a flag error) answers at once: torch loads only once there is work."""
    script = ("import importlib, sys\nmain = importlib.import_module(sys.argv[1]).main\ntry:\n    main(sys.argv[2:])\n"
              "except SystemExit as exc:\n    print('exit', exc.code, 'torch' in sys.modules)\n")
    cli = Path(__file__).parents[1] / "styletransfer" / "cli"
    commands = [f"styletransfer.cli.{p.stem}" for p in cli.glob("*.py")
                if p.stem not in ("__init__", "common")]
    runs = [(command, ["--help"], 0) for command in commands]
    runs.append(("styletransfer.cli.stylise", ["ckpt", "--content", "a.jpg", "--alpha", "x"], 2))
    for command, argv, code in runs:
        result = subprocess.run([sys.executable, "-c", script, command, *argv], capture_output=True, text=True,
                                timeout=60)
        assert result.stdout.strip().splitlines()[-1] == f"exit {code} False", (command, result.stdout + result.stderr)


@pytest.mark.slow
def test_stylising_loads_neither_lightning_nor_torchvision():
    """The inference path starts in about half the time: no PyTorch Lightning (training only) and no torchvision
    (GPU JPEG decoding only) among its imports."""
    script = ("import sys\nimport styletransfer.apps.stylise, styletransfer.protocol.registry as r\n"
              "[r.plugin(name) for name in r.plugin_modules()]\n"
              "heavy = ('pytorch_lightning', 'lightning_fabric', 'torchvision')\n"
              "print(sorted(m for m in heavy if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
