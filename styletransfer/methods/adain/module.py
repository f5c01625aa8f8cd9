"""AdaIN (Huang & Belongie 2017): train a decoder behind a frozen encoder (the paper's VGG-19, or a torchvision
backbone with a bottleneck at stride 8 or 16)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor
from torchvision.utils import make_grid

from styletransfer.data.datamodule import require_styles
from styletransfer.data.images import save_image
from styletransfer.engine.loggers import log_image
from styletransfer.engine.schedules import decaying_adam
from styletransfer.engine.training_module import (
    ExportingModule,
    check_settings,
    log_training_step,
    trainer_datamodule,
)
from styletransfer.methods.adain import transforms
from styletransfer.methods.adain.checkpoint import save_decoder
from styletransfer.methods.adain.decoders import (
    STRIDES,
    build_decoder,
    check_fits,
    decoder_config,
    decoder_record,
    describe,
    fitted_config,
)
from styletransfer.methods.adain.model import BOTTLENECK, adain, stylise
from styletransfer.methods.adain.transforms import check_transform, style_code
from styletransfer.nn.backbones import check_nodes
from styletransfer.nn.checkpoints import LoadsRunCheckpoints
from styletransfer.nn.compiling import CUDA_GRAPH_MODES, call_graph_safe, compile_mode
from styletransfer.nn.encoder import VGGEncoder, check_layers
from styletransfer.nn.encoder_record import adopt_checkpoint_encoder, training_encoder
from styletransfer.nn.encoders import feature_info, is_vgg
from styletransfer.nn.losses import content_loss, mean_std_style_loss
from styletransfer.nn.padding import use_fast_reflection_padding
from styletransfer.protocol.candidate import Candidate
from styletransfer.protocol.controls import Controls
from styletransfer.runtime.errors import ConfigError

log = logging.getLogger(__name__)

PAPER_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def _plain(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A ``decoder`` group (an OmegaConf node from Hydra) as a plain dict, None as None."""
    return None if config is None else {str(k): v for k, v in dict(config).items()}


def check_adain_layers(
    encoder: Mapping[str, Any], style_layers: Sequence[str], bottleneck: str | None
) -> tuple[list[str], str]:
    """(style layers, bottleneck) checked against the encoder config's network, each error naming its setting:
    VGG layer names for VGG (bottleneck default relu4_1), graph node names for a torchvision backbone (which has no
    default bottleneck: its ``encoder=`` file sets ``adain.bottleneck``)."""
    network = str(encoder.get("network", "vgg19"))
    if is_vgg(encoder):
        layers = list(check_layers(style_layers, "method.style_layers", network))
        return layers, check_layers([bottleneck or BOTTLENECK], "method.bottleneck", network)[0]
    if bottleneck is None:
        raise ConfigError(
            f"method.bottleneck is not set for encoder.network={network}: name the node the decoder inverts, e.g. "
            "method.bottleneck=layer2 (resnet50; configs/encoder/*.yaml set it under adain.bottleneck)"
        )
    layers = list(check_nodes(style_layers, network, "method.style_layers"))
    return layers, check_nodes([bottleneck], network, "method.bottleneck")[0]


