"""Neural Style (Gatys, Ecker & Bethge, CVPR 2016): optimise the pixels of an image so that its VGG-19 features
match a content photo and its style statistics match one or more style images.

The trainable parameter is the image batch; the encoder is frozen and cut after the deepest layer used. Style
targets are computed once per scale. One Lightning step is one optimiser iteration (L-BFGS with ``max_iter=1``
through Lightning's closure, or Adam), so ``trainer.max_steps`` counts iterations.

Pixel range: with Adam the image is clamped to [0, 1] after every step (crowsonkb's style-transfer-pytorch);
with L-BFGS it is left free during optimisation (clamping between iterations corrupts L-BFGS's curvature pairs)
and clamped when saved, as neural-style does. Saved images are always in [0, 1].
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.utils import make_grid

from styletransfer.data.images import save_image
from styletransfer.methods.gatys.losses import (
    STYLE_STATISTICS,
    normalise_layer_weights,
    prepare_style_target,
    style_statistic_loss,
    style_statistics,
    tv_loss,
    weighted_style_loss,
)
from styletransfer.nn.colour import COLOUR_SPACES, luminance, match_colour, match_luminance, with_chroma
from styletransfer.nn.encoder import VGG19_LAYERS, VGGEncoder, build_encoder
from styletransfer.nn.losses import content_loss
from styletransfer.runtime.errors import ConfigError, NonFiniteLossError
from styletransfer.runtime.loggers import log_image

log = logging.getLogger(__name__)

PAPER_CONTENT_LAYERS = ("relu4_2",)
PAPER_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "style")
PRESERVE_COLOUR = ("luminance", "histogram")


def _plain_list(value: Any, setting: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{setting} must be a list, got {value!r}")
    return list(value)


def _check_layers(setting: str, layers: Any) -> list[str]:
    layers = [str(name) for name in _plain_list(layers, setting)]
    unknown = [name for name in layers if name not in VGG19_LAYERS]
    if not layers or unknown:
        raise ConfigError(
            f"{setting}={layers}: {'unknown VGG-19 layer(s) ' + str(unknown) if unknown else 'empty'}; "
            f"layers are named relu1_1..relu5_4, conv1_1..conv5_4, pool1..pool5 (e.g. {', '.join(PAPER_STYLE_LAYERS)})"
        )
    return layers


def _min_side(layers: Sequence[str]) -> int:
    """Smallest image side that leaves at least one position at the deepest of ``layers`` (2 ** pools before it)."""
    deepest = max(VGG19_LAYERS.index(name) for name in layers)
    return 2 ** sum(1 for name in VGG19_LAYERS[:deepest] if name.startswith("pool"))


class GatysModule(pl.LightningModule):
    """Neural Style: the image is the parameter. See README "Neural Style (Gatys)" and configs/method/gatys.yaml.

    Loss = content_weight * mean over ``content_layers`` of MSE(features, content features)
         + style_weight * sum over ``style_layers`` of w_l * style loss (``style_statistic``; w_l sum to 1)
         + tv_weight * total variation (``tv_power`` 2 or 1), every term a per-element mean.

    Coarse-to-fine: the image is optimised at each scale (longer side in pixels) in turn, starting from the
    previous scale's result upsampled; ``steps_per_scale`` (a list, its last entry repeated for further scales)
    or an equal split of ``trainer.max_steps`` says how many iterations each scale gets. Adam's moment buffers
    are resized and carried to the next scale; L-BFGS restarts its history (it is tied to the old size).

    Output: ``<run dir>/<output_name>.png`` (``<output_name>_<i>.png`` for several contents), snapshots in
    ``<run dir>/snapshots/step_XXXXX.png`` every ``snapshot_every`` steps; the EMA of the iterates when
    ``ema_decay`` is set.
    """

    def __init__(
        self,
        encoder: Mapping[str, Any],
        content_layers: Sequence[str] = PAPER_CONTENT_LAYERS,
        style_layers: Sequence[str] = PAPER_STYLE_LAYERS,
        style_layer_weights: str | Sequence[float] = "equal",
        style_statistic: str = "gram",
        content_weight: float = 1.0,
        style_weight: float = 1.0e6,
        tv_weight: float = 1.0,
        tv_power: int = 2,
        optimizer: str = "lbfgs",
        lr: float = 1.0,
        betas: Sequence[float] = (0.9, 0.999),
        history_size: int = 100,
        init: str = "content",
        init_seed: int = 0,
        style_blend: Sequence[float] | None = None,
        preserve_colour: str | None = None,
        colour_space: str = "yiq",
        scales: Sequence[int] | None = None,
        scale_start: int | None = None,
        scale_factor: float = math.sqrt(2.0),
        steps_per_scale: Sequence[int] | None = None,
        ema_decay: float | None = None,
        snapshot_every: int | None = 100,
        output_name: str = "stylised",
    ) -> None:
        super().__init__()
        content_layers = _check_layers("method.content_layers", content_layers)
        style_layers = _check_layers("method.style_layers", style_layers)
        try:
            layer_weights = normalise_layer_weights(
                style_layer_weights if isinstance(style_layer_weights, str) else _plain_list(
                    style_layer_weights, "method.style_layer_weights"), style_layers)
        except ValueError as exc:
            raise ConfigError(f"method.style_layer_weights: {exc}") from None
        choices = {
            "style_statistic": (style_statistic, STYLE_STATISTICS),
            "optimizer": (optimizer, OPTIMIZERS),
            "init": (init, INITS),
            "colour_space": (colour_space, COLOUR_SPACES),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"method.{name}={value!r}: choose one of {', '.join(allowed)}")
        if isinstance(preserve_colour, str) and preserve_colour.lower() in ("", "none", "null", "false"):
            preserve_colour = None
        if preserve_colour is not None and preserve_colour not in PRESERVE_COLOUR:
            raise ConfigError(f"method.preserve_colour={preserve_colour!r}: choose null, luminance or histogram")
        for name, value in (("content_weight", content_weight), ("style_weight", style_weight),
                            ("tv_weight", tv_weight)):
            if not value >= 0:
                raise ConfigError(f"method.{name}={value} must be >= 0")
        if not lr > 0:
            raise ConfigError(f"method.lr={lr} must be > 0")
        if tv_power not in (1, 2):
            raise ConfigError(f"method.tv_power={tv_power}: use 2 (squared differences) or 1 (absolute)")
        if ema_decay is not None and not 0 <= ema_decay < 1:
            raise ConfigError(f"method.ema_decay={ema_decay}: use null (off) or a decay in [0, 1), e.g. 0.99")
        if scales is not None:
            scales = [int(s) for s in _plain_list(scales, "method.scales")]
            if not scales or min(scales) < 1:
                raise ConfigError(f"method.scales={scales}: give longer sides in pixels, e.g. [256, 512, 1024]")
        if scale_start is not None and (scale_start < 1 or not scale_factor > 1):
            raise ConfigError(
                f"method.scale_start={scale_start}, method.scale_factor={scale_factor}: need a start >= 1 px "
                "and a factor > 1 (e.g. 128 and 1.41421356)"
            )
        if steps_per_scale is not None:
            steps_per_scale = [int(s) for s in _plain_list(steps_per_scale, "method.steps_per_scale")]
            if not steps_per_scale or min(steps_per_scale) < 1:
                raise ConfigError(f"method.steps_per_scale={steps_per_scale}: give positive iteration counts")
        if style_blend is not None:
            style_blend = [float(w) for w in _plain_list(style_blend, "method.style_blend")]
            if any(w < 0 for w in style_blend) or sum(style_blend) <= 0:
                raise ConfigError(f"method.style_blend={style_blend}: weights must be >= 0 with a positive sum")
        if snapshot_every is not None and snapshot_every < 0:
            raise ConfigError(f"method.snapshot_every={snapshot_every}: use 0 or null to turn snapshots off")

        self.encoder: VGGEncoder = build_encoder(encoder, layers=list(dict.fromkeys(content_layers + style_layers)))
        self.content_layers = content_layers
        self.style_layers = style_layers
        self.layer_weights = layer_weights
        self.save_hyperparameters(
            {
                "encoder": dict(self.encoder.spec),
                "content_layers": content_layers,
                "style_layers": style_layers,
                "style_layer_weights": style_layer_weights if isinstance(style_layer_weights, str)
                else [float(w) for w in style_layer_weights],
                "style_statistic": str(style_statistic),
                "content_weight": float(content_weight),
                "style_weight": float(style_weight),
                "tv_weight": float(tv_weight),
                "tv_power": int(tv_power),
                "optimizer": str(optimizer),
                "lr": float(lr),
                "betas": [float(b) for b in betas],
                "history_size": int(history_size),
                "init": str(init),
                "init_seed": int(init_seed),
                "style_blend": style_blend,
                "preserve_colour": preserve_colour,
                "colour_space": str(colour_space),
                "scales": scales,
                "scale_start": None if scale_start is None else int(scale_start),
                "scale_factor": float(scale_factor),
                "steps_per_scale": steps_per_scale,
                "ema_decay": None if ema_decay is None else float(ema_decay),
                "snapshot_every": int(snapshot_every or 0),
                "output_name": str(output_name),
            }
        )
        self.register_parameter("image", None)  # the image batch, created in setup("fit") from the data
        self.sizes: list[int] = []
        self.boundaries: list[int] = []
        self.scale_index = 0
        self._blend: list[float] = []
        self._scale_ready = -1
        self._content_rgb: Tensor | None = None
        self._content_targets: dict[str, Tensor] = {}
        self._style_targets: dict[str, dict[str, Tensor]] = {}
        self._ema: Tensor | None = None
        self._ema_accum = 1.0
        self._last_good: Tensor | None = None

    # ---- schedule ----------------------------------------------------------------------------------------------
    @property
    def _luminance_only(self) -> bool:
        return self.hparams.preserve_colour == "luminance"

    def scale_sizes(self, long_side: int) -> list[int]:
        """Longer sides of the scales: ``scales``, or ``scale_start`` x ``scale_factor``^k up to ``long_side``."""
        if self.hparams.scales is not None:
            return list(self.hparams.scales)
        start = self.hparams.scale_start
        if start is None:
            return [long_side]
        sizes: list[int] = []
        size = float(start)
        while round(size) < long_side:
            sizes.append(round(size))
            size *= self.hparams.scale_factor
        return sizes + [long_side]

    def step_schedule(self, n_scales: int, max_steps: int | None) -> list[int]:
        """Iterations per scale: ``steps_per_scale`` (last entry repeated) or ``max_steps`` split equally."""
        per_scale = self.hparams.steps_per_scale
        if per_scale is None:
            if max_steps is None or max_steps < 0:
                raise ConfigError(
                    "Neural Style needs a number of iterations: set trainer.max_steps (e.g. trainer.max_steps=500) "
                    "or method.steps_per_scale"
                )
            if max_steps < n_scales:
                raise ConfigError(f"trainer.max_steps={max_steps} is fewer than the {n_scales} scales to optimise")
            steps = [max_steps // n_scales] * n_scales
            steps[-1] += max_steps - sum(steps)
            return steps
        steps = [per_scale[min(i, len(per_scale) - 1)] for i in range(n_scales)]
        if max_steps is not None and 0 <= max_steps < sum(steps):
            raise ConfigError(
                f"trainer.max_steps={max_steps} is fewer than the {sum(steps)} iterations method.steps_per_scale="
                f"{per_scale} asks for over {n_scales} scale(s); raise trainer.max_steps (or -1), or set "
                "method.steps_per_scale=null to split trainer.max_steps across the scales"
            )
        return steps

    # ---- setup: checks and the initial image, before any optimisation -------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        dm = self.trainer.datamodule
        if dm is None or not all(hasattr(dm, a) for a in ("load_content", "load_styles", "style_paths")):
            raise TypeError("method=gatys needs data=pair (a PairDataModule with content and style images)")
        dm.setup("fit")
        n_styles = len(dm.style_paths)
        blend = self.hparams.style_blend
        if blend is None:
            blend = [1.0] * n_styles
        if len(blend) != n_styles:
            raise ConfigError(
                f"method.style_blend={list(blend)} has {len(blend)} weight(s) but data.style names {n_styles} "
                f"style image(s) ({', '.join(p.name for p in dm.style_paths)}); give one weight per style"
            )
        self._blend = [w / sum(blend) for w in blend]
        self.sizes = self.scale_sizes(dm.long_side)
        self._check_sizes(dm)
        steps = self.step_schedule(len(self.sizes), self.trainer.max_steps)
        self.boundaries = [sum(steps[: i + 1]) for i in range(len(steps))]
        log.info("Neural Style: scales %s (longer side, px), iterations per scale %s", self.sizes, steps)
        if self.image is None:
            content, styles = self._images_at(0)
            self.image = nn.Parameter(self._initial_image(content, styles))
            self._reset_ema()

    def _check_sizes(self, dm: Any) -> None:
        """Every scale leaves enough feature positions at the deepest layer, for content and styles: one, or two
        (a 2x2 map) for the mean/std statistic, whose unbiased variance needs at least two positions."""
        style_need = _min_side(self.style_layers) * (2 if self.hparams.style_statistic == "mean_std" else 1)
        need = max(_min_side(self.content_layers), style_need)
        shapes = [("data.content", dm.content.shape[-2:], 1.0)]
        shapes += [(f"data.style ({p.name})", s.shape[-2:], dm.style_scale) for p, s in zip(dm.style_paths, dm.styles)]
        for size in self.sizes:
            for setting, (h, w), factor in shapes:
                side = round(factor * size * min(h, w) / max(h, w))
                if side < need:
                    raise ConfigError(
                        f"{setting} at scale {size} px is only {side} px on its shorter side; the layers used need "
                        f">= {need} px: raise data.long_side / method.scales / data.style_scale"
                    )

    def _images_at(self, index: int) -> tuple[Tensor, list[Tensor]]:
        """Content (N,3,H,W) and styles [(1 or N,3,h,w)] at scale ``index``, in the space that is optimised.

        Luminance-only: greyscale copies of the luminance, the style's luminance matched (mean, std) to each
        content's. Histogram: each style recoloured with each content's colour mean and covariance.
        """
        dm = self.trainer.datamodule
        size = self.sizes[index]
        content_rgb = dm.load_content(size).to(self.device)
        styles = [s.to(self.device).unsqueeze(0) for s in dm.load_styles(size)]
        self._content_rgb = content_rgb
        mode = self.hparams.preserve_colour
        space = self.hparams.colour_space
        if mode == "luminance":
            c_lum = luminance(content_rgb, space)
            styles = [match_luminance(luminance(s, space), c_lum).expand(-1, 3, -1, -1) for s in styles]
            return c_lum.expand(-1, 3, -1, -1), styles
        if mode == "histogram":
            styles = [match_colour(s, content_rgb) for s in styles]
        return content_rgb, styles

    def _initial_image(self, content: Tensor, styles: list[Tensor]) -> Tensor:
        """The first iterate: the content, seeded uniform noise, or the blended styles resized to the content."""
        n, _, h, w = content.shape
        init = self.hparams.init
        if init == "content":
            image = content.clone()
        elif init == "noise":
            generator = torch.Generator().manual_seed(self.hparams.init_seed)
            image = torch.rand(content.shape, generator=generator).to(content)
        else:
            image = sum(
                weight * F.interpolate(style, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
                for weight, style in zip(self._blend, styles)
            ).expand(n, -1, -1, -1).clamp(0, 1)
        image = image[:, :1] if self._luminance_only else image
        return image.contiguous().detach().float().cpu()

    # ---- targets (once per scale) -------------------------------------------------------------------------------
    def _prepare_scale(self) -> None:
        """Load the images of the current scale and compute the content and (blended) style targets once."""
        content, styles = self._images_at(self.scale_index)
        kind = self.hparams.style_statistic
        with torch.no_grad():
            self._content_targets = {
                k: v.detach() for k, v in self.encoder(content, self.content_layers).items()
            }
            blended: dict[str, dict[str, Tensor]] = {}
            for weight, style in zip(self._blend, styles):
                feats = self.encoder(style, self.style_layers)
                for layer in self.style_layers:
                    stats = style_statistics(feats[layer], kind)
                    into = blended.setdefault(layer, {})
                    for key, value in stats.items():
                        into[key] = into[key] + weight * value if key in into else weight * value
            self._style_targets = {layer: prepare_style_target(s, kind) for layer, s in blended.items()}
        self._scale_ready = self.scale_index

    # ---- optimisation --------------------------------------------------------------------------------------------
    def _rgb(self, image: Tensor) -> Tensor:
        """The optimised image as the encoder's RGB input (greyscale luminance replicated to 3 channels)."""
        return image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image

    def losses(self, image: Tensor) -> dict[str, Tensor]:
        """All loss terms for the current iterate, keyed as they are logged."""
        if self._scale_ready != self.scale_index:
            self._prepare_scale()
        feats = self.encoder(self._rgb(image))
        loss_c = torch.stack([content_loss(feats[k], self._content_targets[k]) for k in self.content_layers]).mean()
        kind = self.hparams.style_statistic
        per_layer = {k: style_statistic_loss(feats[k], self._style_targets[k], kind) for k in self.style_layers}
        loss_s = weighted_style_loss(per_layer, self.layer_weights, self.style_layers)
        loss_tv = tv_loss(image, self.hparams.tv_power)
        hp = self.hparams
        total = hp.content_weight * loss_c + hp.style_weight * loss_s + hp.tv_weight * loss_tv
        out = {"loss/total": total, "loss/content": loss_c, "loss/style": loss_s, "loss/tv": loss_tv}
        out.update({f"loss/style/{k}": v for k, v in per_layer.items()})
        return out

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        losses = self.losses(self.image)
        total = losses["loss/total"]
        if not torch.isfinite(total):
            self._stop_non_finite(losses)
        self._last_good = self.image.detach().clone()
        self.log("loss/total", total, prog_bar=True, batch_size=1)
        self.log_dict({k: v for k, v in losses.items() if k != "loss/total"}, batch_size=1)
        self.log("scale", float(self.sizes[self.scale_index]), batch_size=1)
        return total

    def _stop_non_finite(self, losses: Mapping[str, Tensor]) -> None:
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items() if not k.startswith("loss/style/"))
        paths = self._save_output(self._last_good) if self._last_good is not None else []
        kept = f"the last good image is in {', '.join(map(str, paths))}" if paths else "no good image was reached"
        raise NonFiniteLossError(
            f"Neural Style loss is not finite at step {self.global_step} ({values}); {kept}. Lower method.lr "
            "(Adam), method.style_weight or method.tv_weight, or use trainer.precision=32-true."
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self._make_optimizer()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        hp = self.hparams
        if hp.optimizer == "lbfgs":
            # max_iter=1: one Lightning step = one L-BFGS iteration = one closure call (no line search).
            return torch.optim.LBFGS([self.image], lr=hp.lr, max_iter=1, history_size=hp.history_size)
        return torch.optim.Adam([self.image], lr=hp.lr, betas=tuple(hp.betas))

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """One iteration, then Adam's clamp, the EMA and the move to the next scale.

        Done here rather than in ``on_train_batch_end``: callbacks (ModelCheckpoint) run their batch-end hooks
        before the module's, so a checkpoint saved at this step must already hold the state the next step uses.
        """
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        with torch.no_grad():
            if self.hparams.optimizer == "adam":
                self.image.clamp_(0, 1)
            self._update_ema()
        done = self.global_step + 1  # Lightning counts this iteration only after the hook returns
        if self.boundaries[self.scale_index] <= done < self.boundaries[-1]:
            self._advance_scale()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        every = self.hparams.snapshot_every
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
        size = self._content_rgb.shape[-2:]
        upsampled = F.interpolate(previous, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        old = self.trainer.optimizers[0]
        old_state = old.state.get(self.image, {})
        self.image.data = upsampled.contiguous()
        optimizer = self._make_optimizer()
        if self.hparams.optimizer == "adam" and old_state:
            optimizer.state[self.image] = _resize_adam_state(old_state, size)
        self.trainer.optimizers = [optimizer]
        self._reset_ema()
        log.info("Neural Style: scale %d/%d, %s px", self.scale_index + 1, len(self.sizes), tuple(size))

    # ---- EMA and output ------------------------------------------------------------------------------------------
    def _reset_ema(self) -> None:
        self._ema = None if self.hparams.ema_decay is None else torch.zeros_like(self.image.detach())
        self._ema_accum = 1.0

    def _update_ema(self) -> None:
        """Bias-corrected exponential moving average of the iterates (as crowsonkb's style-transfer-pytorch)."""
        if self._ema is None:
            return
        decay = self.hparams.ema_decay
        self._ema.mul_(decay).add_(self.image.detach(), alpha=1 - decay)
        self._ema_accum *= decay

    def _output_opt_space(self) -> Tensor:
        """The current result in the optimised space: the EMA when enabled (and updated), else the iterate."""
        image = self.image.detach()
        if self._ema is not None and self._ema_accum < 1.0:
            image = self._ema / (1.0 - self._ema_accum)
        return image

    def output(self, image: Tensor | None = None) -> Tensor:
        """The result as RGB in [0, 1] (luminance-only: the result's luminance with the content's chroma)."""
        image = self._output_opt_space() if image is None else image
        if image.shape[1] == 1:
            content = self._content_rgb
            if content is None or content.shape[-2:] != image.shape[-2:]:
                content = self.trainer.datamodule.load_content(max(image.shape[-2:])).to(image.device)
            return with_chroma(image, content, self.hparams.colour_space)
        return image.clamp(0, 1)

    def _save_output(self, image: Tensor | None = None) -> list[Path]:
        """Write the result(s) into the run directory; returns the paths."""
        result = self.output(image).float().cpu()
        root = Path(self.trainer.default_root_dir)
        name = self.hparams.output_name
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
        paths = self._save_output()
        log.info("Neural Style result written to %s", ", ".join(map(str, paths)))
        grid = make_grid(self.output().float().cpu(), nrow=8, padding=2, pad_value=1.0)
        for logger in self.loggers:
            log_image(logger, "stylised", grid, paths[0], self.global_step)

    # ---- checkpoints: the image, the scale and the EMA; the encoder is rebuilt from hparams["encoder"] -----------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder.")}
        checkpoint["gatys"] = {
            "scale_index": self.scale_index,
            "ema": None if self._ema is None else self._ema.detach().cpu(),
            "ema_accum": self._ema_accum,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("gatys", {})
        image = checkpoint["state_dict"].get("image")
        if image is None or self.image is None:
            return
        self.scale_index = int(saved.get("scale_index", 0))
        self.image.data = torch.empty_like(image, device=self.image.device)
        self._ema = None if saved.get("ema") is None else saved["ema"].to(self.image.device)
        self._ema_accum = float(saved.get("ema_accum", 1.0))
        self._scale_ready = -1

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Checkpoints hold no encoder weights (rebuilt from the encoder config): fill them in before loading."""
        full = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        full.update(state_dict)
        return super().load_state_dict(full, strict=strict, assign=assign)


def _resize_adam_state(state: Mapping[str, Any], size: Sequence[int]) -> dict[str, Any]:
    """Adam's moments resized to a new image size (first moment bicubic, second bilinear and kept >= 0)."""
    resized = dict(state)
    for key, mode in (("exp_avg", "bicubic"), ("exp_avg_sq", "bilinear"), ("max_exp_avg_sq", "bilinear")):
        if key in state:
            value = F.interpolate(state[key], size=tuple(size), mode=mode, align_corners=False)
            resized[key] = value if key == "exp_avg" else value.clamp_min(0)
    return resized
