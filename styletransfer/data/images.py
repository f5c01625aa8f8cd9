"""Image files: finding them in folders, reading any mode as RGB, converting to tensors and writing them safely.

Every reader in the project goes through :func:`load_rgb`, so odd files (CMYK JPEGs, 16-bit PNGs, palette images
with transparency, rotated phone photos, truncated downloads) behave the same everywhere and fail with an
:class:`ImageLoadError` that names the file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from styletransfer.runtime.errors import ConfigError, DataDirError, ImageLoadError
from styletransfer.runtime.files import atomic_open

if TYPE_CHECKING:  # torch is imported where a tensor is made: finding, reading and resizing images (the
    # prepare command and its workers) need none, and its import was a second of the command's start
    import torch
    from torch import Tensor

#: File name endings treated as images, compared case-insensitively.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

#: Background used when an image with transparency is flattened to RGB.
TRANSPARENT_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

_SAVE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def find_images(root: str | os.PathLike) -> list[Path]:
    """All image files under ``root`` (recursively), sorted by path so the order is the same on every machine.

    Hidden files and anything inside a hidden folder (name starting with '.') are ignored.
    Raises DataDirError when ``root`` does not exist, is not a folder, or holds no image.
    """
    root = Path(root).expanduser()
    accepted = " ".join(sorted(IMAGE_EXTENSIONS))
    if not root.exists():
        raise DataDirError(
            f"image folder {root} does not exist (resolved: {root.resolve()}); "
            f"expected a folder holding image files ({accepted}), nested folders allowed"
        )
    if not root.is_dir():
        raise DataDirError(f"{root} is not a folder; expected a folder holding image files ({accepted})")
    images: list[Path] = []
    others = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(path)
            else:
                others += 1
    if not images:
        if others:
            raise DataDirError(
                f"image folder {root} holds {others} file(s) but none with an accepted image "
                f"extension; accepted (any case): {accepted}"
            )
        raise DataDirError(f"image folder {root} is empty; expected image files ({accepted}), nested folders allowed")
    images.sort(key=lambda p: p.relative_to(root).as_posix())
    return images


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: high-bit-depth values are scaled, transparency is put on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(img, dtype=np.float64)
        # "I;16*" is 16-bit by definition; "I" (32-bit int) is 16-bit data when it exceeds 8-bit range.
        if mode.startswith("I;16") or array.max(initial=0) > 255:
            scale = 65535.0 if array.max(initial=0) <= 65535 else float(array.max())
        else:
            scale = 255.0
        return _gray_float_to_rgb(array / scale)
    if mode == "F":
        array = np.nan_to_num(np.asarray(img, dtype=np.float64))
        low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
        if low >= 0.0 and high <= 1.0:
            unit = array
        elif low >= 0.0 and high <= 255.0:
            unit = array / 255.0
        else:
            unit = (array - low) / max(high - low, 1e-12)
        return _gray_float_to_rgb(unit)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif mode in ("PA", "LA", "La", "RGBa") or (mode == "L" and "transparency" in img.info):
        img = img.convert("RGBA")
    elif mode == "RGB" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (*TRANSPARENT_BACKGROUND, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def float_array_to_uint8(array: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """``array * scale`` rounded to the nearest integer and clipped to uint8 (floats in [0, 1] by default)."""
    return np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)


def _gray_float_to_rgb(unit: np.ndarray) -> Image.Image:
    return Image.fromarray(float_array_to_uint8(unit)).convert("RGB")


def load_rgb(path: str | os.PathLike, draft_side: int | None = None, data: bytes | None = None) -> Image.Image:
    """Read an image file as an 8-bit RGB PIL image, upright according to its EXIF orientation.

    Handles CMYK, 16-bit and 32-bit grayscale (scaled to 8 bits, not clipped), float images, "1", "L",
    palette images and alpha (composited on white: transparent areas hold arbitrary colours that must not leak).
    Any failure (missing, zero bytes, not an image, truncated, decompression bomb) raises ImageLoadError.

    ``draft_side``: the shorter side the caller will resize to. A JPEG whose shorter side is at least twice that is
    then decoded at 1/2, 1/4 or 1/8 scale (libjpeg's reduced-size DCT, ``Image.draft``), never below
    ``draft_side``: several times faster, and the resize that follows sees fewer pixels. The EXIF rotation is
    applied after decoding as usual (a square draft request does not depend on the orientation).

    ``data``: the file's bytes when the caller has already read them (they are decoded; ``path`` names the file).
    """
    path = Path(path)
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as opened:
            if draft_side is not None and opened.format == "JPEG":
                opened.draft(None, (draft_side, draft_side))
            opened.load()  # decode now so a truncated file fails here, not later
            upright = ImageOps.exif_transpose(opened)
            rgb = _to_rgb(upright)
            if rgb is opened:
                rgb = rgb.copy()
            rgb.load()
            return rgb
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"decompression bomb refused ({exc})") from exc
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error...) for corrupt files
        cause = f"{type(exc).__name__}: {exc}"
        size = len(data) if data is not None else path.stat().st_size if path.exists() else None
        if size == 0:
            cause = "file is empty (0 bytes)"
        raise ImageLoadError(path, cause) from exc


def resize_to_side(img: Image.Image, size: int, long_side: bool = False) -> Image.Image:
    """Resize (antialiased, keeping the aspect ratio) so the shorter side, or the longer if ``long_side``, is
    ``size``."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"size must be a positive integer number of pixels, got {size!r}")
    width, height = img.size
    width_is_side = (width >= height) if long_side else (width <= height)
    if width_is_side:
        new_w, new_h = size, max(1, round(height * size / width))
    else:
        new_w, new_h = max(1, round(width * size / height)), size
    if (new_w, new_h) == (width, height):
        return img
    return img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=None)


