"""Tiled stylisation (``apps.tiling``) of an AdaIN model (``methods.adain.tiled``): the window grid, agreement with
the untiled result away from the borders, seam energy along the tile boundaries, the global statistics, and
``--max-tile`` on the command line.

Tolerances: tiled and untiled images (float32 in [0, 1]) differ by at most ``MAX_DIFF`` (0.03 of a grey level) and
on average by at most ``MEAN_DIFF`` ``BORDER`` px in from the image edges (measured: about 2e-8, float rounding);
the seam energy (mean absolute difference between neighbouring pixels across the tile boundaries, i.e. inside the
blend zones) relative to elsewhere is at most ``SEAM_FACTOR`` times the untiled image's at the same places.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import SKIMAGE_DATA
from PIL import Image

from styletransfer.apps import tiling
from styletransfer.apps.tiling import BLEND, MIN_TILE, Span, ramp_weights
from styletransfer.cli.stylise import main
from styletransfer.data.images import load_image_tensor, pil_to_tensor, save_image
from styletransfer.methods.adain.decoders import ConfigurableDecoder as configurable
from styletransfer.methods.adain.model import AdaINDecoder, adain, encode
from styletransfer.methods.adain.styliser import Styliser
from styletransfer.methods.adain.tiled import ALIGN, BYTES_PER_PIXEL, MARGIN, tiling_needs
from styletransfer.nn.encoder import VGGEncoder
from styletransfer.nn.stats import mean_std
from styletransfer.protocol.controls import Controls
from styletransfer.runtime.errors import ConfigError

NEEDS = tiling_needs(bf16=False)
MAX_DIFF = 1e-4
MEAN_DIFF = 1e-5
BORDER = 16
SEAM_FACTOR = 1.01


@pytest.fixture(scope="module")
def styliser() -> Styliser:
    """Random weights, the decoder's last conv rescaled per colour channel so that results have contrast (spatial
    std about 0.15 around 0.5). A random decoder's output hardly varies (std about 2e-4) and is half clamped to 0,
    which would make any agreement trivial."""
    torch.manual_seed(0)
    model = Styliser(VGGEncoder(["relu4_1"], weights="random", seed=0), AdaINDecoder(), channels_last=True)
    last = [m for m in model.decoder if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        features = encode(model.encoder, _photo(128))
        raw = model.decoder(adain(features, encode(model.encoder, _style())), (128, 128))
        scale = 0.15 / raw.std(dim=(0, 2, 3))
        last.weight.mul_(scale[:, None, None, None])
        last.bias.mul_(scale).add_(0.5 - scale * raw.mean(dim=(0, 2, 3)))
    return model


def _photo(size: int) -> torch.Tensor:
    """scikit-image's astronaut (a real photo: edges, flat areas, texture) at ``size`` x ``size``, (1, 3, H, W)."""
    image = Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB").resize((size, size), Image.BICUBIC)
    return pil_to_tensor(image)[None]


def spans(size: int, tile: int) -> list[Span]:
    """AdaIN's windows (8 px alignment, 64 px margins)."""
    return tiling.spans(size, tile, NEEDS)


def _style() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 64, 64, generator=g)


def _seams(windows: list[Span]) -> torch.Tensor:
    """Boolean over positions: True inside an overlap of neighbouring windows' kept parts (where they blend)."""
    size = windows[-1].end
    mask = torch.zeros(size - 1, dtype=torch.bool)
    for left, right in zip(windows, windows[1:]):
        mask[right.keep0:left.keep1 - 1] = True
    return mask


def seam_energy(image: torch.Tensor, rows: list[Span], cols: list[Span]) -> tuple[float, float]:
    """(mean |difference of neighbouring pixels| across the tile boundaries, the same elsewhere), ``BORDER`` px in
    from the image edges: horizontal differences in the blend columns, vertical ones in the blend rows."""
    dx = (image[..., 1:] - image[..., :-1]).abs()[..., BORDER:-BORDER, :]
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs()[..., BORDER:-BORDER]
    sx, sy = _seams(cols), _seams(rows)
    inner_x, inner_y = torch.zeros_like(sx), torch.zeros_like(sy)
    inner_x[BORDER:-BORDER], inner_y[BORDER:-BORDER] = True, True
    seam = torch.cat([dx[..., sx & inner_x].flatten(), dy[..., sy & inner_y, :].flatten()])
    rest = torch.cat([dx[..., ~sx & inner_x].flatten(), dy[..., ~sy & inner_y, :].flatten()])
    return float(seam.mean()), float(rest.mean())


