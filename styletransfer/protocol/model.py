"""The feed-forward model protocol: what every application (folders, video, tiling, ONNX export, the demo,
evaluation) asks of a trained model, and what every feed-forward method implements.

A method's model is loaded from its files by the registry (:mod:`styletransfer.protocol.registry`) and used only
through :class:`StyleModel`; the applications never name a method. A style is turned into the method's *style
code* once (:meth:`StyleModel.encode_styles`) and reused for every content: statistics for AdaIN, a feature map for
methods that need one, nothing at all for a network trained for fixed styles (``Capabilities.style_input`` False).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from styletransfer.nn.encoder import trained_behind_random
from styletransfer.protocol.controls import PLAIN, Capabilities, Controls

#: A style as the method needs it: opaque to the applications, made by ``encode_styles``, given back to ``stylise``.
StyleCode = Any


@dataclass(frozen=True)
class TilingNeeds:
    """What tiling must respect for a model: windows start on multiples of ``align`` px (the stride of the features
    whose statistics are global), ``margin`` px of context are kept around each window's used part (the model's
    reach), ``bytes_per_pixel`` estimates the peak memory per tile pixel and image in float32 (``auto`` tiles), and
    ``host_bytes_per_pixel`` what the model keeps on the host between passes per image pixel and image (fast
    style's window states; ``auto`` leaves that room in RAM on a CPU)."""

    align: int
    margin: int
    bytes_per_pixel: int
    host_bytes_per_pixel: int = 0


class TiledStylisation(Protocol):
    """One tiled call, as a model prepares it for the tiling application (:mod:`styletransfer.apps.tiling`).

    Statistics passes (``statistics_passes`` of them, 0 for none): in each, every window is shown to
    :meth:`observe` with the pixels it owns (a partition of the image) and its ``index`` in the grid (row by row, the
    same in every pass), every window of one pass before any of the next; then :meth:`render` stylises each window
    with what the passes gathered. AdaIN needs one pass (its relu4_1 statistics), fast style one per instance
    normalisation, each window carrying its state from one pass to the next.
    """

    statistics_passes: int

    def observe(self, window: Tensor, owned: tuple[slice, slice], index: int) -> None:
        """A statistics pass: ``window`` (N, 3, h, w) in [0, 1] on the device; ``owned`` its pixel rows and columns
        that count; ``index`` its place in the grid."""

    def render(self, window: Tensor, index: int, origin: tuple[int, int]) -> Tensor:
        """The last pass: window ``index``, its first pixel at ``origin`` (row, column) in the image, stylised,
        float32 (N, 3, h, w) in [0, 1]."""


#: Metadata key of an image graph: a JSON list of the style code's tensors that are sorted sequences along their last
#: axis (quantile functions, e.g. EFDM's sorted values), whose length is the style's: the runtime resamples them to
#: the longest (linear interpolation) before blending several styles.
QUANTILE_CODES = "styletransfer.quantile_codes"


@dataclass
class OnnxGraph:
    """One graph of a model's ONNX export: ``module(*inputs)`` with named inputs and outputs.

    ``suffix`` is added to the exported file's stem (``""`` for the image graph, ``".style"`` for a style graph);
    ``dynamic_shapes`` follows ``torch.onnx.export(dynamo=True)``; ``check_inputs(height, width, generator)`` gives
    inputs at a check size, on which onnxruntime must reproduce ``module`` (``styletransfer-export --check``).
    ``role`` is ``image`` (content, alpha and style code in, image out) or ``style`` (style image in, code out);
    ``reference`` is what ``--check`` compares with (default ``module``; the float32 model of a float16 export).
    """

    role: str
    suffix: str
    module: nn.Module
    inputs: tuple[Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_shapes: dict[str, Any]
    check_inputs: Any = None
    reference: nn.Module | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphDims:
    """The dynamic dimensions of an export's graphs: the batch and the image sides (at least the model's smallest)."""

    batch: Any
    height: Any
    width: Any

    @classmethod
    def at_least(cls, min_side: int) -> GraphDims:
        """A batch of 1 or more and sides of at least ``min_side`` px."""
        dim = torch.export.Dim
        return cls(dim("N", min=1), dim("H", min=min_side), dim("W", min=min_side))

    def image(self) -> dict[int, Any]:
        """An image batch's dynamic axes (N, 3, H, W)."""
        return {0: self.batch, 2: self.height, 3: self.width}


def image_graph(
    module: nn.Module,
    reference: nn.Module,
    check_inputs: Any,
    dims: GraphDims,
    codes: dict[str, Any],
    alpha: bool = True,
    metadata: dict[str, str] | None = None,
) -> OnnxGraph:
    """The image graph: inputs ``content`` (dynamic ``dims``), ``alpha`` (a scalar, when the model has it), then the
    style code's tensors (``codes``: name -> dynamic axes); output ``image``. Its example inputs are
    ``check_inputs(64, 56)``."""
    names = ("content", "alpha", *codes) if alpha else ("content", *codes)
    shapes = {"content": dims.image(), **({"alpha": None} if alpha else {}), **codes}
    return OnnxGraph(
        role="image",
        suffix="",
        module=module,
        reference=reference,
        inputs=check_inputs(64, 56),
        input_names=names,
        output_names=("image",),
        dynamic_shapes=shapes,
        check_inputs=check_inputs,
        metadata=dict(metadata or {}),
    )


def style_graph(
    module: nn.Module, reference: nn.Module, check_inputs: Any, dims: GraphDims, codes: tuple[str, ...]
) -> OnnxGraph:
    """The style graph: input ``style`` (one image, dynamic sides), outputs the code's tensors ``codes``. Its example
    inputs are ``check_inputs(56, 64)``."""
    sides = {"style": {2: dims.height, 3: dims.width}}
    return OnnxGraph("style", ".style", module, check_inputs(56, 64), ("style",), codes, sides, check_inputs, reference)


@runtime_checkable
class StyleModel(Protocol):
    """A trained feed-forward style-transfer model on a device, with the controls it declares.

    ``method`` names the method (the registry's name), ``source`` the file it came from, ``kind`` the kind of file,
    ``capabilities`` what it supports; :meth:`describe` is what reports and the demo show (method, file, encoder...).
    """

    method: str
    source: str
    kind: str
    capabilities: Capabilities

    @property
    def device(self) -> torch.device:
        """Where inputs go."""

    def describe(self) -> dict[str, Any]:
        """Method, file, kind and what the model was trained behind (recorded in reports)."""

    def warning(self) -> str | None:
        """A line to show wherever the model is used, e.g. that it was trained behind a random encoder."""

    def encode_styles(self, styles: Sequence[Tensor]) -> list[StyleCode]:
        """Each style image (3, h, w) or (1, 3, h, w) in [0, 1] as the method's style code, to reuse across calls."""

    def stylise(self, content: Tensor, styles: Sequence[Tensor] = (), controls: Controls = PLAIN) -> Tensor:
        """``content`` (3, H, W) or (N, 3, H, W), float in [0, 1] or uint8, stylised: float32 (N, 3, H, W) in [0, 1].

        ``controls.style_codes`` (from :meth:`encode_styles`) replace ``styles`` except with colour preservation,
        which depends on the content. Controls the model does not declare are refused with one line
        (:func:`~styletransfer.protocol.controls.accept`)."""

    def tiling(self) -> TilingNeeds | None:
        """What tiling must respect, or None when the model cannot be tiled."""

    def tiled(self, content: Tensor, styles: Sequence[Tensor] = (), controls: Controls = PLAIN) -> TiledStylisation:
        """One tiled call on ``content`` (N, 3, H, W), which stays where it is (e.g. on the host); ``controls``
        without masks or another output size (the tiling application refuses them)."""

    def onnx_graphs(self, fp16: bool = False) -> list[OnnxGraph]:
        """The graphs of an ONNX export (float16 weights and activations with ``fp16``)."""


def _network_title(spec: Mapping | None) -> str:
    """The recorded encoder's network for messages: VGG for either VGG, else its torchvision name."""
    network = str((spec or {}).get("network", "vgg19"))
    return "VGG" if network in ("vgg19", "vgg16") else network


def random_encoder_warning(spec: Mapping | None, source: str, method_title: str) -> str | None:
    """The line a model trained behind a random encoder shows wherever it is used (None otherwise)."""
    if not trained_behind_random(spec):
        return None
    return (
        f"{source or 'this model'} was trained behind a RANDOM {_network_title(spec)} encoder (a test or offline demo "
        f"run): its results show that the pipeline works, not what {method_title} looks like"
    )
