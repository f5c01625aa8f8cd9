"""Neural Style's coarse-to-fine schedule: the scales' sizes, the iterations per scale, Adam's state carried to the
next scale, and the (bias-corrected) exponential moving average of the iterates with its checkpoint state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer.runtime.errors import ConfigError


def scale_sizes(
    long_side: int, scales: Sequence[int] | None, scale_start: int | None, scale_factor: float
) -> list[int]:
    """Longer sides of the scales: ``scales``, or ``scale_start`` x ``scale_factor``^k up to ``long_side``
    (which is always the last), or ``long_side`` alone."""
    if scales is not None:
        return list(scales)
    if scale_start is None:
        return [long_side]
    sizes: list[int] = []
    size = float(scale_start)
    while round(size) < long_side:
        sizes.append(round(size))
        size *= scale_factor
    return sizes + [long_side]


def step_schedule(n_scales: int, max_steps: int | None, steps_per_scale: Sequence[int] | None) -> list[int]:
    """Iterations per scale: ``steps_per_scale`` (last entry repeated) or ``max_steps`` split equally (the
    remainder to the last scale). Raises ConfigError when ``max_steps`` cannot cover the scales."""
    if steps_per_scale is None:
        if max_steps is None or max_steps < 0:
            raise ConfigError(
                "Neural Style needs a number of iterations: set trainer.max_steps (e.g. trainer.max_steps=500) "
                "or method.steps_per_scale"
            )
        if max_steps < n_scales:
            raise ConfigError(f"trainer.max_steps={max_steps} is fewer than the {n_scales} scales to optimise")
        steps = [max_steps // n_scales] * n_scales
        steps[-1] += max_steps - sum(steps)
        return steps
    steps = [steps_per_scale[min(i, len(steps_per_scale) - 1)] for i in range(n_scales)]
    if max_steps is not None and 0 <= max_steps < sum(steps):
        raise ConfigError(
            f"trainer.max_steps={max_steps} is fewer than the {sum(steps)} iterations method.steps_per_scale="
            f"{list(steps_per_scale)} asks for over {n_scales} scale(s); raise trainer.max_steps (or -1), or set "
            "method.steps_per_scale=null to split trainer.max_steps across the scales"
        )
    return steps


def style_weights(blend: Sequence[float] | None, style_names: Sequence[str]) -> list[float]:
    """``method.style_blend`` (or equal weights), one per style image, normalised to sum to 1."""
    if blend is None:
        blend = [1.0] * len(style_names)
    if len(blend) != len(style_names):
        raise ConfigError(
            f"method.style_blend={list(blend)} has {len(blend)} weight(s) but data.style names "
            f"{len(style_names)} style image(s) ({', '.join(style_names)}); give one weight per style"
        )
    return [w / sum(blend) for w in blend]


def check_scale_sizes(sizes: Sequence[int], dm: Any, need: int) -> None:
    """Every scale leaves ``need`` px on the shorter side of the content and of every style (the layers' deepest
    pooling times the positions the style statistic needs per side: a 2x2 map for mean/std's unbiased variance)."""
    shapes = [("data.content", dm.content.shape[-2:], 1.0)]
    shapes += [(f"data.style ({n})", s.shape[-2:], dm.style_scale) for n, s in zip(dm.style_names, dm.styles)]
    for size in sizes:
        for setting, (h, w), factor in shapes:
            side = round(factor * size * min(h, w) / max(h, w))
            if side < need:
                raise ConfigError(
                    f"{setting} at scale {size} px is only {side} px on its shorter side; the layers used need "
                    f">= {need} px: raise data.long_side / method.scales / data.style_scale"
                )


def resize_adam_state(state: Mapping[str, Any], size: Sequence[int]) -> dict[str, Any]:
    """Adam's moments resized to a new image size (first moment bicubic, second bilinear and kept >= 0), so the
    next scale starts with the step sizes Adam has learnt; the step count is kept."""
    resized = dict(state)
    for key, mode in (("exp_avg", "bicubic"), ("exp_avg_sq", "bilinear"), ("max_exp_avg_sq", "bilinear")):
        if key in state:
            value = F.interpolate(state[key], size=tuple(size), mode=mode, align_corners=False)
            resized[key] = value if key == "exp_avg" else value.clamp_min(0)
    return resized


class IterateEMA:
    """Bias-corrected exponential moving average of the iterates (crowsonkb's style-transfer-pytorch).

    With decay d, from a_0 = 0: a_t = d a_{t-1} + (1 - d) x_t, and the value is a_t / (1 - d^t), a weighted mean
    of x_1..x_t with weights proportional to d^(t-i). ``decay`` None turns it off (``value`` is then None).
    """

    def __init__(self, decay: float | None) -> None:
        self.decay = decay
        self.average: Tensor | None = None
        self.decay_power = 1.0  # d^t

    def reset(self, like: Tensor) -> None:
        """Start again (at a new scale) for iterates shaped like ``like``."""
        self.average = None if self.decay is None else torch.zeros_like(like.detach())
        self.decay_power = 1.0

    def update(self, image: Tensor) -> None:
        """Fold in the current iterate (a no-op when off)."""
        if self.average is None or self.decay is None:
            return
        self.average.mul_(self.decay).add_(image.detach(), alpha=1 - self.decay)
        self.decay_power *= self.decay

    def value(self) -> Tensor | None:
        """The bias-corrected average; None when off or not updated since the last reset."""
        if self.average is None or self.decay_power >= 1.0:
            return None
        return self.average / (1.0 - self.decay_power)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and floats (loadable with ``torch.load(weights_only=True)``)."""
        return {"ema": None if self.average is None else self.average.detach().cpu(), "ema_accum": self.decay_power}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device | str = "cpu") -> None:
        """Restore ``state_dict``'s state (missing keys: off and reset), the average moved to ``device``."""
        average = state.get("ema")
        self.average = None if average is None else average.to(device)
        self.decay_power = float(state.get("ema_accum", 1.0))
