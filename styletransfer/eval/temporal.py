"""Temporal stability of a stylised video: the warping error between consecutive stylised frames.

Frame t of the stylised video is warped into frame t+1 with the optical flow of the CONTENT frames (backward flow
t+1 -> t, so every pixel of t+1 looks up where it came from in t) and compared with stylised frame t+1 where that
flow is reliable (the forward-backward check, ``styletransfer.data.flow``). The error of a pair is the mean
absolute RGB difference (in [0, 1]) over the reliable pixels; the video's is the mean over pairs. The same measure
of the content video itself (``content_error``) is what the flow's own imprecision costs: a stylisation as steady
as its content would score about that. Flow: OpenCV's Farneback by default, torchvision's RAFT when its weights are
given (``--raft-weights``).

    styletransfer-warping-error clip.mp4 out/clip_stylised_s.mp4 [--json report.json]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer.data.flow import Flow, Motion, farneback, motion, warp
from styletransfer.data.images import array_to_uint8, to_uint8_hwc, to_unit_float
from styletransfer.data.video import open_clip, read_frames
from styletransfer.nn.weights import as_state_dict, first_line, safe_load
from styletransfer.runtime.errors import ConfigError
from styletransfer.runtime.files import write_json_atomic

#: Suffix of the JSON report the stylise command writes beside each video.
REPORT_SUFFIX = ".temporal.json"
#: RAFT's smallest input side (its correlation pyramid needs feature maps of 16 px at 1/8 scale).
RAFT_MIN_SIDE = 128


class RaftFlow:
    """torchvision's RAFT (``small`` or ``large``) with weights from a file (its ``state_dict``); frames are resized
    to multiples of 8 (at least 128 px) for it and the flow scaled back."""

    def __init__(self, weights: Path, model: str = "large", device: str = "cpu") -> None:
        # Imported here: only this optional flow needs torchvision, which the stylise command otherwise never loads.
        from torchvision.models.optical_flow import raft_large, raft_small

        net = {"large": raft_large, "small": raft_small}[model](weights=None)
        state = as_state_dict(safe_load(weights, "RAFT weights file", ConfigError), weights, ConfigError)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"--raft-weights {weights}: not RAFT-{model} weights ({first_line(exc)})") from None
        self.net, self.device = net.eval().to(device), torch.device(device)

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        height, width = a.shape[:2]
        size = (max(RAFT_MIN_SIDE, round(height / 8) * 8), max(RAFT_MIN_SIDE, round(width / 8) * 8))
        # RAFT takes RGB in [-1, 1]: 2 * (x / 255) - 1 is x / 127.5 - 1 bit for bit (doubling is exact).
        pair = [
            F.interpolate(
                to_unit_float(array_to_uint8(f)[None].to(self.device)) * 2 - 1,
                size,
                mode="bilinear",
                align_corners=False,
            )
            for f in (a, b)
        ]
        flow = self.net(*pair)[-1]
        flow = F.interpolate(flow, (height, width), mode="bilinear", align_corners=False)[0]
        flow[0] *= width / size[1]
        flow[1] *= height / size[0]
        return flow.permute(1, 2, 0).cpu().numpy().astype(np.float32)


def pair_error(
    content: tuple[np.ndarray, np.ndarray], stylised: tuple[np.ndarray, np.ndarray], moved: Motion
) -> tuple[float, float, float]:
    """(stylised error, content error, fraction of reliable pixels) of one pair of consecutive frames, given the
    content's ``motion`` between them."""
    backward, mask = moved
    if not mask.any():
        return float("nan"), float("nan"), 0.0
    errors = []
    for first, second in (stylised, content):
        warped, _ = warp(first.astype(np.float32) / 255.0, backward)
        errors.append(float(np.abs(second.astype(np.float32) / 255.0 - warped).mean(-1)[mask].mean()))
    return errors[0], errors[1], float(mask.mean())


@dataclass
class TemporalReport:
    """The warping error of a stylised video (mean over frame pairs; NaN pairs, with no reliable pixel, left out)."""

    warping_error: float
    content_error: float
    reliable_fraction: float
    pairs: int
    flow: str

    def line(self, name: str) -> str:
        return (
            f"{name}: warping error {self.warping_error:.4f} (content {self.content_error:.4f}, "
            f"{self.reliable_fraction:.0%} of pixels reliable, {self.pairs} frame pairs, {self.flow} flow)"
        )


