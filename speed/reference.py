"""The reference implementation's networks and statistics (naoto0804/pytorch-AdaIN), written out for the speed
scripts' plain-PyTorch baselines and the bit-for-bit test (``tests/test_adain_pinned.py``): the encoder to
relu4_1, the decoder and ``calc_mean_std``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def reference_vgg() -> nn.Sequential:
    """naoto0804's ``vgg`` (vgg_normalised) up to relu4_1: 1x1 caffe conv, then reflection-padded 3x3 convs."""
    layers: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
    plan = [(3, 64), (64, 64), "M", (64, 128), (128, 128), "M", (128, 256), (256, 256), (256, 256), (256, 256),
            "M", (256, 512)]
    for step in plan:
        if step == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(step[0], step[1], 3), nn.ReLU()]
    return nn.Sequential(*layers)


def reference_decoder() -> nn.Sequential:
    """naoto0804's ``decoder``: the mirror of the VGG to relu4_1, reflection padding, nearest upsampling."""
    layers: list[nn.Module] = []
    plan = [(512, 256), "U", (256, 256), (256, 256), (256, 256), (256, 128), "U", (128, 128), (128, 64), "U",
            (64, 64), (64, 3)]
    for i, step in enumerate(plan):
        if step == "U":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        else:
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(step[0], step[1], 3)]
            layers += [nn.ReLU()] if i < len(plan) - 1 else []
    return nn.Sequential(*layers)


def calc_mean_std(feat: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """naoto0804's ``function.calc_mean_std``: unbiased variance + eps, over a (N, C, -1) view."""
    n, c = feat.shape[:2]
    feat_var = feat.view(n, c, -1).var(dim=2) + eps
    return feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), feat_var.sqrt().view(n, c, 1, 1)


def reference_losses(vgg: nn.Sequential, decoder: nn.Sequential, content: Tensor, style: Tensor,
                     style_weight: float = 10.0) -> tuple[Tensor, Tensor, Tensor]:
    """naoto0804's ``net.Net.forward`` and its train.py weighting: (total, content loss, style loss), with the
    encoder cut into its slices at relu1_1, relu2_1, relu3_1 and relu4_1 and run on style, then content."""
    slices = [vgg[:4], vgg[4:11], vgg[11:18], vgg[18:31]]

    def encode_with_intermediate(x: Tensor) -> list[Tensor]:
        feats = []
        for part in slices:
            x = part(x)
            feats.append(x)
        return feats

    style_feats = encode_with_intermediate(style)
    content_feat = encode_with_intermediate(content)[-1]
    c_mean, c_std = calc_mean_std(content_feat)
    s_mean, s_std = calc_mean_std(style_feats[-1])
    target = (content_feat - c_mean) / c_std * s_std + s_mean
    g_feats = encode_with_intermediate(decoder(target))
    loss_c = F.mse_loss(g_feats[-1], target)
    loss_s = sum(F.mse_loss(calc_mean_std(g)[0], calc_mean_std(s)[0]) + F.mse_loss(calc_mean_std(g)[1],
                 calc_mean_std(s)[1]) for g, s in zip(g_feats, style_feats))
    return loss_c + style_weight * loss_s, loss_c, loss_s
