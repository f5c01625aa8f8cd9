"""Fast neural style's part of tiled stylisation (windows, passes and blending: :mod:`styletransfer.apps.tiling`).

Every instance normalisation divides by its channels' mean and standard deviation over the whole image, at each of the
network's normalisations in turn (15 for the examples' layout), so a window stylised alone differs from the untiled
image everywhere. The network is therefore cut at its normalisations (``sites``): statistics pass k runs every window's
convolutions up to normalisation k (from the window's state after pass k - 1: the pre-normalisation map, and the
residual block's input where one is open), merges the positions the window owns into normalisation k's running channel
mean and variance, and keeps the window's new state on the host. Pass k + 1 normalises that state with the whole image's
statistics of normalisation k (complete once every window has been through pass k). ``render`` applies the last
normalisation and the final convolution. Each convolution runs once per window: the cost is one network pass over the
windows (their overlaps included), with no recomputation, and the host holds every window's state (up to 32 float32
channels at full resolution for the examples' layout: 128 bytes per window pixel, ``HOST_BYTES_PER_PIXEL`` per image
pixel with the overlaps).

Windows start on multiples of 4 (the network's deepest stride), so a window's maps are blocks of the whole image's;
the network's reflection padding at a window's inner edges changes the output up to ``reach`` px in from them: the
receptive field's radius, each convolution's half kernel times the stride of the map it reads, 4 + 1 + 2 + 2B x 4 +
2 + 1 + 4 px for B residual blocks (54 px for the examples' 5; width does not change it). Measured with the whole
image's statistics on windows starting at 80, 84 and 120 px (``tests/test_fast_tiling.py``), columns 0 to ``reach``
from the cut change and none beyond, so ``margin_for`` keeps ``reach`` + 1 px rounded up to the 4 px grid (56 px
for the examples' layout, ``MARGIN``): every owned position and every kept pixel is the untiled network's, up to
float rounding. Neighbouring windows therefore overlap by at least 2 x 56 + 32 = 144 px for the examples' layout
(the margins and the tiling's 32 px blend), which with the rounding to the 4 px grid costs (T / (T - 148))^2 of the
untiled work for tiles of T px: 1.4x at 1024, 1.2x at 2048.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from styletransfer.methods.fast.network import EPS, EXAMPLES_CHANNELS, StyleNorm, TransformerNet
from styletransfer.nn.stats import RunningStats
from styletransfer.protocol.model import TilingNeeds

#: The network's deepest stride: windows start on multiples of it.
ALIGN = 4
#: Context in px kept around each window's used part for the examples' layout (its reach is 54 px; other layouts:
#: ``margin_for``).
MARGIN = 56
#: Estimated peak device memory per tile pixel and image in float32 for the examples' layout (the upsampled
#: 64-channel map, its padding and the 32-channel output at full resolution: about 700 bytes; bf16 halves it).
BYTES_PER_PIXEL = 1024
#: What the windows' states hold on the host per image pixel for the examples' layout: 32 float32 channels
#: (128 bytes) times the overlaps.
HOST_BYTES_PER_PIXEL = 192


def reach(network: TransformerNet) -> int:
    """How far in px a window's cut edge changes the network's output: the receptive field's radius, the sum over
    its convolutions of half the kernel times the stride of the map the kernel moves over (54 for the examples')."""
    convs = [(site.conv, site.stride) for site in sites(network)] + [(network.deconv3, 1)]
    return sum(c.conv2d.kernel_size[0] // 2 * stride // c.conv2d.stride[0] for c, stride in convs)  # type: ignore


def margin_for(network: TransformerNet | None) -> int:
    """The margin that covers ``network``'s reach (``reach`` + 1 px on the 4 px grid: ``MARGIN`` for the examples'
    layout, which None stands for)."""
    return MARGIN if network is None else ALIGN * math.ceil((reach(network) + 1) / ALIGN)


def tiling_needs(bf16: bool, network: TransformerNet | None = None) -> TilingNeeds:
    """Fast style's alignment, margin and memory estimates for ``network``'s layout (None: the examples'); the
    memory estimates scale with its full- and half-resolution channels (the device's halved with bf16)."""
    scale = 1.0
    if network is not None:
        scale = max(network.channels[0] / EXAMPLES_CHANNELS[0], network.channels[1] / EXAMPLES_CHANNELS[1])
    return TilingNeeds(
        align=ALIGN,
        margin=margin_for(network),
        bytes_per_pixel=math.ceil(BYTES_PER_PIXEL * scale) // (2 if bf16 else 1),
        host_bytes_per_pixel=math.ceil(HOST_BYTES_PER_PIXEL * scale),
    )


@dataclass(frozen=True)
class Site:
    """One normalisation of the network and the convolution before it: ``conv`` maps the previous site's output to
    the map ``norm`` normalises, at ``stride`` px of the image per position; after it comes a ReLU (``residual``
    False) or the residual block's input (True); ``opens`` when ``conv``'s input is a residual block's input."""

    conv: nn.Module
    norm: StyleNorm
    stride: int
    opens: bool = False
    residual: bool = False


def sites(network: TransformerNet) -> list[Site]:
    """The network's normalisations in order (15 for the examples' 5 residual blocks), as ``TransformerNet.forward``
    runs them (``deconv3`` follows)."""
    head = [
        Site(network.conv1, network.in1, 1),
        Site(network.conv2, network.in2, 2),
        Site(network.conv3, network.in3, 4),
    ]
    body = [
        site
        for block in network.blocks()
        for site in (Site(block.conv1, block.in1, 4, opens=True), Site(block.conv2, block.in2, 4, residual=True))
    ]
    tail = [Site(network.deconv1, network.in4, 2), Site(network.deconv2, network.in5, 1)]
    return head + body + tail


def owned_positions(owned: slice, stride: int) -> slice:
    """A window's owned pixels (``apps.tiling.owned_pixels``, ends on multiples of ``ALIGN``) at ``stride``."""
    return slice(owned.start // stride, None if owned.stop is None else owned.stop // stride)


@dataclass
class WindowState:
    """A window between passes: the map that the last observed site normalises, the open residual block's input,
    its size before padding, and how many sites it has been through."""

    size: tuple[int, int]
    done: int = 0
    features: Tensor | None = None
    skip: Tensor | None = None


class TiledFast:
    """One tiled call of a fast-style network (see the module docstring): ``observe`` runs statistics pass k on a
    window, ``render`` the end of the network. ``style`` is the network's style vector (None for one style)."""

    def __init__(
        self,
        network: TransformerNet,
        style: Tensor | None,
        channels_last: bool,
        autocast: Callable[[], AbstractContextManager],
    ) -> None:
        self.network = network
        network.set_style(style)
        self.sites = sites(network)
        self.statistics_passes = len(self.sites)
        self.channels_last = channels_last
        self.autocast = autocast
        self.stats = [RunningStats() for _ in self.sites]
        self.windows: dict[int, WindowState] = {}
        #: Each normalisation as one (scale, shift) per channel, from the whole image's statistics once its pass ends.
        self.norms: dict[int, tuple[Tensor, Tensor]] = {}

    def observe(self, window: Tensor, owned: tuple[slice, slice], index: int) -> None:
        """Window ``index`` through its next site; that site's owned positions merged into its statistics."""
        state = self.windows.get(index)
        if state is None:
            state = self.windows[index] = WindowState((window.shape[-2], window.shape[-1]))
        site = self.sites[state.done]
        with torch.no_grad(), self.autocast():
            if state.done == 0:
                pad_h, pad_w = (-window.shape[-2]) % ALIGN, (-window.shape[-1]) % ALIGN
                x = F.pad(window.float(), (0, pad_w, 0, pad_h), mode="reflect") * 255.0
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            else:
                x = self._normalised(state, window.device)
            if site.opens:
                state.skip = x.cpu()
            features = site.conv(x)
        rows, cols = (owned_positions(s, site.stride) for s in owned)
        self.stats[state.done].add(features[..., rows, cols])
        state.features, state.done = features.cpu(), state.done + 1

    def _normalised(self, state: WindowState, device: torch.device) -> Tensor:
        """The state's map through its site's normalisation (the whole image's statistics) and what follows it."""
        if state.features is None:
            raise RuntimeError("a window was rendered before its statistics passes")
        done = state.done - 1
        site = self.sites[done]
        scale, shift = self._norm(done, device)
        y = state.features.to(device).mul_(scale).add_(shift)
        state.features = None
        if site.residual:
            if state.skip is None:
                raise RuntimeError("a residual block's input was not kept")
            y, state.skip = y.add_(state.skip.to(device)), None
            return y
        return y.relu_()

    def _norm(self, index: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Normalisation ``index`` as one affine map per channel: its whole-image mean and population variance
        folded with its style's scale and shift, float32 (N, C, 1, 1), once per site."""
        if index not in self.norms:
            mean, variance = self.stats[index].mean_variance(unbiased=False)
            weight, bias = (t.detach().double().cpu()[None, :, None, None] for t in self.sites[index].norm.affine())
            scale = weight / (variance + EPS).sqrt()
            self.norms[index] = (scale.float().to(device), (bias - mean * scale).float().to(device))
        return self.norms[index]

    def render(self, window: Tensor, index: int, origin: tuple[int, int] = (0, 0)) -> Tensor:
        """Window ``index`` after every statistics pass: the last normalisation, the final convolution, float32 in
        [0, 1] at the window's size (its ``origin`` does not matter: the network has no upsampling to an exact
        size)."""
        state = self.windows.pop(index)
        if state.done != len(self.sites):
            raise RuntimeError(f"window {index} was rendered after {state.done} of {len(self.sites)} passes")
        with torch.no_grad(), self.autocast():
            out = self.network.deconv3(self._normalised(state, window.device))
        return (out[..., : state.size[0], : state.size[1]].float() / 255.0).clamp(0.0, 1.0)
