"""Linear Style Transfer (Li et al., CVPR 2019): train the transformation module of ``method.layer`` (relu3_1 or
relu4_1) between a frozen VGG-19 and a frozen reconstruction decoder of that level, as the authors' ``Train.py``
(commit 188e8e5) does: content and style encoded to the level, transformed, decoded; the decoded image, the content
and the style through the encoder to relu1_1 ... relu4_1 for the authors' loss (``loss``); Adam (lr 1e-4) over the
module alone, lr / (1 + 1e-5 * step).

The decoder comes from a reconstruction decoders file (``method.decoder``: a ``method=wct`` run's
``checkpoints/decoders.pth`` holding the level), trained behind the same encoder (its recorded fingerprint must
match). It is stored in this run's checkpoints with the module (as ``reconstruction.*``: AdaIN's files are the ones
with ``decoder.*`` keys), so the model files stand alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor

from styletransfer.data.datamodule import require_styles
from styletransfer.engine.schedules import decaying_adam
from styletransfer.engine.training_module import ExportingModule, check_settings, log_training_step
from styletransfer.methods.linear.checkpoint import save_model
from styletransfer.methods.linear.loss import CONTENT_WEIGHT, STYLE_LAYERS, STYLE_WEIGHT, linear_losses
from styletransfer.methods.linear.transform import LinearTransform, check_layer
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.nn.encoder_record import adopt_checkpoint_encoder, training_encoder
from styletransfer.nn.reconstruction import ReconstructionDecoder
from styletransfer.nn.reconstruction_file import read_decoder
from styletransfer.runtime.errors import ConfigError

log = logging.getLogger(__name__)


class LinearModule(ExportingModule):
    """Trains the transformation module of ``layer``; the encoder and the decoder (from the file ``decoder``) are
    frozen and stored in the checkpoint with it.

    ``encoder`` is the Hydra ``encoder`` group (VGG-19 only: the decoder mirrors its layers), or the encoder record
    saved in a checkpoint's hyper-parameters (its trunk's weights then come with the state dict).
    """

    def __init__(
        self,
        encoder: Mapping[str, Any],
        decoder: str = "",
        layer: str = "relu4_1",
        content_weight: float = CONTENT_WEIGHT,
        style_weight: float = STYLE_WEIGHT,
        lr: float = 1e-4,
        lr_decay: float = 1e-5,
        export_model: bool = True,
    ) -> None:
        super().__init__()
        layer = check_layer(str(layer))
        numbers = {"content_weight": content_weight, "style_weight": style_weight, "lr": lr, "lr_decay": lr_decay}
        check_settings(numbers)
        if dict(encoder).get("network", "vgg19") != "vgg19":
            raise ConfigError("method=linear's decoder mirrors VGG-19: use encoder=vgg19 (encoder.network=vgg19)")
        vgg = training_encoder(encoder, list(STYLE_LAYERS))
        assert isinstance(vgg, VGGEncoder)  # encoder.network=vgg19, checked above
        self.encoder = vgg
        if "fingerprint" in encoder:  # a checkpoint's record: the weights of trunk and decoder come with its state
            self.reconstruction = ReconstructionDecoder(layer).requires_grad_(False)
        else:
            self.reconstruction, record = read_decoder(str(decoder or ""), layer, "method.decoder")
            recorded = record.get("layers") or [layer]
            if record.get("fingerprint") != self.encoder.fingerprint_to(recorded):
                raise ConfigError(
                    f"method.decoder={decoder!r} was trained behind another encoder (fingerprint "
                    f"{record.get('fingerprint')}, weights={record.get('used', record.get('weights'))!r}) than the "
                    f"configured one ({self.encoder.fingerprint_to(recorded)}): give a decoders file trained behind "
                    "this encoder, or that file's encoder settings"
                )
        self.reconstruction.eval()
        self.transform = LinearTransform(layer)
        self.layer = layer
        self.save_hyperparameters(
            {
                "encoder": dict(self.encoder.spec),
                "decoder": str(decoder or ""),
                "layer": layer,
                "content_weight": float(content_weight),
                "style_weight": float(style_weight),
                "lr": float(lr),
                "lr_decay": float(lr_decay),
                "export_model": bool(export_model),
            }
        )

    def train(self, mode: bool = True) -> LinearModule:
        super().train(mode)
        self.reconstruction.eval()  # frozen: no layer of it changes with the mode, kept in eval for clarity
        return self

    def losses(self, content: Tensor, style: Tensor) -> dict[str, Tensor]:
        """Every loss term for content and style images in [0, 1] (N, 3, H, W), keyed as logged: ``loss/total``,
        ``loss/content`` and ``loss/style`` (weighted, as the authors' criterion returns them)."""
        layers = list(STYLE_LAYERS)
        with torch.no_grad():
            content_features = self.encoder(content, layers)
            style_features = self.encoder(style, layers)
        features, _ = self.transform(content_features[self.layer], style_features[self.layer])
        decoded = self.reconstruction(features, output_size=(content.shape[-2], content.shape[-1]))
        output_features = self.encoder(decoded, layers)
        weights = float(self.hparams["content_weight"]), float(self.hparams["style_weight"])
        return linear_losses(output_features, style_features, content_features, *weights)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            require_styles(self._trainer, "linear")

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        losses = self.losses(batch["content"], batch["style"])
        log_training_step(self, losses, batch["content"].shape[0])
        return losses["loss/total"]

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        losses = self.losses(batch["content"], batch["style"])
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=batch["content"].shape[0], sync_dist=True)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """Adam over the transformation module alone, lr / (1 + lr_decay * step) per step (the authors')."""
        return decaying_adam(
            self.transform.parameters(), float(self.hparams["lr"]), float(self.hparams["lr_decay"]), self.device
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """On resume the checkpoint's encoder and decoder weights replace the configured ones: record the
        checkpoint's encoder spec, so the exported model names the encoder it was trained behind."""
        adopt_checkpoint_encoder(self.encoder, self.hparams, checkpoint)

    def export(self) -> None:
        """Write ``<run>/checkpoints/linear.pth``: the module, the decoder and the record of the encoder they run
        behind, to the level (stylising needs no deeper layer; the fingerprint is that trunk's)."""
        path = self.export_path(self.hparams["export_model"], "linear.pth")
        if path is None:
            return
        spec = {**self.encoder.spec, "layers": [self.layer], "fingerprint": self.encoder.fingerprint_to([self.layer])}
        save_model(self.transform, self.reconstruction, spec, path, step=self.global_step)
