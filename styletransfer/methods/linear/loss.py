"""Linear Style Transfer's training loss, as the authors' ``libs/Criterion.py`` (commit 188e8e5) computes it on the
loss network's features (VGG-19 relu1_1 ... relu4_1) of the decoded image, the content and the style:

* content: MSE (mean over elements) at ``content_layers`` (theirs: relu4_1), times ``content_weight`` (1);
* style, per layer of ``style_layers`` (theirs: relu1_1, relu2_1, relu3_1, relu4_1): the *summed* squared error of
  the channel means plus that of the Gram matrices (each divided by C * H * W), divided by the batch size; summed
  over layers, times ``style_weight`` (0.02).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

#: The authors' layers and weights (Train.py).
CONTENT_LAYERS = ("relu4_1",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_WEIGHT = 1.0
STYLE_WEIGHT = 0.02


def gram(features: Tensor) -> Tensor:
    """The Gram matrices (N, C, C) of features (N, C, H, W), divided by C * H * W."""
    b, c, h, w = features.size()
    flat = features.reshape(b, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)).div(c * h * w)


def style_term(output: Tensor, target: Tensor) -> Tensor:
    """One layer's style loss: summed squared errors of channel means and of Gram matrices, over the batch size."""
    b, c = target.shape[:2]
    means = (output.reshape(output.shape[0], c, -1).mean(2) - target.reshape(b, c, -1).mean(2)).pow(2).sum()
    grams = (gram(output) - gram(target)).pow(2).sum()
    return (means + grams) / b


def linear_losses(
    output: Mapping[str, Tensor],
    style: Mapping[str, Tensor],
    content: Mapping[str, Tensor],
    content_weight: float = CONTENT_WEIGHT,
    style_weight: float = STYLE_WEIGHT,
    content_layers: Sequence[str] = CONTENT_LAYERS,
    style_layers: Sequence[str] = STYLE_LAYERS,
) -> dict[str, Tensor]:
    """``loss/total`` (weighted), ``loss/content`` and ``loss/style`` (each already weighted, as the authors return
    them) from the features of the decoded image, the style and the content by layer."""
    content_loss = sum(
        (torch.nn.functional.mse_loss(output[layer], content[layer].detach()) for layer in content_layers),
        torch.zeros((), device=output[content_layers[0]].device),
    )
    style_loss = sum(
        (style_term(output[layer], style[layer].detach()) for layer in style_layers),
        torch.zeros((), device=output[style_layers[0]].device),
    )
    content_loss, style_loss = content_loss * content_weight, style_loss * style_weight
    return {"loss/total": style_loss + content_loss, "loss/content": content_loss, "loss/style": style_loss}
