"""AdaIN's losses and decoder gradients, speed options off, against the reference implementation and pinned values.

1. Bit for bit against the reference PyTorch code (naoto0804/pytorch-AdaIN: ``nn.Sequential`` VGG and decoder,
   ``calc_mean_std``, MSE losses; written out in ``speed/reference.py``), computed here on the same weights and
   images. Both run on the same machine's kernels, so equality holds on any CPU, and any change to the encoder,
   the decoder, the AdaIN operation, the statistics, the loss reductions or their order breaks it.
2. Close to the values recorded before the package was restructured (main at bc76dba, torch 2.14.1, float32), in
   ``data/adain_losses_pinned.json``. Not bit for bit: convolution kernels differ between CPUs (oneDNN picks them by
   instruction set), and the random encoder amplifies their last-bit differences to about 1e-3 in the decoder's
   gradient sums (measured with oneDNN limited to SSE4.1, AVX, AVX2 and AVX-512 in turn: at most 12% of the
   tolerances below). A change meant to alter the maths must re-record the file and say why.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import RANDOM_ENCODER
from torch import Tensor

from styletransfer.methods.adain import AdaINModule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "speed"))
from reference import reference_decoder, reference_losses, reference_vgg  # noqa: E402  (speed/reference.py)

PINNED = Path(__file__).parent / "data" / "adain_losses_pinned.json"

#: Relative tolerances of the pinned check: losses agree to a few ulps across CPUs, gradient sums to about 1e-3.
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-2


def _images() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 40, 48, generator=generator), torch.rand(2, 3, 56, 40, generator=generator)


def _reference_losses(model: AdaINModule, content: Tensor, style: Tensor) -> tuple[dict[str, Tensor], torch.nn.Module]:
    """The reference training step's losses (backward done) on ``model``'s weights; returns them and its decoder."""
    vgg, decoder = reference_vgg(), reference_decoder()
    vgg.load_state_dict(model.encoder.trunk.state_dict())
    decoder.load_state_dict(model.decoder.state_dict())
    total, loss_c, loss_s = reference_losses(vgg, decoder, content, style)
    total.backward()
    return {"loss/total": total, "loss/content": loss_c, "loss/style": loss_s}, decoder


def test_losses_and_gradients_equal_the_reference_implementation_bit_for_bit():
    torch.manual_seed(0)
    model = AdaINModule(encoder={**RANDOM_ENCODER, "arch": "vgg_normalised"})
    content, style = _images()
    ours = model.losses(content, style)
    ours["loss/total"].backward()
    reference, reference_decoder_ = _reference_losses(model, content, style)
    for name, value in reference.items():
        assert torch.equal(ours[name].detach(), value.detach()), (name, float(ours[name]), float(value))
    reference_grads = dict(reference_decoder_.named_parameters())
    for name, parameter in model.decoder.named_parameters():
        assert torch.equal(parameter.grad, reference_grads[name].grad), name


def test_losses_and_gradients_stay_at_the_pinned_values():
    torch.manual_seed(0)
    model = AdaINModule(encoder=RANDOM_ENCODER)
    content, style = _images()
    losses = model.losses(content, style)
    losses["loss/total"].backward()
    measured = {name: float(value.detach()) for name, value in losses.items()}
    for name, parameter in model.decoder.named_parameters():
        measured[f"grad/{name}/sum"] = float(parameter.grad.double().sum())
        measured[f"grad/{name}/abs"] = float(parameter.grad.double().abs().sum())
    pinned = {name: float.fromhex(value) for name, value in json.loads(PINNED.read_text()).items()}
    assert measured.keys() == pinned.keys()
    for name, value in measured.items():
        # A gradient sum near zero is compared against its layer's absolute sum, the scale its rounding follows.
        scale = pinned[name.replace("/sum", "/abs")] if name.endswith("/sum") else abs(pinned[name])
        rtol = GRAD_RTOL if name.startswith("grad/") else LOSS_RTOL
        assert value == pytest.approx(pinned[name], abs=rtol * scale), name
