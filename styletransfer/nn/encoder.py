"""Frozen VGG feature encoder with named layers (conv1_1 ... relu5_4, pool1 ... pool5): VGG-19 (``network="vgg19"``,
the default) or VGG-16 (``"vgg16"``: the same names without conv3_4, conv4_4, conv5_4 and their ReLUs).

Two architectures share the layer names (VGG-16 only in torchvision's):

* ``"torchvision"``: torchvision's ``vgg19().features`` (zero padding, floor max-pool), ImageNet mean/std
  normalisation applied inside. Weights: torchvision's ``VGG19_Weights.IMAGENET1K_V1`` (``"imagenet"``),
  a torchvision-layout file, or seeded random weights (``"random"``, for tests and demos only).
* ``"vgg_normalised"``: the AdaIN release's ``vgg_normalised.pth`` (Gatys' rescaled VGG), a plain
  ``nn.Sequential`` with reflection padding and ceil max-pool whose first 1x1 conv does the caffe preprocessing.

The architecture of a weights file is detected from its keys and shapes, so both kinds of file just load.
Inputs are always RGB in [0, 1]; each architecture applies its own preprocessing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import socket
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from styletransfer.nn.pooling import MaxPool2d
from styletransfer.nn.weights import as_state_dict, first_line, safe_load
from styletransfer.runtime.errors import ConfigError, EncoderWeightsError
from styletransfer.runtime.weight_files import hub_checkpoint, known

log = logging.getLogger(__name__)

#: Layer names in torchvision ``vgg19().features`` order (position == torchvision module index).
VGG19_LAYERS: tuple[str, ...] = (
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "conv4_4", "relu4_4", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "conv5_4", "relu5_4", "pool5",
)  # fmt: skip

#: VGG-16's layers: VGG-19's without each block's fourth convolution (torchvision ``vgg16().features`` order).
VGG16_LAYERS: tuple[str, ...] = tuple(name for name in VGG19_LAYERS if not name.endswith("_4"))
#: Layer names of each network, in module order.
NETWORK_LAYERS = {"vgg19": VGG19_LAYERS, "vgg16": VGG16_LAYERS}
NETWORKS = tuple(NETWORK_LAYERS)
NETWORK_TITLES = {"vgg19": "VGG-19", "vgg16": "VGG-16"}

ARCHS = ("torchvision", "vgg_normalised")
FALLBACKS = (None, "random")
CONFIG_KEYS = ("weights", "seed", "fallback", "download", "arch", "network")
#: Keys of the ``encoder`` group that hold a method's default layers behind that encoder (``adain``: the bottleneck
#: and style layers of method=adain), not settings of the encoder itself: ``encoder_options`` leaves them out.
METHOD_KEYS = ("adain",)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's ImageNet VGG-19 weights (the file name in torch.hub's cache is the URL's basename), from the one
#: registry of weight files.
IMAGENET_FILE, IMAGENET_URL = known("vgg19").filename, known("vgg19").url
#: Seconds a socket may stall while downloading, so an offline machine fails fast instead of hanging.
DOWNLOAD_SOCKET_TIMEOUT_S = 20.0

_CHANNELS = {"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}


def _ways_out(cache: Path | None = None, network: str = "vgg19") -> str:
    cache = cache or imagenet_cache_path(network)
    file = known(network)
    return (
        "Ways out:\n"
        f"  1. styletransfer-weights fetch {network} (where there is internet; it verifies and installs the file), or "
        f"put torchvision's {file.filename} ({file.url}) at\n       {cache}\n"
        f"  2. pass encoder.weights=/path/to/file.pth (a torchvision-layout {NETWORK_TITLES[network]} state dict, or "
        "the AdaIN release's vgg_normalised.pth for VGG-19)\n"
        "  3. pass encoder.weights=random for tests/demos only (MEANINGLESS results), or encoder.fallback=random "
        "to fall back to it with a warning"
    )


def imagenet_cache_path(network: str = "vgg19") -> Path:
    """Where torchvision's loader caches (and looks for) the network's ImageNet weights."""
    return hub_checkpoint(known(network).filename)


def _layer_specs(network: str = "vgg19") -> list[tuple[str, int, int]]:
    """(name, in_channels, out_channels) for every layer of ``network`` (channels 0 for relu/pool)."""
    specs, channels = [], 3
    for name in NETWORK_LAYERS[network]:
        if name.startswith("conv"):
            specs.append((name, channels, _CHANNELS[name[4]]))
            channels = _CHANNELS[name[4]]
        else:
            specs.append((name, 0, 0))
    return specs


def _build_trunk(arch: str, deepest: str, network: str = "vgg19") -> tuple[nn.Sequential, dict[str, int]]:
    """The architecture's modules up to and including ``deepest``, and the layer-name -> module-index map."""
    modules: list[nn.Module] = []
    index: dict[str, int] = {}
    if arch == "vgg_normalised":
        modules.append(nn.Conv2d(3, 3, kernel_size=1))
    for name, c_in, c_out in _layer_specs(network):
        if name.startswith("conv"):
            if arch == "vgg_normalised":
                modules += [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, kernel_size=3)]
            else:
                modules.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
        elif name.startswith("relu"):
            modules.append(nn.ReLU(inplace=False))
        else:
            modules.append(MaxPool2d(2, 2, ceil_mode=arch == "vgg_normalised"))  # compiled, its backward is a gather
        index[name] = len(modules) - 1
        if name == deepest:
            break
    return nn.Sequential(*modules), index


