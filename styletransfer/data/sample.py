"""A small offline content/style set for tests and the quick start, generated in about a second.

Content: the photographs that ship inside the scikit-image wheel (never downloaded) plus seeded procedural
landscapes. Style: seeded procedural textures with strong, distinct colour statistics. The files are byte-identical
on every run; a marker file records the parameters so a matching set is not generated again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from styletransfer.data.datamodule import ContentStyleDataModule
from styletransfer.data.images import float_array_to_uint8, load_rgb, resize_to_side, save_pil
from styletransfer.runtime.errors import ConfigError

#: Bump when the generated images change, so old sets are regenerated.
SAMPLE_VERSION = 1
MARKER_NAME = ".sample.json"

#: Photographs bundled in ``skimage/data`` (files in the wheel; greyscale ones are turned into RGB).
BUNDLED_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "camera.png",
    "motorcycle_left.png",
    "coins.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "moon.png",
    "ihc.png",
)


def _bundled_photo_paths() -> list[Path]:
    """Paths of the bundled photographs that are present (the wheel's data folder, no fetching)."""
    try:
        import skimage.data
    except ImportError:
        return []
    folder = Path(skimage.data.__file__).parent
    return [folder / name for name in BUNDLED_PHOTOS if (folder / name).is_file()]


def _square(img: Image.Image, size: int) -> np.ndarray:
    img = resize_to_side(img, size)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in [0, 1): (y, x), each (size, size)."""
    axis = np.arange(size, dtype=np.float64) / size
    return np.meshgrid(axis, axis, indexing="ij")


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` saturated colours around a random hue (values in [0, 1])."""
    hue0 = rng.random()
    hues = (hue0 + np.arange(n) / n * rng.uniform(0.3, 1.0)) % 1.0
    sat = rng.uniform(0.55, 1.0, n)
    val = rng.uniform(0.45, 1.0, n)
    return _hsv_to_rgb(hues, sat, val)


def _hsv_to_rgb(h: ArrayLike, s: ArrayLike, v: ArrayLike) -> np.ndarray:
    h, s, v = np.broadcast_arrays(np.asarray(h, float), np.asarray(s, float), np.asarray(v, float))
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]


def _blur(field: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Periodic Gaussian blur of a (H, W) field through the FFT (anisotropic when the sigmas differ)."""
    h, w = field.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    kernel = np.exp(-2 * np.pi**2 * ((fy * sigma_y) ** 2 + (fx * sigma_x) ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(field) * kernel))


def _normalise(field: np.ndarray) -> np.ndarray:
    return (field - field.min()) / max(float(field.max() - field.min()), 1e-12)


def _map_palette(t: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to a piecewise-linear colour ramp through ``colours``."""
    positions = np.linspace(0.0, 1.0, len(colours))
    return np.stack([np.interp(t, positions, colours[:, c]) for c in range(3)], axis=-1)


# ---------------------------------------------------------------- style textures


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = _grid(size)
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(4, 10)
    colours = _palette(rng, int(rng.integers(3, 6)))
    phase = (np.cos(angle) * x + np.sin(angle) * y) * freq + 0.15 * np.sin(2 * np.pi * 3 * y)
    band = np.floor(phase).astype(int) % len(colours)
    return colours[band]


def _brush(rng: np.random.Generator, size: int) -> np.ndarray:
    colours = _palette(rng, 4)
    sx, sy = (size / 6, size / 60) if rng.random() < 0.5 else (size / 60, size / 6)
    t = _normalise(_blur(rng.standard_normal((size, size)), sy, sx))
    detail = _normalise(_blur(rng.standard_normal((size, size)), sy / 3 + 0.5, sx / 3 + 0.5))
    return _map_palette(np.clip(0.75 * t + 0.25 * detail, 0, 1), colours)


def _stained_glass(rng: np.random.Generator, size: int) -> np.ndarray:
    n = int(rng.integers(12, 30))
    points = rng.random((n, 2))
    colours = _palette(rng, n)
    y, x = _grid(size)
    dist = (y[..., None] - points[:, 0]) ** 2 + (x[..., None] - points[:, 1]) ** 2
    order = np.argsort(dist, axis=-1)
    nearest, second = order[..., 0], order[..., 1]
    d1 = np.sqrt(np.take_along_axis(dist, nearest[..., None], -1)[..., 0])
    d2 = np.sqrt(np.take_along_axis(dist, second[..., None], -1)[..., 0])
    lead = np.clip((d2 - d1) * size / 2.5, 0, 1)[..., None]
    return colours[nearest] * lead + 0.05 * (1 - lead)


def _waves(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = _grid(size)
    cy, cx = rng.random(2)
    radius = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(5, 12) * radius + 2 * np.sin(2 * np.pi * 2 * x))
    return _map_palette(t, _palette(rng, 3))


def _mosaic(rng: np.random.Generator, size: int) -> np.ndarray:
    tiles = int(rng.integers(6, 14))
    colours = _palette(rng, 5)
    y, x = _grid(size)
    ty, tx = np.floor(y * tiles).astype(int), np.floor(x * tiles).astype(int)
    choice = rng.integers(0, len(colours), (tiles, tiles))
    image = colours[choice[ty, tx]] * rng.uniform(0.8, 1.0, (tiles, tiles, 1))[ty, tx]
    grout = ((y * tiles) % 1 < 0.08) | ((x * tiles) % 1 < 0.08)
    image[grout] = 0.92
    return image


def _plasma(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = _grid(size)
    field = np.zeros_like(x)
    for _ in range(4):
        fy, fx = rng.uniform(1, 6, 2)
        field += np.sin(2 * np.pi * (fy * y + fx * x) + rng.uniform(0, 2 * np.pi))
    return _map_palette(_normalise(field), _palette(rng, 4))


def _dots(rng: np.random.Generator, size: int) -> np.ndarray:
    """Halftone dots of varying radius on a coloured ground."""
    y, x = _grid(size)
    cells = int(rng.integers(6, 12))
    background, ink = _palette(rng, 2)
    cy, cx = (y * cells) % 1 - 0.5, (x * cells) % 1 - 0.5
    radius = 0.15 + 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y)))
    inside = (cy**2 + cx**2 < radius**2)[..., None]
    return np.where(inside, ink, background)


