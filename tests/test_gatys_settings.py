"""Neural Style (Gatys): the settings (normalised, or the bad key named), the coarse-to-fine scales and the
iterations per scale, the EMA of the iterates, and Adam's state carried across scales."""

from __future__ import annotations

import math
import re
from dataclasses import fields

import pytest
import torch
from conftest import RANDOM_ENCODER
from gatys_helpers import FAST

from styletransfer.methods.gatys import GatysModule, GatysSettings
from styletransfer.methods.gatys.schedule import IterateEMA, resize_adam_state, scale_sizes, step_schedule
from styletransfer.runtime.errors import ConfigError


def test_settings_normalise_to_plain_hyper_parameters() -> None:
    settings = GatysSettings(style_layers=("relu1_1", "relu2_1"), style_layer_weights=(3, 1), scales=(24.0, 40),
                             preserve_colour="None", snapshot_every=None, betas=(0.9, 0.99), ema_decay=0)
    hp = settings.hparams()
    assert list(hp) == [f.name for f in fields(GatysSettings) if f.name != "layer_weights"]  # not InitVar network
    assert settings.layer_weights == [0.75, 0.25]
    assert hp["style_layers"] == ["relu1_1", "relu2_1"] and hp["style_layer_weights"] == [3.0, 1.0]
    assert hp["scales"] == [24, 40] and all(type(side) is int for side in hp["scales"])
    assert hp["preserve_colour"] is None and hp["snapshot_every"] == 0 and hp["betas"] == [0.9, 0.99]
    assert type(hp["ema_decay"]) is float and type(hp["style_weight"]) is float


@pytest.mark.parametrize("key, value, message", [
    ("style_layers", ["relu1_1", "relu6_1"], "method.style_layers=['relu1_1', 'relu6_1']: unknown VGG-19 layer"),
    ("content_layers", ["conv4_5"], "method.content_layers=['conv4_5']"),
    ("style_layer_weights", [2, 1], "method.style_layer_weights: style layer weights [2.0, 1.0] have 2 entries"),
    ("style_statistic", "gramm", "method.style_statistic='gramm': choose one of gram, mean_std, wasserstein2"),
    ("optimizer", "sgd", "method.optimizer='sgd'"), ("init", "zeros", "method.init='zeros'"),
    ("colour_space", "lab", "method.colour_space='lab'"), ("preserve_colour", "x", "method.preserve_colour='x'"),
    ("style_weight", -1.0, "method.style_weight=-1.0 must be a finite number >= 0"),
    ("tv_power", 3, "method.tv_power=3"),
    ("style_weight", math.inf, "method.style_weight=inf must be a finite"), ("lr", math.inf, "method.lr=inf must be a"),
    ("style_blend", [-1, 2], "method.style_blend=[-1.0, 2.0]"), ("lr", 0, "method.lr=0 must be a finite number > 0"),
    ("betas", [0.9], "method.betas=[0.9]"), ("history_size", 0, "method.history_size=0"),
    ("ema_decay", 1.0, "method.ema_decay=1.0"), ("scales", 256, "method.scales must be a list"),
    ("scales", [0, 64], "method.scales=[0, 64]"), ("scale_start", 0, "method.scale_start=0"),
    ("steps_per_scale", [], "method.steps_per_scale=[]"), ("snapshot_every", -1, "method.snapshot_every=-1"),
])
def test_settings_name_the_bad_key(key, value, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        GatysSettings(**{key: value})

def test_scale_series_and_step_split() -> None:
    assert scale_sizes(512, None, 128, math.sqrt(2)) == [128, 181, 256, 362, 512]
    assert scale_sizes(512, [200, 300], 128, 2.0) == [200, 300] and scale_sizes(512, None, None, 2.0) == [512]
    assert step_schedule(3, 10, None) == [3, 3, 4]
    assert step_schedule(5, -1, [1000, 500]) == [1000, 500, 500, 500, 500]
    with pytest.raises(ConfigError, match="trainer.max_steps=15 is fewer than the 3000 iterations"):
        step_schedule(5, 15, [1000, 500])
    model = GatysModule(RANDOM_ENCODER, scale_start=128, steps_per_scale=[7], snapshot_every=0, **FAST)
    assert model.scale_sizes(300) == [128, 181, 256, 300] and model.step_schedule(2, None) == [7, 7]

def test_iterate_ema_is_bias_corrected_and_checkpointed(tmp_path) -> None:
    """decay 0.5 over iterates 1, 2, 4: (0.25 * 1 + 0.5 * 2 + 1 * 4) / (0.25 + 0.5 + 1) = 3."""
    ema = IterateEMA(0.5)
    ema.reset(torch.zeros(1, 3, 2, 2))
    assert ema.value() is None  # nothing averaged yet: the output is the iterate
    for x in (1.0, 2.0, 4.0):
        ema.update(torch.full((1, 3, 2, 2), x))
    assert torch.allclose(ema.value(), torch.full((1, 3, 2, 2), 3.0))
    torch.save(ema.state_dict(), tmp_path / "ema.pt")
    restored = IterateEMA(0.5)
    restored.load_state_dict(torch.load(tmp_path / "ema.pt", weights_only=True))
    assert torch.equal(restored.value(), ema.value()) and restored.decay_power == 0.125
    off = IterateEMA(None)
    off.reset(torch.zeros(1))
    off.update(torch.ones(1))
    assert off.value() is None and off.state_dict() == {"ema": None, "ema_accum": 1.0}


def test_adam_state_resize_keeps_constants_and_the_step() -> None:
    step = torch.tensor(5.0)
    state = {"step": step, "exp_avg": torch.full((1, 3, 4, 6), -0.3), "exp_avg_sq": torch.full((1, 3, 4, 6), 0.2)}
    resized = resize_adam_state(state, (8, 12))
    assert resized["step"] is step and resized["exp_avg"].shape == (1, 3, 8, 12)
    assert torch.allclose(resized["exp_avg"], torch.tensor(-0.3))
    assert torch.allclose(resized["exp_avg_sq"], torch.tensor(0.2))

