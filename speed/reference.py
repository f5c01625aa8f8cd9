"""The reference implementation's networks and statistics (naoto0804/pytorch-AdaIN), written out for the speed
scripts' plain-PyTorch baselines and the bit-for-bit test (``tests/test_adain_pinned.py``): the encoder to
relu4_1, the decoder and ``calc_mean_std``."""

from __future__ import annotations

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
