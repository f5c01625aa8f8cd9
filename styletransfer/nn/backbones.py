"""Frozen torchvision classification networks as feature encoders (``encoder.network=resnet50``, ``convnext_tiny``,
any name ``torchvision.models.list_models(torchvision.models)`` gives), their layers named by graph node
(``layer1`` ... ``layer4`` for ResNet-50, ``features.1`` ... ``features.7`` for ConvNeXt-Tiny).

The trunk is ``torchvision.models.feature_extraction.create_feature_extractor`` on the network, cut after the deepest
requested node. Inputs are RGB in [0, 1], normalised inside with the mean/std of the network's ImageNet weights'
own transforms. Weights: ``"imagenet"`` (the network's ``DEFAULT`` weights through torchvision's weights API,
read from torch.hub's cache; downloaded only when ``download`` is true), a path to a state dict of the network, or
``"random"`` (torchvision's own initialisation under a seed; tests and demos only).

``python -m styletransfer.nn.backbones resnet50`` lists a network's node names and the channels and stride of its
top-level ones.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from styletransfer.nn.encoder import (
    DOWNLOAD_SOCKET_TIMEOUT_S,
    VGG19_LAYERS,
    _socket_timeout,
    check_weight_settings,
    encoder_record,
    freeze,
    requested_layers,
)
from styletransfer.nn.weights import as_state_dict, first_line, safe_load
from styletransfer.runtime.errors import ConfigError, EncoderWeightsError
from styletransfer.runtime.weight_files import hub_checkpoint

log = logging.getLogger(__name__)

#: Side of the blank image ``feature_info`` runs through the trunk to read channels and strides.
PROBE_SIDE = 224


@cache
def classification_networks() -> tuple[str, ...]:
    """Names of torchvision's classification networks (``torchvision.models.list_models(torchvision.models)``)."""
    import torchvision.models

    return tuple(torchvision.models.list_models(module=torchvision.models))


def check_network(network: str) -> str:
    """``network`` if torchvision has a classification network of that name, else a ConfigError naming close ones."""
    names = classification_networks()
    if network not in names:
        close = difflib.get_close_matches(str(network), names, n=4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"encoder.network={network!r} is neither vgg19, vgg16 nor a torchvision classification network; {hint}"
            "see torchvision.models.list_models(torchvision.models)"
        )
    return network


def default_weights(network: str) -> Any:
    """The network's ``DEFAULT`` ImageNet weights enum member (``get_model_weights(network).DEFAULT``)."""
    from torchvision.models import get_model_weights

    return get_model_weights(check_network(network)).DEFAULT