def array_to_uint8(array: np.ndarray) -> Tensor:
    """uint8 (H, W, 3) array (a decoded image or video frame) -> uint8 tensor (3, H, W) sharing its memory (a copy
    only when the array is not contiguous)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def pil_to_uint8(img: Image.Image) -> Tensor:
    """RGB PIL image -> uint8 tensor (3, H, W) (a quarter of the float tensor's bytes between processes)."""
    return array_to_uint8(np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8))


def to_unit_float(tensor: Tensor) -> Tensor:
    """uint8 pixels -> float32 in [0, 1] (the same numbers on any device); float tensors are returned as they are."""
    import torch

    return tensor.float().div_(255.0) if tensor.dtype == torch.uint8 else tensor


def unit_float_on(images: Tensor, device: torch.device) -> Tensor:
    """Images (uint8 0-255 or float in [0, 1], anywhere) as float32 in [0, 1] on ``device``; uint8 is moved first
    and scaled there (a quarter of the bytes to copy)."""
    import torch

    if images.dtype == torch.uint8:
        images = images.to(device, non_blocking=True)
    return to_unit_float(images).to(device, torch.float32)


def pil_to_tensor(img: Image.Image) -> Tensor:
    """RGB PIL image -> float32 tensor (3, H, W) in [0, 1]."""
    return to_unit_float(pil_to_uint8(img))


def load_image_tensor(path: str | os.PathLike, size: int | None = None, long_side: bool = False) -> Tensor:
    """Read an image as float32 (3, H, W) in [0, 1]; if ``size`` is given, resize its shorter (or longer) side to it."""
    img = load_rgb(path)
    if size is not None:
        img = resize_to_side(img, size, long_side=long_side)
    return pil_to_tensor(img)


def tensor_to_pil(tensor: Tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) tensor in [0, 1] -> RGB PIL image (NaN become 0, values are clamped)."""
    if tensor.dim() == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ConfigError(f"expected an image tensor shaped (3, H, W) or (1, 3, H, W), got {tuple(tensor.shape)}")
    return Image.fromarray(to_uint8_hwc(tensor.detach().float().cpu()).numpy())


def to_uint8_hwc(images: Tensor) -> Tensor:
    """(..., 3, H, W) float in [0, 1] -> uint8 (..., H, W, 3) on the same device (NaN become 0, values are clamped);
    done on the GPU it moves a quarter of the bytes to the host."""
    import torch

    return (
        torch.nan_to_num(images, nan=0.0)
        .clamp(0.0, 1.0)
        .mul(255.0)
        .round()
        .to(torch.uint8)
        .movedim(-3, -1)
        .contiguous()
    )


def save_pil(img: Image.Image, path: str | os.PathLike, quality: int = 95) -> None:
    """Write a PIL image atomically (temporary file in the same folder, then rename), creating parent folders.

    The format follows the extension (PNG when there is none; ``quality`` applies to JPEG and WebP); readers never
    see a half-written file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix and suffix not in _SAVE_FORMATS:
        raise ConfigError(
            f"cannot write {path}: unknown image extension {path.suffix!r}; "
            f"use one of {' '.join(sorted(_SAVE_FORMATS))}"
        )
    fmt = _SAVE_FORMATS.get(suffix, "PNG")
    options = {"quality": int(quality)} if fmt in ("JPEG", "WEBP") else {}
    with atomic_open(path, "wb") as handle:
        img.save(handle, format=fmt, **options)


def save_image(tensor: Tensor, path: str | os.PathLike) -> None:
    """Write a (3, H, W) or (1, 3, H, W) tensor in [0, 1] (clamped) as an image file, atomically (see save_pil)."""
    save_pil(tensor_to_pil(tensor), path)