def warping_error(
    content: Iterable[np.ndarray],
    stylised: Iterable[np.ndarray],
    flow: Flow = farneback,
    flow_name: str = "farneback",
    motions: Sequence[Motion] | None = None,
) -> TemporalReport:
    """The warping error of ``stylised`` frames given the ``content`` frames they came from (same sizes, in order).
    ``motions``: the content's motion between consecutive frames (``content_motions``), when several results of one
    video are scored; otherwise computed here with ``flow``."""
    rows, previous = [], None
    for index, pair in enumerate(zip(content, stylised, strict=True)):
        if pair[0].shape != pair[1].shape:
            raise ConfigError(f"frame {index}: content {pair[0].shape} and stylised {pair[1].shape} differ in size")
        if previous is not None:
            moved = motions[index - 1] if motions is not None else motion(previous[0], pair[0], flow)
            rows.append(pair_error((previous[0], pair[0]), (previous[1], pair[1]), moved))
        previous = pair
    kept = np.array([row for row in rows if row[2] > 0]).reshape(-1, 3)
    if not len(kept):
        raise ConfigError("no pair of consecutive frames with reliable flow: the warping error needs 2 or more frames")
    return TemporalReport(
        float(kept[:, 0].mean()), float(kept[:, 1].mean()), float(kept[:, 2].mean()), len(rows), flow_name
    )


def video_warping_error(
    original: Path, stylised: Path, fps: float | None = None, flow: Flow = farneback, flow_name: str = "farneback"
) -> TemporalReport:
    """The warping error of the ``stylised`` video of ``original`` (a clip, or a folder of frames at ``fps``); the
    content frames are resized to the stylised size. A differing frame count is refused."""
    source, result = open_clip(original, fps), open_clip(stylised)
    content = (frame for frame, _ in read_frames(source, (result.width, result.height)))
    try:
        return warping_error(content, (frame for frame, _ in read_frames(result)), flow, flow_name)
    except ValueError as exc:
        if "zip()" not in str(exc):  # zip(strict=True) says one video ended first; anything else is not ours
            raise
        raise ConfigError(f"{original} and {stylised} have different frame counts ({exc})") from None


def video_frames(video: Path, max_frames: int) -> list[np.ndarray]:
    """The first ``max_frames`` frames of ``video``, RGB uint8 (H, W, 3)."""
    return [frame for frame, _ in itertools.islice(read_frames(open_clip(video)), max_frames)]


def content_motions(frames: Sequence[np.ndarray], flow: Flow = farneback) -> list[Motion]:
    """The motion between each pair of consecutive content frames: computed once per video, whatever the number of
    results scored against it."""
    return [motion(previous, current, flow) for previous, current in zip(frames, frames[1:])]


def stylise_frames(
    stylise: Callable[[Tensor], Tensor], frames: Sequence[np.ndarray], device: torch.device
) -> list[np.ndarray]:
    """Each frame stylised by ``stylise`` (one frame (1, 3, H, W) in [0, 1] -> its result), as RGB uint8."""
    out = []
    for frame in frames:
        out.append(to_uint8_hwc(stylise(to_unit_float(array_to_uint8(frame)[None].to(device))))[0].cpu().numpy())
    return out


def write_report(report: TemporalReport, video: Path) -> Path:
    """``<video>.temporal.json`` beside ``video``."""
    return write_json_atomic(video.with_name(video.stem + REPORT_SUFFIX), asdict(report))


def report_videos(original: Path, written: Sequence[Path], fps: float | None = None) -> list[TemporalReport]:
    """What the stylise command does after writing: print the warping error of each mp4 in ``written`` (stylised
    from ``original``) and write it to ``<video>.temporal.json`` beside it."""
    reports = []
    for video in (path for path in written if path.suffix == ".mp4"):
        reports.append(video_warping_error(original, video, fps))
        print(reports[-1].line(str(video)))
        write_report(reports[-1], video)
    return reports
