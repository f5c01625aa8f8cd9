"""The test-time controls every feed-forward model is called with, what a model declares it supports, and the
checks the applications run before any work: one line naming the flag or setting and the fix."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor

from styletransfer.runtime.errors import ConfigError

#: Tolerance on the sum of style interpolation weights.
WEIGHT_SUM_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Capabilities:
    """What a model can do; the applications refuse the rest with one line (:func:`refuse_unsupported`).

    ``style_input``: it takes style images (False: a network trained for its own styles). ``interpolation``: several
    styles blended with weights. ``alpha``: the content-style trade-off. ``masks``: spatial control, one style per
    region. ``preserve_colour``: the style recoloured to the content first. ``output_size``: another output size than
    the content's. ``tiling``: large images in windows (``StyleModel.tiling``). ``export``: ONNX graphs
    (``StyleModel.onnx_graphs``). ``min_side``: the smallest content side in px it stylises.
    """

    style_input: bool = True
    interpolation: bool = True
    alpha: bool = True
    masks: bool = True
    preserve_colour: bool = True
    output_size: bool = True
    tiling: bool = True
    export: bool = True
    min_side: int = 1


#: Each control, the capability it needs, and its command-line flag (named in refusals).
CONTROL_FLAGS = {
    "styles": ("style_input", "--style"),
    "weights": ("interpolation", "--weights"),
    "alpha": ("alpha", "--alpha"),
    "masks": ("masks", "--mask"),
    "preserve_colour": ("preserve_colour", "--preserve-colour"),
    "output_size": ("output_size", "--output-size"),
}


#: Each control's name in the Python API (``Controls``' fields), for refusals raised by a model itself.
KEYWORDS = {control: control for control in CONTROL_FLAGS}


@dataclass(frozen=True)
class Controls:
    """The test-time controls of one stylisation (``StyleModel.stylise``, ``StyleModel.tiled`` and the applications
    that call them); the defaults ask for nothing.

    ``weights``: one per style, summing to 1, to blend several styles (a network of its own styles: one per style
    it holds). ``alpha`` in [0, 1]: the content-style trade-off. ``preserve_colour``: each style recoloured to the
    content first. ``masks``: one per style, (H, W) in [0, 1], any size: style k where mask k >= 0.5. ``output_size``
    (H, W): default the content's. ``style_codes``: the styles' codes from ``StyleModel.encode_styles``, in place of
    the style images (except with colour preservation, which depends on the content).
    """

    weights: Sequence[float] | None = None
    alpha: float = 1.0
    preserve_colour: bool = False
    masks: Sequence[Tensor] | None = None
    output_size: tuple[int, int] | None = None
    style_codes: Sequence[Any] | None = None

    @property
    def cached_codes(self) -> list[Any] | None:
        """The given style codes, unless colour preservation recomputes them from the style images."""
        return None if self.style_codes is None or self.preserve_colour else list(self.style_codes)

    def style_count(self, styles: Sequence[object]) -> int:
        """How many styles the call blends: its cached codes, else its style images."""
        codes = self.cached_codes
        return len(styles) if codes is None else len(codes)

    def asked(self, styles: Sequence[object] = ()) -> dict[str, bool]:
        """Which controls the call asks for (a control at its default value asks for nothing)."""
        return {
            "styles": self.style_count(styles) > 0,
            "weights": self.weights is not None and len(self.weights) > 1,
            "alpha": float(self.alpha) != 1.0,
            "masks": self.masks is not None,
            "preserve_colour": bool(self.preserve_colour),
            "output_size": self.output_size is not None,
        }

    def checked_weights(self, styles: Sequence[object]) -> list[float] | None:
        """:func:`check_controls` for the styles as the call counts them; the interpolation weights (None with
        masks)."""
        return check_controls(self.style_count(styles), self.weights, self.alpha, self.masks)

    def size(self, content: Tensor) -> tuple[int, int]:
        """The output size (H, W): ``output_size``, else the content's."""
        height, width = self.output_size or content.shape[-2:]
        return int(height), int(width)


#: A call with every control at its default.
PLAIN = Controls()


