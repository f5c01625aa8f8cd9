"""Neural Style's plugin (``styletransfer.protocol.registry``): it is evaluated from its config, each pair optimised
from scratch by a quiet ``pl.Trainer`` (it has no model file to stylise with). Lightning and the module load when a
candidate is made, so the registry stays light."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer.protocol.candidate import Candidate
from styletransfer.runtime.errors import ConfigError

NAME = "gatys"


def config_candidate(
    method_cfg: Mapping[str, Any], encoder_cfg: Mapping[str, Any], options: Mapping[str, Any], device: torch.device
) -> Candidate:
    """Neural Style (``method=gatys``) at ``options["steps"]`` iterations per pair, through GatysModule and
    PairDataModule: each pair is held in memory (``PairDataModule.from_tensors``, 8-bit as a PNG of it would be)
    and optimised by a quiet pl.Trainer that writes nothing (``output_name=None``, no logger, no checkpoints).

    The time per image includes the whole optimisation (that is what it costs to stylise an image).
    """
    import pytorch_lightning as pl  # training machinery: loaded only when Neural Style is evaluated

    from styletransfer.data.pair import PairDataModule
    from styletransfer.engine.instantiate import instantiate_checked

    steps = int(options["steps"])
    if steps < 1:
        raise ConfigError(f"optimisation.steps must be >= 1, got {steps}")
    accelerator = "gpu" if device.type == "cuda" else "cpu"

    def run(content: Tensor, style: Tensor, alpha: float) -> Tensor:
        data = PairDataModule.from_tensors(content[0], style[0], long_side=int(max(content.shape[-2:])))
        module = instantiate_checked(dict(method_cfg), encoder=dict(encoder_cfg), snapshot_every=0, output_name=None)
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=1,
            max_steps=steps,
            max_epochs=-1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, datamodule=data)
        result = module.output().detach().float()[:1]
        if result.shape[-2:] != content.shape[-2:]:
            result = F.interpolate(result, size=content.shape[-2:], mode="bilinear", align_corners=False)
        return result.clamp(0, 1).to(content.device)

    info = {
        "method": "gatys",
        "kind": f"{steps} steps",
        "path": "",
        "steps": steps,
        "config": {k: v for k, v in method_cfg.items() if k != "_target_"},
        "encoder": dict(encoder_cfg),
    }
    return Candidate(f"gatys@{steps}", run, info, supports_alpha=False)
