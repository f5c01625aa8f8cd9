"""The ``encoder`` group built into whichever encoder its ``network`` names: ``VGGEncoder`` for vgg19 and vgg16,
``BackboneEncoder`` for any other torchvision classification network. For the methods that take any encoder
(Neural Style); the others call ``encoder.build_encoder``, which takes VGG only and says so in one line."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from styletransfer.nn.backbones import BackboneEncoder
from styletransfer.nn.encoder import (
    NETWORKS,
    VGGEncoder,
    build_encoder,
    encoder_options,
    layer_geometry,
    min_input_side,
)
from styletransfer.runtime.errors import ConfigError, EncoderWeightsError

#: Either kind of frozen feature encoder (the same forward, ``layers``, ``network`` and ``spec``).
FeatureEncoder = VGGEncoder | BackboneEncoder


def is_vgg(config: Mapping) -> bool:
    """Whether an encoder config (or record) names one of the VGG networks (the default, vgg19, when it names none)."""
    return config.get("network", "vgg19") in NETWORKS


def min_side(encoder: FeatureEncoder, layers: Sequence[str], positions: int = 1) -> int:
    """Smallest image side that leaves ``positions`` positions per side at the deepest of ``layers``: VGG's count
    of poolings, a backbone's largest stride among them (``BackboneEncoder.feature_info``)."""
    if isinstance(encoder, VGGEncoder):
        return min_input_side(layers, positions)
    return positions * max(stride for _, stride in encoder.feature_info(layers).values())


def feature_info(encoder: FeatureEncoder, layers: Sequence[str]) -> dict[str, tuple[int, int]]:
    """{layer: (channels, stride)} of ``layers``: VGG's from the names, a backbone's from a dry run
    (``BackboneEncoder.feature_info``)."""
    if isinstance(encoder, VGGEncoder):
        return {name: layer_geometry(name) for name in layers}
    return encoder.feature_info(layers)


def build_any_encoder(config: Mapping, layers: Sequence[str], key: str = "encoder") -> FeatureEncoder:
    """A VGGEncoder or a BackboneEncoder from the Hydra ``encoder`` group (``build_encoder``'s keys); ``key`` is
    where the group sits in the config, named in errors."""
    options = encoder_options(config)
    if is_vgg(options):
        return build_encoder(config, layers, key)
    try:
        if options["arch"] != "torchvision":
            raise ConfigError(
                f"encoder.arch={options['arch']} is a VGG-19 architecture; encoder.network={options['network']} "
                "takes encoder.arch=torchvision"
            )
        return BackboneEncoder(
            layers,
            network=str(options["network"]),
            weights=options["weights"],
            seed=options["seed"],
            fallback=options["fallback"],
            download=options["download"],
        )
    except (ConfigError, EncoderWeightsError) as exc:
        if key == "encoder":
            raise
        raise type(exc)(re.sub(r"(?<![\w.])encoder\.", f"{key}.", str(exc))) from None
