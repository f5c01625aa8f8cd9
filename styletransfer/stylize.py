"""Stylise images with a trained AdaIN decoder: Python API (:class:`Stylizer`) and command line.

A model loads from any of:

* a Lightning checkpoint of this project (``checkpoints/last.ckpt``): the frozen encoder stored inside is used;
* the exported decoder file (``checkpoints/decoder.pth``, format ``styletransfer.adain_decoder``): the encoder is
  rebuilt from its record (or given) and must match the recorded fingerprint;
* the original AdaIN release's ``decoder.pth`` with its ``vgg_normalised.pth`` (passed as the encoder weights).

Files are read with ``torch.load(weights_only=True)``: a pickle that would run code is refused and nothing in
it runs. The controls are the AdaIN paper's: ``alpha`` (content-style trade-off), interpolation between styles
with weights, colour preservation (each style's colour mean and covariance matched to the content first) and
spatial control (a mask per style assigns it a region; AdaIN statistics are taken over that region of the
content features). Results have the content's size unless ``output_size`` says otherwise.

Command line (``styletransfer-stylize`` or ``python -m styletransfer.stylize``)::

    styletransfer-stylize CKPT --content photo.jpg --style a.jpg b.jpg --weights 0.7 0.3 --alpha 0.8 -o out/
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import pickle
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletransfer.decoder import BOTTLENECK, DECODER_FORMAT, AdaINDecoder
from styletransfer.encoder import EncoderWeightsError, VGGEncoder, build_encoder
from styletransfer.ops import adain, mean_std

log = logging.getLogger(__name__)

#: Conv indices of the original release's decoder.pth (same as AdaINDecoder's).
RELEASE_DECODER_CONVS = (1, 5, 8, 11, 14, 18, 21, 25, 28)
#: Tolerance on the sum of style interpolation weights.
WEIGHT_SUM_TOLERANCE = 1e-4


class CheckpointError(RuntimeError):
    """A model file is missing, unsafe, not a checkpoint, or does not fit; the message names the file."""


class EncoderMismatchError(CheckpointError):
    """The encoder given for a decoder file is not the one the decoder was trained behind."""


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------
def safe_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with errors that name the file.

    A file whose unpickling would import or call anything (classes, functions, ``os.system``...) is refused
    by the weights-only unpickler before anything in it runs.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist (resolved: {path.resolve()})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"refused to load {path}: it holds objects whose unpickling would run code, and only tensors and "
                "plain containers are accepted (torch.load weights_only=True). Nothing from the file was run. "
                "Re-save the weights as a plain state dict if you trust the file."
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({str(exc).splitlines()[0][:200]})") from None
    except Exception as exc:  # zip/EOF/format errors: not a checkpoint at all
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(exc).__name__}: {first})") from None


def _encoder_from_config(encoder: Mapping | str | os.PathLike | VGGEncoder | None, layers: Sequence[str]) -> VGGEncoder:
    if isinstance(encoder, VGGEncoder):
        return encoder
    if isinstance(encoder, Mapping):
        return build_encoder(encoder, layers)
    return VGGEncoder(layers, weights=str(encoder))


def _trunk_layers(spec: Mapping | None) -> list[str]:
    """Layers the recorded encoder was built with (its fingerprint covers the trunk up to the deepest)."""
    layers = list((spec or {}).get("layers") or [])
    return layers if BOTTLENECK in layers else [*layers, BOTTLENECK]


def _encoder_from_trunk(trunk: Mapping[str, Tensor], spec: Mapping | None, path: Path) -> VGGEncoder:
    """Rebuild the frozen encoder stored in a Lightning checkpoint (its architecture is detected from the keys)."""
    try:
        encoder = VGGEncoder(_trunk_layers(spec), weights={f"trunk.{k}": v for k, v in trunk.items()})
    except EncoderWeightsError as exc:
        raise CheckpointError(f"the encoder stored in {path} cannot be rebuilt: {str(exc).splitlines()[0]}") from None
    recorded = dict(spec or {})
    if recorded.get("fingerprint") and recorded["fingerprint"] != encoder.spec["fingerprint"]:
        raise CheckpointError(
            f"the encoder weights stored in {path} do not match the fingerprint recorded with them "
            f"({encoder.spec['fingerprint']} vs {recorded['fingerprint']}): the file is damaged"
        )
    encoder.spec.update({k: v for k, v in recorded.items() if k in ("weights", "seed", "fallback", "fallback_used")})
    encoder.spec.update({"used": f"stored in {path}", "file": str(path)})
    return encoder


def _load_decoder(state: Mapping[str, Tensor], path: Path) -> AdaINDecoder:
    decoder = AdaINDecoder()
    try:
        decoder.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"the decoder weights in {path} do not fit the AdaIN decoder: {str(exc).splitlines()[0][:300]}"
        ) from None
    return decoder.eval().requires_grad_(False)


def _is_release_decoder(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
        and all(f"{i}.weight" in obj for i in RELEASE_DECODER_CONVS)
    )


def load_model(
    path: str | os.PathLike, encoder: Mapping | str | os.PathLike | VGGEncoder | None = None
) -> tuple[VGGEncoder, AdaINDecoder, str]:
    """(encoder, decoder, kind) from a Lightning .ckpt, an exported decoder.pth or the release's decoder.pth.

    ``encoder`` (an encoder config dict, weights string/path, or a VGGEncoder) is used for decoder files: for an
    exported decoder it defaults to the recorded one and must match its fingerprint; the release's decoder needs
    it (its ``vgg_normalised.pth``). A Lightning checkpoint always uses the encoder stored inside it.
    """
    path = Path(path).expanduser()
    obj = safe_load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
        hparams = obj.get("hyper_parameters") or {}
        trunk = {k[len("encoder.trunk."):]: v for k, v in state.items() if k.startswith("encoder.trunk.")}
        dec = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
        if not trunk or not dec:
            raise CheckpointError(
                f"{path} is a Lightning checkpoint but not of an AdaIN model (no 'encoder.trunk.*' and 'decoder.*' "
                f"weights; first keys: {list(state)[:4]})"
            )
        if encoder is not None:
            log.info("%s is a Lightning checkpoint: using the encoder stored in it, not the one given", path)
        spec = hparams.get("encoder") if isinstance(hparams.get("encoder"), Mapping) else None
        return _encoder_from_trunk(trunk, spec, path), _load_decoder(dec, path), "lightning"
    if isinstance(obj, Mapping) and obj.get("format") == DECODER_FORMAT:
        spec = dict(obj.get("encoder") or {})
        if encoder is None:
            if not spec:
                raise CheckpointError(f"{path} records no encoder; pass the encoder it was trained behind")
            used = spec.get("used") or spec.get("weights", "imagenet")
            weights = "random" if spec.get("fallback_used") else used
            encoder = {"weights": weights, "seed": int(spec.get("seed", 0)), "download": False}
        built = _encoder_from_config(encoder, _trunk_layers(spec))
        recorded = spec.get("fingerprint")
        if recorded and built.spec["fingerprint"] != recorded:
            raise EncoderMismatchError(
                f"the encoder given for {path} (weights={built.spec['weights']!r}, arch {built.arch}, seed "
                f"{built.spec['seed']}, fingerprint "
                f"{built.spec['fingerprint']}) is not the one this decoder was trained behind (weights="
                f"{spec.get('used', spec.get('weights'))!r}, arch {spec.get('arch')}, seed {spec.get('seed')}, "
                f"fingerprint {recorded}). Pass the same encoder weights (and seed for random weights)."
            )
        return built, _load_decoder(obj.get("decoder") or {}, path), "exported"
    if _is_release_decoder(obj):
        if encoder is None:
            raise CheckpointError(
                f"{path} is a bare decoder state dict (the original AdaIN release's layout) and records no encoder: "
                "pass the encoder it was trained behind, e.g. --encoder-weights vgg_normalised.pth"
            )
        built = _encoder_from_config(encoder, [BOTTLENECK])
        if built.arch != "vgg_normalised":
            log.warning("release-layout decoder %s used behind a %s encoder; the release expects vgg_normalised.pth",
                        path, built.arch)
        return built, _load_decoder(obj, path), "release"
    kind = type(obj).__name__
    keys = list(obj)[:4] if isinstance(obj, Mapping) else []
    raise CheckpointError(
        f"{path} is not a style-transfer checkpoint: it holds a {kind} {keys or ''}; expected a Lightning .ckpt "
        "of an AdaIN run, an exported checkpoints/decoder.pth, or the AdaIN release's decoder.pth"
    )


# ---------------------------------------------------------------------------------------------------------------
# Stylising
# ---------------------------------------------------------------------------------------------------------------
def check_weights(weights: Sequence[float] | None, n_styles: int) -> list[float]:
    """Interpolation weights: one per style, finite, >= 0, summing to 1 (default: 1 for a single style)."""
    if n_styles < 1:
        raise ValueError("at least one style image is needed")
    if weights is None:
        if n_styles > 1:
            raise ValueError(f"{n_styles} styles need interpolation weights (one per style, summing to 1)")
        return [1.0]
    weights = [float(w) for w in weights]
    if len(weights) != n_styles:
        raise ValueError(f"got {len(weights)} interpolation weight(s) for {n_styles} style(s): give one per style")
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(f"interpolation weights must be finite and >= 0, got {weights}")
    if abs(sum(weights) - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ValueError(f"interpolation weights must sum to 1, got {weights} (sum {sum(weights):.6g})")
    return weights


def _as_batch(image: Tensor, name: str) -> Tensor:
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{name} must be RGB shaped (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")
    return image


def _region_masks(masks: Sequence[Tensor], n: int, size: tuple[int, int], device: torch.device) -> Tensor:
    """Masks (any size, values in [0, 1]) -> binary (K, N, 1, h, w) at feature resolution (threshold 0.5)."""
    out = []
    for k, mask in enumerate(masks):
        mask = mask.float()
        if mask.dim() == 2:
            mask = mask[None, None]
        elif mask.dim() == 3:
            mask = mask[:1][None] if mask.shape[0] in (1, 3) else mask[:, None]
        if mask.dim() != 4 or mask.shape[1] not in (1, 3):
            raise ValueError(f"mask {k} must be (H, W), (1, H, W) or (N, 1, H, W), got {tuple(mask.shape)}")
        mask = mask[:, :1]
        if mask.shape[0] not in (1, n):
            raise ValueError(f"mask {k} has batch size {mask.shape[0]}, content has {n}")
        resized = F.interpolate(mask.to(device), size=size, mode="bilinear", align_corners=False) >= 0.5
        out.append(resized.expand(n, 1, *size).float())
    return torch.stack(out)


def masked_adain(content: Tensor, styles: Sequence[Tensor], masks: Tensor) -> Tensor:
    """Spatial control: AdaIN of each mask's region of ``content`` with the matching style's statistics.

    ``content`` (N, C, h, w), ``styles`` K tensors (N or 1, C, h', w'), ``masks`` binary (K, N, 1, h, w). Statistics
    of the content are taken over the region only; overlapping regions are averaged, positions in no region keep
    the content features.
    """
    out = torch.zeros_like(content, dtype=torch.float32)
    cover = torch.zeros(content.shape[0], 1, *content.shape[-2:], device=content.device)
    for style, mask in zip(styles, masks):
        s_mean, s_std = mean_std(style)
        s_mean = s_mean.expand(content.shape[0], -1, -1, -1)
        s_std = s_std.expand(content.shape[0], -1, -1, -1)
        for i in range(content.shape[0]):
            region = mask[i, 0].bool()
            if int(region.sum()) < 2:
                continue
            values = content[i][:, region].float()  # (C, P)
            mean = values.mean(dim=1, keepdim=True)
            std = (values.var(dim=1, unbiased=True, keepdim=True) + 1e-5).sqrt()
            normalised = (values - mean) / std * s_std[i, :, 0] + s_mean[i, :, 0]
            out[i][:, region] += normalised
            cover[i, 0][region] += 1
    covered = cover > 0
    return torch.where(covered, out / cover.clamp_min(1), content.float()).to(content.dtype)


class Stylizer(nn.Module):
    """AdaIN inference: a frozen encoder (to relu4_1) and a decoder, with the paper's test-time controls.

    ``channels_last`` and ``bf16`` (autocast; AdaIN statistics stay float32) speed up GPUs with tensor cores.
    """

    def __init__(
        self,
        encoder: VGGEncoder,
        decoder: AdaINDecoder,
        source: str = "",
        kind: str = "",
        channels_last: bool = False,
        bf16: bool = False,
    ) -> None:
        super().__init__()
        if BOTTLENECK not in encoder.layers:
            raise ValueError(f"the encoder must compute {BOTTLENECK}, it has {list(encoder.layers)}")
        self.encoder = encoder
        self.decoder = decoder.eval().requires_grad_(False)
        self.source = source
        self.kind = kind
        self.channels_last = channels_last
        self.bf16 = bf16
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        encoder: Mapping | str | os.PathLike | VGGEncoder | None = None,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        bf16: bool = False,
    ) -> Stylizer:
        """Load from a Lightning .ckpt, an exported decoder.pth or the release's decoder.pth (see ``load_model``)."""
        enc, dec, kind = load_model(path, encoder)
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

    def _prepare(self, images: Tensor) -> Tensor:
        images = images.to(self.device, torch.float32)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """relu4_1 features of RGB images in [0, 1]."""
        with self._autocast():
            return self.encoder(self._prepare(_as_batch(images, "image")), [BOTTLENECK])[BOTTLENECK]

    @torch.no_grad()
    def decode(self, features: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
        """Images in [0, 1] (float32, clamped) from relu4_1 features, at ``output_size`` (default 8x)."""
        with self._autocast():
            images = self.decoder(features, output_size=output_size)
        return images.float().clamp(0.0, 1.0)

    @torch.no_grad()
    def style_features(self, styles: Sequence[Tensor], content: Tensor | None = None, preserve_color: bool = False) -> list[Tensor]:
        """relu4_1 features of each style (batch 1), or of each style recoloured to each content image."""
        from styletransfer.colour import match_colour

        feats = []
        for k, style in enumerate(styles):
            style = _as_batch(style, f"style {k}").to(self.device, torch.float32)
            if preserve_color:
                if content is None:
                    raise ValueError("colour preservation needs the content images")
                style = match_colour(style, content.to(self.device, torch.float32))
            feats.append(self.encode(style))
        return feats

    @torch.no_grad()
    def stylize(
        self,
        content: Tensor,
        styles: Tensor | Sequence[Tensor],
        weights: Sequence[float] | None = None,
        alpha: float = 1.0,
        preserve_color: bool = False,
        masks: Sequence[Tensor] | None = None,
        output_size: tuple[int, int] | None = None,
        style_features: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Stylise ``content`` ((3, H, W) or (N, 3, H, W), RGB in [0, 1]) with one or more styles.

        - ``alpha`` in [0, 1]: t = alpha * AdaIN(f(c), f(s)) + (1 - alpha) * f(c); alpha = 0 gives decode(encode(c));
        - several ``styles`` with ``weights`` (one per style, summing to 1): t = sum_k w_k AdaIN(f(c), f(s_k));
        - ``preserve_color``: each style's colour mean and covariance are matched to the content first;
        - ``masks`` (one per style, (H, W) in [0, 1], any size): style k only where mask k >= 0.5, at feature
          resolution; positions in no mask keep the content. Not combined with ``weights``;
        - ``output_size`` (H, W): default the content's size;
        - ``style_features``: precomputed ``style_features(styles)`` to reuse across calls (not with colour
          preservation, which depends on the content).
        Returns float32 (N, 3, H, W) in [0, 1].
        """
        if isinstance(styles, Tensor):
            styles = [styles] if styles.dim() == 3 else list(styles)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        content = _as_batch(content, "content").to(self.device, torch.float32)
        if masks is not None:
            if weights is not None:
                raise ValueError("give either interpolation weights or masks, not both")
            if len(masks) != len(styles):
                raise ValueError(f"got {len(masks)} mask(s) for {len(styles)} style(s): give one mask per style")
        else:
            weights = check_weights(weights, len(styles))
        size = tuple(output_size) if output_size is not None else tuple(content.shape[-2:])
        c_feat = self.encode(content)
        if alpha == 0.0:
            return self.decode(c_feat, size)
        if style_features is None or preserve_color:
            style_features = self.style_features(styles, content, preserve_color)
        if masks is not None:
            region = _region_masks(masks, content.shape[0], tuple(c_feat.shape[-2:]), self.device)
            target = masked_adain(c_feat, style_features, region)
        else:
            target = sum(w * adain(c_feat, s.to(c_feat.dtype)).float() for w, s in zip(weights, style_features))
        target = float(alpha) * target + (1.0 - float(alpha)) * c_feat.float()
        return self.decode(target.to(c_feat.dtype), size)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def _encoder_arg(args: argparse.Namespace) -> dict | None:
    if args.encoder_weights is None:
        return None
    return {"weights": args.encoder_weights, "seed": args.encoder_seed, "download": False}


def _mask_tensor(path: Path) -> Tensor:
    from styletransfer.data.images import load_rgb, pil_to_tensor

    return pil_to_tensor(load_rgb(path).convert("L").convert("RGB"))[0]


def _output_name(content: Path, args: argparse.Namespace) -> str:
    """``<content>_stylized_<style>[+<style>...]`` plus the controls that differ from the defaults, so runs
    with other controls into the same folder do not overwrite each other."""
    name = f"{content.stem}_stylized_{'+'.join(s.stem for s in args.style)}"
    if args.weights:
        name += "_w" + "-".join(f"{w:g}" for w in args.weights)
    if args.mask:
        name += "_masked"
    if args.alpha != 1.0:
        name += f"_alpha{args.alpha:g}"
    if args.preserve_color:
        name += "_colour"
    return f"{name}.{args.ext.lstrip('.')}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="styletransfer-stylize",
        description="Stylise an image or a folder of images with an AdaIN checkpoint (this project's .ckpt or "
        "decoder.pth, or the original release's decoder.pth with --encoder-weights vgg_normalised.pth).",
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoints/last.ckpt, checkpoints/decoder.pth or the release's decoder.pth")
    parser.add_argument("--content", "-c", type=Path, required=True, help="a content image or a folder of them (recursive)")
    parser.add_argument("--style", "-s", type=Path, nargs="+", required=True, help="one style image, or several to interpolate/mask")
    parser.add_argument("--weights", "-w", type=float, nargs="+", help="interpolation weights, one per style, summing to 1")
    parser.add_argument("--mask", "-m", type=Path, nargs="+", help="one mask image per style (white = that style's region)")
    parser.add_argument("--alpha", "-a", type=float, default=1.0, help="content-style trade-off in [0, 1] (default 1)")
    parser.add_argument("--preserve-color", action="store_true", help="match each style's colours to the content first")
    parser.add_argument("--output", "-o", type=Path, default=Path("stylized"), help="output folder (default ./stylized)")
    parser.add_argument("--content-size", type=int, default=None, help="resize the content's shorter side first (default: keep)")
    parser.add_argument("--style-size", type=int, default=512, help="resize the styles' shorter side (default 512; 0 keeps)")
    parser.add_argument("--output-size", type=int, nargs=2, metavar=("H", "W"), help="output size (default: the content's)")
    parser.add_argument("--encoder-weights", default=None,
                        help="encoder for decoder files: imagenet, random or a path (the release needs vgg_normalised.pth); "
                        "default: the one recorded in the file")
    parser.add_argument("--encoder-seed", type=int, default=0, help="seed of a random encoder (default 0)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1 ...")
    parser.add_argument("--batch-size", type=int, default=1, help="contents of the same size stylised together (default 1)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPU)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format (GPU)")
    parser.add_argument("--ext", default="png", help="output image format: png (default) or jpg")
    return parser


def run_cli(args: argparse.Namespace) -> list[Path]:
    """Stylise every content with the given controls; returns the written files. Unreadable contents are skipped."""
    from tqdm import tqdm

    from styletransfer.data.images import ImageLoadError, find_images, load_image_tensor, save_image

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.mask and args.weights:
        raise ValueError("give either --weights or --mask, not both")
    if args.mask and len(args.mask) != len(args.style):
        raise ValueError(f"got {len(args.mask)} mask(s) for {len(args.style)} style(s): give one mask per style")
    weights = None if args.mask else check_weights(args.weights, len(args.style))
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    stylizer = Stylizer.from_checkpoint(
        args.checkpoint, _encoder_arg(args), _device(args.device), channels_last=args.channels_last, bf16=args.bf16
    )
    style_size = args.style_size or None
    styles = [load_image_tensor(p, size=style_size) for p in args.style]
    masks = [_mask_tensor(p) for p in args.mask] if args.mask else None
    contents = find_images(args.content) if args.content.is_dir() else [args.content]
    cached = None if args.preserve_color else stylizer.style_features(styles)
    output_size = tuple(args.output_size) if args.output_size else None

    written: list[Path] = []
    skipped: list[str] = []
    batch: list[tuple[Path, Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        images = torch.stack([image for _, image in batch])
        results = stylizer.stylize(images, styles, weights=weights, alpha=args.alpha, preserve_color=args.preserve_color,
                                   masks=masks, output_size=output_size, style_features=cached)
        for (path, _), result in zip(batch, results):
            out = args.output / _output_name(path, args)
            save_image(result.cpu(), out)
            written.append(out)
        batch.clear()

    for path in tqdm(contents, desc="stylising", unit="img"):
        try:
            image = load_image_tensor(path, size=args.content_size)
        except ImageLoadError as exc:
            skipped.append(str(exc))
            log.warning("skipped: %s", exc)
            continue
        if batch and (image.shape != batch[0][1].shape or len(batch) >= args.batch_size):
            flush()
        batch.append((path, image))
    flush()
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s):\n  " + "\n  ".join(skipped), file=sys.stderr)
    if not written:
        raise ValueError(f"no image could be stylised from {args.content}")
    print(f"wrote {len(written)} image(s) to {args.output}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``styletransfer-stylize``; returns 0, or 1 with a one-paragraph error on bad input."""
    from styletransfer.data.images import DataDirError, ImageLoadError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        run_cli(args)
    except (CheckpointError, EncoderWeightsError, DataDirError, ImageLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
