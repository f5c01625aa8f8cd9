"""AdaIN inference as an object: a loaded encoder and decoder on a device, with the speed options, around
:func:`~styletransfer.methods.adain.model.stylise`."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from styletransfer.methods.adain.checkpoint import EncoderArg, load_model
from styletransfer.methods.adain.model import BOTTLENECK, AdaINDecoder, encode_styles, stylise
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.runtime.errors import ConfigError

log = logging.getLogger(__name__)


def as_batch(image: Tensor, name: str) -> Tensor:
    """An RGB image (3, H, W) or batch (N, 3, H, W) as a batch; anything else names ``name`` in the error."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[1] != 3:
        raise ConfigError(f"{name} must be RGB shaped (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")
    return image


class Styliser(nn.Module):
    """A frozen encoder (to relu4_1) and decoder with the paper's test-time controls (see ``stylise``).

    ``channels_last`` and ``bf16`` (autocast; AdaIN statistics stay float32) speed up GPUs with tensor cores.
    """

    def __init__(self, encoder: VGGEncoder, decoder: AdaINDecoder, source: str = "", kind: str = "",
                 channels_last: bool = False, bf16: bool = False) -> None:
        super().__init__()
        if BOTTLENECK not in encoder.layers:
            raise ConfigError(f"the encoder must compute {BOTTLENECK}, it has {list(encoder.layers)}")
        self.encoder = encoder
        self.decoder = decoder.eval().requires_grad_(False)
        self.source = source
        self.kind = kind
        self.channels_last = channels_last
        self.bf16 = bf16
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, encoder: EncoderArg = None, device: str | torch.device = "cpu",
                        channels_last: bool = False, bf16: bool = False) -> Styliser:
        """Load from a Lightning .ckpt, an exported decoder.pth or the release's decoder.pth (see ``load_model``)."""
        enc, dec, kind = load_model(path, encoder)
        if enc.spec.get("weights") == "random" or enc.spec.get("fallback_used"):
            log.warning("%s was trained behind a RANDOM VGG encoder (a test or offline demo run): its results show "
                        "that the pipeline works, not what AdaIN looks like", path)
        return cls(enc, dec, source=str(path), kind=kind, channels_last=channels_last, bf16=bf16).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def encoder_spec(self) -> dict:
        return dict(self.encoder.spec)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _images(self, images: Tensor, name: str) -> Tensor:
        return as_batch(images, name).to(self.device, torch.float32)

    @torch.no_grad()
    def style_features(self, styles: Sequence[Tensor]) -> list[Tensor]:
        """relu4_1 features of each style (batch 1), to pass as ``stylise(..., style_features=...)`` across calls."""
        with self._autocast():
            return encode_styles(self.encoder, [self._images(s, f"style {k}") for k, s in enumerate(styles)],
                                 channels_last=self.channels_last)

    @torch.no_grad()
    def stylise(self, content: Tensor, styles: Tensor | Sequence[Tensor] = (), **controls) -> Tensor:
        """Stylise ``content`` ((3, H, W) or (N, 3, H, W), RGB in [0, 1]) with one or more styles.

        ``controls`` are those of :func:`~styletransfer.methods.adain.model.stylise` (weights, alpha,
        preserve_colour, masks, output_size, style_features). Returns float32 (N, 3, H, W) in [0, 1].
        """
        if isinstance(styles, Tensor):
            styles = [styles] if styles.dim() == 3 else list(styles)
        styles = [self._images(s, f"style {k}") for k, s in enumerate(styles)]
        with self._autocast():
            return stylise(self.encoder, self.decoder, self._images(content, "content"), styles,
                           channels_last=self.channels_last, **controls)
