"""Fast neural style (Johnson et al. 2016; Dumoulin et al. 2017 for several styles): train the image
transformation network of pytorch/examples ``fast_neural_style`` on content images against fixed style images."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from styletransfer.data.images import load_rgb, pil_to_tensor
from styletransfer.engine.training_module import ExportingModule, check_settings, log_training_step
from styletransfer.methods.fast.checkpoint import save_network
from styletransfer.methods.fast.losses import CONTENT_LAYER, STYLE_LAYERS, PerceptualLoss
from styletransfer.methods.fast.network import EXAMPLES_BLOCKS, TransformerNet, channels, check_blocks
from styletransfer.methods.fast.styler import FastStyler
from styletransfer.nn.compiling import CUDA_GRAPH_MODES, call_graph_safe, compile_mode
from styletransfer.nn.encoder import build_encoder
from styletransfer.nn.padding import use_fast_reflection_padding
from styletransfer.protocol.candidate import Candidate, model_candidate
from styletransfer.protocol.controls import Controls
from styletransfer.runtime.errors import ConfigError, ImageLoadError

log = logging.getLogger(__name__)

#: The smallest style side the loss network reads (relu4_3 is at stride 8).
MIN_STYLE_SIDE = 16


def style_names(styles: Sequence[str]) -> list[str]:
    """The names a model's styles are chosen by: their file names without the suffix (unique)."""
    names = [Path(str(style)).stem for style in styles]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"method.styles: two style files are both called {repeated[0]}: rename one")
    return names


def load_style(path: str, size: int | None) -> Tensor:
    """A style image (1, 3, H, W) in [0, 1]: its own size, or ``size`` x ``size`` (the examples' ``--style-size``)."""
    try:
        image = load_rgb(path)
    except ImageLoadError as exc:
        raise ConfigError(f"method.styles: {exc}") from None
    if size is not None:
        image = image.resize((int(size), int(size)), resample=3)  # PIL bicubic, as the examples' ANTIALIAS is near
    if min(image.size) < MIN_STYLE_SIDE:
        raise ConfigError(
            f"method.styles: {path} is {image.size[0]}x{image.size[1]} px; the loss network needs at least "
            f"{MIN_STYLE_SIDE} px on each side (give a larger image, or method.style_size)"
        )
    return pil_to_tensor(image)[None]


