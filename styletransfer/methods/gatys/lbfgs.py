"""A sync-free L-BFGS for one tensor: its state lives on the device and every step is a fixed sequence of tensor
ops, so a step never waits for the device (no ``float(loss)``, no data-dependent Python branch) and can be
captured in a CUDA graph.

It reproduces ``torch.optim.LBFGS(max_iter=1, line_search_fn=None)`` (Neural Style's optimiser): the same step
length (``min(1, 1 / |g|_1) * lr`` on the first iteration, then ``lr``), the same curvature test (a pair with
``y.s <= 1e-10`` is skipped), the same history of the last ``history_size`` accepted pairs, the same initial
Hessian scale ``y.s / y.y`` and the same descent test (no move when ``g.d > -tolerance_change``). The branches
are masks (``torch.where``), the history a fixed ring buffer whose newest slot is a device tensor, and the two-loop
recursion is evaluated in its compact form (Byrd, Nocedal & Schnabel 1994): two matrix products over the history
and two triangular solves of ``history_size`` unknowns, instead of 4 x ``history_size`` vector operations.
Differences from torch's: it never stops early (torch returns without moving once ``max |g| <= tolerance_grad``,
1e-7), and the results differ by float32 rounding (the sums are taken in another order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: torch.optim.LBFGS's curvature threshold: a pair (s, y) with y.s below it is not stored.
CURVATURE_EPS = 1e-10


class DeviceLBFGS(torch.optim.Optimizer):
    """L-BFGS without host-device synchronisation for a single tensor (Neural Style's image).

    ``step(closure)``: the closure computes the loss and fills the tensor's ``.grad``; one iteration follows, as
    ``torch.optim.LBFGS(max_iter=1, line_search_fn=None)``'s. ``update()`` is the iteration alone, from ``.grad``.
    The state (history ``2 * history_size`` x numel, as torch's lists) is in ``state`` and saved with
    ``state_dict`` like any optimiser's.

    ``cuda_graph``: on CUDA, after ``warmup`` eager steps (on a side stream, as CUDA graphs need), the next
    ``step`` captures the whole iteration (the closure and the update) in a CUDA graph and every later step
    replays it: the closure must then compute the same thing on the same tensors at every call (Python code in it,
    such as Lightning's hooks, runs at capture only). If capture fails, a warning says why and steps stay eager.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1.0,
        history_size: int = 100,
        tolerance_change: float = 1e-9,
        cuda_graph: bool = False,
        warmup: int = 3,
    ) -> None:
        super().__init__(params, {"lr": lr, "history_size": history_size, "tolerance_change": tolerance_change})
        if len(self.param_groups) != 1 or len(self.param_groups[0]["params"]) != 1:
            raise ValueError("DeviceLBFGS optimises exactly one tensor")
        self.cuda_graph = bool(cuda_graph) and self.param.is_cuda
        self.warmup = max(1, int(warmup))
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self._graph_loss: Any = None

    @property
    def param(self) -> Tensor:
        """The optimised tensor."""
        return self.param_groups[0]["params"][0]

    def _state(self) -> dict[str, Tensor]:
        """The device state, created at the first iteration (empty history, unit Hessian scale)."""
        p = self.param
        state = self.state[p]
        if not state:
            m, n = int(self.param_groups[0]["history_size"]), p.numel()
            zeros: dict[str, Any] = {"device": p.device, "dtype": p.dtype}
            state.update(
                {
                    "history": torch.zeros(2 * m, n, **zeros),  # rows 0..m-1: steps s, rows m..2m-1: gradient changes y
                    "sy": torch.zeros(m, m, **zeros),  # s_i . y_j by slot
                    "yy": torch.zeros(m, m, **zeros),  # y_i . y_j by slot
                    "filled": torch.zeros(m, dtype=torch.bool, device=p.device),
                    "head": torch.full((), m - 1, dtype=torch.long, device=p.device),  # slot of the newest pair
                    "gamma": torch.ones((), **zeros),  # initial inverse Hessian scale (torch's H_diag)
                    "prev_grad": torch.zeros(n, **zeros),
                    "direction": torch.zeros(n, **zeros),
                    "step_size": torch.zeros((), **zeros),
                    "first": torch.ones((), dtype=torch.bool, device=p.device),
                }
            )
        return state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Evaluate ``closure`` (loss and ``.grad``) with gradients enabled, then one L-BFGS iteration (or replay
        the captured iteration, see the class docstring)."""
        if closure is None:
            raise ValueError("DeviceLBFGS.step needs a closure that computes the loss and the gradient")
        if self.graph is not None:
            self.graph.replay()
            return self._graph_loss
        if not self.cuda_graph:
            return self._eager_step(closure)
        if self.eager_steps >= self.warmup and self._capture(closure):
            return self._graph_loss
        side = torch.cuda.Stream(self.param.device)
        side.wait_stream(torch.cuda.current_stream(self.param.device))
        with torch.cuda.stream(side):
            loss = self._eager_step(closure)
        torch.cuda.current_stream(self.param.device).wait_stream(side)
        return loss

    def _eager_step(self, closure: Callable[[], Any]) -> Any:
        with torch.enable_grad():
            loss = closure()
        self.update()
        self.eager_steps += 1
        return loss

    def _capture(self, closure: Callable[[], Any]) -> bool:
        """Capture one iteration and replay it (that is this step); False, with a warning, when capture fails."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                loss = self._eager_step(closure)
        except Exception as exc:  # capture rejects many ops (host syncs, CPU tensors): any of them means "eager"
            log.warning(
                "DeviceLBFGS: CUDA graph capture failed (%s: %s); continuing without CUDA graphs",
                type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "",
            )
            self.cuda_graph = False
            return False
        self.graph, self._graph_loss = graph, loss
        graph.replay()
        return True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the state; a captured graph (which points at the old state tensors) is dropped, and the flags and
        the ring index get back the dtypes torch's loader casts to the parameter's."""
        self.graph = None
        super().load_state_dict(state_dict)
        for state in self.state.values():
            for key, dtype in (("filled", torch.bool), ("first", torch.bool), ("head", torch.long)):
                if key in state:
                    state[key] = state[key].to(dtype)

    @torch.no_grad()
    def update(self) -> None:
        """One iteration from the gradient in ``.grad``: store the curvature pair, then move along the new
        direction. Only tensor ops, the same every call."""
        st = self._state()
        group = self.param_groups[0]
        p = self.param
        if p.grad is None:
            raise RuntimeError("DeviceLBFGS.update needs the closure to have computed the gradient (.grad is None)")
        g = p.grad.reshape(-1)
        s = st["direction"] * st["step_size"]
        y = g - st["prev_grad"]
        new, gamma = self._store_pair(st, s, y)
        # One pass over the history (with the new pair in it): s_i.g, y_i.g, s_i.y, y_i.s, y_i.y.
        products = st["history"] @ torch.stack([g, s, y], 1)
        self._update_products(st, new, products)
        direction = self._direction(st, g, gamma, products[:, 0])
        first = st["first"]
        step_size = torch.where(
            first,
            torch.clamp(1.0 / g.abs().sum(), max=1.0) * group["lr"],
            torch.full_like(st["step_size"], group["lr"]),
        )
        descent = torch.dot(g, direction) <= -group["tolerance_change"]
        p.add_((direction * torch.where(descent, step_size, 0.0)).view_as(p))
        st["prev_grad"].copy_(g)
        st["direction"].copy_(direction)
        st["step_size"].copy_(step_size)
        first.fill_(False)

    @staticmethod
    def _store_pair(st: dict[str, Tensor], s: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Put the last iteration's (s, y) into the next ring slot when its curvature y.s is positive (a mask, not
        a branch); returns the one-hot of the slot written (all false when skipped) and the new Hessian scale."""
        hist, head = st["history"], st["head"]
        m = hist.shape[0] // 2
        ys = torch.dot(y, s)
        valid = (ys > CURVATURE_EPS) & ~st["first"]
        slot = torch.remainder(head + 1, m)
        rows = torch.stack([slot, slot + m])
        hist.index_copy_(0, rows, torch.where(valid, torch.stack([s, y]), hist.index_select(0, rows)))
        gamma = torch.where(valid, ys / torch.dot(y, y), st["gamma"])
        new = (torch.arange(m, device=s.device) == slot) & valid
        st["filled"].logical_or_(new)
        st["head"].copy_(torch.where(valid, slot, head))
        st["gamma"].copy_(gamma)
        return new, gamma

    @staticmethod
    def _update_products(st: dict[str, Tensor], new: Tensor, products: Tensor) -> None:
        """The written slot's row and column of S^T Y and Y^T Y from ``products`` = history @ [g, s, y]."""
        m = new.shape[0]
        sy = torch.where(new[None, :], products[:m, 2:3], st["sy"])  # column: s_i . y_new
        sy = torch.where(new[:, None], products[m:, 1][None, :], sy)  # row: s_new . y_j
        yy = torch.where(new[None, :], products[m:, 2:3], st["yy"])
        yy = torch.where(new[:, None], products[m:, 2][None, :], yy)
        st["sy"].copy_(sy)
        st["yy"].copy_(yy)

    @staticmethod
    def _direction(st: dict[str, Tensor], g: Tensor, gamma: Tensor, hist_g: Tensor) -> Tensor:
        """-H g for the L-BFGS inverse Hessian H of the stored pairs (the compact form of the two-loop recursion):
        H g = gamma g + S p - gamma Y w, with R w = S^T g and R^T p = (D + gamma Y^T Y) w - gamma Y^T g, R the
        upper triangle of S^T Y in age order (oldest first) and D its diagonal. ``hist_g`` is [S^T g; Y^T g] by
        slot. Empty slots hold zeros and get a unit diagonal, so they add nothing."""
        hist = st["history"]
        m = hist.shape[0] // 2
        order = torch.remainder(st["head"] + 1 + torch.arange(m, device=g.device), m)  # oldest first
        filled = st["filled"].index_select(0, order)
        sy = st["sy"].index_select(0, order).index_select(1, order)
        yy = st["yy"].index_select(0, order).index_select(1, order)
        diag = torch.where(filled, sy.diagonal(), 0.0)
        r = sy.triu(1) + torch.diag_embed(torch.where(filled, diag, 1.0))
        sg_yg = hist_g.view(2, m).index_select(1, order)
        w = torch.linalg.solve_triangular(r, sg_yg[0, :, None], upper=True)
        rhs = diag[:, None] * w + gamma * (yy @ w) - gamma * sg_yg[1, :, None]
        p = torch.linalg.solve_triangular(r.T, rhs, upper=False)
        coeff = torch.zeros(2 * m, device=g.device, dtype=g.dtype)
        coeff.index_copy_(0, torch.cat([order, order + m]), torch.cat([p[:, 0], -gamma * w[:, 0]]))
        return -(gamma * g + hist.T @ coeff)
