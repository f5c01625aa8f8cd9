"""The prepared image cache: ``styletransfer-prepare`` (incremental, resumable, crash-safe), reading
it in training (``data=cache``: the folder path's batches), its checks, GPU-decode batches (bytes + crop boxes),
JPEG draft decoding and the loader settings."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import RANDOM_ENCODER, ROOT, train_in_process
from PIL import Image

from styletransfer.cli.prepare import main
from styletransfer.data import CacheDataModule, ContentStyleDataModule
from styletransfer.data import prepare as prepare_module
from styletransfer.data.cache import CacheSource, ShardCache, read_manifest
from styletransfer.data.cache_datamodule import CacheTrainTransform
from styletransfer.data.datasets import ContentStyleDataset, collate_content_style
from styletransfer.data.decode_ahead import DecodeAhead, PendingBatch
from styletransfer.data.images import load_rgb, resize_to_side
from styletransfer.data.loading import MAX_AUTO_WORKERS, resolve_workers
from styletransfer.data.prepare import prepare
from styletransfer.runtime.errors import ConfigError, DataDirError

SIDE = 32


def _image(path: Path, size: tuple[int, int], seed: int, fmt: str | None = None) -> Path:
    """A smooth random picture (JPEG-friendly) of ``size`` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]] / 9.0
    waves = np.stack([np.sin(x * rng.uniform(0.3, 1.5) + c) * np.cos(y * rng.uniform(0.3, 1.5) - c)
                      for c in range(3)], -1)
    Image.fromarray((waves * 100 + 128).clip(0, 255).astype(np.uint8)).save(path, format=fmt)
    return path


