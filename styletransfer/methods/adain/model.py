"""The AdaIN model: the AdaIN operation, the decoder (a mirror of VGG-19 up to relu4_1) and :func:`stylise`, the one
inference function that validation, :class:`~styletransfer.methods.adain.styliser.Styliser`, ``evaluate.py`` and
the sweep objective all call."""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletransfer.nn.colour import match_colour
from styletransfer.nn.encoders import FeatureEncoder
from styletransfer.nn.reconstruction import MirrorDecoder, decoder_plan
from styletransfer.nn.stats import STD_EPS, mean_std
from styletransfer.protocol.controls import PLAIN, Controls
from styletransfer.runtime.errors import ConfigError

#: The encoder layer the decoder inverts: AdaIN mixes statistics here and the content loss is measured here (the
#: paper's VGG relu4_1; behind a torchvision backbone, ``method.bottleneck`` names its node).
BOTTLENECK = "relu4_1"


class AdaINDecoder(MirrorDecoder):
    """Decoder of Huang & Belongie (2017): reflection padding, no normalisation, nearest upsampling.

    The module indices equal those of the original release's ``decoder.pth`` (conv weights at 1, 5, 8, ..., 28),
    so that file loads with ``load_state_dict``. ``forward`` decodes relu4_1 features (N, 512, h, w) and upsamples to
    the exact sizes that lead to ``output_size``, so the output matches the input image for any size, not only
    multiples of 8 (without it, 8h x 8w as in the release).
    """

    def __init__(self) -> None:
        super().__init__(decoder_plan("relu4_1"))  # VGG-19's convolutions to relu4_1, mirrored: the paper's decoder


#: A style's relu4_1 channel statistics (mean, std), each (1 or N, C, 1, 1) float32: all AdaIN needs of a style.
StyleStats = tuple[Tensor, Tensor]


def _style_stats(style: Tensor | StyleStats, eps: float = STD_EPS) -> StyleStats:
    """``style`` as (mean, std): features are reduced with ``mean_std``, precomputed statistics pass through."""
    return mean_std(style, eps) if isinstance(style, Tensor) else style


def adain(content: Tensor, style: Tensor | StyleStats, eps: float = STD_EPS) -> Tensor:
    """Adaptive instance normalisation: give ``content`` the channel mean and std of ``style``.

    AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y), statistics per sample and channel.
    ``style`` is features with batch size 1 (broadcast over the content batch) or the content's batch size, or their
    precomputed ``(mean, std)`` (see :func:`style_stats`).
    """
    s_mean, s_std = _style_stats(style, eps)
    if content.shape[1] != s_mean.shape[1]:
        raise ValueError(f"content has {content.shape[1]} channels, style has {s_mean.shape[1]}")
    c_mean, c_std = mean_std(content, eps)
    out = (content.float() - c_mean) / c_std * s_std + s_mean
    return out.to(content.dtype)


def masked_adain(content: Tensor, styles: Sequence[Tensor | StyleStats], masks: Tensor) -> Tensor:
    """Spatial control: AdaIN of each mask's region of ``content`` with the matching style's statistics.

    ``content`` (N, C, h, w), ``styles`` K features (N or 1, C, h', w') or their ``(mean, std)``, ``masks`` binary
    (K, N, 1, h, w). Statistics of the content are taken over the region only (unbiased variance plus ``STD_EPS``,
    as ``mean_std``); overlapping regions are averaged, positions in no region keep the content features. Computed
    for the whole batch at once (no per-image loop, no host synchronisation).
    """
    x = content.float()
    out = torch.zeros_like(x)
    cover = torch.zeros_like(masks[0])
    for style, mask in zip(styles, masks):
        s_mean, s_std = _style_stats(style)
        count = mask.sum(dim=(2, 3), keepdim=True)  # (N, 1, 1, 1) positions in the region
        used = mask * (count >= 2)  # a region of fewer than 2 positions has no std: leave it out
        mean = (x * mask).sum(dim=(2, 3), keepdim=True) / count.clamp_min(1)
        var = ((x - mean) * mask).square().sum(dim=(2, 3), keepdim=True) / (count - 1).clamp_min(1)
        out += ((x - mean) / (var + STD_EPS).sqrt() * s_std + s_mean) * used
        cover += used
    return torch.where(cover > 0, out / cover.clamp_min(1), x).to(content.dtype)


