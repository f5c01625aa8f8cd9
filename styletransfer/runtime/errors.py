"""The project's error family: every error a user can cause with a setting, a file or a folder.

Each class names what went wrong and the fix in its message. Command lines catch :class:`StyleTransferError`
(never a bare ``ValueError``), print the message and exit 1; anything else is a bug and keeps its traceback.
The built-in base class each error also has (``ValueError``, ``FileNotFoundError``, ``RuntimeError``) keeps code
that catches those working.
"""

from __future__ import annotations

import os


class StyleTransferError(Exception):
    """Base of every error caused by the user's settings, files or folders; the message says what to change."""


# Settings: a config key, constructor argument or command-line flag.


class ConfigError(StyleTransferError, ValueError):
    """A setting (config key, constructor argument or command-line flag) has a bad value; the message names it."""


class ObjectiveError(ConfigError):
    """The objective config is invalid, or a metric it names could not be measured (the message says which)."""


class MaskRegionError(ConfigError):
    """A mask's region is too small for the feature transform to apply there (EFDM and WCT need 2 positions of the
    bottleneck's map); ``mask`` is the mask's index (0-based, in the order given) and ``reason`` the rest of the
    message, so a command can name the mask's file instead."""

    def __init__(self, mask: int, reason: str) -> None:
        self.mask = mask
        self.reason = reason
        super().__init__(f"mask {mask}: {reason}")


# Files and folders: what the user points at.


class ImageLoadError(StyleTransferError, ValueError):
    """An image file could not be read; ``path`` is the file and ``cause`` says why."""

    def __init__(self, path: str | os.PathLike, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot read image {self.path}: {cause}")


class DataDirError(StyleTransferError, FileNotFoundError):
    """A folder that should hold images is missing or holds none; the message names the folder and the fix."""


class CheckpointError(StyleTransferError, RuntimeError):
    """A model file is missing, unsafe, not a checkpoint, or does not fit; the message names the file."""


class EncoderMismatchError(CheckpointError):
    """The encoder given for a decoder file is not the one the decoder was trained behind."""


class EncoderWeightsError(StyleTransferError, RuntimeError):
    """The requested encoder weights cannot be had; the message names the file/cache path and the ways out."""


class DownloadError(StyleTransferError, OSError):
    """A weight file could not be downloaded or installed; the message names the URL and where to put it by hand."""


class ChecksumMismatch(DownloadError):
    """A downloaded file's SHA-256 is not the expected one; the message gives both, and nothing was installed."""


# Runs: what happens while training, evaluating or exporting.


class NonFiniteLossError(StyleTransferError, RuntimeError):
    """A loss became NaN or infinite; the message names the step and what to do (or the last good result)."""


class MetricUnavailable(StyleTransferError, RuntimeError):
    """A learned metric cannot be computed here (its weights are missing or unreadable); the message says why."""


class RunDirectoryBusyError(StyleTransferError, RuntimeError):
    """Another run holds the run directory; the message names it and how to choose another directory."""


class WorkerDiedError(StyleTransferError, RuntimeError):
    """A worker process ended before its work was done (killed by a signal or the out-of-memory killer); the
    message says what is kept and how to continue."""


class RunInterrupted(StyleTransferError, RuntimeError):
    """The run was stopped by a signal after saving; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class ExportCheckError(StyleTransferError, RuntimeError):
    """An exported ONNX graph disagrees with the PyTorch model beyond the tolerance; the message names the size."""
