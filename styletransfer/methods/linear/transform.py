"""Linear Style Transfer's transformation module (Li et al., CVPR 2019), as the authors' ``libs/Matrix.py``
(sunshineatnoon/LinearStyleTransfer, commit 188e8e5) computes it, with the same parameter names (so their
``r31.pth`` / ``r41.pth`` state dicts fit):

* ``CovarianceNet`` (their ``CNN``): three 3x3 convolutions compress centred features to 32 channels, their
  32 x 32 covariance (divided by h * w) passes through one fully connected layer to a 32 x 32 matrix;
* ``LinearTransform`` (their ``MulLayer``): centre content and style features on their channel means; the
  transform T = style matrix x content matrix; compress the centred content to 32 channels (1x1), multiply by T,
  unzip back (1x1) and add the style's mean.

The style's half (:meth:`LinearTransform.style_matrix`: its matrix and mean) is computed once per style and reused
(:meth:`LinearTransform.transfer`); ``forward`` is the two in sequence, operation for operation the authors' forward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from styletransfer.runtime.errors import ConfigError

#: The levels the authors train a module for, and the channels there (their relu2_1 variant strides its first
#: convolution and is not offered).
CHANNELS = {"relu3_1": 256, "relu4_1": 512}
#: Channels of the compressed features; the matrices are MATRIX x MATRIX.
MATRIX = 32


def check_layer(layer: str, setting: str = "method.layer") -> str:
    """``layer`` if the transformation module exists for it, else a one-line ConfigError naming ``setting``."""
    if layer not in CHANNELS:
        raise ConfigError(f"{setting}={layer!r}: choose {' or '.join(CHANNELS)} (the authors' two modules)")
    return layer


def centred(features: Tensor) -> tuple[Tensor, Tensor]:
    """(features minus their channel means over space, the means (N, C, 1, 1)), as the authors compute them."""
    b, c, h, w = features.size()
    mean = torch.mean(features.view(b, c, -1), dim=2, keepdim=True).unsqueeze(3)
    return features - mean.expand_as(features), mean


class CovarianceNet(nn.Module):
    """Centred features (N, C, h, w) -> a matrix (N, 32 * 32): compress, covariance over h * w, fully connected."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        channels = CHANNELS[check_layer(layer)]
        self.convs = nn.Sequential(
            nn.Conv2d(channels, channels // 2, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(channels // 2, channels // 4, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(channels // 4, MATRIX, 3, 1, 1),
        )
        self.fc = nn.Linear(MATRIX * MATRIX, MATRIX * MATRIX)

    def forward(self, features: Tensor) -> Tensor:
        out = self.convs(features)
        b, c, h, w = out.size()
        out = out.view(b, c, -1)
        out = torch.bmm(out, out.transpose(1, 2)).div(h * w)
        return self.fc(out.view(out.size(0), -1))


class LinearTransform(nn.Module):
    """The transformation module of ``layer`` (relu3_1 or relu4_1); see the module docstring."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = check_layer(layer)
        channels = CHANNELS[layer]
        self.snet = CovarianceNet(layer)
        self.cnet = CovarianceNet(layer)
        self.compress = nn.Conv2d(channels, MATRIX, 1, 1, 0)
        self.unzip = nn.Conv2d(MATRIX, channels, 1, 1, 0)

    def style_matrix(self, style: Tensor) -> tuple[Tensor, Tensor]:
        """A style's features (N, C, h, w) -> (its matrix (N, 32, 32), its channel means (N, C, 1, 1))."""
        centred_style, mean = centred(style)
        matrix = self.snet(centred_style)
        return matrix.view(matrix.size(0), MATRIX, MATRIX), mean

    def transfer(self, content: Tensor, style_matrix: Tensor, style_mean: Tensor) -> tuple[Tensor, Tensor]:
        """Content features (N, C, h, w) with a style's matrix and mean (batch N or 1) -> (transformed features
        (N, C, h, w), the transform (N, 32, 32))."""
        centred_content, _ = centred(content)
        n = content.size(0)
        content_matrix = self.cnet(centred_content)
        content_matrix = content_matrix.view(content_matrix.size(0), MATRIX, MATRIX)
        transform = torch.bmm(style_matrix.expand(n, MATRIX, MATRIX), content_matrix)
        compressed = self.compress(centred_content)
        b, c, h, w = compressed.size()
        moved = torch.bmm(transform, compressed.view(b, c, -1))
        out = self.unzip(moved.view(b, c, h, w))
        return out + style_mean.expand(n, -1, -1, -1).expand_as(content), transform

    def forward(self, content: Tensor, style: Tensor) -> tuple[Tensor, Tensor]:
        """The authors' ``MulLayer.forward(cF, sF)``: (transformed content features, the transform)."""
        matrix, mean = self.style_matrix(style)
        return self.transfer(content, matrix, mean)
