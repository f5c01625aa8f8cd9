"""AdaIN in onnxruntime: the two graphs ``styletransfer-export`` writes, run without PyTorch's models.

* the image graph (``model.onnx``): ``content`` (N, 3, H, W) in [0, 1], ``alpha`` (1,), ``style_mean`` and
  ``style_std`` (N, 512, 1, 1; one style's statistics are broadcast by :meth:`OnnxStyliser.stylise`) ->
  ``image`` (N, 3, H, W) in [0, 1];
* the style graph (``model.style.onnx``, found beside it by name): ``style`` (1, 3, H, W) -> ``style_mean``,
  ``style_std``, the relu4_1 statistics ``model.style_stats`` computes.

Interpolating styles is the caller's weighted sum of statistics (``model.mix_stats``): exact, since AdaIN is affine in
them. onnxruntime is imported when a runner is made, so the stylise command works without the ``export`` extra.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from styletransfer.data.images import to_unit_float
from styletransfer.methods.adain.model import StyleStats, mix_stats
from styletransfer.methods.adain.model import check_style_controls
from styletransfer.methods.adain.styliser import as_batch
from styletransfer.nn.colour import match_colour
from styletransfer.runtime.errors import CheckpointError, ConfigError

#: Input and output names of the two graphs (what ``export`` writes and what a runner checks).
IMAGE_INPUTS = ("content", "alpha", "style_mean", "style_std")
IMAGE_OUTPUTS = ("image",)
STYLE_INPUTS = ("style",)
STYLE_OUTPUTS = ("style_mean", "style_std")


def style_graph_path(image_graph: str | os.PathLike) -> Path:
    """Where the style graph of an image graph lives: ``model.onnx`` -> ``model.style.onnx``."""
    path = Path(image_graph)
    return path.with_name(f"{path.stem}.style{path.suffix or '.onnx'}")


def onnxruntime() -> ModuleType:
    """The onnxruntime module, or a ConfigError saying how to install it (the ``export`` extra)."""
    try:
        import onnxruntime as ort  # an optional dependency: only the ONNX paths need it
    except ImportError as exc:
        raise ConfigError(f"onnxruntime is not installed ({exc}): pip install 'styletransfer[export]'") from None
    return ort


def providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``--device``: auto (CUDA when onnxruntime has it), cpu, or cuda."""
    available = onnxruntime().get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if not device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda with --runtime onnx, got {device!r}")
    if "CUDAExecutionProvider" not in available:
        raise ConfigError(f"--device {device}: this onnxruntime has no CUDAExecutionProvider (it has {available}); "
                          "install onnxruntime-gpu or use --device cpu")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def open_session(path: str | os.PathLike, inputs: Sequence[str], outputs: Sequence[str],
                 what: str, provider_names: Sequence[str]) -> object:
    """An onnxruntime session of ``path``, checked to have the graph's input and output names; a missing file, a file
    that is not an ONNX model, or another graph is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not the user's business
    try:
        session = ort.InferenceSession(str(path), options, providers=list(provider_names))
    except Exception as exc:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...) for a bad file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not an ONNX model onnxruntime can load ({first}); expected the "
                              f"{what} written by styletransfer-export") from None
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if tuple(names[0]) != tuple(inputs) or tuple(names[1]) != tuple(outputs):
        raise CheckpointError(f"{path} is an ONNX model but not the {what} written by styletransfer-export: it "
                              f"takes {names[0]} and gives {names[1]}, expected {list(inputs)} -> {list(outputs)}")
    return session


def _array(tensor: Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())


class OnnxStyliser:
    """The exported image graph and (optionally) its style graph in onnxruntime sessions, with torch tensors in
    and out (CPU, float32) so that callers share the torch path's image and colour helpers."""

    def __init__(self, image_graph: str | os.PathLike | None, style_graph: str | os.PathLike | None = None,
                 device: str = "cpu") -> None:
        names = providers(device)
        self.image = None if image_graph is None else open_session(
            image_graph, IMAGE_INPUTS, IMAGE_OUTPUTS, "image graph", names)
        self.style = None if style_graph is None else open_session(
            style_graph, STYLE_INPUTS, STYLE_OUTPUTS, "style graph", names)

    @classmethod
    def beside(cls, image_graph: str | os.PathLike, device: str = "cpu") -> OnnxStyliser:
        """Both graphs: ``model.onnx`` and the ``model.style.onnx`` found beside it."""
        style = style_graph_path(image_graph)
        if Path(image_graph).is_file() and not style.is_file():
            raise CheckpointError(f"the style graph {style} is missing beside {image_graph}: export with "
                                  "styletransfer-export --part both")
        return cls(image_graph, style, device)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the host (onnxruntime takes NumPy arrays, on whatever provider it runs)."""
        return torch.device("cpu")

    def run_style(self, style: Tensor) -> StyleStats:
        """The style graph: relu4_1 (mean, std) of one style (3, H, W) or (1, 3, H, W) in [0, 1], each (1, 512, 1, 1)."""
        if self.style is None:
            raise ConfigError("this OnnxStyliser has no style graph")
        mean, std = self.style.run(None, {"style": _array(as_batch(style, "style"))})
        return torch.from_numpy(mean), torch.from_numpy(std)

    def run_image(self, content: Tensor, stats: StyleStats, alpha: float = 1.0) -> Tensor:
        """The image graph on ``content`` (3, H, W) or (N, 3, H, W) in [0, 1] with (mixed) statistics ``stats``
        ((1 or N, 512, 1, 1) each): float32 (N, 3, H, W) in [0, 1]."""
        if self.image is None:
            raise ConfigError("this OnnxStyliser has no image graph")
        batch = as_batch(content, "content")
        shape = (batch.shape[0], *stats[0].shape[1:])
        feed = {
            "content": _array(batch),
            "alpha": np.array([alpha], dtype=np.float32),
            "style_mean": np.ascontiguousarray(np.broadcast_to(_array(stats[0]), shape)),
            "style_std": np.ascontiguousarray(np.broadcast_to(_array(stats[1]), shape)),
        }
        return torch.from_numpy(self.image.run(None, feed)[0])

    def style_stats(self, styles: Sequence[Tensor]) -> list[StyleStats]:
        """Each style's statistics, as ``Styliser.style_stats``: pass them as ``stylise(..., style_stats=...)``."""
        return [self.run_style(style) for style in styles]

    def stylise(self, content: Tensor, styles: Sequence[Tensor] = (), *, weights: Sequence[float] | None = None,
                alpha: float = 1.0, preserve_colour: bool = False, masks: Sequence[Tensor] | None = None,
                output_size: tuple[int, int] | None = None,
                style_stats: Sequence[StyleStats] | None = None) -> Tensor:
        """``Styliser.stylise`` in onnxruntime: content (float in [0, 1] or uint8), one or more styles mixed with
        ``weights``, ``alpha``, colour preservation (each style recoloured to each content before the style graph).
        Masks and another output size need the PyTorch runtime."""
        if masks is not None or output_size is not None:
            raise ConfigError("masks and output_size need the PyTorch runtime: the image graph takes whole-image "
                              "statistics and returns the content's size")
        batch = to_unit_float(as_batch(content, "content")).float()
        weights = check_style_controls(styles, weights, alpha, None, preserve_colour, style_stats)
        if preserve_colour:
            stats = [self._recoloured_stats(as_batch(style, f"style {k}"), batch) for k, style in enumerate(styles)]
        else:
            stats = list(style_stats) if style_stats is not None else self.style_stats(styles)
        return self.run_image(batch, mix_stats(stats, weights), alpha)

    def _recoloured_stats(self, style: Tensor, batch: Tensor) -> StyleStats:
        """Colour preservation's statistics of ``style`` (1, 3, h, w): recoloured to each content of ``batch``
        (N, 3, H, W) in turn (the style graph takes one image), as (N, 512, 1, 1) each."""
        per_image = [self.run_style(match_colour(style, image[None])) for image in batch]
        return torch.cat([m for m, _ in per_image]), torch.cat([s for _, s in per_image])
