"""Neural Style (Gatys, Ecker & Bethge, CVPR 2016): optimise the pixels of an image so that its VGG-19 features
match a content photo and its style statistics match one or more style images.

The trainable parameter is the image batch; the encoder is frozen and cut after the deepest layer used. Style
targets are computed once per scale. ``trainer.max_steps`` counts iterations: one Lightning step is one optimiser
iteration (L-BFGS with ``max_iter=1`` through Lightning's closure, or Adam), or with ``device_lbfgs`` (``fast``,
``lbfgs``) up to ``iterations_per_step`` iterations, each counted by Lightning as an optimiser step.

Pixel range: with Adam the image is clamped to [0, 1] after every step (crowsonkb's style-transfer-pytorch);
with L-BFGS it is left free during optimisation (clamping between iterations corrupts L-BFGS's curvature pairs)
and clamped when saved, as neural-style does. Saved images are always in [0, 1].
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.utils import make_grid

from styletransfer.data.images import save_image
from styletransfer.data.pair import PairDataModule
from styletransfer.engine.loggers import log_image
from styletransfer.engine.logging_steps import device_scalar, logs_this_step
from styletransfer.engine.precision import autocast_dtype
from styletransfer.engine.training_module import trainer_datamodule
from styletransfer.methods.gatys.checkpoint import build_gatys_encoder
from styletransfer.methods.gatys.fast import FastLoop, chunk_length
from styletransfer.methods.gatys.images import initial_image, optimised_space
from styletransfer.methods.gatys.lbfgs import DeviceLBFGS
from styletransfer.methods.gatys.losses import STYLE_LOSSES, StyleLoss, weighted_style_loss
from styletransfer.methods.gatys.schedule import (
    IterateEMA,
    check_scale_sizes,
    resize_adam_state,
    scale_sizes,
    step_schedule,
    style_weights,
)
from styletransfer.methods.gatys.settings import GatysSettings
from styletransfer.nn.checkpoints import LoadsRunCheckpoints
from styletransfer.nn.colour import with_chroma
from styletransfer.nn.compiling import compile_mode
from styletransfer.nn.encoders import FeatureEncoder, min_side
from styletransfer.nn.losses import content_loss, tv_loss
from styletransfer.nn.padding import use_fast_reflection_padding
from styletransfer.runtime.errors import NonFiniteLossError

log = logging.getLogger(__name__)


# Ignored for mypy: LoadsRunCheckpoints.load_from_checkpoint takes a checkpoint's path only (read weights-only and
# checked), on purpose narrower than Lightning's, which also takes file objects.
class GatysModule(LoadsRunCheckpoints, pl.LightningModule):  # type: ignore[misc]
    """Neural Style: the image is the parameter. See README "Neural Style (Gatys)" and configs/method/gatys.yaml.

    Loss = content_weight * mean over ``content_layers`` of MSE(features, content features)
         + style_weight * sum over ``style_layers`` of w_l * style loss (``style_statistic``; w_l sum to 1)
         + tv_weight * total variation (``tv_power`` 2 or 1), every term a per-element mean.

    Coarse-to-fine: the image is optimised at each scale (longer side in pixels) in turn, starting from the
    previous scale's result upsampled; ``steps_per_scale`` (its last entry repeated) or an equal split of
    ``trainer.max_steps`` gives each scale's iterations. Adam's moments are resized and carried over; L-BFGS restarts.

    Output: ``<run dir>/<output_name>.png`` (``<output_name>_<i>.png`` for several contents; nothing when
    ``output_name`` is null: ``output()`` only), snapshots in ``<run dir>/snapshots/step_XXXXX.png`` every
    ``snapshot_every`` steps; the EMA of the iterates when ``ema_decay`` is set.

    The settings are ``GatysSettings``'s fields, checked there; the pieces live in ``losses`` (a style-loss module
    per statistic), ``schedule`` (scales, steps, Adam's state, the EMA), ``images`` (colour preservation's spaces,
    the first iterate), ``lbfgs`` and ``fast`` (the sync-free path) and ``checkpoint`` (``load_from_checkpoint``).
    """

    #: ``load_from_checkpoint(path, **settings)``: the module of a checkpoint, its image, scale and EMA
    #: (``output()`` is the result; an RGB one needs no data) and its encoder had again from its record (``settings``,
    #: ``encoder=`` too, override the recorded ones).
    checkpoint_of = ("a Neural Style run (method=gatys)", "image")

    #: The image batch being optimised (the parameter): None until ``setup("fit")`` or a checkpoint makes it.
    image: nn.Parameter | None

    def __init__(self, encoder: Mapping[str, Any], **settings: Any) -> None:
        """``encoder``: the encoder config, or a checkpoint's record of one (``checkpoint.build_gatys_encoder``);
        ``settings``: the fields of ``GatysSettings`` (checked there), recorded with the encoder's spec as the
        hyper-parameters."""
        super().__init__()
        checked = GatysSettings(**settings, network=str(encoder.get("network", "vgg19")))
        self.content_layers = list(checked.content_layers)
        self.style_layers = list(checked.style_layers)
        self.layer_weights = checked.layer_weights
        layers = list(dict.fromkeys(self.content_layers + self.style_layers))
        self.encoder: FeatureEncoder = build_gatys_encoder(encoder, layers)
        self.save_hyperparameters({"encoder": dict(self.encoder.spec), **checked.hparams()})
        self.register_parameter("image", None)  # the image batch, created in setup("fit") from the data
        self.ema = IterateEMA(checked.ema_decay)
        self.sizes: list[int] = []
        self.boundaries: list[int] = []
        self.scale_index = 0
        self._blend: list[float] = []
        self._scale_ready = -1
        self._content_rgb: Tensor | None = None
        self._content_targets: dict[str, Tensor] = {}
        self._style_losses: dict[str, StyleLoss] = {}
        self._last_good: Tensor | None = None
        # device_lbfgs: Lightning steps of several iterations, run by a FastLoop (rebuilt per scale and on resume).
        self.automatic_optimization = checked.optimizer != "device_lbfgs"
        self._loop: FastLoop | None = None
        self._low_precision: torch.dtype | None = None  # trainer.precision's autocast type, set in setup("fit")
        mode = compile_mode(checked.compile)  # the mode already (checked): read again for its type
        self._loss_fn = self._loss_terms if mode is None else torch.compile(self._loss_terms, mode=mode)

    @property
    def _iterate(self) -> nn.Parameter:
        """The image being optimised (``image``), once made."""
        if self.image is None:
            raise RuntimeError("Neural Style has no image yet: trainer.fit or load_from_checkpoint makes it")
        return self.image

    # ---- schedule ----------------------------------------------------------------------------------------------
    @property
    def _luminance_only(self) -> bool:
        return self.hparams["preserve_colour"] == "luminance"

    def scale_sizes(self, long_side: int) -> list[int]:
        """Longer sides of the scales for a content of ``long_side`` px (``schedule.scale_sizes``)."""
        hp = self.hparams
        return scale_sizes(long_side, hp["scales"], hp["scale_start"], hp["scale_factor"])

    def step_schedule(self, n_scales: int, max_steps: int | None) -> list[int]:
        """Iterations per scale (``schedule.step_schedule`` with ``method.steps_per_scale``)."""
        return step_schedule(n_scales, max_steps, self.hparams["steps_per_scale"])

    # ---- setup: checks and the initial image, before any optimisation -------------------------------------------
    def setup(self, stage: str) -> None:
        """Check the data against the settings (style weights, sizes, iterations) and create the first iterate."""
        if stage != "fit":
            return
        dm = self._data()
        dm.setup("fit")
        self._low_precision = autocast_dtype(str(self.trainer.precision))
        self._blend = style_weights(self.hparams["style_blend"], dm.style_names)
        self.sizes = self.scale_sizes(dm.long_side)
        positions = STYLE_LOSSES[self.hparams["style_statistic"]].positions
        need = max(min_side(self.encoder, self.content_layers), min_side(self.encoder, self.style_layers, positions))
        check_scale_sizes(self.sizes, dm, need)
        steps = self.step_schedule(len(self.sizes), self.trainer.max_steps)
        self.boundaries = [sum(steps[: i + 1]) for i in range(len(steps))]
        log.info("Neural Style: scales %s (longer side, px), iterations per scale %s", self.sizes, steps)
        if self.hparams["channels_last"]:
            self.encoder.to(memory_format=torch.channels_last)
            use_fast_reflection_padding(self.encoder)  # a reflection-padded VGG's pads keep the format (nn/padding.py)
        if self.image is None:
            content, styles = self._images_at(0)
            hp = self.hparams
            self.image = nn.Parameter(
                initial_image(hp["init"], content, styles, self._blend, hp["init_seed"], self._luminance_only)
            )
            self.ema.reset(self.image)

    def _data(self) -> PairDataModule:
        """The trainer's data module: a PairDataModule (content and style images), else a TypeError saying so."""
        dm = trainer_datamodule(self.trainer)
        if not isinstance(dm, PairDataModule):
            raise TypeError("method=gatys needs data=pair (a PairDataModule with content and style images)")
        return dm

    def _images_at(self, index: int) -> tuple[Tensor, list[Tensor]]:
        """Content and styles at scale ``index``, in the space that is optimised (``images.optimised_space``)."""
        dm, size = self._data(), self.sizes[index]
        self._content_rgb = dm.load_content(size).to(self.device)
        styles = [s.to(self.device).unsqueeze(0) for s in dm.load_styles(size)]
        hp = self.hparams
        return optimised_space(self._content_rgb, styles, hp["preserve_colour"], hp["colour_space"])

    # ---- targets (once per scale) -------------------------------------------------------------------------------
    def _prepare_scale(self) -> None:
        """Once per scale (nothing when ready): the scale's images, content targets and style losses (each style's
        statistics per layer, blended with ``method.style_blend``'s weights)."""
        if self._scale_ready == self.scale_index:
            return
        content, styles = self._images_at(self.scale_index)
        style_loss = STYLE_LOSSES[self.hparams["style_statistic"]]
        with torch.no_grad():
            self._content_targets = {k: v.detach() for k, v in self.encoder(content, self.content_layers).items()}
            statistics: dict[str, list[dict[str, Tensor]]] = {layer: [] for layer in self.style_layers}
            for style in styles:  # one style's features at a time: only the statistics are kept
                for layer, feats in self.encoder(style, self.style_layers).items():
                    statistics[layer].append(style_loss.statistics(feats))
            self._style_losses = {layer: style_loss.blended(stats, self._blend) for layer, stats in statistics.items()}
        self._scale_ready = self.scale_index

    # ---- optimisation --------------------------------------------------------------------------------------------
    def _rgb(self, image: Tensor) -> Tensor:
        """The optimised image as the encoder's RGB input (greyscale luminance replicated to 3 channels)."""
        return image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image

    def losses(self, image: Tensor) -> dict[str, Tensor]:
        """All loss terms for the current iterate, keyed as they are logged (compiled with ``method.compile``)."""
        self._prepare_scale()
        return self._loss_fn(image)

    def _features(self, image: Tensor) -> dict[str, Tensor]:
        """Encoder features, in bfloat16 under ``trainer.precision=bf16-mixed`` (autocast without its weight cache,
        which CUDA graphs cannot hold) and from a channels_last copy under ``method.channels_last``."""
        rgb = self._rgb(image)
        rgb = rgb.contiguous(memory_format=torch.channels_last) if self.hparams["channels_last"] else rgb
        if self._low_precision is None:
            return self.encoder(rgb)
        with torch.autocast(rgb.device.type, dtype=self._low_precision, cache_enabled=False):
            return self.encoder(rgb)

    def _loss_terms(self, image: Tensor) -> dict[str, Tensor]:
        feats = self._features(image)
        # Mixed precision: the Gram matrices and losses in float32 even under Lightning's autocast.
        with torch.autocast(image.device.type, enabled=False) if self._low_precision else contextlib.nullcontext():
            return self._terms(feats, image)

    def _terms(self, feats: Mapping[str, Tensor], image: Tensor) -> dict[str, Tensor]:
        loss_c = torch.stack([content_loss(feats[k], self._content_targets[k]) for k in self.content_layers]).mean()
        per_layer = {k: self._style_losses[k](feats[k]) for k in self.style_layers}
        loss_s = weighted_style_loss(per_layer, self.layer_weights, self.style_layers)
        hp = self.hparams
        loss_tv = tv_loss(image, hp["tv_power"])
        total = hp["content_weight"] * loss_c + hp["style_weight"] * loss_s + hp["tv_weight"] * loss_tv
        out = {"loss/total": total, "loss/content": loss_c, "loss/style": loss_s, "loss/tv": loss_tv}
        out.update({f"loss/style/{k}": v for k, v in per_layer.items()})
        return out

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor | None:
        image = self._iterate
        if not self.automatic_optimization:
            # The L-BFGS update runs in here: in float32, outside Lightning's autocast (the features have their own).
            with torch.autocast(image.device.type, enabled=False):
                self._fast_step()
            return None
        losses = self.losses(image)
        total = losses["loss/total"]
        if not torch.isfinite(total):
            self._stop_non_finite(losses)
        self._last_good = image.detach().clone()
        if logs_this_step(self.trainer, end=self.boundaries[-1]):
            self._log_losses(losses)
        return total

    def _log_losses(self, losses: Mapping[str, Tensor]) -> None:
        """The loss terms and the scale, on ``logs_this_step``'s steps only (each ``self.log`` costs host time)."""
        self.log_dict(dict(losses), batch_size=1)  # the progress bar shows loss/total (engine/progress.py)
        self.log("scale", device_scalar(self.sizes[self.scale_index], self.device), batch_size=1)

    def _fast_step(self) -> None:
        """device_lbfgs: up to ``iterations_per_step`` iterations, each a Lightning optimiser step (so
        ``global_step`` counts iterations), then, when due, the one host sync of the finite check and the logs."""
        hp, done, image = self.hparams, self.global_step, self._iterate
        periods = [hp["check_every"], hp["snapshot_every"]]
        saves = [getattr(c, "_every_n_train_steps", 0) or 0 for c in self.trainer.checkpoint_callbacks]
        n = chunk_length(done, hp["iterations_per_step"], self.boundaries, [*periods, *saves])
        if self._loop is None:
            self._prepare_scale()  # this scale's targets, before anything is captured
            self._loop = FastLoop(self.losses, image, done)
        logs = logs_this_step(self.trainer, steps=n, end=self.boundaries[-1])  # before the n steps are counted
        losses = self._loop.run(self.optimizers(), n, lambda: self.ema.update(image))
        end = done + n
        if any(every and end % every == 0 for every in periods) or end in self.boundaries:
            self._check_finite()
        if logs:
            self._log_losses(losses)
        if self.boundaries[self.scale_index] <= end < self.boundaries[-1]:
            self._advance_scale()

    def _check_finite(self) -> None:
        """device_lbfgs: read the device's record (one sync) and stop as the per-step check does."""
        if self._loop is None:
            return
        bad = self._loop.watch.first_bad_step()
        if bad is not None:
            self._last_good = self._loop.watch.good_image()
            self._stop_non_finite(self._loop.losses, bad)

    def _stop_non_finite(self, losses: Mapping[str, Tensor], step: int | None = None) -> None:
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items() if not k.startswith("loss/style/"))
        paths = self._save_output(self._last_good) if self._last_good is not None else []
        if paths:
            kept = f"the last good image is in {', '.join(map(str, paths))}"
        elif self._last_good is None:
            kept = "no good image was reached"
        else:
            kept = "the last good image is not written (method.output_name is null)"
        raise NonFiniteLossError(
            f"Neural Style loss is not finite at step {self.global_step if step is None else step} ({values}); {kept}. "
            "Lower method.lr (Adam), method.style_weight or method.tv_weight, or use trainer.precision=32-true."
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self._make_optimizer()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        hp, image = self.hparams, self._iterate
        if hp["optimizer"] == "lbfgs":
            # max_iter=1: one Lightning step = one L-BFGS iteration = one closure call (no line search).
            return torch.optim.LBFGS([image], lr=hp["lr"], max_iter=1, history_size=hp["history_size"])
        if hp["optimizer"] == "device_lbfgs":
            return DeviceLBFGS([image], lr=hp["lr"], history_size=hp["history_size"], cuda_graph=hp["cuda_graph"])
        return torch.optim.Adam([image], lr=hp["lr"], betas=tuple(hp["betas"]))

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """One iteration, then Adam's clamp, the EMA and the move to the next scale.

        Done here rather than in ``on_train_batch_end``: callbacks (ModelCheckpoint) run their batch-end hooks
        before the module's, so a checkpoint saved at this step must already hold the state the next step uses.
        """
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        image = self._iterate
        with torch.no_grad():
            if self.hparams["optimizer"] == "adam":
                image.clamp_(0, 1)
            self.ema.update(image)
        done = self.global_step + 1  # Lightning counts this iteration only after the hook returns
        if self.boundaries[self.scale_index] <= done < self.boundaries[-1]:
            self._advance_scale()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        every = self.hparams["snapshot_every"]
        if every and step % every == 0:
            self._save_snapshot(step)
        if step >= self.boundaries[-1]:
            self.trainer.should_stop = True

    # ---- coarse-to-fine -------------------------------------------------------------------------------------------
    def _advance_scale(self) -> None:
        """Continue at the next scale from the current output upsampled; carry Adam's moments, restart L-BFGS."""
        previous = self._output_opt_space()
        self.scale_index += 1
        self._prepare_scale()
        assert self._content_rgb is not None  # read by _prepare_scale
        size = self._content_rgb.shape[-2:]
        upsampled = F.interpolate(previous, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        image = self._iterate
        old = self.trainer.optimizers[0]
        old_state = old.state.get(image, {})
        image.data = upsampled.contiguous()
        optimizer = self._make_optimizer()
        if self.hparams["optimizer"] == "adam" and old_state:
            optimizer.state[image] = resize_adam_state(old_state, size)
        self.trainer.optimizers = [optimizer]
        self._loop = None
        self.ema.reset(image)
        log.info("Neural Style: scale %d/%d, %s px", self.scale_index + 1, len(self.sizes), tuple(size))

    # ---- output ------------------------------------------------------------------------------------------------
    def _output_opt_space(self) -> Tensor:
        """The current result in the optimised space: the EMA when enabled (and updated), else the iterate."""
        average = self.ema.value()
        return self._iterate.detach() if average is None else average

    def output(self, image: Tensor | None = None) -> Tensor:
        """The result as RGB in [0, 1] (luminance-only: the result's luminance with the content's chroma)."""
        image = self._output_opt_space() if image is None else image
        if image.shape[1] == 1:
            content = self._content_rgb
            if content is None or content.shape[-2:] != image.shape[-2:]:
                content = self._data().load_content(max(image.shape[-2:])).to(image.device)
            return with_chroma(image, content, self.hparams["colour_space"])
        return image.clamp(0, 1)

    def optimised_results(self, datamodule: Any) -> list[tuple[Tensor, Tensor, list[Tensor]]]:
        """Each optimised image (1, 3, H, W) with its content at the same size and the style images (1, 3, h, w)
        it was optimised towards: what a sweep's objective scores (the result is the method's output itself)."""
        result = self.output().float()
        contents = datamodule.load_content(max(result.shape[-2:])).to(result.device)
        if contents.shape[-2:] != result.shape[-2:]:
            contents = F.interpolate(contents, size=result.shape[-2:], mode="bilinear", align_corners=False)
        styles = [s.unsqueeze(0).to(result.device) for s in datamodule.load_styles(max(result.shape[-2:]))]
        return [(image[None], content[None], styles) for image, content in zip(result, contents)]

    def _save_output(self, image: Tensor | None = None) -> list[Path]:
        """Write the result(s) into the run directory; returns the paths (none when ``output_name`` is null)."""
        name = self.hparams["output_name"]
        if name is None:
            return []
        result = self.output(image).float().cpu()
        root = Path(self.trainer.default_root_dir)
        paths = [root / f"{name}.png"] if len(result) == 1 else [root / f"{name}_{i}.png" for i in range(len(result))]
        for tensor, path in zip(result, paths):
            save_image(tensor, path)
        return paths

    def _save_snapshot(self, step: int) -> None:
        if not self.trainer.is_global_zero:
            return
        grid = make_grid(self.output().float().cpu(), nrow=8, padding=2, pad_value=1.0)
        path = Path(self.trainer.default_root_dir) / "snapshots" / f"step_{step:05d}.png"
        save_image(grid, path)
        for logger in self.loggers:
            log_image(logger, "snapshot", grid, path, step)

    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero or self.image is None:
            return
        self._check_finite()
        paths = self._save_output()
        if not paths:
            return
        log.info("Neural Style result written to %s", ", ".join(map(str, paths)))
        grid = make_grid(self.output().float().cpu(), nrow=8, padding=2, pad_value=1.0)
        for logger in self.loggers:
            log_image(logger, "stylised", grid, paths[0], self.global_step)

    # ---- checkpoints: the image, the scale and the EMA; the encoder is rebuilt from hparams["encoder"] -----------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_finite()  # device_lbfgs: never save a non-finite image
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder.")}
        checkpoint["gatys"] = {"scale_index": self.scale_index, **self.ema.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("gatys", {})
        image = checkpoint["state_dict"].get("image")
        if image is None:
            return
        self.scale_index = int(saved.get("scale_index", 0))
        if self.image is None:  # load_from_checkpoint: no setup("fit") made the parameter
            self.image = nn.Parameter(torch.empty((), device=self.device))
        self.image.data = torch.empty_like(image, device=self.image.device)
        self.ema.load_state_dict(saved, self.image.device)
        self._scale_ready, self._loop = -1, None

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Checkpoints hold no encoder weights (rebuilt from the encoder config): fill them in before loading."""
        full = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        full.update(state_dict)
        return super().load_state_dict(full, strict=strict, assign=assign)
