"""Tiled stylisation (``apps.tiling``) of a fast-style network (``methods.fast.tiled``): a statistics pass per
instance normalisation gives every window the whole image's statistics, so the tiled image is the untiled one.

Tolerance: tiled and untiled images (float32 in [0, 1]) differ by at most ``MAX_DIFF`` (0.03 of a grey level;
measured about 6e-6, float rounding of the normalisation folded into one scale and shift per channel), everywhere,
borders included. Tiles are smaller than the command allows (``MIN_TILE`` is lowered) so the images stay tiny.
"""

from __future__ import annotations

import pytest
import torch

from styletransfer.apps import tiling
from styletransfer.methods.fast.network import TransformerNet
from styletransfer.methods.fast.styler import FastStyler
from styletransfer.methods.fast.tiled import (
    ALIGN,
    BYTES_PER_PIXEL,
    HOST_BYTES_PER_PIXEL,
    MARGIN,
    TiledFast,
    margin_for,
    reach,
    tiling_needs,
)
from styletransfer.protocol.controls import Controls
from styletransfer.runtime.errors import ConfigError

MAX_DIFF = 1e-4
ROUNDING = 1e-5  # float32 rounding of narrow convolutions (see the reach test)
TILE = 176  # advances 28 px: 2 x 56 px margins, the 32 px blend and the 4 px alignment take the rest


def _network(styles: int = 1, seed: int = 0, width: float = 1.0, blocks: int = 5) -> TransformerNet:
    """Random weights with normalisation scales and shifts away from the identity (so each style differs) and the
    last convolution scaled so the output has contrast around mid-grey (a random network's is near 0, then
    clamped: agreement would be trivial)."""
    torch.manual_seed(seed)
    network = TransformerNet(styles, width, blocks)
    with torch.no_grad():
        for name, param in network.named_parameters():
            if ".in" in f".{name}":
                param.copy_(torch.rand(param.shape) + (0.5 if name.endswith("weight") else -0.5))
        network.deconv3.conv2d.weight.mul_(100.0)
        network.deconv3.conv2d.bias.fill_(128.0)
    return network


#: A slim layout (``method.width=0.25``: 8/16/32 channels, two residual blocks: a 30 px reach, a 32 px margin).
SLIM = {"width": 0.25, "blocks": 2}
SLIM_TILE = 128  # the 2 x 32 px margins and the 32 px blend leave windows about 26 px apart


@pytest.fixture(scope="module")
def model() -> FastStyler:
    return FastStyler(_network(), ["one"])


@pytest.fixture(scope="module")
def slim() -> FastStyler:
    return FastStyler(_network(seed=7, **SLIM), ["one"])


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(tiling, "MIN_TILE", 64)


@pytest.mark.parametrize("size", [(48, 214), (206, 44)])
def test_tiled_equals_untiled_and_tiles_alone_do_not(model, small_tiles, size):
    """Three windows along the long side (not a multiple of 4: the last window is padded as the image is)."""
    content = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    untiled = model.stylise(content)
    assert float(untiled.std()) > 0.1 and float(((untiled > 0) & (untiled < 1)).float().mean()) > 0.8
    tiled = tiling.stylise_tiled(model, content, tile=TILE)
    assert tiled.shape == untiled.shape
    assert float((tiled - untiled).abs().max()) <= MAX_DIFF
    # A window stylised alone (its own statistics at every normalisation) is not the untiled image there.
    dim = -1 if size[1] > size[0] else -2
    window = [s for s in tiling.spans(max(size), TILE, model.tiling()) if s.start > 0][0]
    alone = model.stylise(content.narrow(dim, window.start, window.end - window.start))
    there = untiled.narrow(dim, window.start, window.end - window.start)
    assert float((alone - there).narrow(dim, MARGIN, alone.shape[dim] - 2 * MARGIN).abs().mean()) > 1e-2


def test_a_slim_network_tiles_with_its_own_margin_like_untiled(slim, small_tiles):
    """A slimmer layout reaches less far: its windows keep a 32 px margin (not the examples' 56), and the tiled image
    is still the untiled one (five windows along 232 px)."""
    assert slim.tiling().margin == 32 < MARGIN
    content = torch.rand(1, 3, 40, 232, generator=torch.Generator().manual_seed(8))
    untiled = slim.stylise(content)
    assert float(untiled.std()) > 0.1
    assert len(tiling.spans(232, SLIM_TILE, slim.tiling())) == 5
    tiled = tiling.stylise_tiled(slim, content, tile=SLIM_TILE)
    assert float((tiled - untiled).abs().max()) <= MAX_DIFF


