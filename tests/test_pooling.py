"""VGG's max pooling: a gather as its compiled backward, equal to ATen's backward; no scatter left in the compiled
AdaIN training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import RANDOM_ENCODER
from graph_helpers import backward_ops, scatters

from styletransfer.methods.adain import AdaINModule
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.nn.pooling import MaxPool2d, _MaxPool2x2


def _relu_like(shape: tuple[int, ...], dtype: torch.dtype, memory_format: torch.memory_format) -> torch.Tensor:
    """ReLU output rounded to a coarse grid: many zeros and tied maxima, as VGG's pools see in bf16."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).relu().mul(4).round().div(4)
    return x.to(dtype).contiguous(memory_format=memory_format).requires_grad_()


@pytest.mark.parametrize("size,ceil_mode", [((8, 10), False), ((8, 10), True), ((7, 9), True)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_backward_equals_aten(size, ceil_mode, memory_format, dtype):
    x = _relu_like((2, 3, *size), dtype, memory_format)
    ours = _MaxPool2x2.apply(x, ceil_mode)
    reference = F.max_pool2d(x, 2, 2, ceil_mode=ceil_mode)
    assert torch.equal(ours, reference)
    grad = torch.randn(reference.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    (reference_grad,) = torch.autograd.grad(reference, x, grad)
    assert torch.equal(ours_grad, reference_grad)  # ties go to the first maximum, as in ATen
    assert ours_grad.is_contiguous(memory_format=memory_format)


def test_gather_backward_gradcheck_in_float64():
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _MaxPool2x2.apply(t, True), (x,))


def test_compiled_pool_backward_has_no_scatter():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    pool = MaxPool2d(2, 2, ceil_mode=True)
    ops = backward_ops(lambda t: pool(torch.relu(t)), x)
    assert ops and not scatters(ops), ops
    # The check can fail: torch's own decomposition of the pool's backward is a scatter_add.
    assert scatters(backward_ops(lambda t: F.max_pool2d(torch.relu(t), 2, 2, ceil_mode=True), x))


def test_floor_pool_of_an_odd_side_keeps_atens_backward():
    """With floor rounding the last row of an odd side is in no window; that case stays on nn.MaxPool2d."""
    pool = MaxPool2d(2, 2)
    assert not pool._gatherable(torch.zeros(1, 1, 7, 8)) and pool._gatherable(torch.zeros(1, 1, 8, 8))
    assert MaxPool2d(2, 2, ceil_mode=True)._gatherable(torch.zeros(1, 1, 7, 9))
    assert not MaxPool2d(3, 2, ceil_mode=True)._gatherable(torch.zeros(1, 1, 8, 8))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vgg_normalised", "torchvision"])
def test_compiled_adain_training_step_has_no_scatter(arch):
    """The whole compiled loss of a training step (encoder, decoder, statistics, losses) backpropagates without an
    indexed write: the pools' backward is a gather, the upsampling's a block sum."""
    torch.manual_seed(0)
    model = AdaINModule(encoder={**RANDOM_ENCODER, "arch": arch}, channels_last=True)
    model.setup("fit")
    content, style = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    ops = backward_ops(lambda c, s: model._loss_terms(c, s, (1.0, 10.0))["loss/total"], content, style)
    assert any("convolution_backward" in op for op in ops) and not scatters(ops), scatters(ops)


def test_compiled_encoder_gradient_equals_eager():
    """Through the whole encoder (three pools, reflection pads, channels_last) the compiled gradient with respect to
    the image equals eager's: what the decoded image's encoder pass of an AdaIN step and Gatys' image rely on."""
    torch.manual_seed(0)
    encoder = VGGEncoder(["relu1_1", "relu2_1", "relu3_1", "relu4_1"], weights="random", arch="vgg_normalised")
    encoder = encoder.to(memory_format=torch.channels_last)
    image = torch.rand(2, 3, 40, 48).contiguous(memory_format=torch.channels_last).requires_grad_()

    def loss(x: torch.Tensor) -> torch.Tensor:
        return sum(value.square().mean() for value in encoder(x).values())

    (eager,) = torch.autograd.grad(loss(image), image)
    torch._dynamo.reset()
    (compiled,) = torch.autograd.grad(torch.compile(loss, backend="aot_eager", fullgraph=True)(image), image)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-7)
