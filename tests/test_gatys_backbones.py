"""Neural Style behind a torchvision backbone: layers by graph node name, a train.py run that lowers the loss, the
checkpoint's record of the encoder, and bad node names refused before anything is optimised."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import RANDOM_ENCODER, train_in_process
from gatys_helpers import small_photos

from styletransfer.methods.gatys import GatysModule
from styletransfer.nn.backbones import BackboneEncoder
from styletransfer.runtime.errors import ConfigError

LAYERS = ("method.content_layers=[layer2]", "method.style_layers=[layer1,layer2]")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    return small_photos(tmp_path_factory.mktemp("gatys_backbone_photos"))


def test_train_py_encoder_resnet50_lowers_the_loss(photos, tmp_path) -> None:
    run_dir = tmp_path / "run"
    train_in_process(
        "method=gatys", "encoder=resnet50", "encoder.weights=random", *LAYERS, "method.optimizer=adam",
        "method.lr=0.05", "method.snapshot_every=0", "data=pair", f"data.content={photos['astronaut']}",
        f"data.style={photos['coffee']}", "data.long_side=32", "trainer=cpu", "trainer.max_steps=8",
        "trainer.log_every_n_steps=1", "logger=csv", run_dir=run_dir,
    )  # fmt: skip
    assert (run_dir / "stylised.png").is_file()
    with open(run_dir / "csv" / "version_0" / "metrics.csv", newline="") as file:
        totals = [float(row["loss/total"]) for row in csv.DictReader(file) if row.get("loss/total")]
    assert len(totals) >= 6 and totals[-1] < 0.8 * totals[0], totals
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    record = ckpt["hyper_parameters"]["encoder"]
    assert record["network"] == "resnet50" and record["layers"] == ["layer2", "layer1"]
    assert list(ckpt["state_dict"]) == ["image"]
    resumed = GatysModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert isinstance(resumed.encoder, BackboneEncoder)
    assert resumed.encoder.spec["fingerprint"] == record["fingerprint"]


def test_node_names_are_checked_against_the_encoders_network() -> None:
    backbone = {**RANDOM_ENCODER, "network": "convnext_tiny"}
    model = GatysModule(backbone, content_layers=["features.3"], style_layers=["features.1"], snapshot_every=0)
    assert isinstance(model.encoder, BackboneEncoder) and model.content_layers == ["features.3"]
    refusal = r"\['relu4_2'\]: convnext_tiny has no node.*VGG layer names do not apply.*features"
    with pytest.raises(ConfigError, match=refusal):
        GatysModule(backbone, snapshot_every=0)  # the paper's VGG layers
    with pytest.raises(ConfigError, match="method.style_layers"):
        GatysModule(RANDOM_ENCODER, style_layers=["layer1"], snapshot_every=0)  # VGG keeps its own names
