"""Video in and out for the stylise command and the temporal metric: clips (PyAV) or folders of frames read as uint8
frames with their timestamps, and an mp4 writer that keeps the input's timestamps and copies its audio.

Timestamps are kept frame by frame (the output's time base is the input's), so the frame count, the frame rate and
a variable frame rate all come out as they went in. The writer works on ``<name>.partial.mp4`` and renames it to
``<name>.mp4`` only when every frame is in; a run that stops midway finalises the partial file (a playable mp4 with
the frames written so far) and leaves it under that name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from styletransfer.data.images import find_images, load_rgb
from styletransfer.runtime.errors import ConfigError

if TYPE_CHECKING:
    from av.video.stream import VideoStream

try:
    import av
except ImportError:  # the video extra is not installed: every entry point below says how to get it
    av = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Files the stylise command reads as clips (any case); anything else is an image or a folder.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"})
#: Audio codecs an mp4 holds as they are; any other audio is re-encoded to AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"})
#: libx264's constant rate factor: 17 is visually lossless, so the codec adds little to the measured flicker.
CRF = "17"
PARTIAL = ".partial"


def require_av() -> None:
    """Stop with the install line when PyAV (the ``video`` extra) is missing."""
    if av is None:
        raise ConfigError("video needs PyAV: pip install 'styletransfer[video]'")


def is_video_path(path: Path) -> bool:
    """Whether the stylise command treats ``path`` as a clip (a file with a video extension)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class Clip:
    """Where frames come from: a video file, or a folder of images read in name order at ``rate`` frames/s."""

    path: Path
    rate: Fraction
    time_base: Fraction
    frames: int  # the container's count (0 when it does not say), or the folder's images
    width: int
    height: int
    audio: bool

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


def _open(path: Path) -> av.container.InputContainer:
    require_av()
    if not path.is_file():
        raise ConfigError(f"{path}: no such video file")
    try:
        return av.open(str(path))
    except av.error.EOFError:
        raise ConfigError(f"{path} ends before its first frame: an empty (zero-length) or truncated clip") from None
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a video PyAV can read ({type(exc).__name__}: {exc})") from None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams:
        raise ConfigError(f"{path} holds no stream at all: an empty (zero-length) clip")
    if not container.streams.video:
        kinds = ", ".join(f"{s.type} {s.codec_context.name}" for s in container.streams) or "none"
        raise ConfigError(f"{path} has no video stream (its streams: {kinds})")
    return container.streams.video[0]


def open_clip(path: Path, fps: float | None = None) -> Clip:
    """Probe a video file (``fps`` None) or a folder of frames at ``fps`` frames/s; bad input raises ConfigError."""
    if fps is not None:
        if not fps > 0:
            raise ConfigError(f"--fps must be > 0, got {fps}")
        frames = find_images(path)
        width, height = load_rgb(frames[0]).size
        rate = Fraction(fps).limit_denominator(1001)
        return Clip(path, rate, 1 / rate, len(frames), width, height, audio=False)
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or Fraction(24)
        if stream.codec_context.width == 0:
            raise ConfigError(f"{path}: its video stream has no picture size (a broken or empty clip)")
        return Clip(
            path,
            Fraction(rate),
            Fraction(stream.time_base or 1 / rate),
            int(stream.frames or 0),
            stream.codec_context.width,
            stream.codec_context.height,
            bool(container.streams.audio),
        )


def _folder_frames(clip: Clip, size: tuple[int, int] | None) -> Iterator[tuple[np.ndarray, int]]:
    for index, path in enumerate(find_images(clip.path)):
        image = load_rgb(path)
        if size is not None and image.size != size:
            image = image.resize(size)
        yield np.array(image, dtype=np.uint8), index


