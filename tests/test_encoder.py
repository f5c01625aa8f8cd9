"""VGG-19 encoder: layer naming, truncation, weight loading in both layouts, offline behaviour, safety."""

from __future__ import annotations

import json
import logging
import re
import socket
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.hub
from conftest import vgg16_features_file
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from styletransfer.nn.encoder import (
    IMAGENET_FILE,
    VGG19_LAYERS,
    EncoderWeightsError,
    VGGEncoder,
    build_encoder,
)
from styletransfer.runtime.errors import ConfigError

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _image(size: int = 32, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _release_vgg_normalised() -> nn.Sequential:
    """The AdaIN release's vgg_normalised architecture, written out module by module as the release does."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(c_in, c_out, (3, 3)), nn.ReLU()]

    def pool() -> nn.Module:
        return nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)

    return nn.Sequential(
        nn.Conv2d(3, 3, (1, 1)),
        *block(3, 64), *block(64, 64), pool(),
        *block(64, 128), *block(128, 128), pool(),
        *block(128, 256), *block(256, 256), *block(256, 256), *block(256, 256), pool(),
        *block(256, 512), *block(512, 512), *block(512, 512), *block(512, 512), pool(),
        *block(512, 512), *block(512, 512), *block(512, 512), *block(512, 512),
    )  # fmt: skip


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point torch.hub's cache at an empty folder; return where the ImageNet file would be cached."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    assert Path(torch.hub.get_dir()) == tmp_path / "torch_home" / "hub"
    return tmp_path / "torch_home" / "hub" / "checkpoints" / IMAGENET_FILE


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make torch.hub's download fail as it does offline; record the URLs it was asked for."""
    calls: list[str] = []

    def refuse(url: str, *args, **kwargs) -> None:
        calls.append(url)
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return calls


def test_layer_names_follow_torchvision_indices():
    assert len(VGG19_LAYERS) == 37
    assert (VGG19_LAYERS.index("relu1_1"), VGG19_LAYERS.index("relu4_1"), VGG19_LAYERS.index("relu4_2")) == (1, 20, 22)
    assert VGG19_LAYERS[-2:] == ("relu5_4", "pool5")
    ours = VGGEncoder(["pool5"], weights="random").trunk
    theirs = make_layers(cfgs["E"])
    assert len(ours) == len(theirs) == 37
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert isinstance(a, type(b)), i  # our max pool subclasses nn.MaxPool2d (its compiled backward)
        if isinstance(a, nn.MaxPool2d):
            assert (a.kernel_size, a.stride, a.ceil_mode) == (b.kernel_size, b.stride, b.ceil_mode), i
        if isinstance(a, nn.Conv2d):
            assert a.weight.shape == b.weight.shape and a.padding == b.padding, i
        if isinstance(a, nn.ReLU):
            assert not a.inplace, "conv outputs must stay readable"


def test_features_have_expected_shapes_and_conv_differs_from_relu():
    enc = VGGEncoder(["conv1_1", "relu1_1", "pool1", "relu4_1", "relu5_1"], weights="random")
    feats = enc(_image(64))
    assert list(feats) == ["conv1_1", "relu1_1", "pool1", "relu4_1", "relu5_1"]
    assert feats["conv1_1"].shape == (2, 64, 64, 64)
    assert feats["pool1"].shape == (2, 64, 32, 32)
    assert feats["relu4_1"].shape == (2, 512, 8, 8)
    assert feats["relu5_1"].shape == (2, 512, 4, 4)
    assert feats["conv1_1"].min() < 0
    assert feats["relu1_1"].min() >= 0
    torch.testing.assert_close(feats["relu1_1"], feats["conv1_1"].clamp(min=0))
    std = feats["relu5_1"].std().item()
    assert 0.1 < std < 10, f"random features vanish or explode: relu5_1 std {std}"


def test_forward_subset_and_unknown_layers():
    enc = VGGEncoder(["relu1_1", "relu3_1"], weights="random")
    only = enc(_image(), layers=["relu1_1"])
    assert list(only) == ["relu1_1"]
    torch.testing.assert_close(only["relu1_1"], enc(_image())["relu1_1"])
    with pytest.raises(ValueError, match="relu2_1"):
        enc(_image(), layers=["relu2_1"])
    with pytest.raises(ValueError, match="relu4_1"):
        VGGEncoder(["relu4_1", "relu_4_1"], weights="random")
    with pytest.raises(ValueError):
        enc(torch.rand(1, 1, 32, 32))


def test_truncated_after_deepest_layer():
    enc = VGGEncoder(["relu2_1", "relu1_1"], weights="random")
    assert len(enc.trunk) == 7
    assert all(not (isinstance(m, nn.Conv2d) and m.out_channels > 128) for m in enc.trunk)
    assert set(enc.trunk.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias"}


def test_frozen_eval_and_gradients_reach_the_input():
    enc = VGGEncoder(["relu3_1"], weights="random")
    assert all(not p.requires_grad for p in enc.parameters())
    parent = nn.Sequential(enc)
    parent.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    image = _image().requires_grad_(True)
    enc(image)["relu3_1"].square().mean().backward()
    assert all(p.grad is None for p in enc.parameters())
    # The input gradient is the one through torchvision's own layers on the ImageNet-normalised image.
    reference = make_layers(cfgs["E"])[:12]
    reference.load_state_dict(enc.trunk.state_dict())
    same_image = _image().requires_grad_(True)
    reference((same_image - MEAN) / STD).square().mean().backward()
    assert image.grad.abs().sum() > 0
    torch.testing.assert_close(image.grad, same_image.grad)


def test_random_weights_deterministic_per_seed():
    a = VGGEncoder(["relu2_1"], weights="random", seed=3)
    b = VGGEncoder(["relu2_1"], weights="random", seed=3)
    c = VGGEncoder(["relu2_1"], weights="random", seed=4)
    for key, value in a.trunk.state_dict().items():
        assert torch.equal(value, b.trunk.state_dict()[key])
    assert not torch.equal(a.trunk[0].weight, c.trunk[0].weight)
    assert a.spec["fingerprint"] == b.spec["fingerprint"] != c.spec["fingerprint"]
    assert a.spec["used"] == "random" and a.spec["arch"] == "torchvision" and not a.spec["fallback_used"]
    assert json.loads(json.dumps(a.spec)) == a.spec, "spec must be plain data for Lightning hparams"
    deeper = VGGEncoder(["relu3_1"], weights="random", seed=3)
    assert torch.equal(deeper.trunk[5].weight, a.trunk[5].weight), "a truncated encoder is a prefix of a deeper one"


@pytest.mark.parametrize("layout", ["features_with_classifier", "bare"])
def test_torchvision_layout_file_roundtrip(tmp_path: Path, layout: str):
    source = VGGEncoder(["relu3_1"], weights="random", seed=7)
    state = source.trunk.state_dict()
    if layout == "features_with_classifier":
        state = {f"features.{k}": v for k, v in state.items()}
        state.update({"classifier.0.weight": torch.zeros(4, 8), "classifier.0.bias": torch.zeros(4)})
    path = tmp_path / "vgg.pth"
    torch.save(state, path)

    loaded = VGGEncoder(["relu1_1", "relu3_1"], weights=str(path))
    assert loaded.spec["arch"] == "torchvision"
    assert loaded.spec["used"] == str(path.resolve())
    assert loaded.spec["fingerprint"] == source.spec["fingerprint"]
    image = _image()
    torch.testing.assert_close(loaded(image)["relu3_1"], source(image)["relu3_1"], rtol=0, atol=0)
    # torchvision's own module with the same weights on the ImageNet-normalised image gives the same features.
    reference = make_layers(cfgs["E"])[:12]
    reference.load_state_dict(source.trunk.state_dict())
    torch.testing.assert_close(loaded(image)["relu3_1"], reference((image - MEAN) / STD))


def test_vgg_normalised_release_layout_loads(tmp_path: Path):
    torch.manual_seed(0)
    release = _release_vgg_normalised().eval()
    assert len(release) == 53
    keys = list(release.state_dict())
    assert [int(k.split(".")[0]) for k in keys[::2]][:10] == [0, 2, 5, 9, 12, 16, 19, 22, 25, 29]
    path = tmp_path / "vgg_normalised.pth"
    torch.save(release.state_dict(), path)

    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
    enc = VGGEncoder(layers, weights=path)
    assert enc.spec["arch"] == "vgg_normalised"
    image = _image(48)
    feats = enc(image)
    with torch.no_grad():
        for name, end in zip(layers, (4, 11, 18, 31)):
            torch.testing.assert_close(feats[name], release[:end](image), rtol=0, atol=0)
    # A file holding only the first 31 modules' weights (as used by AdaIN) loads up to relu4_1 ...
    truncated = tmp_path / "vgg_normalised_31.pth"
    torch.save(release[:31].state_dict(), truncated)
    torch.testing.assert_close(VGGEncoder(["relu4_1"], weights=truncated)(image)["relu4_1"], feats["relu4_1"])
    # ... but not deeper, and the error names the file.
    with pytest.raises(EncoderWeightsError, match="vgg_normalised_31.pth"):
        VGGEncoder(["relu5_1"], weights=truncated)


def test_imagenet_missing_without_download_names_cache_path(empty_hub: Path, no_network: list[str]):
    with pytest.raises(EncoderWeightsError) as info:
        VGGEncoder(["relu1_1"], weights="imagenet", download=False)
    message = str(info.value)
    assert str(empty_hub) in message
    assert "encoder.weights=random" in message and "encoder.weights=/path/to/file.pth" in message
    assert "styletransfer-weights fetch vgg19" in message
    assert no_network == []
    with pytest.raises(EncoderWeightsError) as info:  # evaluate.py's metric encoder: its own keys (issue 24)
        build_encoder({"weights": "imagenet", "download": False}, ["relu1_1"], key="metric_encoder")
    message = str(info.value)
    assert "metric_encoder.weights=random" in message and "metric_encoder.fallback=random" in message
    assert re.search(r"(?<![\w.])encoder\.", message) is None


def test_imagenet_download_failure_is_an_error_not_random(empty_hub: Path, no_network: list[str]):
    before = socket.getdefaulttimeout()
    with pytest.raises(EncoderWeightsError, match="no internet") as info:
        VGGEncoder(["relu1_1"], weights="imagenet", download=True)
    assert str(empty_hub) in str(info.value)
    assert no_network and no_network[0].endswith(IMAGENET_FILE)
    assert socket.getdefaulttimeout() == before
    with pytest.raises(EncoderWeightsError):
        build_encoder({"weights": "imagenet", "seed": 0, "fallback": None, "download": True}, ["relu1_1"])


def test_imagenet_uses_cached_file_without_network(empty_hub: Path, no_network: list[str]):
    source = VGGEncoder(["relu2_1"], weights="random", seed=11)
    empty_hub.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in source.trunk.state_dict().items()}, empty_hub)
    enc = VGGEncoder(["relu2_1"], weights="imagenet", download=True)
    assert no_network == []
    assert enc.spec["used"] == "imagenet" and enc.spec["arch"] == "torchvision" and not enc.spec["fallback_used"]
    assert enc.spec["fingerprint"] == source.spec["fingerprint"]
    torch.testing.assert_close(enc(_image())["relu2_1"], source(_image())["relu2_1"])