def region_masks(masks: Sequence[Tensor], n: int, size: tuple[int, int], device: torch.device) -> Tensor:
    """Masks (any size, values in [0, 1]) -> binary (K, N, 1, h, w) at feature resolution (threshold 0.5)."""
    out = []
    for k, mask in enumerate(masks):
        mask = mask.float()
        if mask.dim() == 2:
            mask = mask[None, None]
        elif mask.dim() == 3:
            mask = mask[:1][None] if mask.shape[0] in (1, 3) else mask[:, None]
        if mask.dim() != 4 or mask.shape[1] not in (1, 3):
            raise ConfigError(f"mask {k} must be (H, W), (1, H, W) or (N, 1, H, W), got {tuple(mask.shape)}")
        mask = mask[:, :1]
        if mask.shape[0] not in (1, n):
            raise ConfigError(f"mask {k} has batch size {mask.shape[0]}, content has {n}")
        resized = F.interpolate(mask.to(device), size=size, mode="bilinear", align_corners=False) >= 0.5
        out.append(resized.expand(n, 1, *size).float())
    return torch.stack(out)


def encode(
    encoder: FeatureEncoder, images: Tensor, channels_last: bool = False, bottleneck: str = BOTTLENECK
) -> Tensor:
    """Bottleneck features (default relu4_1) of RGB images in [0, 1] (N, 3, H, W)."""
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return encoder(images, [bottleneck])[bottleneck]


def encode_styles(
    encoder: FeatureEncoder,
    styles: Sequence[Tensor],
    content: Tensor | None = None,
    channels_last: bool = False,
    bottleneck: str = BOTTLENECK,
) -> list[Tensor]:
    """Bottleneck features of each style; with ``content``, of each style recoloured to each content image first
    (colour preservation: the style's colour mean and covariance matched to the content's)."""
    if content is not None:
        styles = [match_colour(style, content.to(style.dtype)) for style in styles]
    return [encode(encoder, style, channels_last, bottleneck) for style in styles]


def style_stats(features: Sequence[Tensor]) -> list[StyleStats]:
    """Bottleneck (mean, std) of each style's features (from ``encode_styles``): all AdaIN needs of a style, so they
    are what a caller caches across contents (a few KB instead of a feature map)."""
    return [mean_std(feature) for feature in features]


def mix_stats(stats: Sequence[StyleStats], weights: Sequence[float]) -> StyleStats:
    """The statistics whose AdaIN equals sum_k w_k AdaIN(c, s_k): AdaIN is affine in the style's mean and std
    (sigma_k * c_hat + mu_k), so interpolating K styles costs one AdaIN, not K."""
    mean = functools.reduce(operator.add, [w * m for w, (m, _) in zip(weights, stats)])  # left to right, as sum()
    std = functools.reduce(operator.add, [w * s for w, (_, s) in zip(weights, stats)])
    return mean, std


def decode_clamped(
    decoder: nn.Module,
    target: Tensor,
    c_feat: Tensor,
    alpha: float,
    output_size: tuple[int, int],
    upsample: Callable[[Tensor, tuple[int, int] | None], Tensor] | None = None,
) -> Tensor:
    """t = alpha * target + (1 - alpha) * f(c) (float32), decoded in the features' dtype, as float32 in [0, 1]
    (the cast and the clamp share one pass); ``upsample`` replaces the decoder's (a tiled window's: see
    ``nn.upsampling.RegionUpsampling``)."""
    if alpha != 1.0:
        target = float(alpha) * target.float() + (1.0 - float(alpha)) * c_feat.float()
    extra = {} if upsample is None else {"upsample": upsample}
    return decoder(target.to(c_feat.dtype), output_size=output_size, **extra).float().clamp_(0.0, 1.0)


