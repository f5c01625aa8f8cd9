"""Networks behind the learned metrics (LPIPS, the art-trained Inception of ArtFID), loaded only from local files.

Nothing here touches the network: each loader looks for a configured file, then for the file in torch.hub's cache
(where the usual tools put it), and otherwise raises :class:`MetricUnavailable` with the reason and the fix. The
evaluation runner turns that into "unavailable" in its reports, never into a number.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletransfer.nn.weights import as_state_dict, safe_load
from styletransfer.runtime.errors import ConfigError, MetricUnavailable
from styletransfer.runtime.weight_files import hub_checkpoint, known

#: torchvision's AlexNet weights (the LPIPS backbone) and the art-trained Inception-v3 of ArtFID (Wright & Ommer
#: 2022): their file names (torch.hub caches them under these) and URLs, from the one registry of weight files.
ALEXNET_FILE, ALEXNET_URL = known("alexnet").filename, known("alexnet").url
ART_INCEPTION_FILE, ART_INCEPTION_URL = known("art-inception").filename, known("art-inception").url


def _resolve(configured: str | os.PathLike | None, cached_name: str, setting: str, url: str) -> Path:
    """The configured file if given (it must exist), else the cached file, else MetricUnavailable."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise MetricUnavailable(f"{setting}={path} does not exist")
        return path
    cached = hub_checkpoint(cached_name)
    if cached.is_file():
        return cached
    raise MetricUnavailable(
        f"no weights: {setting} is not set and {cached} is not there (no download is attempted; "
        f"put {url} there or pass {setting}=PATH)"
    )


def _load_state(path: Path) -> dict[str, Tensor]:
    """The weights in ``path`` (a state dict, or a checkpoint holding one under ``state_dict``), read safely."""
    state = safe_load(path, "metric weights file", MetricUnavailable)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return as_state_dict(state, path, MetricUnavailable)


class LPIPSAlex(nn.Module):
    """LPIPS (AlexNet backbone, linear layers shipped with torchmetrics) on images in [0, 1]; per-sample (N,)."""

    def __init__(self, alexnet_weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        from torchmetrics.functional.image.lpips import _LPIPS

        path = _resolve(alexnet_weights, ALEXNET_FILE, "metrics.lpips_weights", ALEXNET_URL)
        state = _load_state(path)
        state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")} or state
        # pnet_rand=True builds the backbone without torchvision's download; its weights come from `path` below.
        self.net = _LPIPS(pretrained=True, net="alex", pnet_rand=True)
        backbone = {}
        for slice_name in ("slice1", "slice2", "slice3", "slice4", "slice5"):
            for index, module in getattr(self.net.net, slice_name).named_children():
                for param in ("weight", "bias"):
                    if hasattr(module, param) and getattr(module, param) is not None:
                        key = f"{index}.{param}"
                        if key not in state:
                            raise MetricUnavailable(f"{path} lacks '{key}': not torchvision's AlexNet weights")
                        backbone[f"{slice_name}.{index}.{param}"] = state[key]
        try:
            self.net.net.load_state_dict(backbone, strict=True)
        except RuntimeError as exc:
            raise MetricUnavailable(f"{path} does not fit torchvision's AlexNet: {str(exc)[:200]}") from exc
        self.source = str(path)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, result: Tensor, content: Tensor) -> Tensor:
        return self.net(result.float() * 2 - 1, content.float() * 2 - 1, normalize=False).reshape(-1)


class ArtInception(nn.Module):
    """ArtFID's art-trained Inception-v3 (torchvision architecture, two heads dropped): 2048-d pooled features.

    Inputs are RGB in [0, 1] without normalisation; their shorter side is resized to ``size`` first (ArtFID: 512;
    the network needs at least 75 px).
    """

    def __init__(self, weights: str | os.PathLike | None = None, size: int = 512) -> None:
        super().__init__()
        if size < 75:
            raise ConfigError(f"metrics.inception_size must be >= 75 (Inception-v3's smallest input), got {size}")
        self.size = int(size)
        from torchvision.models import Inception3

        path = _resolve(weights, ART_INCEPTION_FILE, "metrics.inception_weights", ART_INCEPTION_URL)
        state = _load_state(path)
        self.model = Inception3(aux_logits=False, init_weights=False, transform_input=False)
        trunk = {k: v for k, v in self.model.state_dict().items() if not k.startswith(("fc.", "AuxLogits."))}
        missing = [k for k in trunk if k not in state]
        if missing:
            raise MetricUnavailable(f"{path} lacks {len(missing)} Inception-v3 key(s), e.g. {missing[:3]}")
        wrong = [k for k in trunk if state[k].shape != trunk[k].shape]
        if wrong:
            raise MetricUnavailable(f"{path}: '{wrong[0]}' has the wrong shape for Inception-v3")
        self.model.load_state_dict({k: state[k] for k in trunk}, strict=False)
        self.source = str(path)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        m = self.model
        x = images.float()
        h, w = x.shape[-2:]
        if min(h, w) != self.size:
            scale = self.size / min(h, w)
            x = F.interpolate(
                x,
                size=(max(1, round(h * scale)), max(1, round(w * scale))),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        for name in (
            "Conv2d_1a_3x3",
            "Conv2d_2a_3x3",
            "Conv2d_2b_3x3",
            "maxpool1",
            "Conv2d_3b_1x1",
            "Conv2d_4a_3x3",
            "maxpool2",
            "Mixed_5b",
            "Mixed_5c",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7b",
            "Mixed_7c",
        ):
            x = getattr(m, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)