STYLE_KINDS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "stripes": _stripes,
    "brush": _brush,
    "glass": _stained_glass,
    "waves": _waves,
    "mosaic": _mosaic,
    "plasma": _plasma,
    "dots": _dots,
}


# ---------------------------------------------------------------- content scenes


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A landscape: sky gradient, sun, rolling ground, houses with roofs and round trees."""
    y, x = _grid(size)
    top, horizon_colour = _hsv_to_rgb(rng.uniform(0.5, 0.7), rng.uniform(0.4, 0.8), [0.9, 1.0])
    horizon = rng.uniform(0.45, 0.7)
    t = np.clip(y / horizon, 0, 1)[..., None]
    image = top * (1 - t) + horizon_colour * t
    sun_y, sun_x, sun_r = rng.uniform(0.1, horizon - 0.15), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.1)
    sun = (y - sun_y) ** 2 + (x - sun_x) ** 2 < sun_r**2
    image[sun] = _hsv_to_rgb(rng.uniform(0.1, 0.16), 0.8, 1.0)
    ground_line = horizon + 0.05 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.random()))
    ground = y > ground_line
    shade = 0.75 + 0.25 * np.clip((y - horizon) * 3, 0, 1)
    image[ground] = _hsv_to_rgb(rng.uniform(0.2, 0.38), rng.uniform(0.5, 0.9), 0.7)[None] * shade[ground][:, None]
    for _ in range(int(rng.integers(1, 4))):
        left, width = rng.uniform(0.0, 0.8), rng.uniform(0.12, 0.22)
        base, height = horizon + rng.uniform(0.1, 0.25), rng.uniform(0.12, 0.22)
        wall = (x > left) & (x < left + width) & (y < base) & (y > base - height)
        image[wall] = _hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.6, 0.95))
        roof_top = base - height - width * 0.5
        roof = (y <= base - height) & (y > roof_top + np.abs(x - (left + width / 2)))
        image[roof & (x > left - 0.02) & (x < left + width + 0.02)] = _hsv_to_rgb(rng.uniform(0, 0.08), 0.7, 0.55)
        door = (x > left + width * 0.4) & (x < left + width * 0.6) & (y < base) & (y > base - height * 0.5)
        image[door] = (0.25, 0.15, 0.1)
    for _ in range(int(rng.integers(1, 5))):
        tx, ty, r = rng.uniform(0.05, 0.95), horizon + rng.uniform(0.05, 0.3), rng.uniform(0.04, 0.08)
        trunk = (np.abs(x - tx) < r * 0.2) & (y < ty) & (y > ty - 2 * r)
        image[trunk] = (0.35, 0.22, 0.12)
        crown = (y - (ty - 2.2 * r)) ** 2 + (x - tx) ** 2 < r**2
        image[crown] = _hsv_to_rgb(rng.uniform(0.22, 0.4), 0.7, rng.uniform(0.35, 0.6))
    image = image + rng.normal(0.0, 0.015, image.shape)
    return image


def _content_images(n: int, size: int) -> list[tuple[str, np.ndarray]]:
    """Bundled photographs interleaved with procedural scenes, ``n`` in all."""
    photos = _bundled_photo_paths()
    out: list[tuple[str, np.ndarray]] = []
    scene_index = 0
    while len(out) < n:
        if photos and (scene_index >= len(photos) or len(out) % 2 == 0):
            path = photos.pop(0)
            out.append((f"photo_{path.stem}", _square(load_rgb(path), size)))
        else:
            rng = np.random.default_rng([SAMPLE_VERSION, 1, scene_index])
            out.append((f"scene_{scene_index:02d}", float_array_to_uint8(_scene(rng, size))))
            scene_index += 1
    return out


def _style_images(n: int, size: int) -> list[tuple[str, np.ndarray]]:
    kinds = list(STYLE_KINDS.items())
    out = []
    for i in range(n):
        name, make = kinds[i % len(kinds)]
        rng = np.random.default_rng([SAMPLE_VERSION, 2, i])
        out.append((f"{name}_{i:02d}", float_array_to_uint8(make(rng, size))))
    return out


def make_sample_dataset(root: Path, n_content: int = 24, n_style: int = 12, size: int = 128) -> tuple[Path, Path]:
    """Write ``root/content/*.png`` and ``root/style/*.png`` (same bytes every time); return the two folders.

    Skipped when ``root/.sample.json`` records the same parameters and the files are all there.
    """
    for name, value, minimum in (("n_content", n_content, 1), ("n_style", n_style, 1), ("size", size, 8)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"sample dataset {name} must be an integer >= {minimum}, got {value!r}")
    root = Path(root)
    content_dir, style_dir = root / "content", root / "style"
    params: dict[str, Any] = {"version": SAMPLE_VERSION, "n_content": n_content, "n_style": n_style, "size": size}
    marker = root / MARKER_NAME
    if marker.is_file() and _marker_matches(marker, params, content_dir, style_dir):
        return content_dir, style_dir
    for folder in (content_dir, style_dir):
        if folder.is_dir():
            for stale in folder.glob("*.png"):
                stale.unlink()
    contents = _content_images(n_content, size)
    styles = _style_images(n_style, size)
    for folder, images in ((content_dir, contents), (style_dir, styles)):
        for i, (name, array) in enumerate(images):
            save_pil(Image.fromarray(array), folder / f"{i:03d}_{name}.png")
    params["content"] = sorted(f"{i:03d}_{name}.png" for i, (name, _) in enumerate(contents))
    params["style"] = sorted(f"{i:03d}_{name}.png" for i, (name, _) in enumerate(styles))
    marker.write_text(json.dumps(params, indent=1))
    return content_dir, style_dir


def _marker_matches(marker: Path, params: dict[str, Any], content_dir: Path, style_dir: Path) -> bool:
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if any(recorded.get(key) != value for key, value in params.items()):
        return False
    return all((content_dir / name).is_file() for name in recorded.get("content", [])) and all(
        (style_dir / name).is_file() for name in recorded.get("style", [])
    )


class SampleDataModule(ContentStyleDataModule):
    """ContentStyleDataModule over the generated sample set under ``root`` (generated there first if needed)."""

    def __init__(
        self,
        root: str = "data/sample",
        short_side: int = 128,
        crop_size: int = 64,
        batch_size: int = 4,
        num_workers: int = 0,
        val_pairs: int = 4,
        n_content: int = 24,
        n_style: int = 12,
        **kwargs: Any,
    ) -> None:
        content_dir, style_dir = make_sample_dataset(Path(root), n_content=n_content, n_style=n_style, size=short_side)
        super().__init__(
            str(content_dir),
            str(style_dir),
            short_side=short_side,
            crop_size=crop_size,
            batch_size=batch_size,
            num_workers=num_workers,
            val_pairs=val_pairs,
            **kwargs,
        )
        self.root = str(root)
