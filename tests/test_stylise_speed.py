"""The fast stylise path (cached style statistics, bf16, channels_last, compile, uint8 input) gives the plain fp32
path's results for every control, and the folder pipeline batches by size within a bounded memory."""

from __future__ import annotations

import math

import pytest
import torch

from styletransfer.apps.pipeline import PENDING_BATCHES, SizeGroups
from styletransfer.methods.adain.decoders import ConfigurableDecoder
from styletransfer.methods.adain.model import (
    AdaINDecoder,
    encode,
    encode_styles,
    masked_adain,
    mix_stats,
    region_masks,
    style_stats,
    stylise,
)
from styletransfer.methods.adain.styliser import COMPILE_SHAPES, Styliser
from styletransfer.nn.backbones import BackboneEncoder
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.nn.stats import mean_std
from styletransfer.protocol.controls import Controls

#: bf16 autocast + channels_last vs fp32 at FAST_SIDE px with random weights on a CPU must stay above this PSNR.
MIN_PSNR_DB = 40.0
#: The contents' side for the bf16 comparisons (bf16 is emulated, several times slower, on CPUs without bf16 units):
#: relu4_1 maps of 5 x 5, as large as a 40 px photo's.
FAST_SIDE = 40


def _styliser(**options) -> Styliser:
    torch.manual_seed(0)
    return Styliser(VGGEncoder(["relu4_1"], weights="random", seed=0), AdaINDecoder(), **options)


@pytest.fixture(scope="module")
def plain() -> Styliser:
    return _styliser()


@pytest.fixture(scope="module")
def fast() -> Styliser:
    return _styliser(bf16=True, channels_last=True)


def _images(size: int = 64):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(2, 3, size, size, generator=g), torch.rand(1, 3, 48, 56, generator=g),
            torch.rand(1, 3, 56, 48, generator=g))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def test_cached_statistics_give_the_same_images_as_styles_and_features(plain):
    content, style_a, style_b = _images(40)
    stats = plain.encode_styles([style_a, style_b])
    features = encode_styles(plain.encoder, [style_a, style_b])
    for controls in ({"weights": [0.3, 0.7]}, {"weights": [1.0, 0.0], "alpha": 0.4}):
        reference = plain.stylise(content, [style_a, style_b], Controls(**controls))
        torch.testing.assert_close(plain.stylise(content, controls=Controls(style_codes=stats, **controls)), reference)
        torch.testing.assert_close(stylise(plain.encoder, plain.decoder, content, controls=Controls(**controls),
                                           style_features=features),
                                   reference)
    # The statistics are tiny: (1, 512, 1, 1) mean and std per style, not a feature map.
    assert [tuple(t.shape) for t in stats[0]] == [(1, 512, 1, 1), (1, 512, 1, 1)]


def test_mixed_statistics_equal_the_weighted_sum_of_adain_outputs(plain):
    content, style_a, style_b = _images(40)
    c_feat = encode(plain.encoder, content)
    stats = style_stats(encode_styles(plain.encoder, [style_a, style_b]))
    mean, std = mix_stats(stats, [0.25, 0.75])
    c_mean, c_std = mean_std(c_feat)
    normalised = (c_feat - c_mean) / c_std
    by_sum = sum(w * (normalised * s + m) for w, (m, s) in zip([0.25, 0.75], stats))
    torch.testing.assert_close(normalised * std + mean, by_sum)


def test_batched_masked_adain_matches_the_per_image_definition(plain):
    g = torch.Generator().manual_seed(4)
    content = torch.randn(2, 8, 6, 7, generator=g)
    styles = [torch.randn(1, 8, 5, 5, generator=g), torch.randn(2, 8, 4, 6, generator=g)]
    masks = region_masks([torch.rand(2, 1, 12, 14, generator=g), torch.rand(2, 1, 12, 14, generator=g)], 2, (6, 7),
                         content.device)
    masks[0, 1, 0, :, :] = 0
    masks[0, 1, 0, 0, 0] = 1  # a one-position region has no std: left out
    expected = torch.zeros_like(content)
    for i in range(2):
        cover = torch.zeros(6, 7)
        total = torch.zeros(8, 6, 7)
        for style, mask in zip(styles, masks):
            region = mask[i, 0].bool()
            if int(region.sum()) < 2:
                continue
            s_mean, s_std = mean_std(style[min(i, style.shape[0] - 1):][:1])
            values = content[i][:, region]
            mean, std = values.mean(1, keepdim=True), (values.var(1, keepdim=True) + 1e-5).sqrt()
            total[:, region] += (values - mean) / std * s_std[0, :, :, 0] + s_mean[0, :, :, 0]
            cover[region] += 1
        expected[i] = torch.where(cover > 0, total / cover.clamp_min(1), content[i])
    torch.testing.assert_close(masked_adain(content, styles, masks), expected, rtol=1e-5, atol=1e-5)
    stats = [mean_std(s) for s in styles]  # statistics instead of features: the same result
    torch.testing.assert_close(masked_adain(content, stats, masks), masked_adain(content, styles, masks))


