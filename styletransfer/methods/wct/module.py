"""Universal style transfer (Li et al., NeurIPS 2017): train the reconstruction decoders of ``method.levels`` behind
a frozen VGG-19, on content images alone (no style data).

Each level's decoder D inverts its level's features E(x): loss = pixel_weight * ||D(E(x)) - x||^2 +
feature_weight * ||E(D(E(x))) - E(x)||^2, both per-element means (MSE), weight 1 each as the paper. The levels train
side by side in one run: one batch, one Adam over all decoders, the loss summed over levels; the decoders share no
parameter, so each gets the gradient its own loss gives it (Adam is per parameter), as if trained alone on the same
batches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor

from styletransfer.engine.schedules import decaying_adam
from styletransfer.engine.training_module import ExportingModule, check_settings, log_training_step
from styletransfer.methods.wct.checkpoint import save_decoders
from styletransfer.methods.wct.decoders import LEVELS, build_decoders, check_levels
from styletransfer.nn.encoder_record import adopt_checkpoint_encoder, training_encoder
from styletransfer.runtime.errors import ConfigError

log = logging.getLogger(__name__)


class WCTModule(ExportingModule):
    """Trains the WCT decoders of ``levels``; the encoder is frozen and stored in the checkpoint with them.

    ``encoder`` is the Hydra ``encoder`` group (VGG-19 only: the decoders mirror its layers), or the encoder record
    saved in a checkpoint's hyper-parameters (its trunk's weights then come with the state dict).
    """

    def __init__(
        self,
        encoder: Mapping[str, Any],
        levels: Sequence[str] = LEVELS,
        export_decoders: bool = True,
        pixel_weight: float = 1.0,
        feature_weight: float = 1.0,
        lr: float = 1e-4,
        lr_decay: float = 5e-5,
    ) -> None:
        super().__init__()
        levels = check_levels(levels)
        numbers = {"pixel_weight": pixel_weight, "feature_weight": feature_weight, "lr": lr, "lr_decay": lr_decay}
        check_settings(numbers)
        if dict(encoder).get("network", "vgg19") != "vgg19":
            raise ConfigError("method=wct's decoders mirror VGG-19: use encoder=vgg19 (encoder.network=vgg19)")
        self.encoder = training_encoder(encoder, list(levels))
        self.decoders = build_decoders(levels)
        self.levels = levels
        self.save_hyperparameters(
            {
                "encoder": dict(self.encoder.spec),
                "levels": list(levels),
                "export_decoders": bool(export_decoders),
                "pixel_weight": float(pixel_weight),
                "feature_weight": float(feature_weight),
                "lr": float(lr),
                "lr_decay": float(lr_decay),
            }
        )

    def losses(self, content: Tensor) -> dict[str, Tensor]:
        """Every loss term for a batch of content images in [0, 1], keyed as they are logged: ``loss/total`` and,
        per level, ``loss/<level>/pixel`` and ``loss/<level>/feature`` (unweighted)."""
        with torch.no_grad():
            features = self.encoder(content, list(self.levels))
        weights = float(self.hparams["pixel_weight"]), float(self.hparams["feature_weight"])
        terms: dict[str, Tensor] = {}
        total = torch.zeros((), device=content.device)
        for level in self.levels:
            decoded = self.decoders[level](features[level], output_size=(content.shape[-2], content.shape[-1]))
            pixel = F.mse_loss(decoded, content)
            feature = F.mse_loss(self.encoder(decoded, [level])[level], features[level])
            terms[f"loss/{level}/pixel"], terms[f"loss/{level}/feature"] = pixel, feature
            total = total + weights[0] * pixel + weights[1] * feature
        return {"loss/total": total, **terms}

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        losses = self.losses(batch["content"])
        log_training_step(self, losses, batch["content"].shape[0])
        return losses["loss/total"]

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """Adam over every decoder, lr / (1 + lr_decay * step) per step."""
        return decaying_adam(
            self.decoders.parameters(), float(self.hparams["lr"]), float(self.hparams["lr_decay"]), self.device
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """On resume the checkpoint's encoder weights replace the configured ones: record the checkpoint's spec, so
        the exported decoders name the encoder they were trained behind."""
        adopt_checkpoint_encoder(self.encoder, self.hparams, checkpoint)

    def export(self) -> None:
        """Write ``<run>/checkpoints/decoders.pth``: the decoders and the encoder they were trained behind."""
        path = self.export_path(self.hparams["export_decoders"], "decoders.pth")
        if path is None:
            return
        save_decoders(dict(self.decoders.items()), self.encoder.spec, path, step=self.global_step)  # type: ignore[arg-type]