class FastStyleModule(ExportingModule):
    """Trains a ``TransformerNet`` for ``styles`` (one file: Johnson et al.; several: conditional instance
    normalisation, each batch trained for one style in turn) with the perceptual loss of ``losses.py`` behind a
    frozen VGG-16. Defaults are pytorch/examples ``fast_neural_style``'s (content weight 1e5, style weight 1e10,
    Adam at 1e-3). The network's input is content in [0, 255]; batches come in [0, 1] and are scaled here.

    ``channels_last`` runs network and loss network in that memory format, ``compile`` torch.compiles the whole loss
    (network, VGG-16, Gram matrices: one forward and one backward graph); with either, reflection pads keep the
    memory format (``nn.padding``; same values). Off, the modules and the maths are the examples' exactly.

    ``width`` and ``residual_blocks`` slim the network for slow machines (``network.py``; 1.0 and 5: the examples'
    layout, bit for bit); both are recorded in the checkpoints and in ``network.pth``."""

    def __init__(
        self,
        encoder: Mapping[str, Any],
        styles: Sequence[str],
        style_size: int | None = None,
        content_weight: float = 1e5,
        style_weight: float = 1e10,
        lr: float = 1e-3,
        export_network: bool = True,
        tv_weight: float = 0.0,
        channels_last: bool = False,
        compile: bool | str = False,
        width: float = 1.0,
        residual_blocks: int = EXAMPLES_BLOCKS,
    ) -> None:
        super().__init__()
        if isinstance(styles, str) or not styles:
            raise ConfigError("method.styles: give a list of style images, e.g. method.styles=[starry.jpg]")
        styles = [str(style) for style in styles]
        self.names = style_names(styles)
        check_settings(
            {"content_weight": content_weight, "style_weight": style_weight, "lr": lr, "tv_weight": tv_weight}
        )
        try:
            channels(width), check_blocks(residual_blocks)
        except ValueError as exc:
            raise ConfigError(f"method.{exc}") from None
        images = [load_style(style, style_size) for style in styles]
        encoder_module = build_encoder(encoder, [CONTENT_LAYER, *STYLE_LAYERS])
        mode = compile_mode(compile)
        self.save_hyperparameters(
            {
                "encoder": dict(encoder_module.spec),
                "styles": styles,
                "style_size": None if style_size is None else int(style_size),
                "content_weight": float(content_weight),
                "style_weight": float(style_weight),
                "lr": float(lr),
                "export_network": bool(export_network),
                "tv_weight": float(tv_weight),
                "channels_last": bool(channels_last),
                "compile": mode or False,
                "width": float(width),
                "residual_blocks": int(residual_blocks),
            }
        )
        self.network = TransformerNet(len(styles), width, residual_blocks)
        self.loss = PerceptualLoss(encoder_module, images, content_weight, style_weight, tv_weight=tv_weight)
        speed = bool(channels_last) or mode is not None
        use_fast_reflection_padding(self.network, speed)  # VGG-16 pads with zeros: nothing to swap there
        self._compiled_terms: Any = None

    def setup(self, stage: str) -> None:
        if self.hparams["channels_last"]:
            self.to(memory_format=torch.channels_last)
        mode = compile_mode(self.hparams["compile"])
        if mode is not None and self._compiled_terms is None:
            self._compiled_terms = torch.compile(self._loss_terms, mode=mode)

    @property
    def styles(self) -> int:
        return self.network.styles

    def _style_vector(self, index: int) -> Tensor | None:
        if self.styles == 1:
            return None
        return F.one_hot(torch.tensor(index), self.styles).to(self.device, torch.float32)

    def trained_candidate(self, label: str = "trial") -> Candidate:
        """The network in memory as an evaluation candidate (a copy, so training's parameters stay as they are): what
        a sweep's objective scores on a benchmark after training. A network of several styles is scored on its
        first style (the pair's style is not an input)."""
        styler = FastStyler(copy.deepcopy(self.network), self.names, dict(self.loss.encoder.spec), kind="module")
        candidate = model_candidate(styler, label)
        if self.styles == 1:
            return candidate
        first = [1.0] + [0.0] * (self.styles - 1)
        return Candidate(
            label,
            lambda content, style, alpha: styler.stylise(content, controls=Controls(weights=first)),
            styler.describe(),
            supports_alpha=False,
        )

    def losses(self, content: Tensor, style: int = 0) -> dict[str, Tensor]:
        """The loss terms for a content batch in [0, 1] and style number ``style``: compiled (``method.compile``,
        after ``setup``) while gradients are on, else eager."""
        if self.hparams["channels_last"]:
            content = content.contiguous(memory_format=torch.channels_last)
        if self._compiled_terms is None or not torch.is_grad_enabled():
            return self._loss_terms(content, style)
        if compile_mode(self.hparams["compile"]) in CUDA_GRAPH_MODES:  # the logged values are read steps later
            return call_graph_safe(self._compiled_terms, content, style)
        return self._compiled_terms(content, style)

    def _loss_terms(self, content: Tensor, style: int) -> dict[str, Tensor]:
        """``losses`` itself, eager."""
        x = content.mul(255.0)
        y = self.network(x, self._style_vector(style))
        return dict(self.loss(y, x, style))

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        style = self.global_step % self.styles  # one style per batch, in turn
        losses = self.losses(batch["content"], style)
        log_training_step(self, losses, batch["content"].shape[0], lr=False)
        return losses["loss/total"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.network.parameters(), lr=self.hparams["lr"], fused=self.device.type == "cuda")

    def export(self) -> None:
        """Write ``<run>/checkpoints/network.pth``: the network, its style names and the loss's encoder."""
        path = self.export_path(self.hparams["export_network"], "network.pth")
        if path is None:
            return
        save_network(self.network, self.names, self.loss.encoder.spec, path, step=self.global_step)