# Ignored for mypy: LoadsRunCheckpoints.load_from_checkpoint takes a checkpoint's path only (read weights-only and
# checked), on purpose narrower than Lightning's, which also takes file objects.
class AdaINModule(LoadsRunCheckpoints, ExportingModule):  # type: ignore[misc]
    """Trains an AdaIN decoder; the encoder is frozen and stored in the checkpoint with it.

    Loss = content_weight * MSE(f(g(t)), t) at the bottleneck (relu4_1) + style_weight * sum over ``style_layers``
    of (MSE of channel means + MSE of channel stds), with t = AdaIN(f(content), f(style)); reductions as in the
    reference PyTorch code (paper: content 1, style 10).

    Behind a torchvision backbone (``encoder.network=resnet50``, ...) ``bottleneck`` and ``style_layers`` are its
    graph nodes; the bottleneck must be at stride 8 or 16, and the decoder is the configurable one (the mirror
    fits VGG's relu4_1 only: ``decoders.fitted_config``), its input channels and stride the bottleneck's.

    ``encoder`` is the Hydra ``encoder`` group (weights, seed, fallback, download), or the encoder record saved
    in a checkpoint's hyper-parameters, so ``AdaINModule.load_from_checkpoint(path)`` works offline: the
    trunk's weights come with the checkpoint.
    """

    #: ``load_from_checkpoint(path, **settings)``: the module of a training checkpoint, encoder included.
    checkpoint_of = ("an AdaIN run (method=adain)", "decoder")

    def __init__(
        self,
        encoder: Mapping[str, Any],
        style_layers: Sequence[str] = PAPER_STYLE_LAYERS,
        content_weight: float = 1.0,
        style_weight: float = 10.0,
        lr: float = 1e-4,
        lr_decay: float = 5e-5,
        betas: Sequence[float] = (0.9, 0.999),
        channels_last: bool = False,
        compile: bool | str = False,
        grid_dir: str = "val_grids",
        export_decoder: bool = True,
        transform: str = "adain",
        decoder: Mapping[str, Any] | None = None,
        bottleneck: str | None = None,
    ) -> None:
        super().__init__()
        self.transform = check_transform(transform)
        style_layers, bottleneck = check_adain_layers(encoder, style_layers, bottleneck)
        numbers = {"content_weight": content_weight, "style_weight": style_weight, "lr": lr, "lr_decay": lr_decay}
        check_settings(numbers)
        if len(betas) != 2 or not all(0 <= float(b) < 1 for b in betas):
            raise ConfigError(f"method.betas={list(betas)} must be two numbers in [0, 1), e.g. [0.9, 0.999]")
        layers = [*style_layers, bottleneck]
        self.encoder = training_encoder(encoder, layers)
        channels, stride = feature_info(self.encoder, [bottleneck])[bottleneck]
        where = f"{self.encoder.network} {bottleneck} ({channels} channels, stride {stride})"
        if stride not in STRIDES:
            raise ConfigError(
                f"method.bottleneck={bottleneck} is {where}: AdaIN's decoders start from a map at stride "
                f"{' or '.join(map(str, STRIDES))}; list the nodes with python -m styletransfer.nn.backbones "
                f"{self.encoder.network}"
            )
        #: The encoder layer the decoder inverts: AdaIN's statistics and the content loss are taken there.
        self.bottleneck = bottleneck
        # The ``decoder`` group (None: the mirror), completed with the bottleneck's channels and stride.
        mirror_fits = isinstance(self.encoder, VGGEncoder) and bottleneck == BOTTLENECK
        self.decoder = build_decoder(fitted_config(_plain(decoder), mirror_fits, where), channels, stride)
        check_fits(decoder_record(self.decoder), channels, stride, where)
        self.style_layers = style_layers
        mode = compile_mode(compile)
        #: The speed path (channels_last or compile): memory-format-keeping reflection pads, content and style
        #: encoded in one batch. Off, the modules and the maths are exactly the reference's.
        self.speed = bool(channels_last) or mode is not None
        use_fast_reflection_padding(self.encoder, self.speed)
        use_fast_reflection_padding(self.decoder, self.speed)
        self._compiled_terms: Any = None
        self.save_hyperparameters(
            {
                "encoder": dict(self.encoder.spec),
                "bottleneck": bottleneck,
                "style_layers": style_layers,
                "content_weight": float(content_weight),
                "style_weight": float(style_weight),
                "lr": float(lr),
                "lr_decay": float(lr_decay),
                "betas": [float(b) for b in betas],
                "channels_last": bool(channels_last),
                "compile": mode or False,
                "grid_dir": str(grid_dir),
                "export_decoder": bool(export_decoder),
                "transform": self.transform,
                "decoder": decoder_record(self.decoder),
            }
        )
        self._val_outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self._last_grid_step = -1

    # ---- model -------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit":
            require_styles(self._trainer, "adain")
        if self.hparams["channels_last"]:
            self.to(memory_format=torch.channels_last)
        mode = compile_mode(self.hparams["compile"])
        if mode is not None and self._compiled_terms is None:
            # The whole loss (encoder, decoder, statistics, losses) as one function: AOTAutograd makes one forward
            # and one backward graph of it, so inductor fuses across module boundaries.
            self._compiled_terms = torch.compile(self._loss_terms, mode=mode)

    def _prepare(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.hparams["channels_last"] else images

    def stylise(self, content: Tensor, style: Tensor, alpha: float = 1.0) -> Tensor:
        """Each content stylised with its style (batches of the same size), float32 in [0, 1]: ``model.stylise``
        (``transforms.stylise_transform`` for a transform other than AdaIN)."""
        options = {"channels_last": self.hparams["channels_last"], "bottleneck": self.bottleneck}
        parts = (self.encoder, self.decoder, content, [style], Controls(alpha=alpha))
        if self.transform != "adain":
            return transforms.stylise_transform(self.transform, *parts, **options)
        return stylise(*parts, **options)

    def trained_candidate(self, label: str = "trial") -> Candidate:
        """The module in memory as an evaluation candidate (its encoder, decoder and speed settings): what a sweep's
        objective scores on a benchmark after training."""
        info = {"method": "adain", "path": "", "kind": "module", "encoder": dict(self.encoder.spec)}
        return Candidate(label, self.stylise, info, supports_alpha=True)

    def losses(self, content: Tensor, style: Tensor) -> dict[str, Tensor]:
        """All loss terms for a batch of content/style pairs, keyed as they are logged.

        With ``method.compile`` (after ``setup``) and gradients on, the compiled ``_loss_terms`` runs; validation
        (no gradients) stays eager, so it neither recompiles nor records CUDA graphs for its batch size.
        """
        weights = (float(self.hparams["content_weight"]), float(self.hparams["style_weight"]))
        if self._compiled_terms is None or not torch.is_grad_enabled():
            return self._loss_terms(content, style, weights)
        if compile_mode(self.hparams["compile"]) in CUDA_GRAPH_MODES:  # the logged values are read steps later
            return call_graph_safe(self._compiled_terms, content, style, weights)
        return self._compiled_terms(content, style, weights)

    def _targets(self, content: Tensor, style: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """(style features at every encoder layer, AdaIN target at the bottleneck), without gradients. On the speed
        path content and style of one size go through the encoder as one batch (one pass instead of two)."""
        with torch.no_grad():
            if self.speed and content.shape[1:] == style.shape[1:]:
                both = self.encoder(torch.cat([style, content]))
                n = style.shape[0]
                style_feats = {name: value[:n] for name, value in both.items()}
                c_feat = both[self.bottleneck][n:]
            else:
                style_feats = self.encoder(style)
                c_feat = self.encoder(content, [self.bottleneck])[self.bottleneck]
            if self.transform == "adain":  # the reference's computation, bit for bit
                return style_feats, adain(c_feat, style_feats[self.bottleneck])
            code = style_code(self.transform, style_feats[self.bottleneck])
            return style_feats, transforms.apply(self.transform, c_feat, code)

    def _loss_terms(self, content: Tensor, style: Tensor, weights: tuple[float, float]) -> dict[str, Tensor]:
        """``losses`` itself, eager; ``weights`` are (content, style) as Python numbers (constants when compiled)."""
        content, style = self._prepare(content), self._prepare(style)
        style_feats, target = self._targets(content, style)
        decoded = self.decoder(target, output_size=tuple(content.shape[-2:]))
        decoded_feats = self.encoder(decoded)
        loss_c = content_loss(decoded_feats[self.bottleneck], target)
        if self.transform == "adain":
            loss_s, per_layer = mean_std_style_loss(decoded_feats, style_feats, self.style_layers)
        else:
            loss_s, per_layer = transforms.style_loss(self.transform, decoded_feats, style_feats, self.style_layers)
        total = weights[0] * loss_c + weights[1] * loss_s
        out = {"loss/total": total, "loss/content": loss_c, "loss/style": loss_s}
        out.update({f"loss/style/{name}": value for name, value in per_layer.items()})
        return out

    # ---- training ----------------------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        losses = self.losses(batch["content"], batch["style"])
        log_training_step(self, losses, batch["content"].shape[0])
        return losses["loss/total"]

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        hp = self.hparams
        return decaying_adam(self.decoder.parameters(), hp["lr"], hp["lr_decay"], self.device, hp["betas"])

    # ---- validation: losses and a grid of stylised pairs ---------------------------------------------------
    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        losses = self.losses(batch["content"], batch["style"])
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=batch["content"].shape[0], sync_dist=True)
        result = self.stylise(batch["content"], batch["style"])
        self._val_outputs.append((batch["content"].cpu(), batch["style"].cpu(), result.cpu()))

    def on_validation_epoch_end(self) -> None:
        outputs, self._val_outputs = self._val_outputs, []
        if outputs and not self.trainer.sanity_checking:
            self._write_grid(outputs)

    def on_train_end(self) -> None:
        """Always leave a grid of the final decoder and its exported weights, whatever the step count."""
        if self._last_grid_step != self.global_step and self.trainer.is_global_zero:
            datamodule = trainer_datamodule(self.trainer)
            if datamodule is not None and getattr(datamodule, "val_pairs", None):
                outputs = []
                was_training = self.training
                self.eval()
                for batch in datamodule.val_dataloader():
                    batch = datamodule.on_after_batch_transfer(
                        {k: (v.to(self.device) if isinstance(v, Tensor) else v) for k, v in batch.items()}, 0
                    )
                    result = self.stylise(batch["content"], batch["style"])
                    outputs.append((batch["content"].cpu(), batch["style"].cpu(), result.cpu()))
                self.train(was_training)
                if outputs:
                    self._write_grid(outputs)
        self.export()

    def _write_grid(self, outputs: list[tuple[Tensor, Tensor, Tensor]]) -> None:
        """Save rows of (content, style, result) as ``<run>/val_grids/step_XXXXXX.png`` and send it to the loggers."""
        if not self.trainer.is_global_zero:
            return
        triples = [torch.stack(t) for out in outputs for t in zip(*out)]
        grid = make_grid(torch.cat(triples).float(), nrow=3, padding=2, pad_value=1.0)
        path = Path(self.trainer.default_root_dir) / self.hparams["grid_dir"] / f"step_{self.global_step:06d}.png"
        save_image(grid, path)
        self._last_grid_step = self.global_step
        log.info("validation grid written to %s", path)
        for logger in self.loggers:
            log_image(logger, "val/grid", grid, path, self.global_step)

    # ---- export --------------------------------------------------------------------------------------------
    @classmethod
    def saved_settings(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """The settings of a checkpoint that the constructor takes (a checkpoint from before ``method.bottleneck``
        recorded ``content_layer``)."""
        accepted = inspect.signature(cls.__init__).parameters
        saved = {key: value for key, value in hparams.items() if key in accepted}
        if "bottleneck" not in hparams and "content_layer" in hparams:
            saved["bottleneck"] = hparams["content_layer"]
        return saved

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """On resume: the checkpoint's decoder settings must be the configured ones, and its encoder's record
        replaces the configured one (``nn.encoder_record.adopt_checkpoint_encoder``)."""
        saved_decoder = checkpoint.get("hyper_parameters", {}).get("decoder") or None
        if decoder_record(self.decoder) != decoder_config(saved_decoder):  # a record without stride: stride 8
            raise ConfigError(
                f"the checkpoint's decoder is {describe(saved_decoder)}, the configured one "
                f"{describe(decoder_record(self.decoder))}; resume with the checkpoint's decoder= settings"
            )
        adopt_checkpoint_encoder(self.encoder, self.hparams, checkpoint)

    def export(self) -> None:
        """Write ``<run>/checkpoints/decoder.pth``: decoder weights plus the encoder they were trained behind."""
        path = self.export_path(self.hparams["export_decoder"], "decoder.pth")
        if path is None:
            return
        save_decoder(
            self.decoder,
            self.encoder.spec,
            path,
            step=self.global_step,
            transform=self.transform,
            bottleneck=self.bottleneck,
        )
