"""Helpers of the Neural Style (Gatys) tests: the shallow layers they use, small real photos, and a quiet fit."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from conftest import SKIMAGE_DATA
from PIL import Image

from styletransfer.data.pair import PairDataModule
from styletransfer.methods.gatys import GatysModule

#: Shallow layers keep the module tests fast; the paper's default layers are exercised in the L-BFGS/Adam test.
FAST = {"content_layers": ["relu2_1"], "style_layers": ["relu1_1", "relu2_1", "relu3_1"]}


def small_photos(root: Path) -> dict[str, Path]:
    """Real photos from scikit-image, made small, in ``root``: a square content, a landscape one, and two styles
    (each test module's ``photos`` fixture)."""
    out = {}
    for key, name, size in [("astronaut", "astronaut.png", (64, 64)), ("coffee", "coffee.png", (96, 64)),
                            ("chelsea", "chelsea.png", (90, 60)), ("rocket", "rocket.jpg", (64, 96))]:
        out[key] = root / f"{key}.png"
        Image.open(SKIMAGE_DATA / name).convert("RGB").resize(size).save(out[key])
    return out


def fit(model: GatysModule, data: PairDataModule, tmp_path: Path, steps: int | None, callbacks=(),
        **trainer_options) -> pl.Trainer:
    """``model`` optimised on ``data`` for ``steps`` iterations (None: its own schedule) by a quiet CPU trainer
    (no logger, no checkpoints unless ``trainer_options`` say otherwise)."""
    options = {"logger": False, "enable_checkpointing": False, **trainer_options}
    trainer = pl.Trainer(
        max_steps=-1 if steps is None else steps, accelerator="cpu", enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks), **options,
    )
    trainer.fit(model, datamodule=data)
    return trainer