# ---------------------------------------------------------------- the window grid (no model)


@pytest.mark.parametrize("size", [257, 383, 512, 1000, 1024, 4097, 6000])
@pytest.mark.parametrize("tile", [256, 384, 512, 1000, 2264])
def test_windows_cover_the_image_with_aligned_margins_and_weights_that_sum_to_one(size, tile):
    windows = spans(size, tile)
    assert windows[0].start == 0 and windows[-1].end == size
    for span in windows:
        assert span.start % ALIGN == 0 and span.end - span.start <= tile
        assert span.keep0 == 0 or span.keep0 - span.start >= MARGIN
        assert span.keep1 == size or span.end - span.keep1 >= MARGIN
        # The relu4_1 positions a window owns lie a margin inside it (past its padding's reach), on the 8 px grid.
        assert span.own0 % ALIGN == 0 and (span.own0 == 0 or span.own0 - span.start >= MARGIN)
        assert span.own1 == -1 or (span.own1 % ALIGN == 0 and span.end - span.own1 >= MARGIN)
    assert [s.own1 for s in windows[:-1]] == [s.own0 for s in windows[1:]] and windows[-1].own1 == -1
    for left, right in zip(windows, windows[1:]):
        assert left.keep1 - right.keep0 >= BLEND  # kept parts overlap enough to feather
    total = torch.zeros(size)
    for span, weight in zip(windows, ramp_weights(windows, size)):
        assert weight.shape == (span.keep1 - span.keep0,) and float(weight.min()) > 0 and float(weight.max()) <= 1
        assert float(weight.diff().abs().max()) <= 1 / BLEND + 1e-6  # ramps, no jumps
        total[span.keep0:span.keep1] += weight
    torch.testing.assert_close(total, torch.ones(size))


@pytest.mark.parametrize("align, margin", [(8, MARGIN), (16, 240), (4, 100), (32, 16)])
def test_every_window_owns_pixels_down_to_the_smallest_tile(align, margin, monkeypatch):
    """At a model's smallest tile the windows advance by one ``align`` step, and each owns a part of the image:
    the owned parts partition it, each inside its window's kept part. (16, 240) is ResNet-50 to layer3 (smallest
    tile 544 px): at 544 px, 561 px and wider images gave a middle window nothing to own (two cuts rounded half to
    even onto one place), and NaN pixels."""
    needs = tiling.TilingNeeds(align=align, margin=margin, bytes_per_pixel=1)
    monkeypatch.setattr(tiling, "MIN_TILE", 0)  # the model's own least, without the command's 256 px floor
    least = tiling.smallest_tile(needs)
    for tile in (least, least + align, least + 2 * align):
        for size in range(tile + 1, 2 * tile + 4 * align):
            windows = tiling.spans(size, tile, needs)
            owned = [(w.own0, size if w.own1 == -1 else w.own1) for w in windows]
            assert owned[0][0] == 0 and owned[-1][1] == size, (size, tile)
            assert all(left[1] == right[0] for left, right in zip(owned, owned[1:])), (size, tile)
            assert all(w.keep0 <= own0 < own1 <= w.keep1 for w, (own0, own1) in zip(windows, owned)), (size, tile)


