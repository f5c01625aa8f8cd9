"""The perceptual loss of pytorch/examples ``fast_neural_style`` (``utils.py`` ``gram_matrix``, the training step of
``neural_style.py``): VGG-16 features of the network's output and of the content, both images in [0, 255] divided
by 255 and ImageNet-normalised (the encoder normalises).

* content: ``content_weight`` * MSE(relu2_2(output), relu2_2(content));
* style: ``style_weight`` * sum over relu1_2, relu2_2, relu3_3, relu4_3 of MSE(G(output), G(style)), with
  G(F) = F F^T / (C H W) per image (``gram_matrix``), the style's Gram matrices computed once;
* total variation (optional, not in the examples; Johnson et al. use a small one): ``tv_weight`` * the mean of the
  squared forward differences of the output in [0, 255] (``nn.losses.tv_loss``, power 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletransfer.nn.encoder import VGGEncoder
from styletransfer.nn.losses import tv_loss

#: The examples' layers: content at relu2_2, style at VGG-16's four slices' ends.
CONTENT_LAYER = "relu2_2"
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


def gram_matrix(features: Tensor) -> Tensor:
    """F F^T / (C H W) per image of features (N, C, H, W): (N, C, C) (the examples' ``gram_matrix``)."""
    b, ch, h, w = features.size()
    flat = features.reshape(b, ch, w * h)
    return flat.bmm(flat.transpose(1, 2)) / (ch * h * w)


class PerceptualLoss(nn.Module):
    """Content and style losses behind a frozen encoder; each style's Gram matrices are buffers ``gram_<layer>`` of
    shape (styles, C, C), so a trained model's checkpoint needs no style file. Images reach the encoder as the
    examples' ``normalize_batch`` leaves them: in [0, 255], divided by 255 (x * 255 / 255 is not always x in
    float32, so the round trip is kept)."""

    def __init__(
        self,
        encoder: VGGEncoder,
        styles: Sequence[Tensor],
        content_weight: float,
        style_weight: float,
        content_layer: str = CONTENT_LAYER,
        style_layers: Sequence[str] = STYLE_LAYERS,
        tv_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.content_weight, self.style_weight = float(content_weight), float(style_weight)
        self.tv_weight = float(tv_weight)
        self.content_layer, self.style_layers = content_layer, tuple(style_layers)
        with torch.no_grad():  # styles in [0, 1] become [0, 255] as the examples' ToTensor().mul(255) makes them
            grams = [self._grams((style[None] if style.dim() == 3 else style).mul(255.0)) for style in styles]
        for layer in self.style_layers:
            self.register_buffer(f"gram_{layer}", torch.cat([g[layer] for g in grams]))

    def _grams(self, image255: Tensor) -> dict[str, Tensor]:
        features = self.encoder(image255 / 255.0, self.style_layers)
        return {layer: gram_matrix(features[layer]) for layer in self.style_layers}

    def forward(self, output255: Tensor, content255: Tensor, style: int) -> Mapping[str, Tensor]:
        """Loss terms for the network's output and its input (both in [0, 255]) against style number ``style``."""
        layers = list(dict.fromkeys([self.content_layer, *self.style_layers]))
        features_y = self.encoder(output255 / 255.0, layers)
        with torch.no_grad():
            features_x = self.encoder(content255 / 255.0, [self.content_layer])
        content = self.content_weight * F.mse_loss(features_y[self.content_layer], features_x[self.content_layer])
        style_loss = torch.zeros((), device=output255.device)
        per_layer = {}
        for layer in self.style_layers:
            gram_y = gram_matrix(features_y[layer])
            target = getattr(self, f"gram_{layer}")[style : style + 1].expand_as(gram_y)
            per_layer[layer] = F.mse_loss(gram_y, target)
            style_loss = style_loss + per_layer[layer]
        style_loss = style_loss * self.style_weight
        terms = {"loss/total": content + style_loss, "loss/content": content, "loss/style": style_loss}
        if self.tv_weight:
            terms["loss/tv"] = self.tv_weight * tv_loss(output255)
            terms["loss/total"] = terms["loss/total"] + terms["loss/tv"]
        terms.update({f"loss/style/{layer}": value for layer, value in per_layer.items()})
        return terms
