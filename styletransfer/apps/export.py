"""ONNX export of any model that declares ``Capabilities.export`` (what ``styletransfer-export`` does once
:mod:`styletransfer.cli.export` parsed its flags): the graphs the model hands over (``StyleModel.onnx_graphs``),
each written to its file with the model's record in the image graph's metadata, and with ``--check`` compared with
PyTorch in onnxruntime.

The graphs are captured with the torch.export-based exporter (``dynamo=True``): it keeps H and W symbolic through
size computations such as a decoder's exact-size upsampling, whereas the TorchScript tracer (``dynamo=False``) turns
sizes computed from them into constants, so its graph only runs at the traced size. An op that ONNX cannot express
fails the export: nothing is written (each file goes to a temporary name first), never a wrong graph.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from styletransfer.apps.onnx_runtime import (
    META_CAPABILITIES,
    META_CODE,
    META_METHOD,
    META_MODEL,
    META_WEIGHTS,
    check_names,
    graph_path,
    open_session,
    providers,
    weights_checksum,
)
from styletransfer.apps.stylise import encoder_arg
from styletransfer.protocol.model import OnnxGraph, StyleModel
from styletransfer.protocol.registry import load_model
from styletransfer.runtime.choices import EXPORT_PARTS, OPSETS
from styletransfer.runtime.errors import ConfigError, ExportCheckError
from styletransfer.runtime.files import check_writable_folder

log = logging.getLogger(__name__)

#: (H, W) that --check runs: one multiple of 8 and one that is not, so exact-size upsampling is exercised.
CHECK_SIZES = ((64, 48), (77, 53))
#: Largest absolute difference --check accepts between onnxruntime and PyTorch (float32), per precision. fp16 runs
#: the convolutions in half precision (10-bit mantissa) against the float32 PyTorch model.
TOLERANCE = {"fp32": 1e-3, "fp16": 3e-2}
#: Loggers of the exporter's passes, which report every rewrite at INFO.
QUIET_LOGGERS = ("onnxscript", "onnx_ir")


def _metadata(model: StyleModel, graph: OnnxGraph, code_names: Sequence[str]) -> dict[str, str]:
    """The image graph's record: the method, its capabilities, the style code's tensor names and the model's own
    record (file, encoder), which the ONNX runtime reads back."""
    if graph.role != "image":
        return dict(graph.metadata)
    return {
        **graph.metadata,
        META_METHOD: model.method,
        META_CODE: json.dumps(list(code_names)),
        META_CAPABILITIES: json.dumps(asdict(model.capabilities)),
        META_MODEL: json.dumps(model.describe(), default=str),
    }


def _write(graph: OnnxGraph, path: Path, opset: int, metadata: dict[str, str]) -> Path:
    """One graph to ``path``, written to a temporary file beside it and renamed (a failed export leaves no file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used")  # a code's N is the batch's
            program = torch.onnx.export(
                graph.module.eval(),
                graph.inputs,
                None,
                input_names=list(graph.input_names),
                output_names=list(graph.output_names),
                dynamic_shapes=graph.dynamic_shapes,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        if program is None:  # torch.onnx.export(dynamo=True) always returns the program
            raise RuntimeError("torch.onnx.export returned no ONNX program")
        initialisers = program.model.graph.initializers.items()
        weights = weights_checksum(
            (name, value.const_value.numpy()) for name, value in initialisers if value.const_value is not None
        )
        program.model.metadata_props.update({**metadata, META_WEIGHTS: weights})
        program.save(str(partial), external_data=False)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def export_graphs(
    model: StyleModel, output: str | os.PathLike, part: str = "both", fp16: bool = False, opset: int = OPSETS[0]
) -> list[Path]:
    """Write the image graph to ``output`` and/or the style graph beside it; returns the files written."""
    if part not in EXPORT_PARTS:
        raise ConfigError(f"part must be one of {', '.join(EXPORT_PARTS)}, got {part!r}")
    if opset not in OPSETS:
        raise ConfigError(f"--opset must be in {OPSETS[0]}-{OPSETS[-1]}, got {opset}")
    if not model.capabilities.export:
        raise ConfigError(f"{model.method} models cannot be exported to ONNX (an op ONNX cannot express)")
    graphs = model.onnx_graphs(fp16)
    code_names = next((g.output_names for g in graphs if g.role == "style"), ())
    with torch.no_grad():
        return [
            _write(graph, graph_path(output, graph), opset, _metadata(model, graph, code_names))
            for graph in graphs
            if part in ("both", graph.role)
        ]


def check_graphs(
    model: StyleModel,
    output: str | os.PathLike,
    part: str = "both",
    sizes: tuple[tuple[int, int], ...] = CHECK_SIZES,
    seed: int = 0,
) -> list[tuple[tuple[int, int], float]]:
    """Largest absolute difference between onnxruntime (CPU) and the float32 PyTorch model at each size, over every
    exported graph's outputs on the same inputs."""
    generator = torch.Generator().manual_seed(seed)
    graphs = [g for g in model.onnx_graphs(False) if part in ("both", g.role)]
    sessions = []
    for graph in graphs:
        path = graph_path(output, graph)
        session = open_session(path, f"{graph.role} graph", providers("cpu"))
        check_names(session, path, f"{graph.role} graph", graph.input_names, graph.output_names)
        sessions.append(session)
    results = []
    for height, width in sizes:
        diff = 0.0
        for graph, session in zip(graphs, sessions):
            inputs = graph.check_inputs(height, width, generator)
            with torch.no_grad():
                expected = (graph.reference or graph.module).float().eval()(*inputs)
            expected = expected if isinstance(expected, (tuple, list)) else (expected,)
            got = session.run(None, {n: t.numpy() for n, t in zip(graph.input_names, inputs)})
            diff = max(diff, *(float((torch.from_numpy(g) - e).abs().max()) for g, e in zip(got, expected)))
        results.append(((height, width), diff))
    return results


def run_export(args: argparse.Namespace) -> list[Path]:
    """Load the model file (any method, through the registry; warning for a random encoder), export the requested
    graphs and, with ``--check``, compare them with PyTorch; an ExportCheckError names the first size over the
    tolerance."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    check_writable_folder(Path(args.output).parent, "-o")  # before the export's work, not after it
    model = load_model(args.checkpoint, encoder_arg(args), "cpu")
    written = export_graphs(model, args.output, args.part, args.fp16, args.opset)
    precision = "fp16" if args.fp16 else "fp32"
    print(f"wrote {', '.join(str(p) for p in written)} (opset {args.opset}, {precision})")
    if not args.check:
        return written
    tolerance = TOLERANCE[precision]
    results = check_graphs(model, args.output, args.part)
    for (height, width), diff in results:
        print(
            f"check {height}x{width}: largest absolute difference of the graphs' outputs {diff:.3g} (tolerance "
            f"{tolerance:g})"
        )
    for (height, width), diff in results:
        if not diff <= tolerance:
            raise ExportCheckError(
                f"the exported graph differs from PyTorch at {height}x{width} by {diff:.3g}, above "
                f"the {precision} tolerance {tolerance:g}"
            )
    print("check passed: onnxruntime matches PyTorch at " + ", ".join(f"{h}x{w}" for (h, w), _ in results))
    return written