def stylise_core(
    encoder: FeatureEncoder,
    decoder: nn.Module,
    content: Tensor,
    stats: StyleStats | None,
    alpha: float,
    output_size: tuple[int, int],
    channels_last: bool = False,
    bottleneck: str = BOTTLENECK,
) -> Tensor:
    """The common path as one function (what ``Styliser(compile=...)`` compiles): encode, AdaIN with the (mixed)
    style statistics ``stats`` (None: decode the content features), alpha trade-off, decode, clamp."""
    c_feat = encode(encoder, content, channels_last, bottleneck)
    if stats is None:
        return decode_clamped(decoder, c_feat, c_feat, 1.0, output_size)
    return decode_clamped(decoder, adain(c_feat.float(), stats), c_feat, alpha, output_size)


#: What ``stylise`` runs for the no-mask path: ``stylise_core`` or a compiled version of it.
Core = Callable[[FeatureEncoder, nn.Module, Tensor, StyleStats | None, float, tuple[int, int], bool, str], Tensor]


def _stats_for(
    encoder: FeatureEncoder,
    content: Tensor | None,
    styles: Sequence[Tensor],
    controls: Controls,
    channels_last: bool,
    bottleneck: str = BOTTLENECK,
) -> list[StyleStats]:
    """Each style's statistics: recomputed per content with colour preservation, else the cached ones if given."""
    cached = controls.cached_codes
    if cached is not None:
        return cached
    return style_stats(
        encode_styles(encoder, styles, content if controls.preserve_colour else None, channels_last, bottleneck)
    )


@torch.no_grad()
def stylise(
    encoder: FeatureEncoder,
    decoder: nn.Module,
    content: Tensor,
    styles: Sequence[Tensor] = (),
    controls: Controls = PLAIN,
    *,
    style_features: Sequence[Tensor] | None = None,
    channels_last: bool = False,
    core: Core | None = None,
    bottleneck: str = BOTTLENECK,
) -> Tensor:
    """AdaIN inference: encode, AdaIN, trade-off, decode. Returns float32 (N, 3, H, W) clamped to [0, 1].

    ``content`` (N, 3, H, W) and each style (N or 1, 3, h, w) are RGB in [0, 1] on the models' device. The
    ``controls`` (:class:`~styletransfer.protocol.controls.Controls`):

    - ``alpha`` in [0, 1]: t = alpha * AdaIN(f(c), f(s)) + (1 - alpha) * f(c); alpha = 0 gives decode(encode(c));
    - several ``styles`` with ``weights`` (one per style, summing to 1): t = sum_k w_k AdaIN(f(c), f(s_k));
    - ``preserve_colour``: each style's colour mean and covariance are matched to the content first;
    - ``masks`` (one per style, (H, W) in [0, 1], any size): style k only where mask k >= 0.5, at feature
      resolution; positions in no mask keep the content. Not combined with ``weights``;
    - ``output_size`` (H, W): default the content's size;
    - ``style_codes``: precomputed ``style_stats(encode_styles(encoder, styles))`` to reuse across calls (or, the
      older way, ``style_features``: ``encode_styles(encoder, styles)``); both are ignored with colour preservation,
      which depends on the content.

    ``core``: what runs the no-mask path (default ``stylise_core``; ``Styliser`` passes a compiled one);
    ``bottleneck``: the encoder layer the decoder inverts (default relu4_1).
    Runs under whatever autocast the caller set; the AdaIN statistics are float32 in any case.
    """
    if style_features is not None and controls.style_codes is None:
        controls = dataclasses.replace(controls, style_codes=[mean_std(features) for features in style_features])
    weights = controls.checked_weights(styles)
    size = controls.size(content)
    core = stylise_core if core is None else core
    alpha = float(controls.alpha)
    if alpha == 0.0:
        return core(encoder, decoder, content, None, 0.0, size, channels_last, bottleneck)
    stats = _stats_for(encoder, content, styles, controls, channels_last, bottleneck)
    if weights is not None:  # no masks (the weights are None exactly when masks are given)
        mixed = mix_stats(stats, weights)
        return core(encoder, decoder, content, mixed, alpha, size, channels_last, bottleneck)
    c_feat = encode(encoder, content, channels_last, bottleneck)
    region = region_masks(controls.masks or [], content.shape[0], (c_feat.shape[-2], c_feat.shape[-1]), c_feat.device)
    return decode_clamped(decoder, masked_adain(c_feat, stats, region), c_feat, alpha, size)