def test_bf16_channels_last_stays_within_40_db_of_fp32(plain, fast):
    content, style, _ = _images(FAST_SIDE)
    reference = plain.stylise(content, style)
    result = fast.stylise(content, controls=Controls(style_codes=fast.encode_styles([style])))
    assert result.dtype == torch.float32 and result.is_contiguous() is not None
    assert psnr(result, reference) >= MIN_PSNR_DB, psnr(result, reference)


@pytest.mark.parametrize("controls", [
    {"alpha": 0.5}, {"alpha": 0.0}, {"weights": [0.3, 0.7]}, {"preserve_colour": True},
    {"masks": "halves"}, {"output_size": (40, 48)},
], ids=["alpha", "alpha0", "interpolation", "colour", "masks", "output-size"])
def test_every_control_through_the_fast_path_matches_fp32(plain, fast, controls):
    content, style_a, style_b = _images(FAST_SIDE)
    styles = [style_a, style_b] if "weights" in controls or "masks" in controls else [style_a]
    if controls.get("masks") == "halves":
        left = torch.zeros(FAST_SIDE, FAST_SIDE)
        left[:, : FAST_SIDE // 2] = 1
        controls = {"masks": [left, 1 - left]}
    reference = plain.stylise(content, styles, Controls(**controls))
    cached = {} if controls.get("preserve_colour") else {"style_codes": fast.encode_styles(styles)}
    result = fast.stylise(content, [] if cached else styles, Controls(**cached, **controls))
    assert result.shape == reference.shape
    assert psnr(result, reference) >= MIN_PSNR_DB, psnr(result, reference)


def test_uint8_contents_are_the_same_images_as_float(plain):
    content = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    _, style, _ = _images()
    stats = plain.encode_styles([style])
    torch.testing.assert_close(plain.stylise(content, controls=Controls(style_codes=stats)),
                               plain.stylise(content.float() / 255.0, controls=Controls(style_codes=stats)),
                               rtol=0, atol=0)


def test_size_groups_never_mix_sizes_and_stay_bounded():
    groups = SizeGroups(batch_size=3)
    ready = []
    for i in range(40):
        side = 32 + 4 * (i % 7)  # seven sizes interleaved
        ready += groups.add(i, torch.zeros(3, side, side))
        assert sum(len(g) for g in groups.groups.values()) <= PENDING_BATCHES * 3
    ready += groups.drain()
    assert sorted(i for batch in ready for i, _ in batch) == list(range(40))
    for batch in ready:
        assert 1 <= len(batch) <= 3 and len({tuple(image.shape) for _, image in batch}) == 1


#: A one-convolution encoder the product takes for the compile test: AlexNet to its first pool (64 channels at
#: stride 8, the stride the decoders start from), with the configurable decoder at its narrowest behind it.
SHALLOW_BOTTLENECK = "features.2"


@pytest.mark.slow
def test_compiled_core_matches_eager_and_stops_compiling_new_shapes():
    """Styliser(compile=True): the compiled core (encode, AdaIN with cached statistics, alpha, decode to the exact
    size, clamp) equals the eager one, and once COMPILE_SHAPES shapes are compiled a new one runs eagerly.

    Behind SHALLOW_BOTTLENECK: the core and the cap do not depend on the layers, and inductor builds each distinct
    fused kernel with its own C++ compilation (about 0.8 CPU-s of g++ and 0.6 s of Python each, on top of the
    process's first compile): 10 kernels here against 16 behind VGG-19's relu4_1 and the mirror (30 to 22 CPU-s,
    measured alone on 2 AVX2 cores). Inductor's code for VGG's convolutions, ReLUs and pool is held to eager by
    test_gatys_speed's compile test, the mirror's graph (what inductor receives) by test_upsampling's; the
    configurable decoder's pads, convolutions and nearest upsampling are the mirror's."""
    torch.manual_seed(0)
    encoder = BackboneEncoder([SHALLOW_BOTTLENECK], "alexnet", weights="random", seed=0)
    decoder = ConfigurableDecoder(64, width=0.25)

    def styliser(**options) -> Styliser:
        return Styliser(encoder, decoder, bottleneck=SHALLOW_BOTTLENECK, **options)

    plain, compiled = styliser(), styliser(compile=True)
    content, style, _ = _images(32)
    stats = plain.encode_styles([style])
    torch.testing.assert_close(compiled.stylise(content, controls=Controls(style_codes=stats, alpha=0.7)),
                               plain.stylise(content, controls=Controls(style_codes=stats, alpha=0.7)),
                               rtol=1e-4, atol=1e-4)
    compiled._compiled_shapes.update({("other", k) for k in range(COMPILE_SHAPES)})  # the cap reached
    assert compiled._core(content[:1]).__name__ == "stylise_core"  # a new shape runs eagerly
    torch.testing.assert_close(compiled.stylise(content[:1], controls=Controls(style_codes=stats)),
                               plain.stylise(content[:1], controls=Controls(style_codes=stats)))
