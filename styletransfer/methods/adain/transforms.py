"""Feature transforms at the bottleneck (the ``transform`` config group): AdaIN, the default, and AdaMean, AdaStd and
EFDM from the EFDM paper's code (Zhang et al., CVPR 2022; YBZh/EFDM ``ArbitraryStyleTransfer/function.py`` and
``net.py``), each with the style loss that trains it.

A transform maps the content's relu4_1 features and the style's *code* to the target the decoder inverts:

* ``adain``: sigma_s (c - mu_c) / sigma_c + mu_s; code (mu_s, sigma_s); loss: MSE of means plus MSE of stds;
* ``adamean``: c - mu_c + mu_s; code as AdaIN's; loss: MSE of means;
* ``adastd``: c / sigma_c * sigma_s; code as AdaIN's; loss: MSE of stds;
* ``efdm``: exact histogram matching: each channel takes the style's sorted values at the content's ranks, with the
  identity's gradient (straight-through: c + (target - c).detach()); code: the style's sorted values per channel;
  loss: MSE between a layer's features and the target's sorted values gathered at their ranks.
* ``wct``: whitening and colouring at one level (Li et al., NeurIPS 2017; sunshineatnoon/PytorchWCT ``util.py``
  ``whiten_and_color``), in float64: Cs^1/2 Cc^-1/2 (c - mu_c) + mu_s, with Cc the content's unbiased covariance
  plus the identity, Cs the style's, and each power over the eigen-components of at least 1e-5; code: the style's
  (channel mean, covariance); loss (our choice: the paper trains reconstruction decoders only): MSE of channel means
  plus MSE of covariance matrices per layer.

Statistics are ``nn.stats.mean_std``'s (unbiased variance plus 1e-5, as ``calc_mean_std``). Where the two maps differ
in size (the authors crop both to one size), EFDM resamples the style's sorted values to the content's count by
linear interpolation of the sorted sequence (the quantile function), which is the identity at equal sizes.
Interpolating styles blends codes with the weights: statistics for AdaIN and its ablations, sorted values (each
resampled to the content's count) for EFDM, means and covariances for WCT. Masks give each region the transform
computed on its own features (``masked_apply``). WCT decomposes with ``torch.linalg.eigh``
(the authors' ``torch.svd`` of the same symmetric matrices is 10 times slower on a CPU): the results agree to float64
rounding, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletransfer.methods.adain.model import BOTTLENECK, decode_clamped, encode, encode_styles, region_masks
from styletransfer.nn.encoders import FeatureEncoder
from styletransfer.nn.losses import mean_std_loss
from styletransfer.nn.stats import mean_std
from styletransfer.nn.whitening import covariance, whiten_colour
from styletransfer.protocol.controls import PLAIN, Controls
from styletransfer.runtime.errors import ConfigError, MaskRegionError

#: The transforms, in the order ``transform=`` lists them; the first is the default.
TRANSFORMS = ("adain", "adamean", "adastd", "efdm", "wct")
#: Transforms that cannot apply to a region of fewer than 2 positions (a one-value sort, no covariance): refused.
#: The statistics ones leave such a region out, as masked AdaIN does.
REGION_TRANSFORMS = ("efdm", "wct")
#: A style's code: (mean, std) each (N, C, 1, 1), EFDM's (sorted values (N, C, n),), or WCT's (mean (N, C, 1, 1),
#: covariance (N, C, C)) in float64.
Code = tuple[Tensor, ...]


def check_transform(name: str, setting: str = "method.transform") -> str:
    """``name`` if it is a transform, else a ConfigError naming ``setting`` and listing them."""
    if name not in TRANSFORMS:
        raise ConfigError(f"{setting}={name!r}: choose one of {', '.join(TRANSFORMS)}")
    return name


def sorted_values(features: Tensor, count: int | None = None) -> Tensor:
    """Each channel's values sorted, (N, C, n) float32; resampled to ``count`` values (linear interpolation of the
    sorted sequence) when given and different."""
    values = torch.sort(features.float().flatten(2), dim=-1).values
    if count is None or count == values.shape[-1]:
        return values
    return F.interpolate(values, size=count, mode="linear", align_corners=True)


def efdm_ranks(flat: Tensor) -> Tensor:
    """Each value's rank along the last axis, ties in position order (a stable sort), so that every device, the
    tiled path and ONNX agree (ReLU features tie at 0). The ONNX exporter has no stable sort: exported, this is an
    ordinary sort, which it writes as TopK, whose specification orders ties by lower index: the same ranks."""
    order = flat.argsort(-1) if torch.compiler.is_exporting() else flat.argsort(dim=-1, stable=True)
    return order.argsort(-1)


def style_code(transform: str, features: Tensor) -> Code:
    """The code of style features (N, C, h, w) for ``transform``."""
    if transform == "efdm":
        return (sorted_values(features),)
    return covariance(features) if transform == "wct" else mean_std(features)


def blend(codes: Sequence[Code], weights: Sequence[float], count: int) -> Code:
    """Codes blended with ``weights`` (EFDM's sorted values resampled to ``count`` first)."""
    if len(codes[0]) == 1:
        codes = [
            (
                F.interpolate(code[0], size=count, mode="linear", align_corners=True)
                if code[0].shape[-1] != count
                else code[0],
            )
            for code in codes
        ]
    return tuple(
        sum((w * code[i] for w, code in zip(weights, codes)), torch.zeros_like(codes[0][i]))
        for i in range(len(codes[0]))
    )


def apply(transform: str, content: Tensor, code: Code) -> Tensor:
    """The target for content features (N, C, H, W) and a style ``code`` (batch 1 or N), in the content's dtype."""
    if transform == "efdm":
        flat = content.float().flatten(2)
        values = code[0]
        if values.shape[-1] != flat.shape[-1]:
            values = F.interpolate(values, size=flat.shape[-1], mode="linear", align_corners=True)
        ranks = efdm_ranks(flat)
        target = values.expand(flat.shape[0], -1, -1).gather(-1, ranks)
        return (flat + (target - flat.detach())).view_as(content).to(content.dtype)
    if transform == "wct":
        return whiten_colour(content, (code[0], code[1])).to(content.dtype)
    return with_stats(transform, content.float(), mean_std(content), (code[0], code[1])).to(content.dtype)


def masked_apply(transform: str, content: Tensor, codes: Sequence[Code], masks: Tensor) -> Tensor:
    """Spatial control: mask k's region of ``content`` (N, C, h, w) gets ``transform`` with style code k, computed on
    that region's features alone (its own statistics, ranks or covariance), as masked AdaIN does.

    ``codes``: one per mask (batch 1 or N); ``masks``: binary (K, N, 1, h, w) (``region_masks``). Overlapping
    regions are averaged; positions in no region keep the content. A region of fewer than 2 positions is left out
    for the statistics transforms (as AdaIN's) and refused with a :class:`MaskRegionError` for EFDM and WCT.
    """
    x = content.float()
    out = torch.zeros_like(x)
    cover = torch.zeros_like(masks[0])
    counts = masks.flatten(2).sum(-1).long().tolist()  # (K, N): one host transfer, checked before any work
    for k, row in enumerate(counts):
        for i, count in enumerate(row):
            if count < 2 and transform in REGION_TRANSFORMS:
                raise MaskRegionError(k, _too_small(transform, count, x.shape, i))
    for k, (code, mask) in enumerate(zip(codes, masks)):
        for i in range(x.shape[0]):
            if counts[k][i] < 2:
                continue
            region = mask[i, 0].bool()
            own = tuple(part[min(i, part.shape[0] - 1)][None] for part in code)
            target = apply(transform, x[i][:, region][None, :, :, None], own)
            out[i][:, region] += target[0, :, :, 0]
            cover[i][:, region] += 1.0
    return torch.where(cover > 0, out / cover.clamp_min(1), x).to(content.dtype)


def _too_small(transform: str, count: int, shape: torch.Size, image: int) -> str:
    """Why a region of ``count`` positions cannot take ``transform``, and the fixes."""
    which = f" of content image {image}" if shape[0] > 1 else ""
    need = "one value has no distribution to match" if transform == "efdm" else "one position has no covariance"
    return (
        f"its region covers {count} position(s) of the {shape[2]}x{shape[3]} relu4_1 map{which} (masks are resized "
        f"to it and thresholded at 0.5), and {transform} needs at least 2 ({need}): widen that region, stylise a "
        "larger content, or leave that style and its mask out"
    )


def with_stats(transform: str, x: Tensor, content: tuple[Tensor, Tensor], style: tuple[Tensor, Tensor]) -> Tensor:
    """A statistics transform (adain, adamean, adastd) of float32 features ``x`` given the content's (mean, std) and
    the style's: tiling passes the whole image's content statistics, gathered window by window."""
    (c_mean, c_std), (s_mean, s_std) = content, style
    if transform == "adamean":
        return x - c_mean + s_mean
    if transform == "adastd":
        return x / c_std * s_std
    return (x - c_mean) / c_std * s_std + s_mean


def efdm_loss(features: Tensor, target: Tensor) -> Tensor:
    """EFDM's style loss at one layer: MSE between ``features`` and ``target``'s sorted values gathered at the ranks
    of ``features`` (``target`` resampled to the features' count when the sizes differ)."""
    flat = features.float().flatten(2)
    values = sorted_values(target, flat.shape[-1])
    ranks = flat.argsort(-1).argsort(-1)
    return F.mse_loss(flat, values.gather(-1, ranks))


def covariance_loss(features: Tensor, target: Tensor) -> Tensor:
    """The style loss that trains WCT at one layer (our choice): MSE of channel means plus MSE of covariances."""
    (f_mean, f_cov), (t_mean, t_cov) = covariance(features, torch.float32), covariance(target, torch.float32)
    return F.mse_loss(f_mean, t_mean) + F.mse_loss(f_cov, t_cov)


def style_loss(
    transform: str, features: Mapping[str, Tensor], targets: Mapping[str, Tensor], layers: Sequence[str]
) -> tuple[Tensor, dict[str, Tensor]]:
    """The style loss that trains ``transform``, summed over ``layers``; returns (total, per-layer losses)."""

    def one(feature: Tensor, target: Tensor) -> Tensor:
        if transform == "efdm":
            return efdm_loss(feature, target)
        if transform == "wct":
            return covariance_loss(feature, target)
        if transform == "adain":
            return mean_std_loss(feature, target)
        (f_mean, f_std), (t_mean, t_std) = mean_std(feature), mean_std(target)
        return F.mse_loss(f_mean, t_mean) if transform == "adamean" else F.mse_loss(f_std, t_std)

    per_layer = {name: one(features[name], targets[name]) for name in layers}
    return torch.stack(list(per_layer.values())).sum(), per_layer


@torch.no_grad()
def stylise_transform(
    transform: str,
    encoder: FeatureEncoder,
    decoder: nn.Module,
    content: Tensor,
    styles: Sequence[Tensor] = (),
    controls: Controls = PLAIN,
    *,
    channels_last: bool = False,
    bottleneck: str = BOTTLENECK,
) -> Tensor:
    """``model.stylise`` for a transform other than AdaIN: encode, blend the styles' codes (or, with ``masks``, one
    style per region: ``masked_apply``), apply, alpha trade-off, decode. Returns float32 (N, 3, H, W) in [0, 1]."""
    weights = controls.checked_weights(styles) or [1.0]
    size = controls.size(content)
    alpha = float(controls.alpha)
    c_feat = encode(encoder, content, channels_last, bottleneck)
    if alpha == 0.0:
        return decode_clamped(decoder, c_feat, c_feat, 1.0, size)
    codes = controls.cached_codes
    if codes is None:
        reference = content if controls.preserve_colour else None
        features = encode_styles(encoder, styles, reference, channels_last, bottleneck)
        codes = [style_code(transform, feature) for feature in features]
    if controls.masks is not None:
        region = region_masks(controls.masks, content.shape[0], (c_feat.shape[2], c_feat.shape[3]), c_feat.device)
        target = masked_apply(transform, c_feat, codes, region)
        return decode_clamped(decoder, target, c_feat, alpha, size)
    code = blend(codes, weights, c_feat.shape[2] * c_feat.shape[3])
    return decode_clamped(decoder, apply(transform, c_feat.float(), code), c_feat, alpha, size)
