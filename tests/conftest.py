"""Shared fixtures: the project root, tiny image folders made by the tests, and a Hydra run helper."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"

#: The encoder settings every test run uses: random weights, never a download.
RANDOM_ENCODER = {"weights": "random", "seed": 0, "fallback": None, "download": False}


@pytest.fixture(scope="session")
def photo_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """Content: real photos shipped with scikit-image; style: procedural colour textures; both small."""
    root = tmp_path_factory.mktemp("photos")
    content, style = root / "content", root / "style"
    content.mkdir()
    style.mkdir()
    for name in ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]:
        Image.open(SKIMAGE_DATA / name).convert("RGB").resize((96, 80)).save(content / f"{Path(name).stem}.png")
    rng = np.random.default_rng(0)
    for i in range(3):
        y, x = np.mgrid[0:72, 0:88] / 10.0
        waves = np.stack([np.sin(x * (i + 1) + c) * np.cos(y * (3 - i) - c) for c in range(3)], -1)
        noise = rng.normal(0, 0.1, waves.shape)
        Image.fromarray(((waves + noise) * 100 + 128).clip(0, 255).astype(np.uint8)).save(style / f"style_{i}.jpg")
    return content, style


def run_train(*overrides: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run `python train.py OVERRIDES` as a user would; return the completed process (output captured)."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
