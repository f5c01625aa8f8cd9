"""AdaIN as an evaluation candidate: from a model file (``evaluate.py``) or a trained module (the sweep objective)."""

from __future__ import annotations

import os

import torch
from torch import Tensor

from styletransfer.methods.adain.checkpoint import EncoderArg
from styletransfer.methods.adain.module import AdaINModule
from styletransfer.methods.adain.styliser import Styliser
from styletransfer.methods.candidate import Candidate


def file_candidate(path: str | os.PathLike, label: str, device: torch.device, encoder: EncoderArg = None,
                   channels_last: bool = False, bf16: bool = False) -> Candidate:
    """A Candidate from an AdaIN model file (Lightning .ckpt, exported decoder.pth, or the release's decoder.pth)."""
    styliser = Styliser.from_checkpoint(path, encoder=encoder, device=device, channels_last=channels_last, bf16=bf16)

    def run(content: Tensor, style: Tensor, alpha: float) -> Tensor:
        return styliser.stylise(content, [style], alpha=alpha)

    info = {"method": "adain", "path": str(path), "kind": styliser.kind, "encoder": styliser.encoder_spec}
    return Candidate(label, run, info, supports_alpha=True)


def module_candidate(module: AdaINModule, label: str = "trial") -> Candidate:
    """A Candidate from a trained AdaINModule in memory (its encoder and decoder, its speed settings)."""
    info = {"method": "adain", "path": "", "kind": "module", "encoder": dict(module.encoder.spec)}
    return Candidate(label, module.stylise, info, supports_alpha=True)