def normalisation(network: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the network's ImageNet weights' own transforms: what its inputs are normalised with."""
    transforms = default_weights(network).transforms()
    return tuple(float(v) for v in transforms.mean), tuple(float(v) for v in transforms.std)


def imagenet_cache_path(network: str) -> Path:
    """Where torch.hub's cache keeps (and torchvision looks for) the network's ImageNet weights."""
    return hub_checkpoint(os.path.basename(default_weights(network).url))


def _ways_out(network: str, cache: Path) -> str:
    url = default_weights(network).url
    return (
        "Ways out:\n"
        f"  1. put torchvision's {cache.name} ({url}) at\n       {cache}\n"
        "     or pass encoder.download=true where there is internet\n"
        f"  2. pass encoder.weights=/path/to/file.pth (a torchvision {network} state dict)\n"
        "  3. pass encoder.weights=random for tests/demos only (MEANINGLESS results), or encoder.fallback=random "
        "to fall back to it with a warning"
    )


def _model(network: str) -> nn.Module:
    """The network with torchvision's own (unseeded) initialisation and ImageNet's 1000 classes."""
    from torchvision.models import get_model

    return get_model(network, weights=None)


def random_model(network: str, seed: int) -> nn.Module:
    """The network with torchvision's own initialisation drawn under ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return _model(network)


@cache
def _node_names(network: str) -> tuple[str, ...]:
    from torchvision.models.feature_extraction import get_graph_node_names

    with torch.device("meta"):
        model = _model(check_network(network))
    return tuple(get_graph_node_names(model.eval())[1])


def node_names(network: str) -> tuple[str, ...]:
    """The network's graph node names in eval mode, in execution order; ``layers`` may name these or a module
    above them (``layer3``, ``features.5``: that module's last node, as torchvision's feature extractor reads it)."""
    return _node_names(network)


def module_names(network: str, depth: int = 2) -> tuple[str, ...]:
    """The modules above the network's nodes, to ``depth`` dotted parts (``layer1``, ``layer1.0``, ...), in
    execution order: the short list of what ``layers`` may name."""
    found: dict[str, None] = {}
    for name in node_names(network):
        parts = name.split(".")
        for n in range(1, min(depth, len(parts) - 1) + 1):
            found[".".join(parts[:n])] = None
        if len(parts) <= depth:
            found[name] = None
    return tuple(found)


def check_nodes(layers: Sequence[str] | str, network: str, setting: str = "layers") -> tuple[str, ...]:
    """Validated node names of ``network``, duplicates dropped (order kept); ``setting`` names the key in errors."""
    if isinstance(layers, (str, bytes)):
        layers = [str(layers)]
    if not isinstance(layers, Sequence):
        raise ConfigError(f"{setting} must be a list of {network} graph node names, got {layers!r}")
    layers = tuple(dict.fromkeys(str(name) for name in layers))
    names = node_names(network)
    unknown = [name for name in layers if name not in names and not any(n.startswith(name + ".") for n in names)]
    if not layers or unknown:
        problem = f"{network} has no node(s) {unknown}" if unknown else "no layer given"
        if unknown and all(name in VGG19_LAYERS for name in unknown):
            top = [name for name in module_names(network, depth=1) if name != "x"]
            hint = f"VGG layer names do not apply, name its graph nodes (its modules: {', '.join(top)}); "
        else:
            close = [m for name in unknown for m in difflib.get_close_matches(name, module_names(network), n=3)]
            hint = f"close: {', '.join(close)}; " if close else ""
        raise ConfigError(
            f"{setting}={list(layers)}: {problem}; {hint}list them with python -m styletransfer.nn.backbones {network}"
        )
    return layers


def resolve_node(name: str, network: str) -> str:
    """The graph node ``name`` reads: itself, or the last node under the module it names (torchvision's rule)."""
    names = node_names(network)
    return name if name in names else [n for n in names if n.startswith(name + ".")][-1]


def _load_imagenet(network: str, download: bool) -> tuple[nn.Module, Path]:
    """The network with its DEFAULT weights through torchvision's weights API, from torch.hub's cache (downloaded
    into it only when ``download``)."""
    from torchvision.models import get_model

    weights, cache_path = default_weights(network), imagenet_cache_path(network)
    cached = cache_path.is_file()
    if not cached and not download:
        raise EncoderWeightsError(
            f"{network} ImageNet weights ({weights}) are not in torch.hub's cache and encoder.download=false.\n"
            f"Expected file: {cache_path}\n{_ways_out(network, cache_path)}"
        )
    try:
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            return get_model(network, weights=weights), cache_path
    except Exception as exc:
        what = "read the cached" if cached or cache_path.is_file() else "download the"
        raise EncoderWeightsError(
            f"cannot {what} {network} ImageNet weights ({first_line(exc, 300)}).\n"
            f"Expected file: {cache_path}\n{_ways_out(network, cache_path)}"
        ) from exc


def _load_state(network: str, state: Mapping[str, Tensor], where: str) -> nn.Module:
    """The network with ``state``, its full state dict (as torchvision saves it).

    The network is built on the meta device and given uninitialised memory, which ``state`` fills whole (strict:
    every parameter and buffer): torchvision's random initialisation, which ``state`` would overwrite, was most of
    a load's time (0.3 s for a ResNet-50). A network with a buffer outside its state dict is initialised as before.
    """
    with torch.device("meta"):
        model = _model(network)
    if set(dict(model.named_buffers())) - set(model.state_dict()):
        model = _model(network)
    else:
        model = model.to_empty(device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EncoderWeightsError(
            f"encoder weights {where} are not a {network} state dict ({first_line(exc, 300)}); "
            "is it the network encoder.network names?"
        ) from None
    return model


def _fingerprint(network: str, trunk: nn.Module) -> str:
    """Short sha256 over the trunk's parameter names, shapes and bytes: equal weights <=> equal fingerprint."""
    digest = hashlib.sha256(network.encode())
    for name, tensor in trunk.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class BackboneEncoder(nn.Module):
    """A frozen torchvision classification network returning the feature maps at named graph nodes; the interface
    is ``VGGEncoder``'s (``forward(image, layers) -> {node: map}``, ``layers``, ``network``, ``spec`` with a
    fingerprint). See the module docstring for the weights.

    ``weights`` may also be the network's full state dict in memory.
    """

    arch = "torchvision"
    mean: Tensor
    std: Tensor

    def __init__(
        self,
        layers: Sequence[str],
        network: str,
        weights: str | os.PathLike | Mapping[str, Tensor] = "imagenet",
        seed: int = 0,
        fallback: str | None = None,
        download: bool = True,
    ) -> None:
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        self.network = check_network(network)
        self.layers = check_nodes(layers, self.network)
        label = check_weight_settings(weights, seed, fallback)
        path: Path | None = None
        model: nn.Module | None = None
        if label != "random":
            try:
                if isinstance(weights, Mapping):
                    model = _load_state(self.network, as_state_dict(weights, "<state dict>"), "<state dict>")
                elif label == "imagenet":
                    model, path = _load_imagenet(self.network, download)
                else:
                    path = Path(weights).expanduser().resolve()
                    hint = f"Expected a plain state dict of a torchvision {self.network}."
                    loaded = safe_load(path, "encoder weights file", EncoderWeightsError, hint)
                    model = _load_state(self.network, as_state_dict(loaded, path, EncoderWeightsError), str(path))
            except EncoderWeightsError as exc:
                if fallback != "random":
                    raise
                log.warning("ENCODER IS RANDOM (encoder.fallback=random), results are MEANINGLESS: %s", exc)
        fallback_used = model is None and label != "random"
        if model is None:
            model = random_model(self.network, seed)
        used = str(path) if path is not None and label not in ("imagenet", "state_dict") else label
        if fallback_used:
            used, path = "random", None
        self._node = {name: resolve_node(name, self.network) for name in self.layers}
        nodes = {node: node for node in self._node.values()}
        self.trunk = create_feature_extractor(model.eval(), return_nodes=nodes)
        freeze(self, *normalisation(self.network))
        fingerprint = _fingerprint(self.network, self.trunk)
        self.spec = encoder_record(
            self.arch, self.network, label, used, path, seed, fallback, fallback_used, self.layers, fingerprint
        )

    def load_trunk(self, state: Mapping[str, Tensor], where: str) -> None:
        """Replace the trunk's weights with ``state`` (a trunk's own state dict, as a Lightning checkpoint stores it
        under ``encoder.trunk.``) and refresh the fingerprint; weights that do not fit are an EncoderWeightsError
        naming ``where``."""
        try:
            self.trunk.load_state_dict(dict(state), strict=True)
        except RuntimeError as exc:
            raise EncoderWeightsError(
                f"the {self.network} trunk in {where} does not fit {self.network} up to {list(self.layers)}: "
                f"{first_line(exc, 300)}"
            ) from None
        self.spec["fingerprint"] = _fingerprint(self.network, self.trunk)

    def train(self, mode: bool = True) -> BackboneEncoder:
        """Stay in eval mode whatever the parent module asks (batch norms keep their running statistics)."""
        return super().train(False)

    def forward(self, image: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Features of ``image`` (RGB in [0, 1], (N, 3, H, W)) at ``layers`` (default: all constructed ones)."""
        wanted = requested_layers(image, layers, self.layers)
        found = self.trunk((image - self.mean) / self.std)
        return OrderedDict((name, found[self._node[name]]) for name in wanted)

    def feature_info(self, layers: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
        """{node: (channels, stride)} for ``layers`` (default: all constructed ones), from a dry run on a blank
        ``PROBE_SIDE``-pixel image; a node that is not a feature map is a ConfigError."""
        info = self.probe(layers)
        bad = next((name for name, value in info.items() if value is None), None)
        if bad is not None:
            raise ConfigError(
                f"{self.network} node {bad!r} is not a feature map (N, C, H, W): pick a convolutional one"
            )
        return {name: value for name, value in info.items() if value is not None}

    def probe(self, layers: Sequence[str] | None = None) -> dict[str, tuple[int, int] | None]:
        """``feature_info``'s dry run: {node: (channels, stride), or None where the output is not a feature map}."""
        blank = torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE, device="meta")
        wanted = requested_layers(blank, layers, self.layers)
        # shapes only: the trunk runs on the meta device (its weights swapped for meta tensors of their shapes), so
        # the probe costs no arithmetic and copies no weights
        meta = {name: torch.empty_like(t, device="meta") for name, t in self.trunk.state_dict(keep_vars=True).items()}
        with torch.no_grad():
            nodes = torch.func.functional_call(self.trunk, meta, (blank,), strict=True)
        found = {name: nodes[self._node[name]] for name in wanted}
        return {
            name: (int(v.shape[1]), round(PROBE_SIDE / v.shape[-1])) if isinstance(v, Tensor) and v.dim() == 4 else None
            for name, v in found.items()
        }

    def extra_repr(self) -> str:
        return f"network={self.network}, used={self.spec['used']}, layers={list(self.layers)}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m styletransfer.nn.backbones NETWORK``: the network's node names, then channels and stride of
    its top-level blocks (random weights, nothing downloaded)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m styletransfer.nn.backbones NETWORK   (e.g. resnet50, convnext_tiny)")
        return 2
    network = args[0]
    try:
        names = node_names(network)
    except ConfigError as exc:
        print(exc)
        return 2
    print(f"{network}: graph nodes\n  " + "\n  ".join(names))
    modules = [name for name in module_names(network) if name != "x"]
    info = BackboneEncoder(modules, network, weights="random").probe()
    print(f"\n{network}: modules and nodes that are feature maps (channels, stride at {PROBE_SIDE} px)")
    for name, value in info.items():
        if value is not None:
            print(f"  {name}: {value[0]} channels, stride {value[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