def check_layers(layers: Sequence[str] | str, setting: str = "layers", network: str = "vgg19") -> tuple[str, ...]:
    """Validated layer names of ``network``, duplicates dropped (order kept); ``setting`` names the config key in
    errors."""
    title, names = NETWORK_TITLES[network], NETWORK_LAYERS[network]
    if isinstance(layers, (str, bytes)):
        layers = [str(layers)]
    if not isinstance(layers, Sequence):
        raise ConfigError(f"{setting} must be a list of {title} layer names, got {layers!r}")
    layers = tuple(dict.fromkeys(str(name) for name in layers))
    unknown = [name for name in layers if name not in names]
    if not layers or unknown:
        problem = f"unknown {title} layer name(s) {unknown}" if unknown else "no layer given"
        raise ConfigError(f"{setting}={list(layers)}: {problem}; valid names: {', '.join(names)}")
    return layers


def min_input_side(layers: Sequence[str], positions: int = 1) -> int:
    """Smallest image side that leaves ``positions`` positions per side at the deepest of ``layers``
    (2 ** the number of poolings before it, times ``positions``)."""
    deepest = max(VGG19_LAYERS.index(name) for name in layers)
    return positions * 2 ** sum(1 for name in VGG19_LAYERS[:deepest] if name.startswith("pool"))


