"""Tests for styletransfer.data: finding and reading images, datasets, the datamodule and the sample set."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from batch_recorder import BatchRecorder
from PIL import Image

from styletransfer.data import ContentStyleDataModule, SampleDataModule
from styletransfer.data.datasets import ContentStyleDataset, collate_content_style
from styletransfer.data.images import find_images, load_image_tensor, load_rgb, save_image
from styletransfer.data.resumable import DrawKey
from styletransfer.data.sample import make_sample_dataset
from styletransfer.data.transforms import TrainTransform
from styletransfer.runtime.errors import DataDirError, ImageLoadError


def _write(path: Path, size=(40, 32), colour=(200, 30, 60), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    array = np.clip(np.array(colour) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(array).save(path, format=fmt)
    return path


def _folder(root: Path, n: int, prefix: str = "img", size=(40, 32)) -> Path:
    for i in range(n):
        _write(root / f"{prefix}_{i:02d}.png", size=size, colour=(20 * i % 255, 100, 200 - 10 * i % 200))
    return root


# ---------------------------------------------------------------- find_images


def test_find_images_recursive_sorted_case_insensitive_and_skips_hidden(tmp_path):
    _write(tmp_path / "b.JPG", fmt="JPEG")
    _write(tmp_path / "a.png")
    _write(tmp_path / "sub" / "deeper" / "c.TiFf", fmt="TIFF")
    _write(tmp_path / "sub" / "d.webp", fmt="WEBP")
    _write(tmp_path / ".hidden.png")
    _write(tmp_path / ".cache" / "e.png")
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.png", "b.JPG", "sub/d.webp", "sub/deeper/c.TiFf"]
    assert find_images(str(tmp_path)) == find_images(tmp_path)


def test_find_images_missing_folder_names_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataDirError, match="nope") as info:
        find_images(missing)
    assert "does not exist" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_find_images_empty_and_non_image_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataDirError, match="empty"):
        find_images(empty)
    others = tmp_path / "others"
    others.mkdir()
    (others / "readme.md").write_text("x")
    (others / "img.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataDirError) as info:
        find_images(others)
    message = str(info.value)
    assert str(others) in message and ".jpg" in message and ".png" in message and "2 file(s)" in message


# ---------------------------------------------------------------- load_rgb


def test_load_rgb_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (20, 10)
    r, g, b = np.asarray(img).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_load_rgb_16bit_grey_png_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    ramp = (np.arange(64, dtype=np.uint16) * 1024).reshape(1, 64).repeat(8, 0)  # 0 .. 64512
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    array = np.asarray(load_rgb(path))
    assert array.shape == (8, 64, 3)
    expected = np.rint(ramp[0] / 65535 * 255)
    assert np.abs(array[0, :, 0].astype(float) - expected).max() <= 1
    assert (array[..., 0] == array[..., 2]).all()
    assert 100 < array.mean() < 160  # not saturated to white


def test_load_rgb_rgba_and_palette_transparency_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 5:, 3] = 255  # left half fully transparent (red underneath), right half opaque red
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    out = np.asarray(load_rgb(tmp_path / "rgba.png"))
    assert (out[:, :5] == 255).all()
    assert (out[:, 5:] == (255, 0, 0)).all()

    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    pal.paste(0, (0, 0, 5, 10))
    pal.save(tmp_path / "pal.png", transparency=0)
    out = np.asarray(load_rgb(tmp_path / "pal.png"))
    assert (out[:, :5] == 255).all()  # transparent blue -> white
    assert (out[:, 5:] == (0, 255, 0)).all()


def test_load_rgb_grey_bilevel_float_modes(tmp_path):
    Image.new("L", (6, 4), 77).save(tmp_path / "grey.png")
    assert np.asarray(load_rgb(tmp_path / "grey.png")).tolist() == [[[77, 77, 77]] * 6] * 4
    Image.new("1", (6, 4), 1).save(tmp_path / "bw.bmp")
    assert (np.asarray(load_rgb(tmp_path / "bw.bmp")) == 255).all()
    Image.fromarray(np.full((4, 6), 0.5, np.float32)).save(tmp_path / "float.tif")
    out = np.asarray(load_rgb(tmp_path / "float.tif"))
    assert out.shape == (4, 6, 3) and (np.abs(out.astype(int) - 128) <= 1).all()
    la = Image.new("LA", (6, 4), (0, 0))
    la.save(tmp_path / "la.png")
    assert (np.asarray(load_rgb(tmp_path / "la.png")) == 255).all()


def test_load_rgb_applies_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.new("RGB", (40, 20), (10, 120, 30)).save(path, exif=exif.tobytes())
    assert Image.open(path).size == (40, 20)
    assert load_rgb(path).size == (20, 40)
    assert load_image_tensor(path).shape == (3, 40, 20)


def _broken_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = _write(folder / "tmp_good.jpg", size=(64, 48), fmt="JPEG").read_bytes()
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    (folder / "tmp_good.jpg").unlink()
    noise = folder / "noise.jpg"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    empty = folder / "zero.png"
    empty.write_bytes(b"")
    return [truncated, noise, empty]


def test_load_rgb_broken_files_raise_image_load_error_naming_file(tmp_path, monkeypatch):
    truncated, noise, empty = _broken_files(tmp_path)
    for path in (truncated, noise, empty, tmp_path / "absent.png"):
        with pytest.raises(ImageLoadError) as info:
            load_rgb(path)
        assert str(path) in str(info.value) and info.value.path == str(path)
    with pytest.raises(ImageLoadError, match="truncated"):
        load_rgb(truncated)
    with pytest.raises(ImageLoadError, match="empty"):
        load_rgb(empty)
    big = _write(tmp_path / "big.png", size=(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_rgb(big)


# ---------------------------------------------------------------- tensors and saving


def test_load_image_tensor_resizes_shorter_or_longer_side(tmp_path):
    path = _write(tmp_path / "wide.png", size=(60, 30))
    full = load_image_tensor(path)
    assert full.shape == (3, 30, 60) and full.dtype == torch.float32
    assert 0.0 <= full.min() and full.max() <= 1.0
    assert load_image_tensor(path, size=16).shape == (3, 16, 32)
    assert load_image_tensor(path, size=16, long_side=True).shape == (3, 8, 16)
    with pytest.raises(ValueError, match="size"):
        load_image_tensor(path, size=0)


def test_save_image_roundtrip_clamps_and_creates_dirs(tmp_path):
    tensor = torch.linspace(-0.5, 1.5, 3 * 8 * 10).reshape(1, 3, 8, 10)
    out = tmp_path / "a" / "b" / "out.png"
    save_image(tensor, out)
    back = load_image_tensor(out)
    assert back.shape == (3, 8, 10)
    assert torch.allclose(back, tensor[0].clamp(0, 1), atol=1 / 255)
    assert [p.name for p in out.parent.iterdir()] == ["out.png"]  # no temporary file left behind
    save_image(tensor[0], tmp_path / "out.jpg")
    assert Image.open(tmp_path / "out.jpg").format == "JPEG"
    with pytest.raises(ValueError, match="shaped"):
        save_image(torch.zeros(4, 8, 8), tmp_path / "bad.png")


# ---------------------------------------------------------------- datasets and transforms


def test_train_transform_shape_and_size_validation():
    img = Image.new("RGB", (90, 50), (1, 2, 3))
    out = TrainTransform(short_side=40, crop_size=32)(img)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="data.crop_size"):
        TrainTransform(short_side=32, crop_size=64)
    with pytest.raises(ValueError, match="data.short_side"):
        TrainTransform(short_side=0, crop_size=0)


def test_dataset_skips_broken_files_and_reports_them(tmp_path):
    content = _folder(tmp_path / "content", 3)
    broken = _broken_files(content)
    files = find_images(content)
    styles = find_images(_folder(tmp_path / "style", 2))
    dataset = ContentStyleDataset(files, styles, TrainTransform(32, 32))
    reported = []
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["content"].shape == (3, 32, 32) and item["style"].shape == (3, 32, 32)
        reported += [path for path, _ in item["skipped"]]
    assert sorted(reported) == sorted(str(p) for p in broken)  # each reported once, then never retried
    batch = collate_content_style([dataset[0], dataset[1]])
    assert batch["content"].shape == (2, 3, 32, 32) and batch["skipped"] == []


def test_dataset_all_unreadable_names_folder(tmp_path):
    broken = _broken_files(tmp_path / "bad")
    dataset = ContentStyleDataset(broken, broken, TrainTransform(32, 32))
    with pytest.raises(RuntimeError, match=str(tmp_path / "bad")):
        dataset[0]


def test_style_choice_and_crops_follow_the_data_seed_not_the_global_rng(tmp_path):
    files = find_images(_folder(tmp_path / "c", 8))
    dataset = ContentStyleDataset(files, files, TrainTransform(32, 16), seed=3)
    torch.manual_seed(0)
    first = torch.stack([dataset[DrawKey(3, 1, i)]["style"] for i in range(8)])
    torch.manual_seed(1)  # the global generator plays no part
    assert torch.equal(first, torch.stack([dataset[DrawKey(3, 1, i)]["style"] for i in range(8)]))
    other_epoch = torch.stack([dataset[DrawKey(3, 2, i)]["style"] for i in range(8)])
    other_seed = torch.stack([dataset[DrawKey(4, 1, i)]["style"] for i in range(8)])
    assert not torch.equal(first, other_epoch) and not torch.equal(first, other_seed)


# ---------------------------------------------------------------- datamodule


def test_datamodule_batches_shapes_and_fixed_validation(tmp_path):
    content = _folder(tmp_path / "content", 10, size=(50, 40))
    _folder(tmp_path / "style" / "nested", 5, prefix="s", size=(40, 60))
    kwargs = dict(content_dir=str(content), style_dir=str(tmp_path / "style"), short_side=40, crop_size=32,
                  batch_size=4, num_workers=0, val_pairs=3)
    dm = ContentStyleDataModule(**kwargs)
    train = list(dm.train_dataloader())
    assert len(train) == 2  # drop_last with 10 images, batch 4
    for batch in train:
        batch = dm.on_after_batch_transfer(batch, 0)
        assert set(batch) == {"content", "style"}
        assert batch["content"].shape == (4, 3, 32, 32) and batch["style"].dtype == torch.float32
    val = list(dm.val_dataloader())
    assert [b["content"].shape[0] for b in val] == [3]
    again = ContentStyleDataModule(**kwargs)
    assert again.validation_pairs == dm.validation_pairs
    assert [c.name for c, _ in dm.validation_pairs] == ["img_00.png", "img_03.png", "img_06.png"]
    assert torch.equal(next(iter(again.val_dataloader()))["style"], val[0]["style"])


def test_datamodule_counts_and_logs_skipped_files(tmp_path, caplog):
    content = _folder(tmp_path / "content", 6)
    broken = _broken_files(content)
    style = _folder(tmp_path / "style", 3)
    dm = ContentStyleDataModule(str(content), str(style), short_side=32, crop_size=32, batch_size=3, num_workers=0,
                                val_pairs=2)
    with caplog.at_level(logging.WARNING, logger="styletransfer.data.datamodule"):
        for _ in range(2):  # two epochs: broken files logged once only
            for batch in dm.train_dataloader():
                batch = dm.on_after_batch_transfer(batch, 0)
                assert batch["content"].shape == (3, 3, 32, 32)
    assert dm.num_skipped == 3
    assert set(dm.skipped_files) == {str(p) for p in broken}
    messages = [r.getMessage() for r in caplog.records if "skipping unreadable image" in r.getMessage()]
    assert len(messages) == 3
    assert all(any(str(p) in m for m in messages) for p in broken)
    assert all(str(c) not in str(dm.validation_pairs) for c in broken)


def test_trainer_sees_clean_batches_and_skips_are_counted(tmp_path):
    content = _folder(tmp_path / "content", 4)
    _broken_files(content)
    dm = ContentStyleDataModule(str(content), str(_folder(tmp_path / "style", 2)), short_side=32, crop_size=32,
                                batch_size=2, num_workers=0, val_pairs=0)
    model = BatchRecorder()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    assert model.seen and all(set(batch) == {"content", "style"} for batch in model.seen)
    assert dm.num_skipped == 3


def test_datamodule_errors_name_setting_and_path(tmp_path):
    style = _folder(tmp_path / "style", 2)
    with pytest.raises(DataDirError) as info:
        ContentStyleDataModule(str(tmp_path / "missing"), str(style))
    assert "data.content_dir" in str(info.value) and str(tmp_path / "missing") in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataDirError, match="data.style_dir"):
        ContentStyleDataModule(str(style), str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="data.crop_size"):
        ContentStyleDataModule(str(style), str(style), short_side=32, crop_size=64)
    with pytest.raises(ValueError, match="data.batch_size"):
        ContentStyleDataModule(str(style), str(style), batch_size=0)
    with pytest.raises(ValueError, match="data.batch_size"):
        ContentStyleDataModule(str(style), str(style), batch_size=3)  # only 2 images with drop_last
    with pytest.raises(ValueError, match="data.num_workers"):
        ContentStyleDataModule(str(style), str(style), batch_size=1, num_workers=-1)


# ---------------------------------------------------------------- sample set


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in find_images(folder)}


def test_sample_dataset_deterministic_counts_and_cached(tmp_path):
    c1, s1 = make_sample_dataset(tmp_path / "one", n_content=14, n_style=8, size=32)
    c2, s2 = make_sample_dataset(tmp_path / "two", n_content=14, n_style=8, size=32)
    assert len(find_images(c1)) == 14 and len(find_images(s1)) == 8
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    assert any("photo_" in p.name for p in find_images(c1))  # bundled scikit-image photographs used
    assert all(Image.open(p).size == (32, 32) for p in find_images(tmp_path / "one"))
    stamp = (c1 / sorted(_digest(c1))[0]).stat().st_mtime_ns
    make_sample_dataset(tmp_path / "one", n_content=14, n_style=8, size=32)
    assert (c1 / sorted(_digest(c1))[0]).stat().st_mtime_ns == stamp  # not regenerated
    make_sample_dataset(tmp_path / "one", n_content=5, n_style=3, size=32)
    assert len(find_images(c1)) == 5 and len(find_images(s1)) == 3
    colour_means = torch.stack([load_image_tensor(p).mean((1, 2)) for p in find_images(s1)])
    assert torch.cdist(colour_means, colour_means).add(torch.eye(3)).min() > 0.02  # distinct colour statistics


def test_sample_datamodule_yields_batches(tmp_path):
    dm = SampleDataModule(root=str(tmp_path / "sample"), short_side=32, crop_size=16, batch_size=4, n_content=8,
                          n_style=4, val_pairs=2)
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["content"].shape == (4, 3, 16, 16) and batch["style"].shape == (4, 3, 16, 16)
    assert len(dm.validation_pairs) == 2
    assert dm.content_dir == str(tmp_path / "sample" / "content")