def test_fallback_random_is_loud(empty_hub: Path, no_network: list[str], caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        enc = build_encoder({"weights": "imagenet", "seed": 5, "fallback": "random", "download": False}, ["relu1_1"])
    assert caplog.text.count("VGG ENCODER IS RANDOM") == 1  # the banner, once
    assert enc.spec["fallback_used"] is True and enc.spec["used"] == "random"
    assert enc.spec["fingerprint"] == VGGEncoder(["relu1_1"], weights="random", seed=5).spec["fingerprint"]
    assert "MEANINGLESS" in caplog.text and str(empty_hub) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        enc = VGGEncoder(["relu1_1"], weights=empty_hub.parent / "missing.pth", fallback="random")
    assert enc.spec["fallback_used"] and caplog.text.count("VGG ENCODER IS RANDOM") == 1
    with pytest.raises(ValueError, match="fallback"):
        VGGEncoder(["relu1_1"], weights="random", fallback="zeros")


class _Payload:
    """Unpickling this object runs code: it opens (creates) the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_without_running_code(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"0.weight": _Payload(marker)}, path)
    with pytest.raises(EncoderWeightsError, match="evil.pth"):
        VGGEncoder(["relu1_1"], weights=path)
    assert not marker.exists()
    with pytest.raises(EncoderWeightsError, match="evil.pth") as refused:
        VGGEncoder(["relu1_1"], weights=path, fallback=None)
    assert not marker.exists()
    # The refusal names what the file must hold, never a training key: styletransfer-stylise takes the file as
    # --encoder-weights, and its message advised "pass encoder.weights=random" (hostile probe rerun, issue 24).
    assert "run code" in str(refused.value) and "encoder.weights" not in str(refused.value)
    # The payload is real: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "content, match",
    [
        ([1, 2, 3], "not a state dict"),
        ({"0.weight": torch.zeros(8, 3, 3, 3)}, "unknown layout"),
        (
            {"0.weight": torch.zeros(64, 3, 3, 3), "0.bias": torch.zeros(64),
             "2.weight": torch.zeros(64, 32, 3, 3), "2.bias": torch.zeros(64)},
            r"'2.weight' has shape \(64, 32, 3, 3\), expected \(64, 64, 3, 3\)",
        ),
        ({"0.weight": torch.zeros(64, 3, 3, 3), "0.bias": torch.zeros(64)}, "lacks"),
    ],
)
def test_bad_weight_files_name_the_file(tmp_path: Path, content: object, match: str):
    path = tmp_path / "bad_weights.pth"
    torch.save(content, path)
    with pytest.raises(EncoderWeightsError, match=match) as info:
        VGGEncoder(["relu1_2"], weights=path)
    assert str(path) in str(info.value)


def test_missing_and_non_torch_files(tmp_path: Path):
    with pytest.raises(EncoderWeightsError, match="does not exist"):
        VGGEncoder(["relu1_1"], weights=tmp_path / "nope.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(EncoderWeightsError, match="notes.pth"):
        VGGEncoder(["relu1_1"], weights=text)


def test_build_encoder_validates_config():
    enc = build_encoder({"weights": "random", "seed": 1}, ["relu2_1", "relu1_1", "relu2_1"])
    assert enc.layers == ("relu2_1", "relu1_1")
    assert enc.spec["seed"] == 1
    with pytest.raises(ValueError, match="weigths"):
        build_encoder({"weigths": "random"}, ["relu1_1"])
    with pytest.raises(ValueError, match="download"):
        build_encoder({"weights": "random", "download": "yes"}, ["relu1_1"])


def test_channels_last_and_bf16_autocast():
    enc = VGGEncoder(["relu2_1"], weights="random").to(memory_format=torch.channels_last)
    image = _image().contiguous(memory_format=torch.channels_last)
    reference = enc(image)["relu2_1"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = enc(image)["relu2_1"]
    assert low.dtype == torch.bfloat16
    assert torch.isfinite(low).all()
    assert (low.float() - reference).abs().mean() < 0.05 * reference.abs().mean()


def test_state_dict_in_memory_loads_like_the_file():
    source = VGGEncoder(["relu2_1"], weights="random", seed=5)
    copy = VGGEncoder(["relu2_1"], weights={f"trunk.{k}": v for k, v in source.trunk.state_dict().items()})
    assert copy.spec["weights"] == "state_dict" and copy.spec["fingerprint"] == source.spec["fingerprint"]
    image = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(copy(image)["relu2_1"], source(image)["relu2_1"])


# ---------------------------------------------------------------- VGG-16 (encoder=vgg16)


def test_vgg16_features_equal_torchvisions_own_network_bit_for_bit(tmp_path: Path):
    """torchvision's VGG-16 features (its own layers, ``make_layers(cfgs["D"])`` as ``vgg16().features``, with
    ``vgg16()``'s seeded random init) saved as a file: our encoder detects VGG-16 from the keys and gives
    torchvision's activations at relu1_2, relu2_2, relu3_3 and relu4_3 (the fast style loss network's layers) bit for
    bit; the layer names are VGG-19's without each block's fourth conv. The features alone: ``vgg16()``'s classifier
    (120 M parameters to initialise) was most of this test's time."""
    torch.manual_seed(0)
    path = tmp_path / "vgg16.pth"
    reference = vgg16_features_file(path)
    layers = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    encoder = VGGEncoder(layers, weights=str(path))
    assert encoder.network == "vgg16" and encoder.spec["network"] == "vgg16"
    image = _image(40)
    ours = encoder(image)
    x, expected = (image - MEAN) / STD, {}
    indices = {3: "relu1_2", 8: "relu2_2", 15: "relu3_3", 22: "relu4_3"}  # torchvision vgg16().features positions
    with torch.no_grad():
        for i, module in enumerate(reference[:23]):
            x = module(x)
            if i in indices:
                expected[indices[i]] = x.clone()
    assert all(torch.equal(ours[name], expected[name]) for name in layers)
    with pytest.raises(ConfigError, match="unknown VGG-16 layer name.*conv3_4"):
        VGGEncoder(["conv3_4"], weights="random", network="vgg16")
    with pytest.raises(EncoderWeightsError, match="are a VGG-16: it has no relu3_4"):
        VGGEncoder(["relu3_4"], weights=str(path))  # a VGG-16 file asked for a VGG-19 layer


def test_vgg16_imagenet_weights_come_from_their_own_cache_file(empty_hub: Path, no_network: list[str]):
    with pytest.raises(EncoderWeightsError) as info:
        build_encoder({"weights": "imagenet", "download": False, "network": "vgg16"}, ["relu2_2"])
    assert "vgg16-397923af.pth" in str(info.value) and "styletransfer-weights fetch vgg16" in str(info.value)
    with pytest.raises(ConfigError, match="encoder.network must be one of vgg19, vgg16"):
        build_encoder({"weights": "random", "network": "vgg11"}, ["relu1_1"])
