"""The scorer: every per-pair metric of a result against its content and style, with one evaluation encoder
(plus LPIPS and the art Inception when their weights are here). What each metric means is in ``PAIR_METRICS``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from styletransfer.eval import metrics as M
from styletransfer.eval.metric_nets import ArtInception, LPIPSAlex
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.runtime.errors import MetricUnavailable

CONTENT_LAYERS = ("relu4_1", "relu4_2")
MEAN_STD_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
GRAM_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CFSD_LAYER = "relu3_1"
EVAL_LAYERS = tuple(dict.fromkeys([*MEAN_STD_LAYERS, *CONTENT_LAYERS, *GRAM_LAYERS]))
UNAVAILABLE = "unavailable"

#: Per-pair metrics: column -> (description, lower is better).
PAIR_METRICS: dict[str, tuple[str, bool]] = {
    "content_relu4_1": ("content loss: MSE of VGG relu4_1 features, result vs content", True),
    "content_relu4_2": ("content loss: MSE of VGG relu4_2 features, result vs content", True),
    "style_mean_std": ("style loss: MSE of channel means + stds, relu1_1..relu4_1 summed, result vs style", True),
    "style_gram": ("style loss: MSE of Gram matrices / (C*H*W), relu1_1..relu5_1 summed, result vs style", True),
    "ssim": ("SSIM of the luminance of result and content (torchmetrics, window 11)", False),
    "cfsd": ("CFSD: KL of softmax self-similarity of relu3_1 features, content vs result (StyleID)", True),
    "lpips": ("LPIPS (AlexNet) between result and content", True),
    "seconds": ("seconds to stylise the pair after warm-up (encoding both images, AdaIN, decoding)", True),
}
#: Set-level metrics (one value per model).
SET_METRICS: dict[str, tuple[str, bool]] = {
    "fid": ("FID of the results against the style images (art-trained Inception, as ArtFID)", True),
    "art_fid": ("ArtFID = (1 + LPIPS) x (1 + FID) (Wright & Ommer 2022)", True),
}


class Scorer:
    """Computes every per-pair metric with one evaluation encoder, plus LPIPS / Inception features when available."""

    def __init__(self, encoder: VGGEncoder, device: torch.device, cfg: Mapping[str, Any] | None = None) -> None:
        cfg = dict(cfg or {})
        self.encoder = encoder.to(device)
        self.device = device
        self.cfsd_max_positions = cfg.get("cfsd_max_positions", M.CFSD_MAX_POSITIONS)
        self.unavailable: dict[str, str] = {}
        self.lpips: LPIPSAlex | None = None
        self.inception: ArtInception | None = None
        try:
            self.lpips = LPIPSAlex(cfg.get("lpips_weights")).to(device)
        except MetricUnavailable as exc:
            self.unavailable["lpips"] = str(exc)
        try:
            self.inception = ArtInception(cfg.get("inception_weights"), int(cfg.get("inception_size", 512))).to(device)
        except MetricUnavailable as exc:
            self.unavailable["fid"] = str(exc)
        if "fid" in self.unavailable or "lpips" in self.unavailable:
            self.unavailable["art_fid"] = "needs " + " and ".join(
                k.upper() for k in ("lpips", "fid") if k in self.unavailable
            )

    @torch.no_grad()
    def features(self, image: Tensor) -> dict[str, Tensor]:
        return self.encoder(image.to(self.device, torch.float32), EVAL_LAYERS)

    @torch.no_grad()
    def score(
        self, result: Tensor, content: Tensor, style_feats: Mapping[str, Tensor], content_feats: Mapping[str, Tensor]
    ) -> dict[str, float]:
        """Per-pair metrics of one result (1, 3, H, W) against its content and the style's features."""
        result = result.to(self.device, torch.float32)
        content = content.to(self.device, torch.float32)
        feats = self.features(result)
        values = {
            f"content_{layer}": M.content_distance(feats[layer], content_feats[layer]) for layer in CONTENT_LAYERS
        }
        values["style_mean_std"] = M.summed_over_layers(M.mean_std_distance, feats, style_feats, MEAN_STD_LAYERS)
        values["style_gram"] = M.summed_over_layers(M.gram_distance, feats, style_feats, GRAM_LAYERS)
        values["ssim"] = M.ssim_luminance(result, content)
        values["cfsd"] = M.cfsd(content_feats[CFSD_LAYER], feats[CFSD_LAYER], self.cfsd_max_positions)
        if self.lpips is not None:
            values["lpips"] = self.lpips(result, content)
        return {k: float(v.reshape(-1)[0]) for k, v in values.items()}

    @torch.no_grad()
    def inception_features(self, image: Tensor) -> Tensor | None:
        return None if self.inception is None else self.inception(image.to(self.device, torch.float32)).cpu()
