"""What inductor would receive of a compiled function's backward: its ATen ops after inductor's decompositions
(CPU only, nothing is compiled to code), for the tests that keep scatters out of the training step."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch._inductor.lowering  # noqa: F401  (inductor's max-pool decomposition looks its lowering up)
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd
from torch._inductor.decomposition import select_decomp_table


def compile_recording_backward(fn: Callable[..., torch.Tensor]) -> tuple[Callable[..., torch.Tensor], set[str]]:
    """``fn`` compiled whole by dynamo and AOT autograd with inductor's decompositions, its forward and backward graphs
    run as traced, and the set that each backward it runs adds its ATen ops to: what inductor would receive, and the
    values those graphs compute."""
    ops: set[str] = set()

    def record(graph_module, _inputs):
        ops.update(str(node.target) for node in graph_module.graph.nodes if node.op == "call_function")
        return make_boxed_func(graph_module.forward)

    backend = aot_autograd(fw_compiler=lambda gm, _: make_boxed_func(gm.forward), bw_compiler=record,
                           decompositions=select_decomp_table())
    torch._dynamo.reset()
    return torch.compile(fn, backend=backend, fullgraph=True), ops


def backward_ops(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> set[str]:
    """The ATen ops of the backward graph of ``fn(*inputs).square().sum()``, with inductor's decompositions."""
    compiled, ops = compile_recording_backward(fn)
    compiled(*inputs).square().sum().backward()
    return ops


def scatters(ops: set[str]) -> set[str]:
    """The ops of ``ops`` that write through an index (scatter, index_put: atomics on a GPU)."""
    return {op for op in ops if "scatter" in op or "index_put" in op}