def test_max_tile_values(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(tiling, "available_memory", lambda device: 8 * 2**30)
    side = (int((tiling.MEMORY_FRACTION * 8 * 2**30 / BYTES_PER_PIXEL) ** 0.5)) // ALIGN * ALIGN
    assert tiling.tile_side("auto", NEEDS, cpu) == side
    assert tiling.tile_side("auto", tiling_needs(bf16=True), cpu) > side > tiling.tile_side("auto", NEEDS, cpu, 4)
    monkeypatch.setattr(tiling, "available_memory", lambda device: 1)
    assert tiling.tile_side("auto", NEEDS, cpu) == MIN_TILE
    assert tiling.tile_side(0, NEEDS, cpu) == 0 and tiling.tile_side(1001, NEEDS, cpu) == 1000
    for bad in (100, -1, "big", 2.5, True):
        with pytest.raises(ConfigError, match="--max-tile"):
            tiling.tile_side(bad, NEEDS, cpu)


def test_available_memory_reads_this_machine():
    assert tiling.available_memory(torch.device("cpu")) > 2**20


# ---------------------------------------------------------------- tiled vs untiled (random weights, CPU)


#: The photo's side and tile for the tiled-versus-untiled tests: 3 x 3 windows, so that the middle one has neighbours
#: on every side, and a crop CROP px in from each edge keeps a 16 px centre a margin in from its own edges. Tiles below
#: the command's 256 px (MIN_TILE, lowered for the fixture) keep the image small: the encoder to relu4_1 is the cost,
#: and grows with the windows' pixels (at 288 px in 224 px tiles, the margins measured the same: the differences
#: 1.1e-5, the seam ratio 1.0000, the naive quarters' 3.8). 176 px tiles would step 8 px: the middle window would own
#: no bottleneck position.
SIDE, TILE, CROP = 240, 192, 48


@pytest.fixture(scope="module")
def photo(styliser):
    """(content, style statistics, untiled result, tiled result with TILE px tiles: 3 x 3 windows)."""
    content = _photo(SIDE)
    stats = styliser.encode_styles([_style()])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiling, "MIN_TILE", 128)
        tiled = tiling.stylise_any_size(styliser, content, controls=Controls(style_codes=stats), max_tile=TILE)
    return content, stats, styliser.stylise(content, controls=Controls(style_codes=stats)), tiled


@pytest.mark.slow
def test_tiled_and_untiled_agree_away_from_the_borders(photo):
    _, _, untiled, tiled = photo
    assert tiled.shape == untiled.shape == (1, 3, SIDE, SIDE)
    assert len(spans(SIDE, TILE)) == 3 and tiled.device.type == "cpu"
    diff = (tiled - untiled).abs()[..., BORDER:-BORDER, BORDER:-BORDER]
    assert float(diff.max()) <= MAX_DIFF and float(diff.mean()) <= MEAN_DIFF, (float(diff.max()), float(diff.mean()))


@pytest.mark.slow
def test_seam_energy_along_tile_boundaries_is_no_higher_than_elsewhere(photo, styliser):
    content, stats, untiled, tiled = photo
    rows = cols = spans(SIDE, TILE)
    seam, rest = seam_energy(tiled, rows, cols)
    seam_ref, rest_ref = seam_energy(untiled, rows, cols)
    assert seam / rest <= SEAM_FACTOR * seam_ref / rest_ref, (seam, rest, seam_ref, rest_ref)
    # The measure sees seams: quarters stylised alone (own statistics, padding at the cuts), pasted.
    half = SIDE // 2
    naive = torch.zeros_like(untiled)
    for y in (0, half):
        for x in (0, half):
            naive[..., y:y + half, x:x + half] = styliser.stylise(content[..., y:y + half, x:x + half],
                                                                  controls=Controls(style_codes=stats))
    cut = [Span(0, SIDE, 0, half + 1, 0, 0), Span(0, SIDE, half - 1, SIDE, 0, 0)]  # across pixels half-1 | half
    naive_seam, naive_rest = seam_energy(naive, cut, cut)
    ref_seam, ref_rest = seam_energy(untiled, cut, cut)
    assert naive_seam / naive_rest > 1.5 * ref_seam / ref_rest, (naive_seam, naive_rest, ref_seam, ref_rest)


