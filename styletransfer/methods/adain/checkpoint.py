"""AdaIN model files: writing the exported ``decoder.pth`` and reading any of the three kinds a user may have.

* a Lightning checkpoint of this project (``checkpoints/last.ckpt``): the frozen encoder stored inside is used;
* the exported decoder file (``checkpoints/decoder.pth``, format ``styletransfer.adain_decoder``): the encoder is
  rebuilt from its record (or given) and must match the recorded fingerprint;
* the original AdaIN release's ``decoder.pth`` with its ``vgg_normalised.pth`` (passed as the encoder weights).

Files are read with :func:`~styletransfer.nn.weights.safe_load` (``torch.load(weights_only=True)``): a pickle that
would run code is refused and nothing in it runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from styletransfer.methods.adain.decoders import build_decoder, decoder_record, describe
from styletransfer.methods.adain.model import BOTTLENECK
from styletransfer.nn.encoder_record import (
    AnyEncoderArg,
    any_encoder_from_config,
    any_encoder_from_record,
    any_encoder_from_trunk,
)
from styletransfer.nn.encoders import FeatureEncoder
from styletransfer.nn.weights import first_non_finite, safe_load, save_atomic
from styletransfer.runtime.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

#: ``format`` of the exported decoder file (``checkpoints/decoder.pth``).
DECODER_FORMAT = "styletransfer.adain_decoder"
#: Conv indices of the original release's decoder.pth (same as AdaINDecoder's).
RELEASE_DECODER_CONVS = (1, 5, 8, 11, 14, 18, 21, 25, 28)


#: What an AdaIN model file may be given with (a VGG or a torchvision backbone's config, weights or encoder).
EncoderArg = AnyEncoderArg


def save_decoder(
    decoder: nn.Module,
    encoder_spec: Mapping[str, Any],
    path: Path,
    step: int = 0,
    transform: str = "adain",
    bottleneck: str = BOTTLENECK,
) -> None:
    """Write an inference-ready decoder file atomically (temporary file, then rename).

    It holds the decoder's state dict (release layout keys for the mirror), the record of the decoder's structure
    (``decoder_config``: the ``decoder`` group, see ``decoders.py``), the spec of the encoder it was trained behind
    (with its fingerprint), the encoder layer it inverts (``bottleneck``), the feature transform it was trained with
    and the step; it loads with
    ``torch.load(weights_only=True)``.
    """
    payload = {
        "format": DECODER_FORMAT,
        "version": 1,
        "step": int(step),
        "decoder": {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()},
        "decoder_config": decoder_record(decoder),
        "encoder": dict(encoder_spec),
        "transform": str(transform),
        "bottleneck": str(bottleneck),
    }
    save_atomic(payload, path)


def _trunk_layers(spec: Mapping | None, bottleneck: str = BOTTLENECK) -> list[str]:
    """Layers the recorded encoder was built with (its fingerprint covers the trunk up to the deepest)."""
    layers = list((spec or {}).get("layers") or [])
    return layers if bottleneck in layers else [*layers, bottleneck]


def file_bottleneck(obj: object) -> str:
    """The encoder layer an AdaIN file's decoder inverts (files from before ``method.bottleneck``: relu4_1)."""
    if isinstance(obj, Mapping) and file_kind(obj) == "lightning":
        hparams = obj.get("hyper_parameters")
        hparams = hparams if isinstance(hparams, Mapping) else {}
        return str(hparams.get("bottleneck") or hparams.get("content_layer") or BOTTLENECK)
    if isinstance(obj, Mapping) and file_kind(obj) == "exported":
        return str(obj.get("bottleneck") or BOTTLENECK)
    return BOTTLENECK