class Declares(Protocol):
    """What :func:`accept` reads of a model: its name, file and capabilities."""

    method: str
    source: str
    capabilities: Capabilities


def accept(model: Declares, styles: Tensor | Sequence[Tensor], controls: Controls, elsewhere: str = "") -> list[Tensor]:
    """The styles of a call as a list, once the controls ``model`` does not declare are refused in one line (by
    their Python names, with ``elsewhere`` as for :func:`refuse_unsupported`; the applications refuse them by their
    flags before any work)."""
    styles = style_list(styles)
    what = model.source or f"this {model.method} model"
    refuse_unsupported(model.capabilities, what, controls.asked(styles), KEYWORDS, elsewhere)
    return styles


def refuse_unsupported(
    capabilities: Capabilities,
    what: str,
    asked: Mapping[str, bool],
    flags: Mapping[str, str] | None = None,
    elsewhere: str = "",
) -> None:
    """A ConfigError naming every control in ``asked`` that ``capabilities`` lacks (``what`` names the model; ``flags``
    renames a control's flag, e.g. for a web page; ``elsewhere`` says where the control exists, e.g. another
    runtime), or a model that needs style images without one."""
    names = {key: (flags or {}).get(key, flag) for key, (_, flag) in CONTROL_FLAGS.items()}
    refused = [names[key] for key, on in asked.items() if on and not getattr(capabilities, CONTROL_FLAGS[key][0])]
    if refused:
        fix = f"leave {'it' if len(refused) == 1 else 'them'} out" + (f" or {elsewhere}" if elsewhere else "")
        raise ConfigError(f"{what} does not support {', '.join(refused)}: {fix}")
    if capabilities.style_input and "styles" in asked and not asked["styles"]:
        raise ConfigError(f"{what} needs at least one style image ({names['styles']})")


def check_weights(weights: Sequence[float] | None, n_styles: int) -> list[float]:
    """Interpolation weights: one per style, finite, >= 0, summing to 1 (default: 1 for a single style)."""
    if n_styles < 1:
        raise ConfigError("at least one style image is needed")
    if weights is None:
        if n_styles > 1:
            raise ConfigError(f"{n_styles} styles need interpolation weights (one per style, summing to 1)")
        return [1.0]
    weights = [float(w) for w in weights]
    if len(weights) != n_styles:
        raise ConfigError(f"got {len(weights)} interpolation weight(s) for {n_styles} style(s): give one per style")
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ConfigError(f"interpolation weights must be finite and >= 0, got {weights}")
    if abs(sum(weights) - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ConfigError(f"interpolation weights must sum to 1, got {weights} (sum {sum(weights):.6g})")
    return weights


def check_controls(
    n_styles: int, weights: Sequence[float] | None, alpha: float, masks: Sequence[object] | None
) -> list[float] | None:
    """Validate the test-time controls; returns the interpolation weights (None with masks)."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    if masks is None:
        return check_weights(weights, n_styles)
    if weights is not None:
        raise ConfigError("give either interpolation weights or masks, not both")
    if len(masks) != n_styles:
        raise ConfigError(f"got {len(masks)} mask(s) for {n_styles} style(s): give one mask per style")
    return None


def check_size(width: int, height: int, what: str, min_side: int, fix: str | None = None) -> None:
    """Raise a ConfigError naming ``what`` (the image or frames) and ``fix`` (default: a larger
    ``--content-short-side``) when a side of ``width`` x ``height`` px is shorter than ``min_side``."""
    fix = fix or f"pass --content-short-side {min_side} or more"
    if min(width, height) < min_side:
        raise ConfigError(
            f"{what}: {width}x{height} px is too small (the model needs {min_side} px on each side; {fix})"
        )


def as_batch(image: Tensor, name: str) -> Tensor:
    """An RGB image (3, H, W) or batch (N, 3, H, W) as a batch; anything else names ``name`` in the error."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[1] != 3:
        raise ConfigError(f"{name} must be RGB shaped (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")
    return image


def style_list(styles: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """Styles as a list: one image (3, h, w), a stack of them, or a sequence."""
    if isinstance(styles, Tensor):
        return [styles] if styles.dim() == 3 else list(styles)
    return list(styles)
