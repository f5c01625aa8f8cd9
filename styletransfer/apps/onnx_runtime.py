"""Any exported model in onnxruntime: the graphs ``styletransfer-export`` writes, run without PyTorch's models, as a
:class:`~styletransfer.protocol.model.StyleModel` (so the folder pipeline and video take it like any other).

* the image graph (``model.onnx``): ``content`` (N, 3, H, W) in [0, 1], ``alpha`` (1,) and the style code's tensors
  (batch N; one style's code is broadcast) -> ``image`` (N, 3, H, W) in [0, 1];
* the style graph (``model.style.onnx``, beside it by name; methods that take style images): ``style`` (1, 3, H, W)
  -> the style code's tensors.

The image graph's metadata (written by :mod:`styletransfer.apps.export`) names the method, its capabilities and the
code's tensors. Interpolating styles is a weighted sum of the codes (exact for AdaIN, whose output is affine in its
statistics). onnxruntime is imported when a runner is made, so the stylise command works without the ``export``
extra.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer.data.images import to_unit_float
from styletransfer.nn.colour import match_colour
from styletransfer.nn.encoder import trained_behind_random
from styletransfer.protocol.controls import PLAIN, Capabilities, Controls, accept, as_batch, check_weights
from styletransfer.protocol.model import QUANTILE_CODES, OnnxGraph, TiledStylisation, TilingNeeds
from styletransfer.runtime.errors import CheckpointError, ConfigError

#: Names of the graphs' fixed inputs and outputs; the style code's tensors are named in the metadata.
CONTENT, ALPHA, IMAGE, STYLE, WEIGHTS = "content", "alpha", "image", "style", "weights"
#: Metadata keys of the image graph.
META_METHOD, META_CODE, META_CAPABILITIES, META_MODEL = (
    "styletransfer.method",
    "styletransfer.code",
    "styletransfer.capabilities",
    "styletransfer.model",
)
#: Metadata key of every exported graph: the SHA-256 of its initialisers (names and bytes), checked when it is opened.
META_WEIGHTS = "styletransfer.initialisers_sha256"
#: What the ONNX path cannot do whatever the method (whole-image graphs of the content's size, no tiling).
ONNX_LIMITS = {"masks": False, "output_size": False, "tiling": False, "export": False}


def style_graph_path(image_graph: str | os.PathLike) -> Path:
    """Where the style graph of an image graph lives: ``model.onnx`` -> ``model.style.onnx``."""
    path = Path(image_graph)
    return path.with_name(f"{path.stem}.style{path.suffix or '.onnx'}")


def graph_path(output: str | os.PathLike, graph: OnnxGraph) -> Path:
    """The file of ``graph`` for an export to ``output`` (the image graph's file)."""
    return style_graph_path(output) if graph.role == "style" else Path(output)


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
        raise ConfigError(
            f"--device {device}: this onnxruntime has no CUDAExecutionProvider (it has {available}); "
            "install onnxruntime-gpu or use --device cpu"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def open_session(path: str | os.PathLike, what: str, provider_names: Sequence[str]) -> Any:
    """An onnxruntime session of ``path``; a missing file or a file that is not an ONNX model is a CheckpointError
    naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not the user's business
    try:
        return ort.InferenceSession(str(path), options, providers=list(provider_names))
    except Exception as exc:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...) for a bad file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not an ONNX model onnxruntime can load ({first}); expected the "
            f"{what} written by styletransfer-export"
        ) from None


def weights_checksum(named_arrays: Iterable[tuple[str, np.ndarray]]) -> str:
    """SHA-256 over the initialisers ``(name, array)`` in name order: what a flipped byte in a weight changes."""
    digest = hashlib.sha256()
    for name, array in sorted(named_arrays, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def check_weights_checksum(session: Any, path: Path) -> None:
    """A CheckpointError naming ``path`` when its initialisers differ from the checksum recorded at export (a
    corrupted disk or an incomplete copy); a graph that records none was not written by this version's export."""
    import onnx  # the export extra, as onnxruntime
    from onnx import numpy_helper

    recorded = session.get_modelmeta().custom_metadata_map.get(META_WEIGHTS)
    if recorded is None:
        raise CheckpointError(
            f"{path} records no weights checksum ({META_WEIGHTS}): it was not written by this "
            "version of styletransfer-export; export the model again"
        )
    graph = onnx.load(str(path)).graph
    if weights_checksum((init.name, numpy_helper.to_array(init)) for init in graph.initializer) != recorded:
        raise CheckpointError(
            f"{path} is damaged: its weights do not match the checksum recorded at export (a "
            "corrupted disk or an incomplete copy); copy or export it again"
        )


def check_names(session: Any, path: Path, what: str, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """A CheckpointError naming ``path`` unless the session takes ``inputs`` and gives ``outputs``."""
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if tuple(names[0]) != tuple(inputs) or tuple(names[1]) != tuple(outputs):
        raise CheckpointError(
            f"{path} is an ONNX model but not the {what} written by styletransfer-export: it "
            f"takes {names[0]} and gives {names[1]}, expected {list(inputs)} -> {list(outputs)}"
        )


def _array(tensor: Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())


class OnnxModel:
    """The exported image graph (and the style graph beside it, for methods that take style images) in onnxruntime
    sessions, with torch tensors in and out (CPU, float32): a StyleModel without masks, another output size or
    tiling. The method's own controls come from the image graph's metadata."""

    kind = "onnx"

    def __init__(
        self, image_graph: str | os.PathLike, style_graph: str | os.PathLike | None = None, device: str = "cpu"
    ) -> None:
        names = providers(device)
        self.source = str(image_graph)
        self.image = open_session(image_graph, "image graph", names)
        check_weights_checksum(self.image, Path(image_graph))
        meta = self.image.get_modelmeta().custom_metadata_map
        if META_CODE not in meta:
            raise CheckpointError(
                f"{image_graph} records no style-transfer metadata ({META_CODE}): it was not "
                "written by this version of styletransfer-export; export the model again"
            )
        self.method = meta.get(META_METHOD, "?")
        self.code_names = tuple(json.loads(meta[META_CODE]))
        declared = Capabilities(**json.loads(meta.get(META_CAPABILITIES, "{}")))
        self.capabilities = Capabilities(**{**declared.__dict__, **ONNX_LIMITS})
        self.recorded = json.loads(meta.get(META_MODEL, "{}"))
        #: The code's tensors that are sorted sequences of the style's length (resampled to one before blending).
        self.quantile_codes = set(json.loads(meta.get(QUANTILE_CODES, "[]")))
        #: A network's own styles when it holds several: the image graph then takes weights over them.
        self.own_styles = [] if declared.style_input else list(self.recorded.get("styles") or [])
        # alpha is an input of graphs whose model has the control; style codes of those that take styles
        own = (WEIGHTS,) if len(self.own_styles) > 1 else ()
        self.inputs = (CONTENT, *((ALPHA,) if declared.alpha else ()), *own, *self.code_names)
        check_names(self.image, Path(image_graph), "image graph", self.inputs, (IMAGE,))
        self.style = None
        if style_graph is not None and self.capabilities.style_input:
            self.style = open_session(style_graph, "style graph", names)
            check_weights_checksum(self.style, Path(style_graph))
            check_names(self.style, Path(style_graph), "style graph", (STYLE,), self.code_names)

    @classmethod
    def beside(cls, image_graph: str | os.PathLike, device: str = "cpu") -> OnnxModel:
        """The image graph ``model.onnx`` and, when the method takes styles, the ``model.style.onnx`` beside it."""
        style = style_graph_path(image_graph)
        model = cls(image_graph, style if style.is_file() else None, device)
        if model.capabilities.style_input and model.style is None:
            raise CheckpointError(
                f"the style graph {style} is missing beside {image_graph}: export with styletransfer-export --part both"
            )
        return model

    @property
    def device(self) -> torch.device:
        """Where inputs go: the host (onnxruntime takes NumPy arrays, on whatever provider it runs)."""
        return torch.device("cpu")

    def describe(self) -> dict[str, Any]:
        return {**self.recorded, "method": self.method, "path": self.source, "kind": self.kind}

    def warning(self) -> str | None:
        """Says so when the exported model was trained behind a random encoder (recorded at export)."""
        if trained_behind_random(self.recorded.get("encoder")):
            return (
                f"{self.source} was exported from a model trained behind a RANDOM encoder (a test or offline "
                "demo run): its results show that the pipeline works, not what the method looks like"
            )
        return None

    def run_style(self, style: Tensor) -> tuple[Tensor, ...]:
        """The style graph: the code of one style (3, H, W) or (1, 3, H, W) in [0, 1]."""
        if self.style is None:
            raise ConfigError(f"{self.source}: this model has no style graph")
        return tuple(torch.from_numpy(a) for a in self.style.run(None, {STYLE: _array(as_batch(style, "style"))}))

    def run_image(
        self, content: Tensor, code: Sequence[Tensor], alpha: float = 1.0, own: Sequence[float] | None = None
    ) -> Tensor:
        """The image graph on ``content`` (3, H, W) or (N, 3, H, W) in [0, 1] with a (blended) style ``code``
        (each tensor batch 1 or N), or ``own`` weights over the network's own styles: float32 (N, 3, H, W) in
        [0, 1]."""
        batch = as_batch(content, "content")
        feed = {CONTENT: _array(batch)}
        if ALPHA in self.inputs:
            feed[ALPHA] = np.array([alpha], dtype=np.float32)
        if WEIGHTS in self.inputs:
            feed[WEIGHTS] = np.array(self._own_weights(own), dtype=np.float32)
        for name, tensor in zip(self.code_names, code):
            shape = (batch.shape[0], *tensor.shape[1:])
            feed[name] = np.ascontiguousarray(np.broadcast_to(_array(tensor), shape))
        return torch.from_numpy(self.image.run(None, feed)[0])

    def _own_weights(self, weights: Sequence[float] | None) -> list[float]:
        """Weights over the network's own styles, normalised as the PyTorch runtime does."""
        if weights is None:
            raise ConfigError(
                f"{self.source} has {len(self.own_styles)} styles ({', '.join(self.own_styles)}): choose one "
                "(--style-name) or blend them with one weight per style"
            )
        return check_weights(weights, len(self.own_styles))

    def encode_styles(self, styles: Sequence[Tensor]) -> list[tuple[Tensor, ...]]:
        """Each style's code from the style graph: pass them as ``Controls(style_codes=...)``."""
        return [self.run_style(style) for style in styles]

    def stylise(self, content: Tensor, styles: Sequence[Tensor] = (), controls: Controls = PLAIN) -> Tensor:
        """The model's stylisation in onnxruntime: content (float in [0, 1] or uint8), one or more styles blended
        with ``weights``, ``alpha``, colour preservation (each style recoloured to each content before the style
        graph). Masks and another output size need the PyTorch runtime (the image graph takes whole-image
        statistics and returns the content's size)."""
        styles = accept(self, styles, controls, elsewhere="load the model with the PyTorch runtime")
        batch = to_unit_float(as_batch(content, "content")).float()
        if not self.capabilities.style_input:  # a network of its own style: weights over its styles
            return self.run_image(batch, (), controls.alpha, controls.weights)
        mixed = controls.checked_weights(styles) or [1.0]
        codes: list[tuple[Tensor, ...]]
        if controls.preserve_colour:
            codes = [self._recoloured(as_batch(style, f"style {k}"), batch) for k, style in enumerate(styles)]
        else:
            codes = controls.cached_codes or self.encode_styles(styles)
        parts = [self._same_lengths(codes, i) for i in range(len(codes[0]))]  # per tensor, over the styles
        blended = tuple(sum((w * code for w, code in zip(mixed, part)), torch.zeros_like(part[0])) for part in parts)
        return self.run_image(batch, blended, controls.alpha)

    def _same_lengths(self, codes: Sequence[tuple[Tensor, ...]], i: int) -> list[Tensor]:
        """Tensor ``i`` of each style's code; a sorted sequence (``QUANTILE_CODES``) resampled to the longest by
        linear interpolation, as the image graph resamples it to the content's count."""
        parts = [code[i] for code in codes]
        if self.code_names[i] not in self.quantile_codes:
            return parts
        longest = max(part.shape[-1] for part in parts)
        return [
            F.interpolate(part, size=longest, mode="linear", align_corners=True) if part.shape[-1] != longest else part
            for part in parts
        ]

    def _recoloured(self, style: Tensor, batch: Tensor) -> tuple[Tensor, ...]:
        """Colour preservation's code of ``style`` (1, 3, h, w): recoloured to each content of ``batch`` in turn
        (the style graph takes one image), concatenated over the batch."""
        per_image = [self.run_style(match_colour(style, image[None])) for image in batch]
        return tuple(torch.cat(parts) for parts in zip(*per_image))

    def tiling(self) -> TilingNeeds | None:
        return None

    def tiled(self, content: Tensor, styles: Sequence[Tensor] = (), controls: Controls = PLAIN) -> TiledStylisation:
        raise ConfigError("the ONNX image graph stylises whole images: --max-tile needs --runtime torch")

    def onnx_graphs(self, fp16: bool = False) -> list[OnnxGraph]:
        raise ConfigError(f"{self.source} is already an exported ONNX model")
