"""Fast neural style's training speed options (``method.channels_last``, ``method.compile``): the same parameters
and the same losses as the plain run, the whole loss one graph for torch.compile, a few compiled steps on the plain
run's curve."""

from __future__ import annotations

import pytest
import torch
from conftest import SKIMAGE_DATA
from PIL import Image

from styletransfer.data.images import pil_to_tensor
from styletransfer.methods.fast import FastStyleModule
from styletransfer.nn.padding import FastReflectionPad2d

ENCODER = {"weights": "random", "network": "vgg16"}
#: Two residual blocks instead of the examples' five where their number is not the subject: the blocks repeat, and
#: tracing (the cost of these tests) grows with the graph, not with the channels.
SLIM = {"residual_blocks": 2}


@pytest.fixture(scope="module")
def styles(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("fast_speed")
    paths = []
    for name in ("coffee.png", "chelsea.png"):
        Image.open(SKIMAGE_DATA / name).convert("RGB").resize((48, 40)).save(root / name)
        paths.append(str(root / name))
    return paths


def _module(styles: list[str], **speed) -> FastStyleModule:
    torch.manual_seed(0)
    module = FastStyleModule(ENCODER, styles, **speed)
    module.setup("fit")
    return module


def _pads(module: FastStyleModule) -> int:
    return sum(isinstance(m, FastReflectionPad2d) for m in module.modules())


def test_channels_last_keeps_the_parameters_and_the_losses(styles):
    plain, fast = _module(styles), _module(styles, channels_last=True)
    assert plain.state_dict().keys() == fast.state_dict().keys() and fast.hparams["channels_last"]
    assert _pads(plain) == 0 and _pads(fast) == 16  # the network's 16 (VGG-16 pads with zeros)
    content = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for style in (0, 1):
        ref, got = plain.losses(content, style), fast.losses(content, style)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=0)
        ref["loss/total"].backward()
        got["loss/total"].backward()
    # All gradients together (a bias before an instance normalisation has a gradient of rounding noise alone).
    ref_grad, got_grad = (torch.cat([p.grad.flatten() for p in m.network.parameters()]) for m in (plain, fast))
    assert (got_grad - ref_grad).abs().max() <= 1e-3 * ref_grad.abs().max()


@pytest.mark.slow  # about 12 s a style count on a loaded 2-core CPU
@pytest.mark.parametrize("count", [1, 2])
def test_the_whole_loss_traces_as_one_graph(styles, count):
    """method.compile compiles ``_loss_terms`` whole: dynamo sees one graph per style, no breaks (no inductor)."""
    module = _module(styles[:count], channels_last=True, **SLIM)
    content = torch.rand(2, 3, 32, 32)
    explanation = torch._dynamo.explain(module._loss_terms)(content, count - 1)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.slow  # dynamo and AOT autograd trace VGG-16 and the network forward and backward: about 6 s
def test_compiled_and_channels_last_training_follows_the_plain_loss_curve(styles, monkeypatch):
    """Four Adam steps (one style, the examples' lr 1e-3, SLIM's two blocks) on two photos: compiled, and channels_last,
    each within 0.5% of the plain run's loss at every step (float reassociation only).

    The compiled run traces the whole loss with dynamo and AOT autograd (``backend="aot_eager"``): the graph, its
    functionalisation and the derived backward are this module's; inductor's code generation of the same VGG
    convolutions, instance norms and pads is held to eager by AdaIN's and Neural Style's compile tests
    (``test_pooling``, ``test_gatys_speed``), and compiling it here took 89 s of a 763 s suite on 2 CPU cores."""
    compile_, compiled = torch.compile, []

    def aot_eager(fn, mode=None, **_):
        compiled.append(fn.__name__)
        return compile_(fn, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", aot_eager)
    photos = [Image.open(SKIMAGE_DATA / n).convert("RGB").resize((32, 32)) for n in ("astronaut.png", "rocket.jpg")]
    batch = torch.stack([pil_to_tensor(photo) for photo in photos])

    def curve(**speed) -> list[float]:
        module = _module(styles[:1], **SLIM, **speed)
        optimiser = module.configure_optimizers()
        losses = []
        for _ in range(4):
            loss = module.losses(batch)["loss/total"]
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        return losses

    plain = curve()
    assert plain[-1] < 0.9 * plain[0]  # it trains
    for speed in ({"compile": True}, {"channels_last": True}):
        got = curve(**speed)
        assert all(abs(g - p) <= 0.005 * p for g, p in zip(got, plain)), (speed, plain, got)
    assert compiled == ["_loss_terms"]  # the compiled run did compile the whole loss, once