@pytest.mark.slow
def test_every_tile_gets_the_global_statistics(photo, styliser):
    content, stats, untiled, _ = photo
    features = encode(styliser.encoder, content)
    c_stats = mean_std(features)  # the untiled image's content statistics
    crop = content[..., CROP:-CROP, CROP:-CROP]
    passes = styliser.tiled(crop, controls=Controls(style_codes=stats))
    with torch.no_grad():
        passes.content_stats.add(features)  # pass 1 as if over the whole image
        alone = passes.render(crop)
    torch.testing.assert_close(passes.content_stats.mean_std(content.device), c_stats, rtol=1e-5, atol=1e-6)
    # Its centre (a margin in from the crop's edges) is the untiled result there ...
    centre = (alone - untiled[..., CROP:-CROP, CROP:-CROP])[..., MARGIN:-MARGIN, MARGIN:-MARGIN].abs()
    assert float(centre.max()) <= MAX_DIFF
    # ... while the crop stylised with its own statistics is not.
    local = styliser.stylise(crop, controls=Controls(style_codes=stats))
    assert centre.shape[-2:] == (16, 16)
    difference = (local - untiled[..., CROP:-CROP, CROP:-CROP])[..., MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert float(difference.abs().mean()) > 1e-3  # measured 1.5e-2


def test_tiled_statistics_equal_the_whole_maps_and_controls_match(styliser, monkeypatch):
    """Two 176 px windows (the least AdaIN's margins allow) along 181 px; 64 rows (one window tall, as the 200 and
    then 96 rows this test once had, and two windows of 256 px along 320) keep the encoder's cost down: the
    statistics of the whole map are summed over the windows' owned pixels either way."""
    monkeypatch.setattr(tiling, "MIN_TILE", 128)
    g = torch.Generator().manual_seed(2)
    content = torch.rand(1, 3, 64, 181, generator=g).mul(255).to(torch.uint8)  # uint8 stays on the host
    rows, cols = spans(64, 176), spans(181, 176)
    assert (len(rows), len(cols)) == (1, 2)
    passes = styliser.tiled(content, [_style()])
    with torch.no_grad():
        for row, col, window in tiling.windows(content, rows, cols):
            passes.observe(window.float() / 255, (tiling.owned_pixels(row), tiling.owned_pixels(col)))
        tiled_mean, tiled_std = passes.content_stats.mean_std(torch.device("cpu"))
        mean, std = mean_std(encode(styliser.encoder, content.float() / 255))
    torch.testing.assert_close(tiled_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tiled_std, std, rtol=1e-5, atol=1e-6)
    styles = [_style(), torch.rand(1, 3, 48, 56, generator=g)]
    controls = {"weights": [0.3, 0.7], "alpha": 0.6, "preserve_colour": True}
    diff = (tiling.stylise_tiled(styliser, content, styles, tile=176, controls=Controls(**controls))
            - styliser.stylise(content, styles, Controls(**controls))).abs()[..., BORDER:-BORDER, BORDER:-BORDER]
    assert float(diff.max()) <= MAX_DIFF


def _lively(model: Styliser) -> Styliser:
    """``model`` with its decoder's last convolution rescaled for contrast, as the ``styliser`` fixture's."""
    last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        raw = model.decoder(encode(model.encoder, _photo(64)), (64, 64))
        scale = 0.15 / raw.std(dim=(0, 2, 3))
        last.weight.mul_(scale[:, None, None, None])
        last.bias.mul_(scale).add_(0.5 - scale * raw.mean(dim=(0, 2, 3)))
    return model


@pytest.mark.parametrize("decoder", ["mirror", "pixel_shuffle"])
def test_tiled_equals_untiled_at_a_size_that_is_not_a_multiple_of_8(styliser, monkeypatch, decoder):
    """300 x 44 px (VGG's relu4_1 map is 37 x 5, which the whole image's decoder upsamples to 75, 150, 300 rows: not
    doublings) in three or two windows along the height: each window upsamples with the whole image's nearest maps
    sliced to its region, so the result is the untiled one up to float rounding (measured 2.5e-5 with the mirror,
    8e-7 with pixel shuffle), borders included; with the windows' own exact-size upsampling it differed by 0.59 and
    0.008. Tiles below the command's 256 px keep the test small."""
    if decoder == "pixel_shuffle":
        torch.manual_seed(0)
        model = _lively(Styliser(styliser.encoder, configurable(width=0.25, upsample="pixel_shuffle")))
    else:
        model = styliser
    needs = model.tiling()
    tile = 2 * needs.margin + BLEND + 2 * ALIGN + 56
    monkeypatch.setattr(tiling, "MIN_TILE", 128)
    assert len(tiling.spans(300, tile, needs)) == (3 if decoder == "mirror" else 2)
    g = torch.Generator().manual_seed(1)
    content = F.interpolate(torch.rand(1, 3, 37, 5, generator=g), size=(300, 44), mode="bicubic").clamp(0, 1)
    untiled = model.stylise(content, [_style()])
    tiled = tiling.stylise_any_size(model, content, [_style()], max_tile=tile)
    assert float(untiled.std()) > 0.05
    assert float((tiled - untiled).abs().max()) <= MAX_DIFF


@pytest.mark.slow
def test_tiled_equals_untiled_at_183_by_181_in_a_grid(styliser, monkeypatch):
    """Both sides off the 8 px grid, 2 x 2 windows of 176 px (the least AdaIN's margins, blend and alignment allow:
    the encoder's cost grows with the windows' pixels), every control: the untiled result up to float rounding
    (measured 1.3e-5; 1.1e-5 at 244 x 212 in windows of 208 px). Windows with neighbours on both sides are the
    photo's 3 x 3 and the 300 x 44 test's."""
    monkeypatch.setattr(tiling, "MIN_TILE", 128)
    assert (len(spans(183, 176)), len(spans(181, 176))) == (2, 2)
    g = torch.Generator().manual_seed(2)
    content = F.interpolate(torch.rand(1, 3, 28, 27, generator=g), size=(183, 181), mode="bicubic").clamp(0, 1)
    styles = [_style(), torch.rand(1, 3, 48, 56, generator=g)]
    controls = {"weights": [0.3, 0.7], "alpha": 0.6, "preserve_colour": True}
    untiled = styliser.stylise(content, styles, Controls(**controls))
    tiled = tiling.stylise_any_size(styliser, content, styles, max_tile=176, controls=Controls(**controls))
    assert float(untiled.std()) > 0.05
    assert float((tiled - untiled).abs().max()) <= MAX_DIFF


def test_tiling_refuses_masks_and_another_output_size(styliser):
    content = torch.rand(1, 3, 40, 300)
    masks = Controls(masks=[torch.ones(8, 8), torch.zeros(8, 8)])
    with pytest.raises(ConfigError, match="masks are not supported with tiling.*--max-tile 0"):
        tiling.stylise_any_size(styliser, content, [_style(), _style()], masks, max_tile=256)
    with pytest.raises(ConfigError, match="--output-size.*--max-tile 0"):
        tiling.stylise_any_size(styliser, content, _style(), Controls(output_size=(80, 600)), max_tile=256)


# ---------------------------------------------------------------- the command line


def test_cli_max_tile_tiles_and_keeps_the_size(adain_run, tmp_path, capsys):
    """64 x 300 px: wider than ``--max-tile 256`` (two windows), and no taller than the test needs to compare the
    tiled and whole results BORDER px in from the edges (the encoder's cost grows with the pixels)."""
    ckpt, _ = adain_run
    g = torch.Generator().manual_seed(4)
    save_image(torch.rand(3, 64, 300, generator=g), tmp_path / "big.png")
    save_image(torch.rand(3, 32, 32, generator=g), tmp_path / "s.png")
    common = [str(ckpt), "--content", str(tmp_path / "big.png"), "--style", str(tmp_path / "s.png"), "--device",
              "cpu", "--style-short-side", "0"]
    assert main([*common, "--max-tile", "256", "-o", str(tmp_path / "tiled")]) == 0
    assert main([*common, "--max-tile", "0", "-o", str(tmp_path / "whole")]) == 0
    tiled, whole = (load_image_tensor(next((tmp_path / d).iterdir())) for d in ("tiled", "whole"))
    assert tiled.shape == whole.shape == (3, 64, 300)
    assert float((tiled - whole).abs()[..., BORDER:-BORDER, BORDER:-BORDER].max()) <= 1.5 / 255  # uint8 rounding
    assert main([*common, "--max-tile", "100", "-o", str(tmp_path / "bad")]) == 1
    assert f"at least {MIN_TILE} px" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*common, "--max-tile", "huge"])


@pytest.mark.slow
def test_results_have_contrast(photo):
    _, _, untiled, _ = photo
    assert 0.1 < float(untiled.std()) and float((untiled == 0).float().mean() + (untiled == 1).float().mean()) < 0.2
