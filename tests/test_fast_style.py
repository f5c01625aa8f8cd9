"""Fast neural style (``methods/fast``) against its authors' computation.

The reference is pytorch/examples ``fast_neural_style/neural_style/transformer_net.py`` (commit 01c54ac),
``utils.py`` (``gram_matrix``, ``normalize_batch``; commit 2b456e8) and the training step of ``neural_style.py``
(commit 0fb0ddd), written out below from the published code: float32 on the CPU, bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from styletransfer.methods.fast.network import TransformerNet


class RefConvLayer(torch.nn.Module):  # transformer_net.py ConvLayer
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.reflection_pad = torch.nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class RefResidualBlock(torch.nn.Module):  # transformer_net.py ResidualBlock
    def __init__(self, channels):
        super().__init__()
        self.conv1 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = torch.nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = torch.nn.InstanceNorm2d(channels, affine=True)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        return out + residual


class RefUpsampleConvLayer(torch.nn.Module):  # transformer_net.py UpsampleConvLayer
    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        if upsample:
            self.upsample_layer = torch.nn.Upsample(mode="nearest", scale_factor=upsample)
        self.reflection_pad = torch.nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        x_in = self.upsample_layer(x) if self.upsample else x
        return self.conv2d(self.reflection_pad(x_in))


class RefTransformerNet(torch.nn.Module):  # transformer_net.py TransformerNet
    def __init__(self):
        super().__init__()
        self.conv1 = RefConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = torch.nn.InstanceNorm2d(32, affine=True)
        self.conv2 = RefConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = torch.nn.InstanceNorm2d(64, affine=True)
        self.conv3 = RefConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = torch.nn.InstanceNorm2d(128, affine=True)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (RefResidualBlock(128) for _ in range(5))
        self.deconv1 = RefUpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = torch.nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = RefUpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = torch.nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = RefConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = torch.nn.ReLU()

    def forward(self, X):
        y = self.relu(self.in1(self.conv1(X)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


def _lively(network: torch.nn.Module, seed: int = 0) -> None:
    """Normalisation scales and shifts away from the identity (the default init is 1 and 0), so they matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in network.named_parameters():
            if ".in" in f".{name}" and name.rsplit(".", 1)[-1] in ("weight", "bias"):
                param.copy_(torch.rand(param.shape, generator=g) + (0.5 if name.endswith("weight") else -0.5))


def test_the_network_and_its_gradient_equal_the_examples_bit_for_bit():
    """Same state dict (the examples' names load as they are), same input in [0, 255]: equal output, and equal
    gradients after a backward of the same loss."""
    torch.manual_seed(0)
    reference = RefTransformerNet()
    _lively(reference)
    ours = TransformerNet()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.rand(2, 3, 36, 44, generator=torch.Generator().manual_seed(1)) * 255
    out_ref, out = reference(x), ours(x)
    assert out.shape == x.shape and torch.equal(out, out_ref)
    out_ref.square().mean().backward()
    out.square().mean().backward()
    grads = dict(reference.named_parameters())
    assert all(torch.equal(p.grad, grads[name].grad) for name, p in ours.named_parameters())


def test_several_styles_blend_their_scales_and_shifts():
    """A network of 3 styles: a one-hot vector is that style's single-style network (its row of every scale and
    shift), a blend is the network whose scales and shifts are the blend of the rows."""
    torch.manual_seed(0)
    multi = TransformerNet(styles=3)
    _lively(multi, seed=2)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 255

    def single(weights: torch.Tensor) -> TransformerNet:
        net = TransformerNet()
        state = {k: (weights @ v if v.dim() == 2 and ".in" in f".{k}" else v) for k, v in multi.state_dict().items()}
        net.load_state_dict(state)
        return net

    for k in range(3):
        onehot = torch.nn.functional.one_hot(torch.tensor(k), 3).float()
        torch.testing.assert_close(multi(x, onehot), single(onehot)(x), rtol=0, atol=0)
    blend = torch.tensor([0.5, 0.5, 0.0])
    torch.testing.assert_close(multi(x, blend), single(blend)(x), rtol=0, atol=0)
    assert not torch.equal(multi(x, torch.tensor([1.0, 0, 0])), multi(x, torch.tensor([0, 1.0, 0])))
    with pytest.raises(ValueError, match="3 styles: give a weight vector of that length"):
        multi(x)
