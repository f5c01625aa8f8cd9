"""Reading a Neural Style checkpoint back (``GatysModule.load_from_checkpoint``): the encoder from the record its
hyper-parameters keep.

A checkpoint holds the image, the scale and the EMA, not the encoder's weights: its ``hyper_parameters["encoder"]``
is the ``spec`` of the encoder the image was optimised behind (weights used, seed, architecture, fingerprint), from
which the same encoder is had again (the file, ImageNet's cache or the seeded random weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from styletransfer.nn.encoders import FeatureEncoder, build_any_encoder
from styletransfer.runtime.errors import CheckpointError, EncoderMismatchError


def build_gatys_encoder(encoder: Mapping[str, Any], layers: Sequence[str]) -> FeatureEncoder:
    """The encoder from the Hydra ``encoder`` config, or from a checkpoint's record of one (it has a fingerprint).

    A record is built again from the weights it used (random when it fell back to them) and must give the recorded
    fingerprint; the encoder then keeps the record as its spec, so the hyper-parameters stay the checkpoint's.
    """
    if "fingerprint" not in encoder:
        return build_any_encoder(encoder, layers=layers)
    weights = "random" if encoder.get("fallback_used") else encoder.get("used") or encoder.get("weights")
    if weights == "state_dict":
        raise CheckpointError(
            "the checkpoint's image was optimised behind an encoder given as a state dict in memory, "
            "which cannot be had again: pass encoder={'weights': ...} to load_from_checkpoint"
        )
    config = {
        "weights": weights,
        "seed": encoder.get("seed", 0),
        "arch": encoder.get("arch", "torchvision"),
        "network": encoder.get("network", "vgg19"),
    }
    built = build_any_encoder(config, layers=layers)
    if built.spec["fingerprint"] != encoder["fingerprint"]:
        raise EncoderMismatchError(
            f"the encoder built from the checkpoint's record (weights={weights!r}, arch {built.arch}, seed "
            f"{built.spec['seed']}) has fingerprint {built.spec['fingerprint']}, not the recorded "
            f"{encoder['fingerprint']}: the weights file changed since the run. Pass the encoder the image was "
            "optimised behind: load_from_checkpoint(path, encoder={'weights': ...})"
        )
    built.spec = dict(encoder)
    return built
