"""Neural Style (Gatys) checkpoints: a run resumes exactly from one, and ``GatysModule.load_from_checkpoint``
gives the image, scale and EMA back through the safe loader, with the encoder had again from its record."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from adain_checkpoints import write_malicious_checkpoint
from conftest import RANDOM_ENCODER
from gatys_helpers import FAST, fit, small_photos

from styletransfer.data.pair import PairDataModule
from styletransfer.methods.gatys import GatysModule
from styletransfer.nn.checkpoints import SafeCheckpointIO
from styletransfer.runtime.errors import CheckpointError, EncoderMismatchError


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    return small_photos(tmp_path_factory.mktemp("gatys_photos"))


def test_resuming_from_a_checkpoint_continues_exactly(photos, tmp_path) -> None:
    """Checkpoints taken mid-scale and at a scale change (Adam, EMA) resume to the uninterrupted run's image."""

    class StopAt(pl.Callback):
        def __init__(self, step: int) -> None:
            self.step = step

        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step >= self.step:
                trainer.should_stop = True

    def run(root: Path, stop: int | None = None, ckpt: Path | None = None) -> GatysModule:
        torch.manual_seed(0)
        model = GatysModule(RANDOM_ENCODER, optimizer="adam", lr=0.05, scales=[24, 40], steps_per_scale=[3],
                            ema_decay=0.9, snapshot_every=0, **FAST)
        data = PairDataModule(photos["coffee"], photos["chelsea"], long_side=64)
        save = pl.callbacks.ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_train_steps=1)
        trainer = pl.Trainer(max_steps=-1, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=root,
                             callbacks=[save] + ([StopAt(stop)] if stop else []))
        trainer.fit(model, datamodule=data, ckpt_path=ckpt)
        return model

    full = run(tmp_path / "full")
    for stop in (2, 3):  # mid-scale (pixels clamped, EMA updated) and right after the move to the second scale
        run(tmp_path / f"part{stop}", stop=stop)
        resumed = run(tmp_path / f"resumed{stop}", ckpt=tmp_path / f"part{stop}" / f"epoch=0-step={stop}.ckpt")
        assert resumed.scale_index == 1 and resumed.image.shape == full.image.shape
        assert torch.equal(resumed.image, full.image)
        assert torch.equal(resumed.output(), full.output())


@pytest.fixture(scope="module")
def trained(photos, tmp_path_factory) -> tuple[GatysModule, Path]:
    """A two-scale Adam run with the EMA (2 + 2 iterations) and its last.ckpt, written as train.py writes
    checkpoints (SafeCheckpointIO: atomically, with a checksum)."""
    root = tmp_path_factory.mktemp("gatys_checkpoint")
    model = GatysModule(RANDOM_ENCODER, optimizer="adam", lr=0.05, scales=[24, 40], steps_per_scale=[2],
                        ema_decay=0.9, snapshot_every=0, output_name=None, **FAST)
    save = pl.callbacks.ModelCheckpoint(dirpath=root, save_last=True)
    fit(model, PairDataModule(photos["coffee"], photos["chelsea"], long_side=64), root, steps=None, callbacks=[save],
        enable_checkpointing=True, plugins=[SafeCheckpointIO()])
    assert model.scale_index == 1 and save.last_model_path
    return model, Path(save.last_model_path)


def test_load_from_checkpoint_gives_the_image_scale_and_ema_back(trained) -> None:
    """The checkpoint's settings and encoder record build the module again (the encoder's weights are had again
    and match the recorded fingerprint); the image at the last scale and the EMA give the run's result, with no
    data; settings given override the recorded ones."""
    model, path = trained
    loaded = GatysModule.load_from_checkpoint(path, map_location="cpu")
    assert dict(loaded.hparams) == dict(model.hparams) and loaded.encoder.spec == model.encoder.spec
    assert loaded.scale_index == 1 and torch.equal(loaded.image, model.image)
    assert torch.equal(loaded.ema.value(), model.ema.value()) and torch.equal(loaded.output(), model.output())
    other = GatysModule.load_from_checkpoint(path, encoder={**RANDOM_ENCODER, "seed": 1}, output_name="again")
    assert other.hparams.output_name == "again" and other.encoder.spec["seed"] == 1
    assert other.encoder.spec["fingerprint"] != model.encoder.spec["fingerprint"]
    assert torch.equal(other.image, model.image)


def test_load_from_checkpoint_reads_only_weights_and_checks_the_encoder(trained, tmp_path, monkeypatch) -> None:
    """Through the safe loader whatever the environment says (Lightning's own loader would unpickle the file with
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD set); a record whose weights no longer give its fingerprint, and a checkpoint of
    another model, are named."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    evil = write_malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match="refused to load"):
        GatysModule.load_from_checkpoint(evil)
    assert not marker.exists()
    checkpoint = torch.load(trained[1], weights_only=True)
    checkpoint["hyper_parameters"]["encoder"]["seed"] = 7  # other random weights than the fingerprint's
    torch.save(checkpoint, tmp_path / "moved.ckpt")
    with pytest.raises(EncoderMismatchError, match="fingerprint .* not the recorded"):
        GatysModule.load_from_checkpoint(tmp_path / "moved.ckpt")
    torch.save({"state_dict": {"decoder.1.weight": torch.zeros(1)}, "hyper_parameters": {}}, tmp_path / "adain.ckpt")
    with pytest.raises(CheckpointError, match="adain.ckpt is not a training checkpoint of a Neural Style run"):
        GatysModule.load_from_checkpoint(tmp_path / "adain.ckpt")