def _folder(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` images, JPEG and PNG, a few at least twice SIDE (JPEG draft decoding applies), one in a subfolder."""
    for i in range(n):
        size = (80 + 8 * i, 70) if i % 2 else (50 + 4 * i, 40)
        name = f"sub/img_{i:02d}.png" if i == 1 else f"img_{i:02d}.{'jpg' if i % 2 else 'png'}"
        _image(root / name, size, seed + i)
    return root


@pytest.fixture
def sources(tmp_path) -> tuple[Path, Path]:
    return _folder(tmp_path / "src" / "content", 6), _folder(tmp_path / "src" / "style", 4, seed=50)


def _prepare_both(sources: tuple[Path, Path], root: Path, fmt: str) -> Path:
    for src, name in zip(sources, ("content", "style")):
        prepare(src, root / name, short_side=SIDE, fmt=fmt, workers=0, progress=False)
    return root


def _pixels(cache: ShardCache, index: int) -> np.ndarray:
    return np.asarray(CacheSource(cache, "content").read(index))


# ---------------------------------------------------------------- prepare


def test_prepare_raw_holds_the_training_images_and_lists_unreadable_files(sources, tmp_path):
    src = sources[0]
    (src / "sub" / "broken.jpg").write_bytes(b"not a jpeg at all")
    summary = prepare(src, tmp_path / "cache", short_side=SIDE, fmt="raw", workers=2, progress=False)
    assert summary.images == 6 and summary.skipped.keys() == {"sub/broken.jpg"}
    manifest = read_manifest(tmp_path / "cache")
    assert [entry["source"] for entry in manifest["skipped"]] == ["sub/broken.jpg"]
    cache = ShardCache(tmp_path / "cache")
    assert [r["source"] for r in cache.records] == [p.relative_to(src).as_posix() for p in sorted(
        (p for p in src.rglob("*.*") if p.name != "broken.jpg"), key=lambda p: p.relative_to(src).as_posix())]
    for index, record in enumerate(cache.records):
        path = src / record["source"]
        expected = np.asarray(resize_to_side(load_rgb(path, draft_side=SIDE), SIDE))
        assert np.array_equal(_pixels(cache, index), expected), record["source"]
        if path.suffix == ".png":  # no draft decoding for PNGs: exactly the plain resize
            assert np.array_equal(expected, np.asarray(resize_to_side(load_rgb(path), SIDE)))
        assert min(record["height"], record["width"]) == SIDE
        assert record["sha256"] and record["size"] == path.stat().st_size


def test_prepare_jpeg_is_close_to_the_training_images(sources, tmp_path):
    prepare(sources[0], tmp_path / "cache", short_side=SIDE, workers=0, progress=False)
    cache = ShardCache(tmp_path / "cache")
    assert cache.format == "jpeg"
    for index, record in enumerate(cache.records):
        expected = np.asarray(resize_to_side(load_rgb(sources[0] / record["source"], draft_side=SIDE), SIDE))
        assert np.abs(_pixels(cache, index).astype(int) - expected).mean() < 4.0


def test_rerun_processes_only_new_or_changed_sources_and_keeps_shards(sources, tmp_path):
    src, dst = sources[0], tmp_path / "cache"
    prepare(src, dst, short_side=SIDE, fmt="raw", workers=0, progress=False)
    before = read_manifest(dst)
    _image(src / "sub" / "new.png", (60, 50), seed=99)
    again = prepare(src, dst, short_side=SIDE, fmt="raw", workers=0, progress=False)
    assert (again.processed, again.kept, again.shards_written) == (1, 6, 1)
    after = read_manifest(dst)
    assert after["shards"][:len(before["shards"])] == before["shards"]
    assert [r["source"] for r in after["records"]] == sorted([r["source"] for r in before["records"]] + ["sub/new.png"])

    touched = src / "img_00.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    same = prepare(src, dst, short_side=SIDE, fmt="raw", workers=0, progress=False)
    assert (same.processed, same.shards_written) == (1, 0), "same contents: checksum says unchanged, no new shard"
    assert prepare(src, dst, short_side=SIDE, fmt="raw", workers=0, progress=False).processed == 0

    _image(touched, (40, 60), seed=7)  # new contents, new size
    changed = prepare(src, dst, short_side=SIDE, fmt="raw", workers=0, progress=False)
    assert (changed.processed, changed.shards_written, changed.images) == (1, 1, 7)
    cache = ShardCache(dst)
    index = [r["source"] for r in cache.records].index("img_00.png")
    assert cache.records[index]["width"] == SIDE and cache.records[index]["height"] == 48
    (src / "img_02.png").unlink()
    assert prepare(src, dst, short_side=SIDE, fmt="raw", workers=0, progress=False).removed == 1
    assert len(ShardCache(dst)) == 6


def test_interrupted_prepare_keeps_finished_shards_and_resumes(sources, tmp_path, monkeypatch):
    src, dst = sources[0], tmp_path / "cache"
    real, calls = prepare_module.write_shard, []

    def killed_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "write_shard", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, dst, short_side=SIDE, fmt="raw", workers=0, shard_mb=1e-6, progress=False)
    kept = read_manifest(dst)
    assert len(kept["shards"]) == 1 and len(kept["records"]) == 1
    assert sorted(p.name for p in (dst / "shards").iterdir()) == ["00000.bin"], "no half-written shard left"
    monkeypatch.setattr(prepare_module, "write_shard", real)
    resumed = prepare(src, dst, short_side=SIDE, fmt="raw", workers=0, shard_mb=1e-6, progress=False)
    assert (resumed.processed, resumed.kept, resumed.images) == (5, 1, 6)
    assert read_manifest(dst)["shards"][0] == kept["shards"][0]
    fresh = prepare(src, tmp_path / "fresh", short_side=SIDE, fmt="raw", workers=0, progress=False)
    assert fresh.images == 6
    cache, reference = ShardCache(dst), ShardCache(tmp_path / "fresh")
    for index in range(6):
        assert np.array_equal(_pixels(cache, index), _pixels(reference, index))


def test_prepare_reads_each_source_once_and_caches_the_bytes_it_hashed(sources, tmp_path, monkeypatch):
    """The checksum in the manifest is of the very bytes decoded: a source rewritten right after it was read is
    cached as read (the old code read the file a second time to decode it)."""
    read_bytes = Path.read_bytes
    hashed: dict[str, str] = {}

    def read_then_rewrite(self: Path) -> bytes:
        data = read_bytes(self)
        hashed[self.relative_to(sources[0]).as_posix()] = hashlib.sha256(data).hexdigest()
        _image(self, (60, 60), seed=99, fmt=Image.open(self).format)  # a square picture now: 32 x 32 once cached
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_rewrite)
    prepare(sources[0], tmp_path / "cache", short_side=SIDE, fmt="raw", workers=0, progress=False)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    records = read_manifest(tmp_path / "cache")["records"]
    assert {record["source"]: record["sha256"] for record in records} == hashed, "each source read once"
    assert all((record["height"], record["width"]) != (SIDE, SIDE) for record in records), "the bytes read, decoded"


def test_other_settings_are_refused_unless_rebuild(sources, tmp_path, capsys):
    dst = tmp_path / "cache"
    prepare(sources[1], dst, short_side=SIDE, workers=0, progress=False)
    with pytest.raises(ConfigError, match="--rebuild"):
        prepare(sources[1], dst, short_side=SIDE + 8, workers=0, progress=False)
    assert main([str(sources[1]), str(dst), "--format", "raw", "--short-side", str(SIDE), "--quiet"]) == 1
    assert "--rebuild" in capsys.readouterr().err
    assert main([str(sources[1]), str(dst), "--format", "raw", "--short-side", "40", "--rebuild", "--quiet"]) == 0
    assert read_manifest(dst)["settings"] == {"short_side": 40, "format": "raw", "quality": 0}
    assert "4 images" in capsys.readouterr().out


def test_the_rebuild_command_that_is_printed_runs_and_rebuilds(sources, tmp_path, capsys):
    """The command a prepare run prints, and a damaged cache's error repeats, is one a user can paste: its first
    word is this package's console script and the rest rebuilds the cache (``python -m styletransfer.data.prepare``,
    printed before, did nothing at all)."""
    import shlex
    from importlib.metadata import entry_points

    dst = tmp_path / "cache"
    assert main([str(sources[1]), str(dst), "--short-side", str(SIDE), "--quiet"]) == 0
    printed = capsys.readouterr().out.split("rebuild with: ")[1].strip()
    shard = dst / "shards" / "00000.bin"
    shard.write_bytes(bytes(shard.stat().st_size))

    def content_only() -> CacheDataModule:
        return CacheDataModule(content_cache=str(dst), crop_size=24, batch_size=2, num_workers=0, val_pairs=0, seed=1)

    with pytest.raises(DataDirError, match="checksum") as damaged:
        content_only()
    assert str(damaged.value).endswith(printed)
    words = shlex.split(printed)
    (script,) = entry_points(group="console_scripts", name=words[0])
    assert script.value == "styletransfer.cli.prepare:main" and script.load()(words[1:]) == 0
    assert len(content_only().train_dataloader()) == 2


# ---------------------------------------------------------------- reading the cache in training


def _folder_module(sources, **kw) -> ContentStyleDataModule:
    return ContentStyleDataModule(str(sources[0]), str(sources[1]), short_side=SIDE, crop_size=24, batch_size=2,
                                  num_workers=0, val_pairs=2, seed=3, **kw)


def _cache_module(root, **kw) -> CacheDataModule:
    return CacheDataModule(str(root), crop_size=24, batch_size=2, num_workers=0, val_pairs=2, seed=3, **kw)


def test_raw_cache_yields_the_folder_paths_batches(sources, tmp_path):
    root = _prepare_both(sources, tmp_path / "cache", "raw")
    folder, cached = _folder_module(sources), _cache_module(root)
    assert cached.short_side == SIDE
    for ours, theirs in zip(cached.train_dataloader(), folder.train_dataloader(), strict=True):
        assert ours["content"].dtype == torch.uint8, "crops travel as uint8"
        ours, theirs = cached.on_after_batch_transfer(ours, 0), folder.on_after_batch_transfer(theirs, 0)
        assert torch.equal(ours["content"], theirs["content"]) and torch.equal(ours["style"], theirs["style"])
    assert [(cached.content_cache.records[c]["source"], cached.style_cache.records[s]["source"])
            for c, s in cached.validation_pairs] == [(c.relative_to(sources[0]).as_posix(),
                                                       s.relative_to(sources[1]).as_posix())
                                                      for c, s in folder.validation_pairs]
    assert next(iter(cached.val_dataloader()))["content"].shape == (2, 3, 24, 24)


def test_cache_checks_shards_and_settings_at_start(sources, tmp_path, monkeypatch):
    root = _prepare_both(sources, tmp_path / "cache", "jpeg")
    with pytest.raises(ConfigError, match="--short-side 32"):
        _cache_module(root, short_side=40)
    with pytest.raises(DataDirError, match="manifest.json does not exist"):
        _cache_module(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="data.decode"):
        _cache_module(root, decode="nvjpeg")
    shard = root / "style" / "shards" / "00000.bin"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataDirError, match="00000.bin.*checksum.*styletransfer-prepare .*--rebuild"):
        _cache_module(root)
    _cache_module(root, verify_cache=False)  # same size: only the checksum would tell
    monkeypatch.setenv("LOCAL_RANK", "1")
    _cache_module(root)  # another DDP rank on the node: local rank 0 checks the checksums
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(DataDirError, match="checksum"):
        _cache_module(root)
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(DataDirError, match="00000.bin has .* bytes"):
        _cache_module(root, verify_cache=False)


def test_unreadable_sources_count_as_skipped(sources, tmp_path):
    (sources[0] / "broken.png").write_bytes(b"text")
    module = _cache_module(_prepare_both(sources, tmp_path / "cache", "raw"))
    assert list(module.skipped_files) == [str((sources[0] / "broken.png").resolve())]
    assert module.num_skipped == 1


def test_train_on_a_cache(sources, tmp_path):
    root = _prepare_both(sources, tmp_path / "cache", "jpeg")
    metrics = train_in_process("method=adain", "data=cache", f"data.cache={root}", "trainer=cpu",
                               "data.batch_size=2", "data.crop_size=24", "data.num_workers=1", "data.val_pairs=2",
                               "logger=csv", "trainer.max_steps=2", *(f"encoder.{k}={v}" for k, v in
                                                                     RANDOM_ENCODER.items()),
                               run_dir=tmp_path / "run")
    assert np.isfinite(metrics["loss/total"])
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


# ---------------------------------------------------------------- GPU decode: bytes + boxes


def _item_pairs(root: Path, encoded: bool) -> dict:
    caches = [ShardCache(root / "content"), ShardCache(root / "style")]
    dataset = ContentStyleDataset(CacheSource(caches[0], "content", encoded), CacheSource(caches[1], "style", encoded),
                                  CacheTrainTransform(SIDE, 24), seed=3)
    return collate_content_style([dataset[i] for i in range(len(dataset))])


def test_bytes_and_boxes_decode_like_the_cpu_path(sources, tmp_path):
    root = _prepare_both(sources, tmp_path / "cache", "jpeg")
    decoded, encoded = _item_pairs(root, False), _item_pairs(root, True)
    assert isinstance(encoded["content"]["jpeg"], list) and encoded["content"]["boxes"].shape == (6, 2)
    batch = _cache_module(root).decode_batch(encoded, "cpu")
    decoded = _cache_module(root).on_after_batch_transfer(decoded, 0)
    for key in ("content", "style"):
        assert batch[key].dtype == torch.float32 and batch[key].shape == decoded[key].shape
        assert (batch[key] - decoded[key]).abs().max() <= 2 / 255, "same crops, up to JPEG decoder differences"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decode_matches_cpu(sources, tmp_path):
    root = _prepare_both(sources, tmp_path / "cache", "jpeg")
    gpu, cpu = _cache_module(root, decode="gpu"), _cache_module(root, decode="cpu")
    for ours, theirs in zip(gpu.train_dataloader(), cpu.train_dataloader(), strict=True):
        ours, theirs = gpu.on_before_batch_transfer(ours, 0), cpu.on_after_batch_transfer(theirs, 0)
        assert ours["content"].is_cuda and ours["content"].dtype == torch.float32
        assert (ours["content"].cpu() - theirs["content"]).abs().mean() < 2 / 255


def _decoding_ahead_on_cpu(module: CacheDataModule) -> CacheDataModule:
    """``module`` taking the GPU-decode path with the CPU standing in for the GPU (as on a CUDA trainer)."""
    module.decode_on_device = lambda: True
    module._device = lambda: torch.device("cpu")
    return module


def test_batches_decode_ahead_as_the_loop_fetches_them(sources, tmp_path):
    root = _prepare_both(sources, tmp_path / "cache", "jpeg")
    ahead = _decoding_ahead_on_cpu(_cache_module(root))
    encoded = _cache_module(root)
    encoded.decode_on_device = lambda: True
    encoded.on_fetch = lambda: None  # the same loader handing out the encoded batches themselves
    pending = list(ahead.train_dataloader())
    assert pending and all(isinstance(batch, PendingBatch) for batch in pending)
    for handle, batch in zip(pending, encoded.train_dataloader(), strict=True):
        ours, theirs = ahead.on_before_batch_transfer(handle, 0), encoded.decode_batch(batch, "cpu")
        assert set(ours) == set(theirs) == {"content", "style", "skipped"}
        for key in ("content", "style"):
            assert ours[key].shape == (2, 3, 24, 24) and torch.equal(ours[key], theirs[key])
    ahead.teardown("fit")


def test_decode_ahead_starts_at_fetch_keeps_order_and_reraises():
    started: list[int] = []
    last_started = threading.Event()

    def decode(batch: dict, device: torch.device) -> dict:
        started.append(batch["n"])
        if batch["n"] == 3:
            last_started.set()
        if batch["n"] == 2:
            raise ValueError("corrupt JPEG in batch 2")
        return {"n": batch["n"], "image": torch.full((1,), float(batch["n"]), device=device)}

    ahead = DecodeAhead(decode, "cpu")
    handles = [ahead.start({"n": n}) for n in range(4)]
    assert last_started.wait(timeout=30), "the decodes run without anyone asking for a result"
    assert started == [0, 1, 2, 3]
    assert [handles[n].result()["image"].item() for n in (0, 1, 3)] == [0.0, 1.0, 3.0]
    with pytest.raises(ValueError, match="batch 2"):
        handles[2].result()
    ahead.close()


def test_lightning_trains_on_batches_decoded_ahead(sources, tmp_path):
    root = _prepare_both(sources, tmp_path / "cache", "jpeg")
    module = _decoding_ahead_on_cpu(_cache_module(root))
    seen: list[tuple] = []

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(()))

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            seen.append((batch["content"].dtype, tuple(batch["style"].shape)))
            return (batch["content"].mean() + batch["style"].mean()) * self.weight

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(Probe(), datamodule=module)
    assert seen == [(torch.float32, (2, 3, 24, 24))] * 4
    assert module._ahead is not None and module._ahead._pool is None, "the decoding thread stopped at teardown"


# ---------------------------------------------------------------- folder path: JPEG draft; loader settings


def test_jpeg_draft_decodes_smaller_keeps_orientation_and_resizes_alike(tmp_path):
    path = _image(tmp_path / "big.jpg", (200, 120), seed=1, fmt="JPEG")
    rotated = Image.open(path)
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    rotated.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    for name in ("big.jpg", "rotated.jpg"):
        full, draft = load_rgb(tmp_path / name), load_rgb(tmp_path / name, draft_side=50)
        assert draft.size == (full.size[0] // 2, full.size[1] // 2), "decoded at half scale"
        difference = np.abs(np.asarray(resize_to_side(draft, 50), dtype=int)
                            - np.asarray(resize_to_side(full, 50), dtype=int))
        assert difference.mean() < 4.0
    assert load_rgb(tmp_path / "rotated.jpg").size == (120, 200), "EXIF rotation applied"
    assert load_rgb(tmp_path / "rotated.jpg", draft_side=50).size == (60, 100)
    assert load_rgb(tmp_path / "big.jpg", draft_side=61).size == (200, 120), "less than twice: full decode"


def test_num_workers_auto_and_loader_settings(sources):
    assert 1 <= resolve_workers("auto") <= MAX_AUTO_WORKERS
    assert resolve_workers(3) == 3
    for bad in ("many", -1, 1.5, True):
        with pytest.raises(ConfigError, match="data.num_workers"):
            resolve_workers(bad)
    with pytest.raises(ConfigError, match="data.prefetch_factor"):
        _folder_module(sources, prefetch_factor=0)
    module = ContentStyleDataModule(str(sources[0]), str(sources[1]), short_side=SIDE, crop_size=24, batch_size=2,
                                    num_workers=1, prefetch_factor=3, val_pairs=2)
    loader = module.train_dataloader()
    assert loader.prefetch_factor == 3 and loader.num_workers == 1 and loader.persistent_workers
    assert next(iter(loader))["content"].shape == (2, 3, 24, 24)


@pytest.mark.parametrize("signum", [2, 15])
def test_ctrl_c_or_sigterm_of_prepare_is_one_line_and_status_128_plus_signal(sources, tmp_path, capsys, monkeypatch,
                                                                            signum):
    """A Ctrl-C or SIGTERM while preparing (sent to this process): no traceback, one line saying the finished
    shards are kept, exit status 130 / 143 (SIGTERM used to end it silently)."""
    def interrupted(*args, **kwargs):
        # raise_signal delivers to this thread before it returns (os.kill may land on another thread of the process,
        # and its handler then run after the next line: the test failed so under load)
        signal.raise_signal(signum)
        raise AssertionError("the signal should have stopped the work")

    monkeypatch.setattr(prepare_module, "prepare", interrupted)
    assert main([str(sources[1]), str(tmp_path / "cache"), "--quiet"]) == 128 + signum
    err = capsys.readouterr().err
    name = signal.Signals(signum).name
    assert err.startswith(f"interrupted: {name}: the shards finished so far are kept in") and len(err.splitlines()) == 1


def test_prepare_runs_without_torch(tmp_path):
    """``styletransfer-prepare`` (with its pool workers) finds, reads, resizes and writes images without importing
    torch, which was a second of the command's start and of each worker's: a fresh process runs the command and
    says which of torch and Lightning it loaded."""
    src = _folder(tmp_path / "src", 3)
    script = (
        "import sys\n"
        "from styletransfer.cli.prepare import main\n"
        "code = main([sys.argv[1], sys.argv[2], '--short-side', '32', '--workers', '2', '--quiet'])\n"
        "print(code, sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / "cache")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.split("\n")[-2:] == ["0 []", ""], result.stdout + result.stderr
    assert len(ShardCache(tmp_path / "cache").records) == 3


_SLOW_PREPARE = """
import os, sys, time
from pathlib import Path
from styletransfer.cli.prepare import main
from styletransfer.data import prepare as prepare_module

real = prepare_module.process

def slow(task):  # runs in a pool worker: the first image says which worker has it and takes long enough to be
    if task.source.endswith("img_00.png"):  # interrupted, while the other workers finish and wait for work
        Path(sys.argv[3]).write_text(str(os.getpid()))
        time.sleep(2)
    return real(task)

prepare_module.process = slow
sys.exit(main([sys.argv[1], sys.argv[2], "--workers", "3", "--shard-mb", "1e-6", "--short-side", "32",
                 "--format", "raw", "--quiet"]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [2, 15, 9])
def test_a_signal_to_the_process_group_stops_the_workers_quietly(tmp_path, signum):
    """A terminal's Ctrl-C, or a SIGTERM sent to the process group, reaches the pool workers too: they ignore the
    Ctrl-C and die of the SIGTERM, and neither hangs the command (``multiprocessing.Pool`` waited forever for the
    queue lock that a worker killed while waiting for work held), prints a worker traceback, or loses a finished
    shard: one ``interrupted:`` line, exit 128 + signal, and a rerun finishes the cache. A worker killed alone
    (SIGKILL: the out-of-memory killer) ends the command with one ``error:`` line that says what is kept, exit 1."""
    src, dst, started = _folder(tmp_path / "src", 8), tmp_path / "cache", tmp_path / "started"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_PREPARE, str(src), str(dst), str(started)], env=env,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not (started.exists() and started.read_text()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # the other workers finish the rest and wait for work
    if signum == signal.SIGKILL:
        os.kill(int(started.read_text()), signum)
    else:
        os.killpg(proc.pid, signum)
    try:
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:  # hung: no process is left behind
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    if signum == signal.SIGKILL:
        assert proc.returncode == 1 and err.startswith("error: a prepare worker process ended unexpectedly"), err
        assert f"the shards finished so far are kept in {dst}" in err, err
    else:
        assert proc.returncode == 128 + signum, err
        assert err.startswith(f"interrupted: {signal.Signals(signum).name}: the shards finished so far"), err
    rerun = prepare(src, dst, short_side=SIDE, fmt="raw", workers=0, shard_mb=1e-6, progress=False)
    assert rerun.images == 8 and rerun.kept == 8 - rerun.processed


def test_a_content_only_cache_decodes_on_the_device_like_the_cpu_workers(sources, tmp_path):
    """data.content_cache alone (content only, as for method=fast): the GPU-decode path (the CPU standing in for the
    GPU) gives the crops the CPU workers decode, and batches hold no style."""
    prepare(sources[0], tmp_path / "content", short_side=SIDE, workers=0, progress=False)

    def content_only() -> CacheDataModule:
        return CacheDataModule(content_cache=str(tmp_path / "content"), crop_size=24, batch_size=2, num_workers=0,
                               val_pairs=0, seed=1)

    ahead, workers = _decoding_ahead_on_cpu(content_only()), content_only()
    assert not workers.decode_on_device() and workers.val_dataloader() == []
    pairs = list(zip(ahead.train_dataloader(), workers.train_dataloader(), strict=True))
    assert pairs and all(isinstance(handle, PendingBatch) for handle, _ in pairs)
    for handle, batch in pairs:
        ours = ahead.on_after_batch_transfer(ahead.on_before_batch_transfer(handle, 0), 0)
        theirs = workers.on_after_batch_transfer(batch, 0)
        assert set(ours) == set(theirs) == {"content"} and ours["content"].shape == (2, 3, 24, 24)
        assert (ours["content"] - theirs["content"]).abs().max() <= 2 / 255, "same crops, up to the JPEG decoders"
    ahead.teardown("fit")
