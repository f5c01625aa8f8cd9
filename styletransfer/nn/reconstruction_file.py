"""The exported reconstruction-decoders file (format ``styletransfer.wct_decoders``, written by a ``method=wct`` run
as ``checkpoints/decoders.pth``): each level's decoder weights and the record (``VGGEncoder.spec``, with its
fingerprint) of the encoder they were trained behind. Written atomically, read weights-only
(``nn.weights.safe_load``: nothing in a file runs). Shared by WCT (its model file) and Linear Style Transfer (the
frozen decoder behind its transformation module)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from styletransfer.nn.reconstruction import LEVELS, ReconstructionDecoder, build_decoders, check_levels
from styletransfer.nn.weights import first_non_finite, safe_load, save_atomic
from styletransfer.runtime.errors import CheckpointError, ConfigError

#: ``format`` of the exported decoders file.
DECODERS_FORMAT = "styletransfer.wct_decoders"


def save_decoders(
    decoders: Mapping[str, ReconstructionDecoder], encoder_spec: Mapping[str, Any], path: Path, step: int = 0
) -> None:
    """Write an inference-ready decoders file atomically: each level's weights, the levels, and the spec of the
    encoder they were trained behind (with its fingerprint)."""
    save_atomic(
        {
            "format": DECODERS_FORMAT,
            "version": 1,
            "step": int(step),
            "levels": list(decoders),
            "decoders": {
                level: {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
                for level, decoder in decoders.items()
            },
            "encoder": dict(encoder_spec),
        },
        path,
    )


def load_decoders(states: Mapping[str, Any], path: Path) -> nn.ModuleDict:
    """The frozen decoders of ``states`` (level -> state dict); weights that do not fit, or are not finite, are a
    CheckpointError naming ``path``."""
    try:
        levels = check_levels(list(states), "the levels")
    except ConfigError as exc:
        raise CheckpointError(f"{path} holds no usable reconstruction decoders ({exc})") from None
    broken = first_non_finite({level: dict(state) for level, state in states.items()})
    if broken is not None:
        raise CheckpointError(
            f"the decoder weights in {path} hold NaN or infinite values ({broken}): the run that wrote them "
            "diverged; use an earlier checkpoint"
        )
    decoders = build_decoders(levels)
    for level in levels:
        try:
            decoders[level].load_state_dict(dict(states[level]), strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise CheckpointError(f"the {level} decoder weights in {path} do not fit its decoder ({first})") from None
    return decoders.eval().requires_grad_(False)


def read_decoder(path: str | os.PathLike, level: str, setting: str) -> tuple[ReconstructionDecoder, dict[str, Any]]:
    """The frozen decoder of ``level`` in the decoders file at ``path`` and the record of the encoder it was trained
    behind; a file that is missing, of another kind or without that level is one line naming ``setting``."""
    if level not in LEVELS:
        raise ConfigError(f"no reconstruction decoder for {level!r}: the levels are {', '.join(LEVELS)}")
    if not str(path):
        raise ConfigError(f"{setting} is not set: give a reconstruction decoders file (a wct run's decoders.pth)")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{setting}={str(path)!r}: no such file; give a method=wct run's checkpoints/decoders.pth")
    obj = safe_load(file)
    if not isinstance(obj, Mapping) or obj.get("format") != DECODERS_FORMAT:
        raise ConfigError(
            f"{setting}={str(path)!r} is not a reconstruction decoders file: give a method=wct run's "
            "checkpoints/decoders.pth"
        )
    states = obj.get("decoders") or {}
    if not isinstance(states, Mapping) or level not in states:
        have = ", ".join(map(str, states)) if isinstance(states, Mapping) else "none"
        raise ConfigError(
            f"{setting}={str(path)!r} has no {level} decoder (it has {have}): train one with method=wct "
            f"method.levels=[{level}]"
        )
    decoder = load_decoders({level: states[level]}, file)[level]
    record = obj.get("encoder")
    return decoder, dict(record) if isinstance(record, Mapping) else {}  # type: ignore[return-value]
