"""Fast-style model files: writing the exported ``checkpoints/network.pth`` and reading the three kinds a user may
have, weights-only (nothing in a file runs):

* a Lightning checkpoint of a ``method=fast`` run (``checkpoints/last.ckpt``): the network's ``network.*`` weights
  and the style names, width and residual blocks in its hyper-parameters;
* the exported file (format ``styletransfer.fast_network``): the network's weights, the style names, its layout
  (width and residual blocks), the encoder the loss used;
* a model saved by pytorch/examples ``fast_neural_style`` (``candy.pth``, ``mosaic.pth``...): the bare state dict
  of their network, whose parameter names ours keeps; its deprecated ``running_*`` entries are dropped as the
  examples' ``stylize`` does.

A file without a layout (the examples', and ours from before ``method.width``) is the examples' layout. The layout a
file records rebuilds the network, and weights of another shape are refused naming both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from styletransfer.methods.fast.network import EXAMPLES_BLOCKS, TransformerNet
from styletransfer.nn.weights import first_non_finite, save_atomic
from styletransfer.runtime.errors import CheckpointError

#: ``format`` of the exported network file.
NETWORK_FORMAT = "styletransfer.fast_network"
#: Keys every network file holds (the first convolution and the first residual block's).
_PROBE_KEYS = ("conv1.conv2d.weight", "res1.conv1.conv2d.weight", "deconv3.conv2d.weight")
#: The examples' old InstanceNorm2d buffers, dropped on load (their ``stylize`` deletes them too).
_RUNNING = re.compile(r"in\d+\.running_(mean|var)$")
#: A residual block's parameter name.
_BLOCK = re.compile(r"res(\d+)\.")


def save_network(
    network: TransformerNet, styles: Sequence[str], encoder_spec: Mapping[str, Any], path: Path, step: int = 0
) -> None:
    """Write an inference-ready network file atomically: its weights, its style names (in the order of its
    normalisation rows) and the spec of the encoder its loss used."""
    save_atomic(
        {
            "format": NETWORK_FORMAT,
            "version": 1,
            "step": int(step),
            "network": {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()},
            "styles": [str(name) for name in styles],
            "layout": network.layout(),
            "encoder": dict(encoder_spec),
        },
        path,
    )


def _lightning_state(obj: Mapping[str, Any]) -> dict[str, Tensor] | None:
    state = obj.get("state_dict")
    if not isinstance(state, Mapping):
        return None
    network = {str(k)[len("network.") :]: v for k, v in state.items() if str(k).startswith("network.")}
    return network if all(key in network for key in _PROBE_KEYS) else None


def _is_examples_model(obj: Mapping[str, Any]) -> bool:
    return all(isinstance(obj.get(key), Tensor) for key in _PROBE_KEYS)


def file_kind(obj: object) -> str | None:
    """Which fast-style file a weights-only-loaded object is: "lightning", "exported", "examples", or None."""
    if not isinstance(obj, Mapping):
        return None
    if _lightning_state(obj) is not None:
        return "lightning"
    if obj.get("format") == NETWORK_FORMAT:
        return "exported"
    return "examples" if _is_examples_model(obj) else None


def _describe(channels: Sequence[int], blocks: int) -> str:
    return f"{'/'.join(map(str, channels))} channels and {blocks} residual block{'s' * (blocks != 1)}"


def _shape_of(state: Mapping[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """(the three channel counts, the number of residual blocks) of a network's weights, or None where the
    convolutions that tell are missing (the state dict's own check then names what is wrong)."""
    convs = [state.get(f"conv{n}.conv2d.weight") for n in (1, 2, 3)]
    if not all(isinstance(conv, Tensor) and conv.dim() == 4 for conv in convs):
        return None
    blocks = {int(match.group(1)) for key in state if (match := _BLOCK.match(str(key)))}
    return tuple(int(conv.shape[0]) for conv in convs), len(blocks)  # type: ignore[union-attr]


def build_network(styles: int, layout: Mapping[str, Any], state: Mapping[str, Any], path: Path) -> TransformerNet:
    """The network that ``layout`` (width, residual blocks) describes, refused naming both when ``state``'s weights
    are of another shape."""
    width, blocks = layout.get("width", 1.0), layout.get("residual_blocks", EXAMPLES_BLOCKS)
    try:
        network = TransformerNet(styles, width, blocks)
    except ValueError as exc:
        raise CheckpointError(f"{path} records a network layout that cannot be built: {exc}") from None
    found = _shape_of(state)
    if found is not None and found != (network.channels, network.residual_blocks):
        said = f"records width {width} and {blocks} residual blocks" if layout else "records no layout (the examples')"
        raise CheckpointError(
            f"{path} {said}: {_describe(network.channels, network.residual_blocks)}, but its weights are a network "
            f"of {_describe(*found)}: the file is damaged or was edited"
        )
    return network


def read_network(obj: Mapping[str, Any], path: Path) -> tuple[TransformerNet, list[str], dict[str, Any], str]:
    """(network, style names, encoder spec, kind) of a fast-style file; weights that do not fit name ``path``."""
    kind = file_kind(obj)
    layout: Mapping[str, Any] = {}  # the examples' layout unless the file records one
    if kind == "lightning":
        state, hparams = _lightning_state(obj) or {}, obj.get("hyper_parameters") or {}
        names = [Path(str(s)).stem for s in hparams.get("styles", [])] or ["style"]
        encoder = dict(hparams.get("encoder") or {})
        layout = {key: hparams[key] for key in ("width", "residual_blocks") if key in hparams}
    elif kind == "exported":
        state, names, encoder = (
            dict(obj.get("network") or {}),
            list(obj.get("styles") or []),
            dict(obj.get("encoder") or {}),
        )
        layout = obj.get("layout") or {}
        if not isinstance(layout, Mapping):
            raise CheckpointError(f"{path} records a network layout that is not a mapping: the file is damaged")
    elif kind == "examples":
        state = {k: v for k, v in obj.items() if not _RUNNING.search(str(k))}
        names, encoder = [path.stem], {}
    else:
        raise CheckpointError(f"{path} is not a fast-style model file")
    weight = state.get("in1.weight")
    styles = 1 if weight is None or weight.dim() == 1 else int(weight.shape[0])
    if len(names) != styles:
        raise CheckpointError(f"{path} names {len(names)} style(s) for a network of {styles}: the file is damaged")
    broken = first_non_finite(dict(state))
    if broken is not None:
        raise CheckpointError(
            f"the network weights in {path} hold NaN or infinite values ({broken}): use an earlier checkpoint"
        )
    network = build_network(styles, layout, state, path)
    try:
        network.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not hold the fast-style network's weights ({first})") from None
    return network, names, encoder, str(kind)