def read_frames(clip: Clip, size: tuple[int, int] | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """(uint8 (H, W, 3), pts in ``clip.time_base``) per frame in display order, resized to ``size`` (W, H) if
    given. A missing timestamp follows the previous one by a frame; a repeated one is moved one tick later."""
    if clip.is_folder:
        yield from _folder_frames(clip, size)
        return
    step = max(1, round(1 / (clip.rate * clip.time_base)))
    last = None
    with _open(clip.path) as container:
        stream = _video_stream(container, clip.path)
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            pts = frame.pts if frame.pts is not None else (0 if last is None else last + step)
            pts = pts if last is None or pts > last else last + 1
            last = pts
            width, height = size or (frame.width, frame.height)
            yield frame.to_ndarray(format="rgb24", width=width, height=height), pts


def partial_path(path: Path) -> Path:
    """Where ``VideoWriter`` writes ``path`` until it is complete (and where a run that stopped leaves it)."""
    return path.with_name(f"{path.stem}{PARTIAL}{path.suffix}")


class VideoWriter:
    """An H.264 mp4 (MPEG-4 Part 2 where this FFmpeg has no libx264) with the timestamps and time base of ``clip``
    and its audio copied (re-encoded to AAC when mp4 cannot hold it). Frames must have even sides (yuv420p)."""

    def __init__(self, path: Path, clip: Clip, width: int, height: int) -> None:
        require_av()
        self.path, self.clip = path, clip
        self.partial = partial_path(path)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.written = 0
        self.last_pts: int | None = None
        options = {"video_track_timescale": str(clip.time_base.denominator)} if clip.time_base.numerator == 1 else {}
        self.container = av.open(str(self.partial), "w", format="mp4", container_options=options)
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream: VideoStream = self.container.add_stream(  # type: ignore[assignment]  # a video codec: a VideoStream
            codec, rate=clip.rate, options={"crf": CRF} if codec == "libx264" else {"qscale": "2"}
        )
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.time_base = clip.time_base
        self.stream.codec_context.time_base = clip.time_base
        # The audio stream must exist before the first packet; its packets are added at the end (close).
        self.source = _open(clip.path) if clip.audio else None
        self.audio_out = None
        if self.source is not None:
            audio = self.source.streams.audio[0]
            self.audio_out = (
                self.container.add_stream_from_template(audio)
                if audio.codec_context.name in MP4_AUDIO
                else self.container.add_stream("aac", rate=audio.codec_context.sample_rate)
            )

    def write(self, frame: np.ndarray, pts: int) -> None:
        """Encode one uint8 (H, W, 3) frame shown at ``pts`` (in the clip's time base)."""
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts, video_frame.time_base = pts, self.clip.time_base
        self.container.mux(self.stream.encode(video_frame))
        self.written += 1
        self.last_pts = pts

    def close(self, complete: bool) -> Path | None:
        """Flush the encoder, add the audio up to the last frame written and close. ``complete``: rename to the
        final name; otherwise the partial file stays (None when no frame was written: nothing is kept)."""
        try:
            self.container.mux(self.stream.encode(None))
            if self.source is not None and self.written:
                self._copy_audio(None if complete else self._end())
        finally:
            self.container.close()
            if self.source is not None:
                self.source.close()
        if not self.written:
            self.partial.unlink(missing_ok=True)
            return None
        if complete:
            os.replace(self.partial, self.path)
            return self.path
        return self.partial

    def _end(self) -> Fraction:
        """When the last frame written stops showing, in seconds (once a frame is written)."""
        assert self.last_pts is not None
        return (self.last_pts + round(1 / (self.clip.rate * self.clip.time_base))) * self.clip.time_base

    def _copy_audio(self, end: Fraction | None) -> None:
        """The input's first audio stream, up to ``end`` seconds (None: all of it); called when the input has one."""
        source, audio_out = self.source, self.audio_out
        assert source is not None and audio_out is not None
        audio = source.streams.audio[0]
        base = cast(Fraction, audio.time_base)  # an opened stream has one
        if audio.codec_context.name in MP4_AUDIO:
            for packet in source.demux(audio):
                if packet.dts is None or packet.pts is None or (end is not None and packet.pts * base >= end):
                    continue
                packet.stream = audio_out
                self.container.mux(packet)
            return
        for frame in source.decode(audio):
            if end is not None and frame.pts is not None and frame.pts * base >= end:
                break
            frame.pts = None  # the encoder numbers the resampled frames itself
            self.container.mux(audio_out.encode(frame))
        self.container.mux(audio_out.encode(None))
