"""Lightning's checkpoint IO made crash-safe and weights-only (``trainer.plugins`` in ``configs/trainer/default.yaml``).

Kept apart from ``nn.weights`` so that reading and writing weight files (inference, export) never loads Lightning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from styletransfer.nn.weights import first_non_finite, safe_load, save_atomic
from styletransfer.runtime.errors import CheckpointError


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, written crash-safely and read weights-only (``trainer.plugins`` in the configs).

    Saving writes a temporary file in the checkpoint's folder, forces it to disk and renames it over the target,
    so a kill at any moment leaves the previous checkpoint or the new one, never a truncated file (Lightning's own
    writer truncates the target first). Loading (``ckpt_path=`` resume) always goes through :func:`safe_load`,
    whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` or a caller's ``weights_only=False`` says: a checkpoint whose
    unpickling would run code is refused, and a missing, truncated or foreign file, or one holding NaN or infinite
    weights or optimiser state, is named in a CheckpointError.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomic(checkpoint, path)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(
            path, "checkpoint to resume from (ckpt_path)", "pass ckpt_path=<run>/checkpoints/last.ckpt"
        )


def read_checkpoint(path: str | os.PathLike, what: str, fix: str) -> dict[str, Any]:
    """A Lightning checkpoint of this project read by :func:`safe_load`: weights only, its checksum checked, with a
    ``state_dict`` and no NaN or infinite weights or optimiser state. CheckpointError naming the file and ``fix``
    otherwise (``what`` is the file's role in the messages)."""
    checkpoint = safe_load(path, what, CheckpointError)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint of this project (no 'state_dict'): {fix}")
    broken = first_non_finite({k: checkpoint.get(k) for k in ("state_dict", "optimizer_states")})
    if broken is not None:
        raise CheckpointError(
            f"{path} holds NaN or infinite values ({broken}): its weights are broken. Use an "
            "earlier checkpoint of the run (checkpoints/step_*.ckpt)."
        )
    return checkpoint


def read_run_checkpoint(path: str | os.PathLike, run: str, holds: str) -> dict[str, Any]:
    """:func:`read_checkpoint` of a training checkpoint of ``run`` (e.g. "an AdaIN run (method=adain)"), for a
    module's ``load_from_checkpoint``: its ``state_dict`` must hold ``holds`` (a key or a module's keys) and its
    hyper-parameters must be there."""
    fix = f"pass <run dir>/checkpoints/last.ckpt of {run}"
    checkpoint = read_checkpoint(path, f"checkpoint of {run}", fix)
    state = checkpoint["state_dict"]
    if not (
        isinstance(state, Mapping)
        and any(key == holds or key.startswith(f"{holds}.") for key in state)
        and isinstance(checkpoint.get("hyper_parameters"), Mapping)
    ):
        raise CheckpointError(f"{path} is not a training checkpoint of {run}: it holds no {holds} and settings; {fix}")
    return checkpoint