def _load_decoder(state: Mapping[str, Tensor], path: Path, record: Mapping[str, Any] | None = None) -> nn.Module:
    """The decoder ``record`` describes (None: the mirror) with the weights in ``state``; weights that do not fit
    name ``path`` and the recorded decoder, weights that are not finite name ``path``."""
    broken = first_non_finite(dict(state))
    if broken is not None:
        raise CheckpointError(
            f"the decoder weights in {path} hold NaN or infinite values ({broken}): the run that "
            "wrote them diverged; use an earlier checkpoint"
        )
    try:
        decoder = build_decoder(record)
    except ConfigError as exc:
        raise CheckpointError(f"{path} records a decoder this version cannot build: {exc}") from None
    try:
        decoder.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        recorded = describe(record) if record else "mirror (no decoder record: a file from before decoder=)"
        raise CheckpointError(
            f"the decoder weights in {path} do not fit the decoder it records, {recorded}: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from None
    return decoder.eval().requires_grad_(False)


def file_decoder(obj: object) -> dict[str, Any] | None:
    """The decoder record of a loaded AdaIN file (None: no record, the mirror)."""
    if not isinstance(obj, Mapping):
        return None
    if file_kind(obj) == "lightning":
        hparams = obj.get("hyper_parameters")
        record = (hparams if isinstance(hparams, Mapping) else {}).get("decoder")
    else:
        record = obj.get("decoder_config") if file_kind(obj) == "exported" else None
    return dict(record) if isinstance(record, Mapping) else None


def _is_release_decoder(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
        and all(f"{i}.weight" in obj for i in RELEASE_DECODER_CONVS)
    )


def _from_lightning(obj: Mapping[str, Any], path: Path, encoder: EncoderArg) -> tuple[FeatureEncoder, nn.Module]:
    """A Lightning checkpoint of an AdaIN run: the encoder stored in it (never the one given) and its decoder."""
    state = obj["state_dict"]
    hparams = obj.get("hyper_parameters") or {}
    trunk = {k[len("encoder.trunk.") :]: v for k, v in state.items() if k.startswith("encoder.trunk.")}
    dec = {k[len("decoder.") :]: v for k, v in state.items() if k.startswith("decoder.")}
    if not trunk or not dec:
        raise CheckpointError(
            f"{path} is a Lightning checkpoint but not of an AdaIN model (no 'encoder.trunk.*' and 'decoder.*' "
            f"weights; first keys: {list(state)[:4]})"
        )
    if encoder is not None:
        log.info("%s is a Lightning checkpoint: using the encoder stored in it, not the one given", path)
    spec = hparams.get("encoder") if isinstance(hparams.get("encoder"), Mapping) else None
    layers = _trunk_layers(spec, file_bottleneck(obj))
    return any_encoder_from_trunk(trunk, spec, layers, path), _load_decoder(dec, path, file_decoder(obj))


def _from_exported(obj: Mapping[str, Any], path: Path, encoder: EncoderArg) -> tuple[FeatureEncoder, nn.Module]:
    """An exported decoder.pth: the encoder given (default: the recorded one), which must match the fingerprint."""
    spec = dict(obj.get("encoder") or {})
    built = any_encoder_from_record(spec, encoder, _trunk_layers(spec, file_bottleneck(obj)), path)
    return built, _load_decoder(obj.get("decoder") or {}, path, file_decoder(obj))


def _from_release(obj: Mapping[str, Tensor], path: Path, encoder: EncoderArg) -> tuple[FeatureEncoder, nn.Module]:
    """The original release's bare decoder state dict, behind the encoder given (its vgg_normalised.pth)."""
    if encoder is None:
        raise CheckpointError(
            f"{path} is a bare decoder state dict (the original AdaIN release's layout) and records no encoder: "
            "pass the encoder it was trained behind, e.g. --encoder-weights vgg_normalised.pth"
        )
    built = any_encoder_from_config(encoder, [BOTTLENECK])
    if built.arch != "vgg_normalised":
        log.warning(
            "release-layout decoder %s used behind a %s encoder; the release expects vgg_normalised.pth",
            path,
            built.arch,
        )
    return built, _load_decoder(obj, path)


def file_kind(obj: object) -> str | None:
    """Which of AdaIN's files a weights-only-loaded object is: "lightning", "exported", "release", or None."""
    if not isinstance(obj, Mapping):
        return None
    state = obj.get("state_dict")
    if isinstance(state, Mapping) and any(str(k).startswith("decoder.") for k in state):
        return "lightning"
    if obj.get("format") == DECODER_FORMAT:
        return "exported"
    return "release" if _is_release_decoder(obj) else None


def file_transform(obj: object) -> str:
    """The feature transform an AdaIN file's decoder was trained with (files from before transforms: AdaIN)."""
    if isinstance(obj, Mapping) and file_kind(obj) == "lightning":
        hparams = obj.get("hyper_parameters")
        return str((hparams if isinstance(hparams, Mapping) else {}).get("transform", "adain"))
    if isinstance(obj, Mapping) and file_kind(obj) == "exported":
        return str(obj.get("transform", "adain"))
    return "adain"


def read_model(
    obj: object, path: str | os.PathLike, encoder: EncoderArg = None
) -> tuple[FeatureEncoder, nn.Module, str]:
    """(encoder, decoder, kind) of a loaded AdaIN file (see :func:`load_model`)."""
    path = Path(path).expanduser()
    kind = file_kind(obj)
    if kind == "lightning":
        return (*_from_lightning(obj, path, encoder), kind)  # type: ignore[arg-type]
    if kind == "exported":
        return (*_from_exported(obj, path, encoder), kind)  # type: ignore[arg-type]
    if kind == "release":
        return (*_from_release(obj, path, encoder), kind)  # type: ignore[arg-type]
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
        raise CheckpointError(
            f"{path} is a Lightning checkpoint but not of an AdaIN model (no 'encoder.trunk.*' and 'decoder.*' "
            f"weights; first keys: {list(state)[:4]})"
        )
    keys = list(obj)[:4] if isinstance(obj, Mapping) else []
    raise CheckpointError(
        f"{path} is not a style-transfer checkpoint: it holds a {type(obj).__name__} {keys or ''}; expected a "
        "Lightning .ckpt of an AdaIN run, an exported checkpoints/decoder.pth, or the AdaIN release's decoder.pth"
    )


def load_model(path: str | os.PathLike, encoder: EncoderArg = None) -> tuple[FeatureEncoder, nn.Module, str]:
    """(encoder, decoder, kind) from a Lightning .ckpt, an exported decoder.pth or the release's decoder.pth.

    ``encoder`` (an encoder config dict, weights string/path, or a VGGEncoder) is used for decoder files: for an
    exported decoder it defaults to the recorded one and must match its fingerprint; the release's decoder needs
    it (its ``vgg_normalised.pth``). A Lightning checkpoint always uses the encoder stored inside it.
    """
    return read_model(safe_load(Path(path).expanduser()), path, encoder)
