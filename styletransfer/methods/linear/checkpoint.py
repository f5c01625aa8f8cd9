"""Linear Style Transfer model files: writing the exported ``checkpoints/linear.pth`` and reading the two kinds a run
leaves, weights-only (``nn.weights.safe_load``: nothing in a file runs):

* a Lightning checkpoint of a ``method=linear`` run (``checkpoints/last.ckpt``): the transformation module
  (``transform.*``), the frozen decoder (``reconstruction.*``) and the frozen encoder (``encoder.trunk.*``) stored with
  them, which is always the one used;
* the exported file (format ``styletransfer.linear``): the level, the module's and the decoder's weights and the
  record of the encoder they were trained behind; the encoder is rebuilt from the record (or given) and must match
  its fingerprint.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from styletransfer.methods.linear.transform import CHANNELS, LinearTransform
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.nn.encoder_record import EncoderArg, encoder_from_record, encoder_from_trunk
from styletransfer.nn.reconstruction import ReconstructionDecoder
from styletransfer.nn.weights import first_non_finite, save_atomic
from styletransfer.runtime.errors import CheckpointError

log = logging.getLogger(__name__)

#: ``format`` of the exported model file.
LINEAR_FORMAT = "styletransfer.linear"


def save_model(
    transform: LinearTransform,
    decoder: nn.Module,
    encoder_spec: Mapping[str, Any],
    path: Path,
    step: int = 0,
) -> None:
    """Write an inference-ready model file atomically: the level, the module's and the decoder's weights, and the
    spec of the encoder they run behind (with its fingerprint)."""

    def plain(module: nn.Module) -> dict[str, Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}

    save_atomic(
        {
            "format": LINEAR_FORMAT,
            "version": 1,
            "step": int(step),
            "layer": transform.layer,
            "transform": plain(transform),
            "decoder": plain(decoder),
            "encoder": dict(encoder_spec),
        },
        path,
    )


def _part(state: Mapping[str, Any], prefix: str) -> dict[str, Tensor]:
    return {str(k)[len(prefix) :]: v for k, v in state.items() if str(k).startswith(prefix)}


def file_kind(obj: object) -> str | None:
    """Which Linear Style Transfer file a weights-only-loaded object is: "lightning", "exported", or None."""
    if not isinstance(obj, Mapping):
        return None
    state, hparams = obj.get("state_dict"), obj.get("hyper_parameters")
    if isinstance(state, Mapping) and isinstance(hparams, Mapping) and hparams.get("layer") in CHANNELS:
        if _part(state, "transform.") and _part(state, "reconstruction."):
            return "lightning"
    return "exported" if obj.get("format") == LINEAR_FORMAT else None


def _load(module: nn.Module, state: Mapping[str, Any], what: str, path: Path) -> None:
    broken = first_non_finite(dict(state))
    if broken is not None:
        raise CheckpointError(
            f"the {what} weights in {path} hold NaN or infinite values ({broken}): the run that wrote them "
            "diverged; use an earlier checkpoint"
        )
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise CheckpointError(f"the {what} weights in {path} do not fit it ({first})") from None


def read_model(
    obj: object, path: Path, encoder: EncoderArg = None
) -> tuple[VGGEncoder, LinearTransform, ReconstructionDecoder, str]:
    """(encoder, transformation module, decoder, kind) of a loaded file; see the module docstring for the encoder."""
    kind = file_kind(obj)
    if not isinstance(obj, Mapping) or kind is None:
        raise CheckpointError(f"{path} is not a Linear Style Transfer model file (a method=linear run's file)")
    if kind == "lightning":
        state, hparams = obj["state_dict"], obj["hyper_parameters"]
        layer = str(hparams["layer"])
        transform_state, decoder_state = _part(state, "transform."), _part(state, "reconstruction.")
        trunk = _part(state, "encoder.trunk.")
        if not trunk:
            raise CheckpointError(f"{path} is a Lightning checkpoint of Linear Style Transfer but holds no encoder")
        if encoder is not None:
            log.info("%s is a Lightning checkpoint: using the encoder stored in it, not the one given", path)
        spec = hparams.get("encoder") if isinstance(hparams.get("encoder"), Mapping) else None
        layers = list((spec or {}).get("layers") or [layer])  # the trunk as trained: its fingerprint is recorded
        built = encoder_from_trunk(trunk, spec, layers, path)
    else:
        layer = str(obj.get("layer"))
        if layer not in CHANNELS:
            raise CheckpointError(f"{path} names no level of Linear Style Transfer ({layer!r}): the file is damaged")
        transform_state, decoder_state = obj.get("transform") or {}, obj.get("decoder") or {}
        built = encoder_from_record(obj.get("encoder"), encoder, [layer], path, "model")
    transform, decoder = LinearTransform(layer), ReconstructionDecoder(layer)
    _load(transform, transform_state, "transformation module", path)
    _load(decoder, decoder_state, "decoder", path)
    if layer not in built.layers:
        raise CheckpointError(f"the encoder for {path} does not compute {layer}: the file is damaged")
    return built, transform.eval().requires_grad_(False), decoder.eval().requires_grad_(False), kind
