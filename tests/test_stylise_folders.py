"""The stylise command line on a folder: every readable image gets its own output, the rest are listed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import RANDOM_ENCODER
from PIL import Image

from styletransfer.cli.stylise import main
from styletransfer.data.images import save_image
from styletransfer.methods.adain import AdaINDecoder, Styliser
from styletransfer.methods.adain.checkpoint import save_decoder
from styletransfer.methods.adain.styliser import MIN_SIDE
from styletransfer.nn.encoder import build_encoder
from styletransfer.protocol.controls import check_size
from styletransfer.runtime.errors import ConfigError


@pytest.fixture(scope="module")
def decoder_file(tmp_path_factory) -> Path:
    """An AdaIN decoder.pth (random weights, behind the random encoder), written once for the module's commands."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "decoder.pth"
    save_decoder(AdaINDecoder(), build_encoder(RANDOM_ENCODER, ["relu4_1"]).spec, path)
    return path


def test_a_folder_with_clashing_names_tiny_and_broken_files_loses_nothing(decoder_file, tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    contents = tmp_path / "photos"
    for name in ("photo.png", "photo.bmp", "photo.tiff", "sub1/x.png", "sub2/x.png"):
        save_image(torch.rand(3, 24, 32, generator=g), contents / name)
    Image.new("RGB", (20, 24), (200, 30, 30)).save(contents / "photo.webp")
    save_image(torch.rand(3, 8, 8, generator=g), contents / "tiny.png")
    (contents / "broken.jpg").write_bytes(b"not a jpeg")
    style = tmp_path / "style.png"
    save_image(torch.rand(3, 32, 32, generator=g), style)
    out = tmp_path / "out"

    code = main([str(decoder_file), "--content", str(contents), "--style", str(style), "-o", str(out),
                 "--device", "cpu", "--style-short-side", "0", "--batch-size", "2"])

    assert code == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == [
        "photo_bmp_stylised_style.png", "photo_png_stylised_style.png", "photo_tiff_stylised_style.png",
        "photo_webp_stylised_style.png", "sub1/x_stylised_style.png", "sub2/x_stylised_style.png",
    ]
    assert Image.open(out / "photo_webp_stylised_style.png").size == (20, 24)
    captured = capsys.readouterr()
    assert f"wrote {len(written)} image(s)" in captured.out
    assert "skipped 2 image(s)" in captured.err
    assert "broken.jpg" in captured.err and "tiny.png: 8x8 px is too small" in captured.err


def test_names_that_would_clash_get_numbers_and_the_count_is_the_files_on_disk(decoder_file, tmp_path, capsys):
    """photo.jpg and photo.JPG both become photo_jpg..., a.png's a_png... is also a_png.jpg's name: every result is
    kept under a name unique even where the filesystem ignores case, and "wrote N" counts the files written."""
    g = torch.Generator().manual_seed(0)
    contents = tmp_path / "photos"
    for name in ("photo.jpg", "photo.JPG", "a.png", "a_png.jpg"):
        save_image(torch.rand(3, 24, 32, generator=g), contents / name)
    style = tmp_path / "style.png"
    save_image(torch.rand(3, 32, 32, generator=g), style)
    out = tmp_path / "out"
    assert main([str(decoder_file), "--content", str(contents), "--style", str(style), "-o", str(out),
                 "--device", "cpu", "--style-short-side", "0", "--workers", "0"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 4 and len({n.lower() for n in names}) == 4, names
    assert "wrote 4 image(s)" in capsys.readouterr().out


def test_a_missing_or_unreadable_single_content_is_one_line(decoder_file, tmp_path, capsys):
    """A content that does not exist is named before the model loads (the model file here does not exist either);
    an unreadable single content is named once, in the one error; one image is no "0.0 img/s"."""
    style = tmp_path / "style.png"
    save_image(torch.rand(3, 32, 32), style)
    assert main([str(tmp_path / "missing.pth"), "--content", str(tmp_path / "nope.jpg"), "--style", str(style)]) == 1
    assert capsys.readouterr().err.strip() == (f"error: --content {tmp_path / 'nope.jpg'} does not exist (resolved: "
                                               f"{(tmp_path / 'nope.jpg').resolve()})")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    decoder = decoder_file
    common = ["--style", str(style), "--device", "cpu", "--style-short-side", "0", "--workers", "0"]
    assert main([str(decoder), "--content", str(broken), *common, "-o", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if "broken.jpg" in line]  # beside the progress bar: no other
    assert line.startswith("error: no image could be stylised") and "skipped" not in err
    save_image(torch.rand(3, 24, 32), tmp_path / "one.png")
    assert main([str(decoder), "--content", str(tmp_path / "one.png"), *common, "-o", str(tmp_path / "b")]) == 0
    assert "img/s" not in capsys.readouterr().out


def test_an_output_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    style = tmp_path / "style.png"
    save_image(torch.rand(3, 32, 32), style)
    taken = tmp_path / "out.png"
    taken.write_bytes(b"keep me")
    assert main([str(tmp_path / "missing.pth"), "--content", str(style), "--style", str(style), "-o", str(taken)]) == 1
    assert f"--output {taken} is a file" in capsys.readouterr().err and taken.read_bytes() == b"keep me"
    # A folder that cannot be written is named before the model loads (the model file here does not even exist),
    # for stylise and export alike (they used to work through the folder first, export then raised a traceback).
    from styletransfer.cli.export import main as export_main

    assert main([str(tmp_path / "missing.pth"), "--content", str(style), "--style", str(style), "-o",
                 str(taken / "sub")]) == 1
    assert f"--output {taken / 'sub'}: cannot write there" in capsys.readouterr().err
    assert export_main([str(tmp_path / "missing.pth"), "-o", str(taken / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert f"-o {taken}: cannot write there" in err and "Traceback" not in err


def test_the_size_check_names_the_image_and_the_fix():
    """One check for every AdaIN input (folders, videos, the demo): 16 px, relu4_1's 2 x 2 map, is the least."""
    assert MIN_SIDE == 16
    check_size(MIN_SIDE, MIN_SIDE, "photo.png", MIN_SIDE)
    with pytest.raises(ConfigError) as raised:
        check_size(15, 40, "photo.png", MIN_SIDE)
    assert str(raised.value) == ("photo.png: 15x40 px is too small (the model needs 16 px on each side; pass "
                                 "--content-short-side 16 or more)")
    with pytest.raises(ConfigError, match=r"^the content image: 40x8 px is too small .*; upload a larger one\)$"):
        check_size(40, 8, "the content image", MIN_SIDE, "upload a larger one")


def test_a_single_file_keeps_its_plain_name(decoder_file, tmp_path, capsys):
    """... and the last line names the file written (it said "wrote 1 image(s) to DIR"). The one command here with
    the default --style-short-side (512: the style enlarged before it is encoded)."""
    g = torch.Generator().manual_seed(1)
    save_image(torch.rand(3, 24, 32, generator=g), tmp_path / "photo.png")
    save_image(torch.rand(3, 32, 32, generator=g), tmp_path / "s.png")
    out = tmp_path / "out"
    assert main([str(decoder_file), "--content", str(tmp_path / "photo.png"), "--style",
                 str(tmp_path / "s.png"), "-o", str(out), "--device", "cpu"]) == 0
    assert [p.name for p in out.iterdir()] == ["photo_stylised_s.png"]
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out / 'photo_stylised_s.png'}"


def test_a_model_trained_behind_a_random_encoder_is_named_as_such_once(decoder_file, tmp_path, caplog):
    """Through the Python API and through the command (which loads through the registry): one warning each."""
    with caplog.at_level("WARNING"):
        Styliser.from_checkpoint(decoder_file)
    assert caplog.text.count("trained behind a RANDOM VGG encoder") == 1
    caplog.clear()
    save_image(torch.rand(3, 24, 32), tmp_path / "photo.png")
    with caplog.at_level("WARNING"):
        assert main([str(decoder_file), "--content", str(tmp_path / "photo.png"), "--style",
                     str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"), "--style-short-side", "0"]) == 0
    assert caplog.text.count("trained behind a RANDOM VGG encoder") == 1


def test_overlapped_run_writes_the_same_images_as_the_sequential_one(decoder_file, tmp_path, capsys):
    """Workers decoding, size groups (a batch never mixes sizes) and writer threads change nothing in the files;
    --quality reaches the JPEG encoder, and bad flags are refused by name."""
    g = torch.Generator().manual_seed(2)
    contents = tmp_path / "photos"
    for i, (h, w) in enumerate([(24, 32), (32, 24), (24, 32), (40, 40), (24, 32), (32, 24), (24, 32)]):
        save_image(torch.rand(3, h, w, generator=g), contents / f"{i}.png")
    (contents / "broken.png").write_bytes(b"nope")
    style = tmp_path / "style.png"
    save_image(torch.rand(3, 32, 32, generator=g), style)
    common = [str(decoder_file), "--content", str(contents), "--style", str(style), "--device", "cpu",
              "--style-short-side", "0", "--batch-size", "2"]
    assert main([*common, "-o", str(tmp_path / "seq"), "--workers", "0", "--writers", "0"]) == 0
    assert main([*common, "-o", str(tmp_path / "par"), "--workers", "2", "--writers", "2"]) == 0
    seq, par = sorted((tmp_path / "seq").iterdir()), sorted((tmp_path / "par").iterdir())
    assert [p.name for p in seq] == [p.name for p in par] and len(seq) == 7
    for a, b in zip(seq, par):
        assert a.read_bytes() == b.read_bytes()
    out = capsys.readouterr()
    assert out.out.count("wrote 7 image(s)") == 2 and out.err.count("broken.png") >= 2
    sizes = {}
    for quality in (30, 95):
        assert main([*common, "-o", str(tmp_path / f"q{quality}"), "--ext", "jpg", "--quality", str(quality),
                     "--workers", "0"]) == 0
        sizes[quality] = sum(p.stat().st_size for p in (tmp_path / f"q{quality}").iterdir())
    assert sizes[30] < sizes[95]
    assert main([*common, "-o", str(tmp_path / "bad"), "--quality", "0"]) == 1
    assert "--quality" in capsys.readouterr().err
    for flag in ("--content-short-side", "--style-short-side"):  # a traceback from a loader worker before
        assert main([*common, "-o", str(tmp_path / "bad"), flag, "-1"]) == 1
        assert capsys.readouterr().err.startswith(f"error: {flag} must be >= ")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


@pytest.mark.parametrize("signum", [15, 2])
def test_an_interrupted_folder_says_how_many_images_are_kept_and_exits_with_the_signal(decoder_file, tmp_path, capsys,
                                                                                      monkeypatch, signum):
    """SIGTERM used to end a folder run silently, Ctrl-C with a traceback: both now stop, count the images written
    (each whole) in one line and exit 128 + signal (the signal sent to this process while the 2nd image stylises)."""
    import os

    import styletransfer.apps.stylise as app

    g = torch.Generator().manual_seed(0)
    for i in range(4):
        save_image(torch.rand(3, 24, 32, generator=g), tmp_path / "photos" / f"p{i}.png")
    save_image(torch.rand(3, 32, 32, generator=g), tmp_path / "style.png")
    load = app._load_model

    def loaded(args):
        model = load(args)
        stylise, calls = model.stylise, []

        def signalled(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signum)
            return stylise(*a, **k)

        model.stylise = signalled
        return model

    monkeypatch.setattr(app, "_load_model", loaded)
    out = tmp_path / "out"
    code = main([str(decoder_file), "--content", str(tmp_path / "photos"), "--style",
                 str(tmp_path / "style.png"), "-o", str(out), "--device", "cpu", "--workers", "0", "--writers", "0",
                 "--batch-size", "1", "--style-short-side", "0"])
    assert code == 128 + signum
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
    written = list(out.glob("*.png"))
    assert len(lines) == 1 and f"after {len(written)} of 4 image(s) written to {out}" in lines[0], err
    assert len(written) == 1 and "Traceback" not in err


def test_an_output_folder_inside_the_content_folder_is_not_read_back(decoder_file, tmp_path, capsys):
    """Run twice with -o inside the content folder: the second run stylises the photos again, not the first run's
    results (it used to write out/out/..._stylised_s_stylised_s.png); an .onnx file without --runtime onnx is named."""
    g = torch.Generator().manual_seed(0)
    photos = tmp_path / "photos"
    for i in range(2):
        save_image(torch.rand(3, 24, 32, generator=g), photos / f"p{i}.png")
    save_image(torch.rand(3, 32, 32, generator=g), tmp_path / "s.png")
    args = [str(decoder_file), "--content", str(photos), "--style", str(tmp_path / "s.png"), "-o",
            str(photos / "out"), "--device", "cpu", "--workers", "0", "--style-short-side", "0"]
    assert main(args) == 0 and main([*args, "--overwrite"]) == 0
    assert sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.png")) == [
        "out/p0_stylised_s.png", "out/p1_stylised_s.png", "p0.png", "p1.png"]
    capsys.readouterr()
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    assert main([str(tmp_path / "model.onnx"), *args[1:]]) == 1
    assert "model.onnx is an ONNX model: add --runtime onnx" in capsys.readouterr().err


def test_results_that_cannot_be_written_fail_the_command_after_the_rest(decoder_file, tmp_path, capsys, monkeypatch):
    """A full disk midway through a folder (hostile probe rerun, issue 24) ended with "wrote 2 image(s)", the other
    results listed as skipped inputs and exit status 0: now the count is still the files on disk, nothing is
    half-written, and the command fails in one line saying what was not written and the fix."""
    import styletransfer.apps.pipeline as pipeline

    g = torch.Generator().manual_seed(0)
    contents = tmp_path / "photos"
    for name in ("a.png", "b.png", "c.png"):
        save_image(torch.rand(3, 24, 32, generator=g), contents / name)
    style = tmp_path / "style.png"
    save_image(torch.rand(3, 32, 32, generator=g), style)
    real_save = pipeline.save_pil

    def disk_full_after_a(image, path, quality=95):
        if not path.name.startswith("a_"):
            raise OSError(28, "No space left on device")
        return real_save(image, path, quality=quality)

    monkeypatch.setattr(pipeline, "save_pil", disk_full_after_a)
    out = tmp_path / "out"
    code = main([str(decoder_file), "--content", str(contents), "--style", str(style), "-o", str(out),
                 "--device", "cpu", "--style-short-side", "0", "--workers", "0", "--writers", "0"])
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_stylised_style.png"]
    captured = capsys.readouterr()
    assert f"wrote {out / 'a_stylised_style.png'}" in captured.out  # the one result written, named
    assert f"error: 2 result(s) could not be written to {out}" in captured.err
    assert "No space left on device" in captured.err and "Traceback" not in captured.err


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_results_already_in_the_output_folder_are_refused_skipped_or_replaced(decoder_file, tmp_path, capsys,
                                                                              monkeypatch):
    """A second run into the same -o (another model, the same names) silently replaced the first run's results
    (hostile probe rerun, issue 24). Now it is refused before the model loads, in one line naming the first result
    and the count, with the two ways on: --skip-existing stylises only the missing ones (an interrupted run's rest),
    --overwrite replaces them. The ONNX runtime is checked the same way, before its model file is read."""
    g = torch.Generator().manual_seed(0)
    photos, out = tmp_path / "photos", tmp_path / "out"
    for i in range(3):
        save_image(torch.rand(3, 24, 32, generator=g), photos / f"p{i}.png")
    (photos / "broken.png").write_bytes(b"not a png")  # skipped by every run, never a result
    save_image(torch.rand(3, 32, 32, generator=g), tmp_path / "s.png")
    model = decoder_file
    args = ["--content", str(photos), "--style", str(tmp_path / "s.png"), "-o", str(out), "--device", "cpu",
            "--workers", "0", "--style-short-side", "0"]
    assert main([str(model), *args]) == 0
    first = _mtimes(out)
    assert list(first) == ["p0_stylised_s.png", "p1_stylised_s.png", "p2_stylised_s.png"]
    capsys.readouterr()

    (tmp_path / "model.onnx").write_bytes(b"not read: the refusal comes first")
    for model_args in ([str(model)], [str(tmp_path / "model.onnx"), "--runtime", "onnx"]):
        assert main([*model_args, *args]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(
            f"error: {out} already holds 3 of this run's 4 result(s) (the first: {out / 'p0_stylised_s.png'}): add "
            "--skip-existing to stylise only the missing ones, --overwrite to replace them, or choose another -o")
    one = [str(tmp_path / "model.onnx"), "--runtime", "onnx", *args, "--skip-existing"]
    one[one.index(str(photos))] = str(photos / "p0.png")
    assert main(one) == 0  # nothing to do: the model file is not even read
    assert "1 of 1 result(s) are already in" in capsys.readouterr().out
    assert main([str(model), *args, "--skip-existing"]) == 0  # only the unreadable file is left: skipped again
    assert "3 of 4 result(s) are already in" in capsys.readouterr().out
    assert _mtimes(out) == first

    (out / "p1_stylised_s.png").unlink()
    assert main([str(model), *args, "--skip-existing"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 4 result(s) are already in" in printed and f"wrote {out / 'p1_stylised_s.png'}" in printed
    again = _mtimes(out)
    assert {k: v for k, v in again.items() if k != "p1_stylised_s.png"} == {
        k: v for k, v in first.items() if k != "p1_stylised_s.png"}

    assert main([str(model), *args, "--overwrite"]) == 0
    assert all(_mtimes(out)[name] > again[name] for name in again), "each result written again"
    with pytest.raises(SystemExit) as refused:  # argparse: the two are not allowed together
        main([str(model), *args, "--overwrite", "--skip-existing"])
    assert refused.value.code == 2
