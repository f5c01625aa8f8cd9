"""Helpers for the stylise/evaluate tests: AdaIN model files in every format a user may hold (random weights)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from conftest import RANDOM_ENCODER
from torch.utils.data import DataLoader, Dataset

from styletransfer.methods.adain import AdaINModule

#: Conv indices of the AdaIN release's vgg_normalised.pth (first 1x1 conv, then the 16 VGG-19 convs).
#: index -> (in, out, kernel).
RELEASE_ENCODER_CONVS = {0: (3, 3, 1), 2: (3, 64, 3), 5: (64, 64, 3), 9: (64, 128, 3), 12: (128, 128, 3),
                         16: (128, 256, 3), 19: (256, 256, 3), 22: (256, 256, 3), 25: (256, 256, 3),
                         29: (256, 512, 3), 32: (512, 512, 3), 35: (512, 512, 3), 38: (512, 512, 3),
                         42: (512, 512, 3), 45: (512, 512, 3), 48: (512, 512, 3), 51: (512, 512, 3)}
#: (in, out) of the release decoder.pth convs at indices 1, 5, 8, 11, 14, 18, 21, 25, 28.
RELEASE_DECODER_CONVS = {1: (512, 256), 5: (256, 256), 8: (256, 256), 11: (256, 256), 14: (256, 128),
                         18: (128, 128), 21: (128, 64), 25: (64, 64), 28: (64, 3)}


class _Pairs(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(index)
        return {"content": torch.rand(3, 32, 32, generator=g), "style": torch.rand(3, 32, 32, generator=g)}


def train_tiny_run(root: Path, steps: int = 1) -> tuple[Path, Path]:
    """Train AdaIN for ``steps`` steps with a real pl.Trainer; return (checkpoints/last.ckpt, checkpoints/decoder.pth).

    The tests share one such run: the session fixture ``adain_run`` in conftest.py."""
    pl.seed_everything(0)
    model = AdaINModule(encoder=RANDOM_ENCODER)
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, default_root_dir=str(root), logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[pl.callbacks.ModelCheckpoint(dirpath=root / "checkpoints", save_last=True)])
    trainer.fit(model, train_dataloaders=DataLoader(_Pairs(), batch_size=2))
    ckpt = root / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        trainer.save_checkpoint(ckpt)
    return ckpt, root / "checkpoints" / "decoder.pth"


def write_release_files(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """decoder.pth and vgg_normalised.pth with the original release's exact keys and shapes (random values)."""
    g = torch.Generator().manual_seed(seed)
    encoder = {}
    for index, (c_in, c_out, k) in RELEASE_ENCODER_CONVS.items():
        encoder[f"{index}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * (2.0 / (c_in * k * k)) ** 0.5
        encoder[f"{index}.bias"] = torch.zeros(c_out)
    decoder = {}
    for index, (c_in, c_out) in RELEASE_DECODER_CONVS.items():
        decoder[f"{index}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g) * (2.0 / (c_in * 9)) ** 0.5
        decoder[f"{index}.bias"] = torch.zeros(c_out)
    root.mkdir(parents=True, exist_ok=True)
    torch.save(encoder, root / "vgg_normalised.pth")
    torch.save(decoder, root / "decoder.pth")
    return root / "decoder.pth", root / "vgg_normalised.pth"


class _Evil:
    """Unpickling this creates ``marker``: stands for any pickle that runs code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A .ckpt-looking file whose unpickling would create ``marker``."""
    torch.save({"state_dict": {"decoder.1.weight": torch.zeros(1)}, "payload": _Evil(marker)}, path)
    return path


def write_backbone_decoder(path: Path, network: str = "resnet50", bottleneck: str = "layer2", **settings) -> Path:
    """An exported decoder.pth of a configurable decoder (``settings``; seeded random weights) behind a random
    torchvision ``network`` at ``bottleneck``, as a backbone run writes it."""
    from styletransfer.methods.adain.checkpoint import save_decoder
    from styletransfer.methods.adain.decoders import build_decoder
    from styletransfer.nn.backbones import BackboneEncoder

    encoder = BackboneEncoder([bottleneck], network, weights="random")
    channels, stride = encoder.feature_info()[bottleneck]
    torch.manual_seed(0)
    decoder = build_decoder({"name": "configurable", **settings}, channels, stride)
    save_decoder(decoder, encoder.spec, path, bottleneck=bottleneck)
    return path