def layer_geometry(name: str) -> tuple[int, int]:
    """(channels, stride) of a VGG layer's output, from its name (VGG-19's and VGG-16's are the same)."""
    if name not in VGG19_LAYERS:
        raise ConfigError(f"unknown VGG layer name {name!r}; valid names: {', '.join(VGG19_LAYERS)}")
    poolings = sum(1 for layer in VGG19_LAYERS[: VGG19_LAYERS.index(name) + 1] if layer.startswith("pool"))
    return _CHANNELS[name[4]], 2**poolings


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Give sockets a default timeout (torch.hub's urlopen has none) unless the caller already set one."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _load_imagenet(download: bool, progress: bool = True, network: str = "vgg19") -> tuple[dict[str, Tensor], Path]:
    """torchvision's VGG19_Weights (or VGG16_Weights).IMAGENET1K_V1 through torchvision's loader and torch.hub's
    cache."""
    from torchvision.models import VGG16_Weights, VGG19_Weights

    weights = {"vgg19": VGG19_Weights, "vgg16": VGG16_Weights}[network].IMAGENET1K_V1
    title = NETWORK_TITLES[network]
    cache = imagenet_cache_path(network)
    cached = cache.is_file()
    if not cached and not download:
        raise EncoderWeightsError(
            f"{title} ImageNet weights are not in torch.hub's cache and download=False.\n"
            f"Expected file: {cache}\n{_ways_out(cache, network)}"
        )
    try:
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            state = weights.get_state_dict(progress=progress, weights_only=True)
    except Exception as exc:
        if cached or cache.is_file():
            raise EncoderWeightsError(
                f"cannot read the cached {title} ImageNet weights {cache} ({first_line(exc, 300)}).\n"
                f"The file may be truncated or not a state dict: delete it and retry.\n{_ways_out(cache, network)}"
            ) from exc
        raise EncoderWeightsError(
            f"cannot download the {title} ImageNet weights ({first_line(exc, 300)}); no internet?\n"
            f"Expected file: {cache}\n{_ways_out(cache, network)}"
        ) from exc
    return as_state_dict(state, cache, EncoderWeightsError), cache


def _load_file(path: Path) -> dict[str, Tensor]:
    """A state dict from ``path`` with weights-only unpickling (no arbitrary code runs)."""
    # The file was named by the user (encoder.weights=, --encoder-weights, metric_encoder.weights=): what it must
    # hold, not the ImageNet cache's ways out, whose keys belong to one command only.
    hint = (
        "Expected a plain state dict of tensors: a torchvision-layout VGG state dict, or the AdaIN release's "
        "vgg_normalised.pth (styletransfer-weights fetch adain-vgg)."
    )
    return as_state_dict(safe_load(path, "encoder weights file", EncoderWeightsError, hint), path, EncoderWeightsError)


def _detect_network(state: Mapping[str, Tensor], configured: str) -> str:
    """VGG-16 or VGG-19 from a torchvision-layout state dict's keys (module 16 is VGG-19's conv3_4, VGG-16's pool3;
    module 17 is VGG-16's conv4_1); ``configured`` when the file stops before either."""
    if "16.weight" in state:
        return "vgg19"
    return "vgg16" if "17.weight" in state else configured


def _detect_layout(state: Mapping[str, Tensor], path: Path) -> tuple[str, dict[str, Tensor]]:
    """(arch, state with bare Sequential keys) for a torchvision-layout or vgg_normalised-layout state dict."""
    for prefix in ("features.", "trunk."):
        if any(key.startswith(prefix) for key in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    first = state.get("0.weight")
    shape = tuple(first.shape) if first is not None else None
    if shape == (3, 3, 1, 1):
        return "vgg_normalised", dict(state)
    if shape == (64, 3, 3, 3):
        return "torchvision", dict(state)
    keys = sorted(state)[:6]
    raise EncoderWeightsError(
        f"encoder weights file {path} has an unknown layout: '0.weight' (after stripping 'features.') has shape "
        f"{shape}. Expected a torchvision VGG-19 state dict ('features.0.weight' or '0.weight' shaped "
        f"(64, 3, 3, 3)) or the AdaIN release's vgg_normalised.pth ('0.weight' shaped (3, 3, 1, 1)). "
        f"First keys: {keys}"
    )


def _load_into(trunk: nn.Sequential, state: Mapping[str, Tensor], arch: str, path: Path) -> None:
    """Copy the keys the truncated trunk needs; missing keys or wrong shapes name the file and what was expected."""
    expected = trunk.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise EncoderWeightsError(
            f"encoder weights file {path} ({arch} layout) lacks {len(missing)} key(s) needed up to the deepest "
            f"requested layer, e.g. {missing[:4]}; expected keys {list(expected)[:4]}..."
        )
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        key, got, want = wrong[0]
        raise EncoderWeightsError(
            f"encoder weights file {path} ({arch} layout): '{key}' has shape {got}, expected {want} "
            f"({len(wrong)} mismatched key(s)); is it the network the config names (encoder.network)?"
        )
    trunk.load_state_dict({k: state[k] for k in expected}, strict=True)


def _init_random(trunk: nn.Sequential, seed: int) -> None:
    """Seeded Kaiming-normal (fan-in, ReLU) weights and zero biases, drawn layer by layer on the CPU.

    Drawing in layer order makes a truncated encoder's weights the prefix of a deeper one's for the same seed.
    """
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for module in trunk:
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                torch.randn(module.weight.shape, generator=generator, out=module.weight.detach())  # drawn in place
                module.weight.mul_(math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.zero_()


def check_weight_settings(weights: object, seed: object, fallback: object) -> str:
    """Refuse an encoder's bad ``weights``, ``seed`` or ``fallback`` setting in one line naming its key (VGG and the
    torchvision backbones alike); the weights' label: ``state_dict`` for one in memory, else the setting itself."""
    if fallback not in FALLBACKS:
        raise ConfigError(f"encoder.fallback must be one of {FALLBACKS}, got {fallback!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"encoder.seed must be an int, got {seed!r}")
    if isinstance(weights, Mapping):
        return "state_dict"
    if not isinstance(weights, (str, os.PathLike)) or not str(weights):
        raise ConfigError(f"encoder.weights must be 'imagenet', 'random', a file path or a state dict, got {weights!r}")
    return str(weights)


def freeze(encoder: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
    """Give ``encoder`` its input normalisation (``mean`` and ``std`` as (1, 3, 1, 1) buffers, not saved) and freeze
    it: no gradients, eval mode."""
    encoder.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
    encoder.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
    encoder.requires_grad_(False)
    nn.Module.train(encoder, False)


def encoder_record(
    arch: str,
    network: str,
    label: str,
    used: str,
    path: os.PathLike | str | None,
    seed: int,
    fallback: str | None,
    fallback_used: bool,
    layers: Sequence[str],
    fingerprint: str,
) -> dict[str, Any]:
    """A built encoder's record (its ``spec``, saved in model files): architecture, network, the weights asked for
    (``label``) and used, their file, seed, fallback and whether it was used, layers and the trunk's fingerprint."""
    return {
        "arch": arch,
        "network": network,
        "weights": label,
        "used": used,
        "file": str(path) if path is not None else None,
        "seed": int(seed),
        "fallback": fallback,
        "fallback_used": fallback_used,
        "layers": list(layers),
        "fingerprint": fingerprint,
    }


def _fingerprint(arch: str, trunk: nn.Module) -> str:
    """Short sha256 over the trunk's parameter names, shapes and bytes: equal weights <=> equal fingerprint."""
    digest = hashlib.sha256(arch.encode())
    for name, tensor in trunk.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)  # hashed without a copy
    return digest.hexdigest()[:16]


def _random_banner(reason: str) -> str:
    line = "!" * 78
    return (
        f"\n{line}\n"
        "!!  VGG ENCODER IS RANDOM: the requested weights could not be had, so fallback=random is used.\n"
        "!!  Style/content losses and every result from this run are MEANINGLESS.\n"
        f"!!  Reason: {reason}\n" + "\n".join(f"!!  {text}" for text in _ways_out().splitlines()) + f"\n{line}"
    )


def _load_trunk(
    weights: str | os.PathLike | Mapping[str, Tensor], deepest: str, download: bool, fallback: str | None, network: str
) -> tuple[str, str, nn.Sequential, dict[str, int], Path | None] | None:
    """(arch, trunk, layer index, file) loaded from ``weights`` up to ``deepest``; None when they cannot be had
    and ``fallback`` is "random" (after a loud banner), else the EncoderWeightsError naming the file and the fix.
    Returns (arch, network, trunk, layer index, file): a file's network is detected from its keys."""
    path: Path | None = None
    try:
        if isinstance(weights, Mapping):
            memory = Path("<state dict>")
            arch, state = _detect_layout(as_state_dict(weights, memory, EncoderWeightsError), memory)
        elif weights == "imagenet":
            state, path = _load_imagenet(download, network=network)
            arch, state = _detect_layout(state, path)
            if arch != "torchvision":
                raise EncoderWeightsError(
                    f"the cached ImageNet weights {path} are not in torchvision's layout.\n{_ways_out(path)}"
                )
        else:
            path = Path(weights).expanduser().resolve()
            arch, state = _detect_layout(_load_file(path), path)
        network = "vgg19" if arch == "vgg_normalised" else _detect_network(state, network)
        if deepest not in NETWORK_LAYERS[network]:
            raise EncoderWeightsError(
                f"encoder weights {path or weights} are a {NETWORK_TITLES[network]}: it has no {deepest}"
            )
        trunk, index = _build_trunk(arch, deepest, network)
        _load_into(trunk, state, arch, path or Path("<state dict>"))
    except EncoderWeightsError as exc:
        if fallback != "random":
            raise
        log.warning(_random_banner(str(exc).splitlines()[0]))  # once: the console and the run's log file
        return None
    return arch, network, trunk, index, path


def requested_layers(image: Tensor, layers: Sequence[str] | str | None, built: Sequence[str]) -> tuple[str, ...]:
    """The layers an encoder's forward call asks for (default: all it was built with; duplicates dropped), after
    checking that ``image`` is an RGB batch: a ConfigError names a layer it was not built with."""
    if isinstance(layers, str):
        layers = [layers]
    wanted = tuple(built) if layers is None else tuple(dict.fromkeys(layers))
    missing = [name for name in wanted if name not in built]
    if missing:
        raise ConfigError(f"layer(s) {missing} were not constructed; this encoder has {list(built)}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ConfigError(f"expected an RGB image batch shaped (N, 3, H, W), got {tuple(image.shape)}")
    return wanted


class VGGEncoder(nn.Module):
    """Frozen VGG-19 or VGG-16 (``network``) returning named feature maps; see the module docstring for the
    architectures and weights.

    ``weights`` may also be a state dict already in memory (e.g. the trunk stored in a Lightning checkpoint),
    in either layout. ``arch`` is the architecture of random weights (a file's or ImageNet's is detected).

    ``forward(image)`` takes RGB in [0, 1] shaped (N, 3, H, W) and returns ``{layer: features}`` in the order of
    ``layers``. Parameters never require grad and the module stays in eval mode, but gradients flow to the input.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        layers: Sequence[str],
        weights: str | os.PathLike | Mapping[str, Tensor] = "imagenet",
        seed: int = 0,
        fallback: str | None = None,
        download: bool = True,
        arch: str = "torchvision",
        network: str = "vgg19",
    ) -> None:
        super().__init__()
        if network not in NETWORKS:
            raise ConfigError(f"encoder.network must be one of {', '.join(NETWORKS)}, got {network!r}")
        if arch not in ARCHS:
            raise ConfigError(f"encoder arch must be one of {ARCHS}, got {arch!r}")
        if arch == "vgg_normalised" and network != "vgg19":
            raise ConfigError("encoder.arch=vgg_normalised is the AdaIN release's VGG-19: use encoder.network=vgg19")
        self.layers = check_layers(layers, network=network)
        label = check_weight_settings(weights, seed, fallback)
        deepest = max(self.layers, key=VGG19_LAYERS.index)
        loaded = None if label == "random" else _load_trunk(weights, deepest, download, fallback, network)
        fallback_used = loaded is None and label != "random"
        if loaded is None:
            trunk, index = _build_trunk(arch, deepest, network)
            _init_random(trunk, seed)
            used, path = "random", None
        else:
            arch, network, trunk, index, path = loaded
            used = str(path) if path is not None and label not in ("imagenet", "state_dict") else label

        self.arch = arch
        self.network = network
        self.trunk = trunk
        self._index = index
        self.normalise = arch == "torchvision"
        freeze(self, IMAGENET_MEAN, IMAGENET_STD)
        fingerprint = _fingerprint(arch, trunk)
        self.spec = encoder_record(
            arch, network, label, used, path, seed, fallback, fallback_used, self.layers, fingerprint
        )

    def fingerprint_to(self, layers: Sequence[str]) -> str:
        """The fingerprint this encoder's weights have in a trunk built only to the deepest of ``layers`` (which must
        not lie deeper than this one's): how a model trained behind a shallower copy recorded it."""
        names = check_layers(layers, network=self.network)
        length = max(len(_build_trunk(self.arch, name, self.network)[0]) for name in names)
        if length > len(self.trunk):
            raise ConfigError(f"this encoder stops before {', '.join(names)}: build it deeper")
        return _fingerprint(self.arch, self.trunk[:length])

    def train(self, mode: bool = True) -> VGGEncoder:
        """Stay in eval mode whatever the parent module asks: the encoder is a fixed feature extractor."""
        return super().train(False)

    def forward(self, image: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Features of ``image`` (RGB in [0, 1], (N, 3, H, W)) at ``layers`` (default: all constructed layers)."""
        wanted = requested_layers(image, layers, self.layers)
        at = {self._index[name]: name for name in wanted}
        last = max(at)
        x = (image - self.mean) / self.std if self.normalise else image
        found: dict[str, Tensor] = {}
        for i, module in enumerate(self.trunk):
            x = module(x)
            if i in at:
                found[at[i]] = x
            if i == last:
                break
        return OrderedDict((name, found[name]) for name in wanted)

    def extra_repr(self) -> str:
        return f"network={self.network}, arch={self.arch}, used={self.spec['used']}, layers={list(self.layers)}"


def build_encoder(config: Mapping, layers: Sequence[str], key: str = "encoder") -> VGGEncoder:
    """A VGGEncoder from the Hydra ``encoder`` group ({weights, seed, fallback, download, arch, network}); unknown
    keys fail. ``key`` is where the group sits in the config (evaluate.py: ``metric_encoder``): the errors' ways out
    name its keys.
    ``arch`` only shapes random weights (a file's architecture is detected from its keys)."""
    try:
        return _build_encoder(config, layers)
    except (ConfigError, EncoderWeightsError) as exc:
        if key == "encoder":
            raise
        raise type(exc)(re.sub(r"(?<![\w.])encoder\.", f"{key}.", str(exc))) from None


def encoder_options(config: Mapping) -> dict:
    """The ``encoder`` group's settings checked for their keys, with ``fallback`` and ``download`` read; shared by
    every kind of encoder."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"encoder config must be a mapping with keys {CONFIG_KEYS}, got {type(config).__name__}")
    config = dict(config)
    unknown = sorted(set(config) - set(CONFIG_KEYS) - set(METHOD_KEYS))
    if unknown:
        raise ConfigError(f"unknown encoder config key(s) {unknown}; valid keys: {list(CONFIG_KEYS + METHOD_KEYS)}")
    fallback = config.get("fallback")
    if isinstance(fallback, str) and fallback.strip().lower() in ("", "none", "null"):
        fallback = None
    download = config.get("download", True)
    if not isinstance(download, bool):
        raise ConfigError(f"encoder.download must be true or false, got {download!r}")
    return {
        "weights": config.get("weights", "imagenet"),
        "seed": config.get("seed", 0),
        "fallback": fallback,
        "download": download,
        "arch": config.get("arch", "torchvision"),
        "network": config.get("network", "vgg19"),
    }


def _build_encoder(config: Mapping, layers: Sequence[str]) -> VGGEncoder:
    options = encoder_options(config)
    network = options["network"]
    if network not in NETWORKS and isinstance(network, str) and re.fullmatch(r"[a-z][a-z0-9_]*", network):
        raise ConfigError(
            f"encoder.network must be one of vgg19, vgg16 here, got {network!r}: this takes VGG encoders only "
            "(encoder=vgg19 or encoder=vgg16); torchvision backbones such as resnet50 work with method=gatys"
        )
    return VGGEncoder(layers, **options)


def trained_behind_random(spec: Mapping | None) -> bool:
    """Whether an encoder record (``VGGEncoder.spec``, or one stored in a model file) is of random weights: asked
    for, or fallen back to. Results behind it show that a pipeline works, not what a method looks like."""
    spec = spec or {}
    return spec.get("weights") == "random" or bool(spec.get("fallback_used"))
