"""AdaIN's losses and decoder gradients are pinned bit for bit on a fixed seed (speed options off).

The values in ``data/adain_losses_pinned.json`` were recorded before the package was restructured (main at
bc76dba) on this project's CPU machines (torch 2.14.1, float32). Any change to the encoder, the decoder, the AdaIN
operation, the statistics or the loss reductions changes at least one of them. A change meant to alter the maths
must re-record the file and say why; a change meant to keep it must leave every value exactly equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import RANDOM_ENCODER
from styletransfer.methods.adain import AdaINModule

PINNED = Path(__file__).parent / "data" / "adain_losses_pinned.json"


def test_losses_and_gradients_are_bitwise_what_they_were():
    torch.manual_seed(0)
    model = AdaINModule(encoder=RANDOM_ENCODER)
    generator = torch.Generator().manual_seed(1)
    content = torch.rand(2, 3, 40, 48, generator=generator)
    style = torch.rand(2, 3, 56, 40, generator=generator)
    losses = model.losses(content, style)
    losses["loss/total"].backward()
    measured = {name: float(value.detach()).hex() for name, value in losses.items()}
    for name, parameter in model.decoder.named_parameters():
        measured[f"grad/{name}/sum"] = float(parameter.grad.double().sum()).hex()
        measured[f"grad/{name}/abs"] = float(parameter.grad.double().abs().sum()).hex()
    pinned = json.loads(PINNED.read_text())
    assert measured.keys() == pinned.keys()
    changed = {k: (float.fromhex(pinned[k]), float.fromhex(v)) for k, v in measured.items() if v != pinned[k]}
    assert not changed, f"AdaIN losses/gradients changed (pinned, now): {changed}"
