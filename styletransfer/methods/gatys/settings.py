"""Neural Style's settings (``configs/method/gatys.yaml``), checked and normalised once, when they are built.

Every bad value raises ConfigError naming its key (``method.<key>``) before the encoder is built or any image
is read, and the normalised values are plain Python (lists, floats, ints, strings, None): they are the
LightningModule's hyper-parameters, so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field, fields
from typing import Any

from styletransfer.methods.gatys.losses import STYLE_STATISTICS, normalise_layer_weights
from styletransfer.nn.backbones import check_nodes
from styletransfer.nn.colour import COLOUR_SPACES
from styletransfer.nn.compiling import CUDA_GRAPH_MODES, compile_mode
from styletransfer.nn.encoder import NETWORKS, check_layers
from styletransfer.runtime.errors import ConfigError

PAPER_CONTENT_LAYERS = ("relu4_2",)
PAPER_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgs", "device_lbfgs", "adam")
INITS = ("content", "noise", "style")
PRESERVE_COLOUR = ("luminance", "histogram")
#: Strings a command line may give for "no colour preservation".
_NO_PRESERVE = ("", "none", "null", "false")


def _plain_list(value: Any, setting: str) -> list:
    """``value`` as a list; a string or a scalar is refused (a list setting given one value by mistake)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{setting} must be a list, got {value!r}")
    return list(value)


def _optional_list(value: Any, setting: str, kind: type) -> list | None:
    """None, or ``value`` as a list of ``kind`` (int or float)."""
    return None if value is None else [kind(v) for v in _plain_list(value, setting)]


def _check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"method.{name}={value!r}: choose one of {', '.join(allowed)}")
    return str(value)


