"""Neural Style's sync-free loop (``method.optimizer=device_lbfgs``): several L-BFGS iterations per Lightning step,
each a ``DeviceLBFGS`` step whose closure computes the losses and the gradient and records, on the device, the
first non-finite iteration and the last iterate with a finite loss. Nothing waits for the device until the module
reads that record (every ``method.check_every`` iterations, at snapshots, scale changes, checkpoints and the end).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from styletransfer.engine.finite import FirstNonFinite


class FiniteWatch:
    """The first iteration whose loss is not finite (``engine.finite.FirstNonFinite``, counted by a device
    iteration counter a CUDA graph can replay) and the last iterate whose loss was finite: device tensors updated
    without a host sync."""

    def __init__(self, image: Tensor, start: int) -> None:
        self.start = start
        self.iteration = torch.full((), start, dtype=torch.long, device=image.device)
        self.first_bad = FirstNonFinite(image.device)
        self.last_good = image.detach().clone()

    def record(self, total: Tensor, image: Tensor) -> None:
        """Note the loss ``total`` of the iterate ``image`` (before the optimiser moves it)."""
        keep = self.first_bad.record(total, self.iteration)
        self.last_good.copy_(torch.where(keep, image.detach(), self.last_good))
        self.iteration.add_(1)

    def first_bad_step(self) -> int | None:
        """The first non-finite iteration, or None (reads the device: one sync)."""
        return self.first_bad.step()

    def good_image(self) -> Tensor | None:
        """The last iterate with a finite loss; None when the first watched iteration was already non-finite."""
        return None if self.first_bad_step() == self.start else self.last_good


class FastLoop:
    """Runs the iterations of one scale: ``run(optimizer, n)`` calls ``optimizer.step(closure)`` ``n`` times
    (Lightning's optimiser wrapper counts each as a training step) and returns the last iteration's loss terms."""

    def __init__(self, loss_fn: Callable[[Tensor], dict[str, Tensor]], image: Tensor, start: int) -> None:
        self.loss_fn = loss_fn
        self.image = image
        self.watch = FiniteWatch(image, start)
        self.losses: dict[str, Tensor] = {}

    def closure(self) -> Tensor:
        """Loss terms, the gradient into ``image.grad`` and the finiteness record: no host sync."""
        losses = self.loss_fn(self.image)
        total = losses["loss/total"]
        (grad,) = torch.autograd.grad(total, self.image)
        self.image.grad = grad
        self.watch.record(total.detach(), self.image)
        self.losses = {key: value.detach() for key, value in losses.items()}
        return self.losses["loss/total"]

    def run(self, optimizer: Any, n: int, after: Callable[[], None]) -> dict[str, Tensor]:
        """``n`` iterations, ``after()`` following each; the last iteration's loss terms (copies: a CUDA graph
        overwrites its outputs at the next replay)."""
        for _ in range(n):
            optimizer.step(closure=self.closure)
            after()
        return {key: value.clone() for key, value in self.losses.items()}


def chunk_length(done: int, limit: int, boundaries: Iterable[int], every: Iterable[int]) -> int:
    """Iterations for the next Lightning step: at most ``limit``, stopping at the next of ``boundaries`` (scale
    changes, the end) and at the next multiple of each of ``every`` (0: none), so that checks, snapshots and
    checkpoints fall on the iterations they name."""
    stops = [b - done for b in boundaries if b > done]
    stops += [e - done % e for e in every if e > 0]
    return max(1, min([limit, *stops]))