@pytest.mark.slow
def test_a_grid_of_windows_for_a_batch_and_blended_styles(small_tiles):
    """2 x 3 windows, two contents, two styles blended: the same agreement. The slim layout (its 128 px tiles keep
    the images at 143 x 171, sides off the 4 px grid; measured 1.6e-6): the grid, the batch and the blend do not
    depend on the network's width, and the examples' layout tiles in test_tiled_equals_untiled_and_tiles_alone_do_not
    and through the command."""
    model = FastStyler(_network(styles=2, seed=1, **SLIM), ["a", "b"])
    content = (torch.rand(2, 3, 143, 171, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    assert (len(tiling.spans(143, SLIM_TILE, model.tiling())), len(tiling.spans(171, SLIM_TILE, model.tiling()))) \
        == (2, 3)
    untiled = model.stylise(content, controls=Controls(weights=[0.3, 0.7]))
    assert float(untiled.std()) > 0.1
    tiled = tiling.stylise_tiled(model, content, tile=SLIM_TILE, controls=Controls(weights=[0.3, 0.7]))
    assert float((tiled - untiled).abs().max()) <= MAX_DIFF, float((tiled - untiled).abs().max())


@pytest.mark.parametrize("layout", ["examples", "slim"])
def test_a_window_edge_changes_the_output_as_far_as_the_margin_says(model, slim, layout):
    """With the whole image's statistics (``norms`` from a one-window pass over it), a crop of the image starting on
    the 4 px grid differs from the whole image's result only within ``reach`` px of its cut edge (the receptive
    field's radius: 54 px for the examples' layout, 30 px for two residual blocks), and beyond it is the same: bit
    for bit for the examples' layout, within ``ROUNDING`` for the slim one (convolutions of 8 and 16 channels round
    differently on maps of another width: measured 1.4e-6 beyond the reach, 3.6e-3 and more within it). The
    layout's margin covers the reach, with less than 4 px to spare."""
    model = model if layout == "examples" else slim
    radius = reach(model.network)
    assert radius == {"examples": 54, "slim": 30}[layout]
    content = torch.rand(1, 3, 48, 200, generator=torch.Generator().manual_seed(3))
    whole_pass = model.tiled(content)
    everything = (slice(0, None), slice(0, None))
    for _ in range(whole_pass.statistics_passes):
        whole_pass.observe(content, everything, 0)
    whole = whole_pass.render(content, 0)
    torch.testing.assert_close(whole, model.stylise(content), rtol=0, atol=MAX_DIFF)
    reaches = []
    for start in (80, 84, 120):
        crop = content[..., start:]
        passes = TiledFast(model.network, None, False, model._autocast)
        passes.norms = dict(whole_pass.norms)  # the whole image's normalisations, not the crop's
        for _ in range(passes.statistics_passes):
            passes.observe(crop, everything, 0)
        diff = (passes.render(crop, 0) - whole[..., start:]).abs().amax(dim=(0, 1, 2))
        reaches.append(int((diff > ROUNDING).nonzero().max()) + 1)
        if layout == "examples":
            assert int((diff != 0).nonzero().max()) + 1 == reaches[-1]
    assert reaches == [radius + 1] * 3  # columns 0..reach from the cut differ; beyond, the same
    margin = model.tiling().margin
    assert margin == margin_for(model.network) and radius + 1 <= margin < radius + 1 + ALIGN


def test_tiles_refuse_style_images_and_controls_the_network_lacks(model):
    with pytest.raises(ConfigError, match="does not support styles: leave it out"):
        model.tiled(torch.rand(1, 3, 32, 32), [torch.rand(3, 16, 16)])
    with pytest.raises(ConfigError, match="does not support alpha: leave it out"):
        model.tiled(torch.rand(1, 3, 32, 32), controls=Controls(alpha=0.5))
    with pytest.raises(ConfigError, match="does not support weights: leave it out"):
        model.tiled(torch.rand(1, 3, 32, 32), controls=Controls(weights=[0.5, 0.5]))


def test_auto_tiles_on_a_cpu_leave_room_for_the_windows_states(monkeypatch):
    monkeypatch.setattr(tiling, "available_memory", lambda device: 8 * 2**30)
    needs = tiling_needs(bf16=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    alone = tiling.auto_tile(needs, cpu)
    assert alone == int((0.5 * 8 * 2**30 / BYTES_PER_PIXEL) ** 0.5) // ALIGN * ALIGN
    free = 8 * 2**30 - HOST_BYTES_PER_PIXEL * 6000 * 4000  # 4.6 GB of window states for 6000 x 4000
    assert tiling.auto_tile(needs, cpu, pixels=6000 * 4000) == int((0.5 * free / BYTES_PER_PIXEL) ** 0.5) // 4 * 4
    assert tiling.auto_tile(needs, cuda, pixels=6000 * 4000) == alone  # the states are on the host, not the GPU
    assert tiling_needs(False, TransformerNet()) == needs  # the examples' layout
    slim = tiling_needs(False, TransformerNet(width=0.25))  # 8/16 channels at full and half resolution: a quarter
    assert (slim.bytes_per_pixel, slim.host_bytes_per_pixel) == (BYTES_PER_PIXEL // 4, HOST_BYTES_PER_PIXEL // 4)


@pytest.mark.slow
def test_the_command_tiles_a_network_file_and_keeps_the_untiled_result(tmp_path):
    """An examples-format network file through ``styletransfer-stylise --max-tile 256`` (two windows down a
    264 x 72 image: no larger than two windows need, the network's cost grows with the pixels; a grid of windows is
    test_a_grid_of_windows_for_a_batch_and_blended_styles's) and ``--max-tile 0``: the same 8-bit image up to one
    grey level."""
    from styletransfer.cli.stylise import main
    from styletransfer.data.images import load_image_tensor, save_image

    torch.save(_network(seed=4).state_dict(), tmp_path / "net.pth")
    assert len(tiling.spans(264, 256, tiling_needs(bf16=False))) == 2
    save_image(torch.rand(3, 264, 72, generator=torch.Generator().manual_seed(5)), tmp_path / "photo.png")
    for tile in ("256", "0"):
        args = [str(tmp_path / "net.pth"), "--content", str(tmp_path / "photo.png"), "-o", str(tmp_path / tile)]
        assert main([*args, "--device", "cpu", "--ext", "png", "--max-tile", tile]) == 0
    tiled, untiled = (load_image_tensor(next((tmp_path / t).iterdir())) for t in ("256", "0"))
    assert tiled.shape == untiled.shape == (3, 264, 72)
    assert float((tiled - untiled).abs().max()) <= 1 / 255 + 1e-6, float((tiled - untiled).abs().max()) * 255
