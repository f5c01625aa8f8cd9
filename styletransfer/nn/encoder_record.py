"""The frozen encoder a model file was trained behind, rebuilt from what the file holds: the trunk's weights stored
in a Lightning checkpoint, or the record (``VGGEncoder.spec``, with its fingerprint) an exported weights file keeps,
checked against the encoder a user gives. Shared by the methods whose decoders run behind the encoder."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from styletransfer.nn.backbones import BackboneEncoder
from styletransfer.nn.encoder import VGGEncoder, build_encoder
from styletransfer.nn.encoders import FeatureEncoder, build_any_encoder, is_vgg
from styletransfer.runtime.errors import CheckpointError, ConfigError, EncoderMismatchError, EncoderWeightsError

log = logging.getLogger(__name__)

#: What a model file may be given with: an encoder config dict, a weights string or path, or a built encoder.
EncoderArg = Mapping | str | os.PathLike | VGGEncoder | None
#: The same for the methods that run behind any encoder (a VGG or a torchvision backbone).
AnyEncoderArg = Mapping | str | os.PathLike | VGGEncoder | BackboneEncoder | None


def encoder_from_config(encoder: EncoderArg, layers: Sequence[str]) -> VGGEncoder:
    """A VGGEncoder to ``layers`` from an encoder config, a weights string or path, or ``encoder`` itself."""
    if isinstance(encoder, VGGEncoder):
        return encoder
    if isinstance(encoder, Mapping):
        return build_encoder(encoder, layers)
    return VGGEncoder(layers, weights=str(encoder))


def encoder_from_trunk(
    trunk: Mapping[str, Tensor], spec: Mapping | None, layers: Sequence[str], path: Path
) -> VGGEncoder:
    """The frozen encoder stored in a Lightning checkpoint (``trunk``: its ``encoder.trunk.*`` weights without the
    prefix; the architecture is detected from the keys), checked against the fingerprint ``spec`` records."""
    try:
        encoder = VGGEncoder(
            list(layers),
            weights={f"trunk.{k}": v for k, v in trunk.items()},
            network=(spec or {}).get("network", "vgg19"),
        )
    except EncoderWeightsError as exc:
        raise CheckpointError(f"the encoder stored in {path} cannot be rebuilt: {str(exc).splitlines()[0]}") from None
    return _adopt_record(encoder, spec, path)


def any_encoder_from_trunk(
    trunk: Mapping[str, Tensor], spec: Mapping | None, layers: Sequence[str], path: Path
) -> FeatureEncoder:
    """``encoder_from_trunk`` for a VGG or a torchvision backbone (the record's ``network`` says which): a
    backbone's trunk is loaded into the network built to ``layers``."""
    if is_vgg(spec or {}):
        return encoder_from_trunk(trunk, spec, layers, path)
    recorded = dict(spec or {})
    try:
        encoder = BackboneEncoder(list(layers), str(recorded["network"]), weights="random")
        encoder.load_trunk(trunk, str(path))
    except (ConfigError, EncoderWeightsError) as exc:
        raise CheckpointError(f"the encoder stored in {path} cannot be rebuilt: {str(exc).splitlines()[0]}") from None
    return _adopt_record(encoder, recorded, path)


def _adopt_record(encoder: Any, spec: Mapping | None, path: Path) -> Any:
    """``encoder`` (built from a file's stored trunk) checked against the fingerprint ``spec`` records, then
    labelled with the record's weights and the file."""
    recorded = dict(spec or {})
    if recorded.get("fingerprint") and recorded["fingerprint"] != encoder.spec["fingerprint"]:
        raise CheckpointError(
            f"the encoder weights stored in {path} do not match the fingerprint recorded with them "
            f"({encoder.spec['fingerprint']} vs {recorded['fingerprint']}): the file is damaged"
        )
    encoder.spec.update({k: v for k, v in recorded.items() if k in ("weights", "seed", "fallback", "fallback_used")})
    encoder.spec.update({"used": f"stored in {path}", "file": str(path)})
    return encoder


def encoder_from_record(
    spec: Mapping | None, encoder: EncoderArg, layers: Sequence[str], path: Path, what: str = "decoder"
) -> VGGEncoder:
    """The encoder for an exported weights file: ``encoder`` if given, else the one ``spec`` records (never
    downloaded); either must match the recorded fingerprint (``what`` names the file's networks in the error)."""
    return _from_record(spec, encoder, layers, path, what, encoder_from_config)


def any_encoder_from_config(encoder: AnyEncoderArg, layers: Sequence[str], network: str = "vgg19") -> FeatureEncoder:
    """``encoder_from_config`` for a VGG or a torchvision backbone: a weights string or path is of ``network``."""
    if isinstance(encoder, (VGGEncoder, BackboneEncoder)):
        return encoder
    if isinstance(encoder, Mapping):
        return build_any_encoder(encoder, layers)
    if is_vgg({"network": network}):
        return VGGEncoder(layers, weights=str(encoder))
    return BackboneEncoder(layers, network, weights=str(encoder), download=False)


def any_encoder_from_record(
    spec: Mapping | None, encoder: AnyEncoderArg, layers: Sequence[str], path: Path, what: str = "decoder"
) -> FeatureEncoder:
    """``encoder_from_record`` for a VGG or a torchvision backbone (the record's ``network`` says which)."""
    network = str(dict(spec or {}).get("network", "vgg19"))
    return _from_record(spec, encoder, layers, path, what, lambda e, ls: any_encoder_from_config(e, ls, network))


def _from_record(spec: Mapping | None, encoder: Any, layers: Sequence[str], path: Path, what: str, build: Any) -> Any:
    spec = dict(spec or {})
    if encoder is None:
        if not spec:
            raise CheckpointError(f"{path} records no encoder; pass the encoder it was trained behind")
        used = spec.get("used") or spec.get("weights", "imagenet")
        weights = "random" if spec.get("fallback_used") else used
        encoder = {
            "weights": weights,
            "seed": int(spec.get("seed", 0)),
            "download": False,
            "network": spec.get("network", "vgg19"),
            "arch": spec.get("arch", "torchvision"),  # shapes random weights; a file's own is detected
        }
    elif isinstance(encoder, Mapping) and "network" not in encoder and spec.get("network"):
        encoder = {**encoder, "network": spec["network"]}  # e.g. --encoder-weights random: the recorded network's
    built = build(encoder, layers)
    recorded = spec.get("fingerprint")
    if recorded and built.spec["fingerprint"] != recorded:
        raise EncoderMismatchError(
            f"the encoder given for {path} ({built.network}, weights={built.spec['weights']!r}, arch "
            f"{built.arch}, seed {built.spec['seed']}, fingerprint {built.spec['fingerprint']}) is not the one "
            f"this {what} was trained behind ({spec.get('network', 'vgg19')}, weights="
            f"{spec.get('used', spec.get('weights'))!r}, arch {spec.get('arch')}, seed {spec.get('seed')}, "
            f"fingerprint {recorded}). Pass the same encoder weights (and seed for random weights)."
        )
    return built


def training_encoder(encoder: Mapping[str, Any], layers: Sequence[str]) -> FeatureEncoder:
    """The frozen encoder a LightningModule trains behind: built from the Hydra ``encoder`` group, or, given the
    encoder record saved in a checkpoint's hyper-parameters (it has a ``fingerprint``: ``load_from_checkpoint``),
    the same network with random weights and that record as its ``spec``: the trunk's weights come with the
    checkpoint's state dict."""
    if "fingerprint" not in encoder:
        return build_any_encoder(encoder, layers=layers)
    built: FeatureEncoder
    if is_vgg(encoder):
        built = VGGEncoder(layers, weights="random", arch=encoder["arch"], network=encoder.get("network", "vgg19"))
    else:
        built = BackboneEncoder(layers, encoder["network"], weights="random")
    built.spec = dict(encoder)
    return built


def adopt_checkpoint_encoder(encoder: FeatureEncoder, hparams: MutableMapping, checkpoint: Mapping) -> None:
    """On resume a checkpoint's encoder weights replace the configured ones: record the checkpoint's encoder spec
    on ``encoder`` and as the module's ``hparams["encoder"]`` in place of the configured one, so that what it exports
    names the encoder it was trained behind (nothing changes when they are the same encoder). A checkpoint of another
    network or VGG arch is a ConfigError naming the fix.

    Otherwise a run resumed with other encoder settings (e.g. ImageNet weights now cached where the first run fell
    back to random) would export weights labelled with an encoder they were not trained behind."""
    saved = checkpoint.get("hyper_parameters", {}).get("encoder")
    if not isinstance(saved, Mapping) or saved.get("fingerprint") == encoder.spec["fingerprint"]:
        return
    if saved.get("network", "vgg19") != encoder.network:
        raise ConfigError(
            f"the checkpoint's encoder is {saved.get('network', 'vgg19')} (weights {saved.get('used')}), the "
            f"configured one {encoder.network}; resume with the checkpoint's encoder= choice"
        )
    if saved.get("arch") != encoder.arch:
        raise ConfigError(
            f"the checkpoint's encoder is a {saved.get('arch')} VGG-19 (weights {saved.get('used')}), the configured "
            f"one a {encoder.arch}; resume with the checkpoint's encoder.weights"
        )
    log.warning(
        "resuming with the checkpoint's encoder (weights %s, fingerprint %s) instead of the configured one "
        "(weights %s, fingerprint %s)",
        saved.get("used"),
        saved.get("fingerprint"),
        encoder.spec.get("used"),
        encoder.spec["fingerprint"],
    )
    encoder.spec = dict(saved)
    hparams["encoder"] = dict(saved)
