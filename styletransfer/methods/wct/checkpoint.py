"""WCT model files: reading the two kinds a run leaves, weights-only (``nn.weights.safe_load``: nothing in a file
runs); the exported file's format (and its writer) lives in ``nn.reconstruction_file``:

* a Lightning checkpoint of a ``method=wct`` run (``checkpoints/last.ckpt``): its ``decoders.<level>.*`` weights and
  the frozen encoder stored with them (``encoder.trunk.*``), which is always the one used;
* the exported file (format ``styletransfer.wct_decoders``): each level's decoder weights and the record of the
  encoder they were trained behind; the encoder is rebuilt from the record (or given) and must match its
  fingerprint.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from styletransfer.nn.encoder import VGGEncoder
from styletransfer.nn.encoder_record import EncoderArg, encoder_from_record, encoder_from_trunk
from styletransfer.nn.reconstruction import LEVELS
from styletransfer.nn.reconstruction_file import DECODERS_FORMAT, load_decoders, save_decoders
from styletransfer.runtime.errors import CheckpointError

log = logging.getLogger(__name__)

#: A Lightning checkpoint's decoder keys start with this; the level follows.
_PREFIX = "decoders."


def _lightning_decoders(state: Mapping[str, Any]) -> dict[str, dict[str, Tensor]]:
    """A Lightning state dict's decoder weights by level (empty when it holds none)."""
    found: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        level, _, rest = str(key)[len(_PREFIX) :].partition(".")
        if str(key).startswith(_PREFIX) and level in LEVELS and rest:
            found.setdefault(level, {})[rest] = value
    return found


def file_kind(obj: object) -> str | None:
    """Which WCT file a weights-only-loaded object is: "lightning", "exported", or None."""
    if not isinstance(obj, Mapping):
        return None
    state = obj.get("state_dict")
    if isinstance(state, Mapping) and _lightning_decoders(state):
        return "lightning"
    return "exported" if obj.get("format") == DECODERS_FORMAT else None


def read_model(obj: object, path: Path, encoder: EncoderArg = None) -> tuple[VGGEncoder, nn.ModuleDict, str]:
    """(encoder, decoders by level, kind) of a loaded WCT file; see the module docstring for the encoder used."""
    kind = file_kind(obj)
    if not isinstance(obj, Mapping) or kind is None:
        raise CheckpointError(f"{path} is not a WCT model file (a method=wct run's last.ckpt or decoders.pth)")
    if kind == "lightning":
        state = obj["state_dict"]
        hparams = obj.get("hyper_parameters") or {}
        spec = hparams.get("encoder") if isinstance(hparams.get("encoder"), Mapping) else None
        states: Mapping[str, Any] = _lightning_decoders(state)
        trunk = {k[len("encoder.trunk.") :]: v for k, v in state.items() if str(k).startswith("encoder.trunk.")}
        if not trunk:
            raise CheckpointError(f"{path} is a Lightning checkpoint of WCT decoders but holds no encoder.trunk.*")
        if encoder is not None:
            log.info("%s is a Lightning checkpoint: using the encoder stored in it, not the one given", path)
        decoders = load_decoders(states, path)
        built = encoder_from_trunk(trunk, spec, list(decoders), path)
    else:
        states = obj.get("decoders") or {}
        if not isinstance(states, Mapping) or not states:
            raise CheckpointError(f"{path} holds no WCT decoders: the file is damaged")
        decoders = load_decoders(states, path)
        built = encoder_from_record(obj.get("encoder"), encoder, list(decoders), path, "decoder")
    missing = [level for level in decoders if level not in built.layers]
    if missing:
        raise CheckpointError(f"the encoder for {path} does not compute {', '.join(missing)}: the file is damaged")
    return built, decoders, kind


__all__ = ["DECODERS_FORMAT", "file_kind", "read_model", "save_decoders"]
