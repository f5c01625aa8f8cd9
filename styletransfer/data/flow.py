"""Dense optical flow between video frames, warping by it and where it can be trusted (OpenCV).

Used twice: to steady a stylised video (``methods.adain.video``: each result blended with the previous one warped
along the content's motion) and to measure its flicker (``eval.temporal``: the warping error). A pixel's flow is
trusted when the forward and backward flows undo each other (Sundaram et al. 2010, as Ruder et al. 2016 use it):
``|b + f(p + b)|^2 < 0.01 (|b|^2 + |f(p + b)|^2) + 0.5`` with ``p + b`` inside the frame.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from styletransfer.runtime.errors import ConfigError

try:
    import cv2
except ImportError:  # the video extra is not installed: require_cv2() says how to get it
    cv2 = None  # type: ignore[assignment]

#: Optical flow from RGB uint8 frame a to frame b, both (H, W, 3): (H, W, 2) float32 displacements (x, y) in px.
Flow = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: Where a frame's flow comes from and whether to trust it: (backward flow t -> t-1, bool mask), both (H, W, ...).
Motion = tuple[np.ndarray, np.ndarray]


def require_cv2() -> None:
    """Stop with the install line when OpenCV (the ``video`` extra) is missing."""
    if cv2 is None:
        raise ConfigError("optical flow needs OpenCV: pip install 'styletransfer[video]'")


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense Farneback flow a -> b on grey levels (OpenCV's usual settings: 3 levels, 15 px window)."""
    require_cv2()
    grey_a, grey_b = (cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in (a, b))
    return cv2.calcOpticalFlowFarneback(grey_a, grey_b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` (H, W, C) at ``size`` (W, H) (area interpolation; as is when it already has that size)."""
    if frame.shape[1::-1] == tuple(size):
        return frame
    require_cv2()
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


@functools.lru_cache(maxsize=4)
def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates of every pixel, float32, made once per frame size (warp runs several times per frame)."""
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    grid_y.flags.writeable = grid_x.flags.writeable = False
    return grid_y, grid_x


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (H, W, C float32) looked up at p + flow(p) (bilinear, borders replicated), and where p + flow(p)
    lies inside the frame."""
    require_cv2()
    height, width = flow.shape[:2]
    grid_y, grid_x = _pixel_grid(height, width)
    map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    sampled = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(height, width, image.shape[-1]), inside


def reliable_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels of frame t whose backward flow (t -> t-1) the forward flow (t-1 -> t) undoes, with the backward flow's
    source inside frame t-1."""
    forward_at, inside = warp(forward, backward)
    mismatch = np.square(backward + forward_at).sum(-1)
    scale = np.square(backward).sum(-1) + np.square(forward_at).sum(-1)
    return (mismatch < 0.01 * scale + 0.5) & inside


def motion(previous: np.ndarray, current: np.ndarray, flow: Flow = farneback) -> Motion:
    """How ``current`` came from ``previous`` (RGB uint8 frames): its backward flow and where that is reliable."""
    backward = flow(current, previous)
    return backward, reliable_mask(flow(previous, current), backward)
