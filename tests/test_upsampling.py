"""Nearest doubling without a scatter in its compiled backward, equal in value to F.interpolate(mode="nearest"); a
tiled window upsampled as the whole image is (``RegionUpsampling``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from graph_helpers import backward_ops, compile_recording_backward, scatters

from styletransfer.methods.adain.model import AdaINDecoder
from styletransfer.nn.upsampling import (
    RegionUpsampling,
    double_nearest,
    upsample_nearest,
    upsample_to,
    upsampled_sizes,
)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_double_nearest_equals_interpolate(memory_format):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=generator).contiguous(memory_format=memory_format).requires_grad_()
    ours = double_nearest(x)
    reference = F.interpolate(x, scale_factor=2.0, mode="nearest")
    assert torch.equal(ours, reference)
    grad = torch.randn(reference.shape, generator=generator)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    (reference_grad,) = torch.autograd.grad(reference, x, grad)
    torch.testing.assert_close(ours_grad, reference_grad, atol=1e-6, rtol=1e-6)
    # The memory format is kept both ways, as F.interpolate keeps it: the next convolution gets no layout copy.
    assert ours.is_contiguous(memory_format=memory_format)
    assert ours_grad.is_contiguous(memory_format=memory_format)


def test_double_nearest_gradcheck_in_float64():
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(double_nearest, (x,))


def test_compiled_doubling_backward_has_no_scatter():
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    ours = backward_ops(lambda t: upsample_nearest(torch.relu(t)), x)
    assert ours and not scatters(ours), ours
    # The check can fail: F.interpolate's backward decomposes to an accumulating index_put.
    reference = backward_ops(lambda t: F.interpolate(torch.relu(t), scale_factor=2.0, mode="nearest"), x)
    assert scatters(reference), reference


def test_decoder_to_odd_output_size_still_exact():
    torch.manual_seed(0)
    decoder = AdaINDecoder()
    features = torch.randn(1, 512, 5, 6)
    with torch.no_grad():
        out = decoder(features, output_size=(37, 45))
    assert out.shape == (1, 3, 37, 45)
    assert upsample_nearest(features[:, :2], (9, 11)).shape == (1, 2, 9, 11)
    assert torch.equal(upsample_nearest(features[:, :2], (9, 11)),
                       F.interpolate(features[:, :2], size=(9, 11), mode="nearest"))


@pytest.mark.slow
def test_compiled_decoder_takes_the_scatter_free_path_and_matches_eager():
    """Inside the decoder (output_size given, as in training) the compiled backward has no scatter, and the
    compiled decoder's output and gradient equal eager's. One compilation serves both: dynamo and AOT autograd with
    inductor's decompositions (what inductor receives), its graphs run as traced."""
    torch.manual_seed(0)
    decoder = AdaINDecoder()
    features = torch.randn(1, 512, 4, 5, requires_grad=True)
    eager = decoder(features, output_size=(32, 40))
    (eager_grad,) = torch.autograd.grad(eager.square().sum(), features)
    compiled_decoder, ops = compile_recording_backward(lambda f: decoder(f, output_size=(32, 40)))
    compiled = compiled_decoder(features)
    (compiled_grad,) = torch.autograd.grad(compiled.square().sum(), features)
    assert ops and not scatters(ops), ops
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shuffle", [False, True])
def test_region_upsampling_maps_a_window_as_the_whole_image(shuffle):
    """Three upsamplings of a 37 x 27 map to 300 x 212 px (VGG's relu4_1 rounding: 75, 150, 300 rows, not
    doublings), with a doubling before each (a pixel shuffle's) or not: a window's map upsampled by
    ``RegionUpsampling`` is the whole map's, sliced to the window, wherever its sources lie inside the window."""
    image, bottleneck = (300, 212), (37, 27)
    whole = torch.randn(1, 2, *bottleneck, generator=torch.Generator().manual_seed(0))

    def decode(x, size, upsample):
        for stage_size in upsampled_sizes(size, 3):
            x = upsample(double_nearest(x) if shuffle else x, stage_size)
        return x

    reference = decode(whole, image, upsample_to)
    for origin, window in (((0, 0), (20, 16)), ((64, 96), (15, 14)), ((160, 104), (17, 13))):
        rows, cols = (slice(o // 8, o // 8 + n) for o, n in zip(origin, window))
        size = (min(8 * window[0], image[0] - origin[0]), min(8 * window[1], image[1] - origin[1]))
        region = RegionUpsampling(image, origin, bottleneck, window, 3)
        ours = decode(whole[..., rows, cols], size, region)
        expected = reference[..., origin[0] : origin[0] + size[0], origin[1] : origin[1] + size[1]]
        assert ours.shape == expected.shape
        assert torch.equal(ours[..., 8:-8, 8:-8], expected[..., 8:-8, 8:-8]), origin
        # the window's own exact-size upsampling maps the interior differently
        if size[0] % 8:
            own = decode(whole[..., rows, cols], size, upsample_to)
            assert not torch.equal(own[..., 8:-8, 8:-8], expected[..., 8:-8, 8:-8])
