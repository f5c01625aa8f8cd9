"""The memory-format-keeping reflection pad equals F.pad(mode="reflect") and swaps in without changing keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from styletransfer.methods.adain.model import AdaINDecoder
from styletransfer.nn.padding import FastReflectionPad2d, fast_reflection_pad, use_fast_reflection_padding

FORMATS = [torch.contiguous_format, torch.channels_last]


@pytest.mark.parametrize("memory_format", FORMATS)
@pytest.mark.parametrize("shape,pad", [((2, 3, 7, 5), 1), ((1, 6, 9, 11), 2), ((3, 8, 3, 4), 1), ((2, 4, 5, 13), 3)])
def test_forward_exact_and_backward_close_to_f_pad(shape, pad, memory_format):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).contiguous(memory_format=memory_format).requires_grad_()
    ours = fast_reflection_pad(x, pad)
    reference = F.pad(x, (pad,) * 4, mode="reflect")
    assert torch.equal(ours, reference)
    assert ours.is_contiguous(memory_format=memory_format)
    grad = torch.randn(reference.shape, generator=generator)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    (reference_grad,) = torch.autograd.grad(reference, x, grad)
    torch.testing.assert_close(ours_grad, reference_grad, atol=1e-6 * pad * pad, rtol=1e-6)
    assert ours_grad.is_contiguous(memory_format=memory_format)


def test_gradcheck_in_float64():
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: fast_reflection_pad(t, 2), (x,))


def test_bad_padding_is_refused():
    with pytest.raises(ValueError, match="side longer"):
        fast_reflection_pad(torch.zeros(1, 1, 2, 5), 2)


def test_swap_keeps_module_indices_and_state_dict_keys_and_swaps_back():
    decoder = AdaINDecoder()
    keys = list(decoder.state_dict())
    pads = [i for i, m in enumerate(decoder) if isinstance(m, nn.ReflectionPad2d)]
    assert use_fast_reflection_padding(decoder) == len(pads) == 9
    assert [i for i, m in enumerate(decoder) if isinstance(m, FastReflectionPad2d)] == pads
    assert list(decoder.state_dict()) == keys
    features = torch.randn(1, 512, 4, 5)
    fast = decoder(features, output_size=(30, 37))
    assert use_fast_reflection_padding(decoder, enabled=False) == 9
    assert not any(isinstance(m, FastReflectionPad2d) for m in decoder)
    assert torch.equal(fast, decoder(features, output_size=(30, 37)))
