"""Benchmark image sets: the content and style images every model is scored on, loaded once, in a stable order."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from styletransfer.data.images import find_images, load_image_tensor
from styletransfer.data.sample import make_sample_dataset
from styletransfer.runtime.errors import ConfigError, DataDirError, ImageLoadError

log = logging.getLogger(__name__)


@dataclass
class Benchmark:
    """Content and style images (loaded, resized) in a stable order; every content is paired with every style."""

    name: str
    contents: list[tuple[Path, Tensor]]
    styles: list[tuple[Path, Tensor]]
    short_side: int | None
    skipped: list[str] = field(default_factory=list)
    content_dir: str = ""
    style_dir: str = ""

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(c, s) for c in range(len(self.contents)) for s in range(len(self.styles))]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "content_dir": self.content_dir,
            "style_dir": self.style_dir,
            "short_side": self.short_side,
            "n_contents": len(self.contents),
            "n_styles": len(self.styles),
            "n_pairs": len(self.pairs),
            "contents": [p.name for p, _ in self.contents],
            "styles": [p.name for p, _ in self.styles],
            "skipped": list(self.skipped),
        }


def _load_folder(folder: Path, size: int | None, limit: int | None, skipped: list[str]) -> list[tuple[Path, Tensor]]:
    images: list[tuple[Path, Tensor]] = []
    for path in find_images(folder):
        if limit is not None and len(images) >= limit:
            break
        try:
            images.append((path, load_image_tensor(path, size=size)))
        except ImageLoadError as exc:
            skipped.append(str(exc))
            log.warning("benchmark image skipped: %s", exc)
    if not images:
        raise DataDirError(f"no readable image in {folder} (skipped: {'; '.join(skipped)})")
    return images


def load_benchmark(cfg: Mapping[str, Any]) -> Benchmark:
    """The benchmark named by the ``benchmark`` config group; generates the project's default set on first use.

    Keys: name, content_dir, style_dir (both null: the generated set under ``root``), short_side (shorter side, null
    keeps), max_contents, max_styles, and for the generated set root, n_content, n_style, generate_size.
    """
    content_dir, style_dir = cfg.get("content_dir"), cfg.get("style_dir")
    if (content_dir is None) != (style_dir is None):
        missing = "benchmark.style_dir" if style_dir is None else "benchmark.content_dir"
        raise ConfigError(f"{missing} is not set: give both benchmark.content_dir and benchmark.style_dir")
    generated = content_dir is None
    if generated:
        if not cfg.get("root"):
            raise ConfigError("benchmark.root is not set (where the generated benchmark set is written)")
        content_dir, style_dir = make_sample_dataset(
            Path(cfg["root"]),
            n_content=int(cfg.get("n_content", 4)),
            n_style=int(cfg.get("n_style", 4)),
            size=int(cfg.get("generate_size", 256)),
        )
    short_side = cfg.get("short_side")
    size = int(short_side) if short_side else None
    skipped: list[str] = []
    assert content_dir is not None and style_dir is not None  # both given, or both generated above
    contents = _load_folder(Path(content_dir), size, cfg.get("max_contents"), skipped)
    styles = _load_folder(Path(style_dir), size, cfg.get("max_styles"), skipped)
    for key, found in (("expected_contents", len(contents)), ("expected_styles", len(styles))):
        expected = cfg.get(key)
        if expected and expected != found:
            log.warning(
                "benchmark %s expects %s images, found %d: numbers will not compare with published ones",
                cfg.get("name"),
                expected,
                found,
            )
    name = str(cfg.get("name") or "folders")
    if not generated and name == "default":
        name = "folders"  # the default set's config with both folders overridden
    return Benchmark(name, contents, styles, size, skipped, str(content_dir), str(style_dir))