@dataclass(frozen=True)
class GatysSettings:
    """The settings of ``GatysModule`` (see configs/method/gatys.yaml for each); building one checks them all.

    After construction the fields hold normalised plain values (layer lists as lists, numbers as float or int,
    ``snapshot_every`` None as 0, ``preserve_colour`` "none" as None), and ``layer_weights`` the per-style-layer
    weights summing to 1. ``output_name`` None keeps the result in memory (nothing is written).
    """

    content_layers: Sequence[str] = PAPER_CONTENT_LAYERS
    style_layers: Sequence[str] = PAPER_STYLE_LAYERS
    style_layer_weights: str | Sequence[float] = "equal"
    style_statistic: str = "gram"
    content_weight: float = 1.0
    style_weight: float = 1.0e6
    tv_weight: float = 1.0
    tv_power: int = 2
    optimizer: str = "lbfgs"
    lr: float = 1.0
    betas: Sequence[float] = (0.9, 0.999)
    history_size: int = 100
    init: str = "content"
    init_seed: int = 0
    style_blend: Sequence[float] | None = None
    preserve_colour: str | None = None
    colour_space: str = "yiq"
    scales: Sequence[int] | None = None
    scale_start: int | None = None
    scale_factor: float = math.sqrt(2.0)
    steps_per_scale: Sequence[int] | None = None
    ema_decay: float | None = None
    snapshot_every: int | None = 100
    output_name: str | None = "stylised"
    channels_last: bool = False
    compile: bool | str | None = False
    cuda_graph: bool = False
    iterations_per_step: int = 1
    check_every: int = 50
    layer_weights: list[float] = field(init=False, repr=False)
    #: The encoder's network (``encoder.network``): VGG layer names for vgg19 and vgg16, graph node names for a
    #: torchvision backbone. Not a setting of its own: the encoder's record keeps it.
    network: InitVar[str] = "vgg19"

    def __post_init__(self, network: str) -> None:
        normalised = {
            **self._layers(network),
            **self._choices(),
            **self._weights(),
            **self._optimiser(),
            **self._schedule(),
            **self._outputs(),
            **self._speed(),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    def hparams(self) -> dict[str, Any]:
        """The settings as the module's hyper-parameters: every field but the derived ``layer_weights``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def _layers(self, network: str) -> dict[str, Any]:
        if network in NETWORKS:
            content_layers = list(check_layers(self.content_layers, "method.content_layers"))
            style_layers = list(check_layers(self.style_layers, "method.style_layers"))
        else:
            content_layers = list(check_nodes(self.content_layers, network, "method.content_layers"))
            style_layers = list(check_nodes(self.style_layers, network, "method.style_layers"))
        weights = self.style_layer_weights
        if not isinstance(weights, str):
            weights = [float(w) for w in _plain_list(weights, "method.style_layer_weights")]
        try:
            layer_weights = normalise_layer_weights(weights, style_layers)
        except ValueError as exc:
            raise ConfigError(f"method.style_layer_weights: {exc}") from None
        return {
            "content_layers": content_layers,
            "style_layers": style_layers,
            "style_layer_weights": weights,
            "layer_weights": layer_weights,
        }

    def _choices(self) -> dict[str, Any]:
        choices = {
            "style_statistic": _check_choice("style_statistic", self.style_statistic, STYLE_STATISTICS),
            "optimizer": _check_choice("optimizer", self.optimizer, OPTIMIZERS),
            "init": _check_choice("init", self.init, INITS),
            "colour_space": _check_choice("colour_space", self.colour_space, COLOUR_SPACES),
        }
        preserve = self.preserve_colour
        if isinstance(preserve, str) and preserve.lower() in _NO_PRESERVE:
            preserve = None
        if preserve is not None and preserve not in PRESERVE_COLOUR:
            raise ConfigError(f"method.preserve_colour={preserve!r}: choose null, luminance or histogram")
        return {**choices, "preserve_colour": preserve}

    def _weights(self) -> dict[str, Any]:
        for name in ("content_weight", "style_weight", "tv_weight"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"method.{name}={getattr(self, name)} must be a finite number >= 0")
        if self.tv_power not in (1, 2):
            raise ConfigError(f"method.tv_power={self.tv_power}: use 2 (squared differences) or 1 (absolute)")
        style_blend = _optional_list(self.style_blend, "method.style_blend", float)
        if style_blend is not None and (any(w < 0 for w in style_blend) or sum(style_blend) <= 0):
            raise ConfigError(f"method.style_blend={style_blend}: weights must be >= 0 with a positive sum")
        return {
            "content_weight": float(self.content_weight),
            "style_weight": float(self.style_weight),
            "tv_weight": float(self.tv_weight),
            "tv_power": int(self.tv_power),
            "style_blend": style_blend,
        }

    def _optimiser(self) -> dict[str, Any]:
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"method.lr={self.lr} must be a finite number > 0")
        betas = [float(b) for b in _plain_list(self.betas, "method.betas")]
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"method.betas={betas}: give two decays in [0, 1), e.g. [0.9, 0.999]")
        if isinstance(self.history_size, bool) or not int(self.history_size) >= 1:
            raise ConfigError(f"method.history_size={self.history_size}: give a positive L-BFGS history length")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ConfigError(f"method.ema_decay={self.ema_decay}: use null (off) or a decay in [0, 1), e.g. 0.99")
        ema_decay = None if self.ema_decay is None else float(self.ema_decay)
        return {
            "lr": float(self.lr),
            "betas": betas,
            "history_size": int(self.history_size),
            "init_seed": int(self.init_seed),
            "ema_decay": ema_decay,
        }

    def _schedule(self) -> dict[str, Any]:
        scales = _optional_list(self.scales, "method.scales", int)
        if scales is not None and (not scales or min(scales) < 1):
            raise ConfigError(f"method.scales={scales}: give longer sides in pixels, e.g. [256, 512, 1024]")
        start = self.scale_start
        if start is not None and (start < 1 or not self.scale_factor > 1):
            raise ConfigError(
                f"method.scale_start={start}, method.scale_factor={self.scale_factor}: need a start >= 1 px "
                "and a factor > 1 (e.g. 128 and 1.41421356)"
            )
        steps = _optional_list(self.steps_per_scale, "method.steps_per_scale", int)
        if steps is not None and (not steps or min(steps) < 1):
            raise ConfigError(f"method.steps_per_scale={steps}: give positive iteration counts")
        return {
            "scales": scales,
            "scale_start": None if start is None else int(start),
            "scale_factor": float(self.scale_factor),
            "steps_per_scale": steps,
        }

    def _outputs(self) -> dict[str, Any]:
        if self.snapshot_every is not None and self.snapshot_every < 0:
            raise ConfigError(f"method.snapshot_every={self.snapshot_every}: use 0 or null to turn snapshots off")
        name = self.output_name
        return {"snapshot_every": int(self.snapshot_every or 0), "output_name": None if name is None else str(name)}

    def _speed(self) -> dict[str, Any]:
        mode = compile_mode(self.compile)
        device_only = {
            "method.iterations_per_step": self.iterations_per_step != 1,
            "method.cuda_graph": self.cuda_graph,
        }
        for name, used in device_only.items():
            if used and self.optimizer != "device_lbfgs":
                raise ConfigError(
                    f"{name} needs method.optimizer=device_lbfgs (the sync-free L-BFGS), got "
                    f"method.optimizer={self.optimizer}"
                )
        if self.cuda_graph and mode in CUDA_GRAPH_MODES:
            raise ConfigError(
                f"method.compile={mode} makes its own CUDA graphs, which cannot sit inside "
                "method.cuda_graph=true's: use method.compile=default (or max-autotune-no-cudagraphs)"
            )
        for name in ("iterations_per_step", "check_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"method.{name}={value!r}: give a positive number of iterations")
        return {
            "channels_last": bool(self.channels_last),
            "compile": mode,
            "cuda_graph": bool(self.cuda_graph),
            "iterations_per_step": int(self.iterations_per_step),
            "check_every": int(self.check_every),
        }
