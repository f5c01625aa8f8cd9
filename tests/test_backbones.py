"""torchvision backbones as encoders (styletransfer.nn.backbones): features equal torchvision's own feature
extractor bit for bit, normalisation from the weights' transforms, weights from the cache only, node names."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torch.hub
from conftest import SKIMAGE_DATA
from torchvision.models import get_model, get_model_weights
from torchvision.models.feature_extraction import create_feature_extractor

from styletransfer.nn.backbones import BackboneEncoder, imagenet_cache_path, module_names, node_names, normalisation
from styletransfer.nn.encoder import build_encoder
from styletransfer.nn.encoders import build_any_encoder
from styletransfer.runtime.errors import ConfigError, EncoderWeightsError


def _image(size: int = 32, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


#: A small torchvision network (2.5 M parameters, ImageNet weights of its own) for the tests of the weights' paths
#: (seeds, fingerprints, the cache, fallbacks, state dicts, dispatch), which work alike for every network: building
#: ResNet-50 or ConvNeXt-Tiny with torchvision's initialisation (0.25-0.3 s each) was most of those tests' time. The
#: networks the encoders are documented with are the subjects of the bit-for-bit, normalisation, gradient, feature
#: info and name tests.
SMALL = "mobilenet_v3_small"


def _seeded(network: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return get_model(network, weights=None).eval()


@pytest.fixture(scope="module")
def resnet() -> BackboneEncoder:
    """ResNet-50 with random weights, to layer4: built once for the tests that only read it (a ResNet-50's random
    initialisation is most of a build's time)."""
    return BackboneEncoder(["layer1", "layer2", "layer3", "layer4"], "resnet50", weights="random")


@pytest.fixture(scope="module")
def convnext() -> BackboneEncoder:
    """ConvNeXt-Tiny with random weights, to features.5: built once, as ``resnet``."""
    return BackboneEncoder(["features.3", "features.5"], "convnext_tiny", weights="random")


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch.hub's cache in an empty folder, and downloads that fail as they do offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def refuse(url: str, *args, **kwargs) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.mark.parametrize(
    ("network", "nodes"),
    [("resnet50", ["layer1", "layer2", "layer3.1.relu_1"]), ("convnext_tiny", ["features.1", "features.3"])],
)
def test_features_equal_torchvision_feature_extractor_bit_for_bit(network: str, nodes: list[str]):
    encoder = BackboneEncoder(nodes, network, weights="random", seed=5)
    mean, std = encoder.mean, encoder.std
    reference = create_feature_extractor(_seeded(network, 5), return_nodes=nodes)
    image = _image(48)
    ours, theirs = encoder(image), reference((image - mean) / std)
    assert list(ours) == nodes
    for name in nodes:
        assert torch.equal(ours[name], theirs[name]), name
    only = encoder(image, [nodes[-1]])
    assert list(only) == [nodes[-1]] and torch.equal(only[nodes[-1]], theirs[nodes[-1]])


def test_normalisation_is_the_weights_transforms_mean_and_std(resnet, convnext):
    for network, encoder in (("resnet50", resnet), ("convnext_tiny", convnext)):
        transforms = get_model_weights(network).DEFAULT.transforms()
        assert encoder.mean.flatten().tolist() == pytest.approx(list(transforms.mean))
        assert encoder.std.flatten().tolist() == pytest.approx(list(transforms.std))
    assert normalisation("efficientnet_v2_l") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # not ImageNet's: read, not fixed


def test_frozen_eval_and_gradients_reach_the_input(resnet):
    encoder = resnet
    parent = torch.nn.Sequential(encoder)
    parent.train()
    assert not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    image = _image().requires_grad_(True)
    encoder(image)["layer2"].square().mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    # batch norms keep their running statistics: a training-mode call would change them
    assert torch.equal(encoder.trunk.state_dict()["layer1.0.bn1.running_mean"], torch.zeros(64))


def test_random_weights_seeded_fingerprinted_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = BackboneEncoder(["features.1"], SMALL, weights="random", seed=1)
    assert torch.equal(torch.rand(1), before)
    b = BackboneEncoder(["features.1"], SMALL, weights="random", seed=1)
    c = BackboneEncoder(["features.1"], SMALL, weights="random", seed=2)
    assert a.spec["fingerprint"] == b.spec["fingerprint"] != c.spec["fingerprint"]
    assert a.spec["network"] == SMALL and a.spec["weights"] == a.spec["used"] == "random"


def test_missing_imagenet_weights_offline_name_the_cache_path(empty_hub: Path):
    expected = empty_hub / Path(get_model_weights("resnet50").DEFAULT.url).name
    assert imagenet_cache_path("resnet50") == expected
    with pytest.raises(EncoderWeightsError, match="encoder.download=false") as info:
        build_any_encoder({"network": "resnet50", "download": False}, ["layer1"])
    assert str(expected) in str(info.value) and "encoder.weights=random" in str(info.value)
    with pytest.raises(EncoderWeightsError, match="cannot download") as info:
        build_any_encoder({"network": "resnet50", "download": True}, ["layer1"])
    assert str(expected) in str(info.value)
    assert not expected.exists()


def test_random_only_when_asked(empty_hub: Path):
    with pytest.raises(EncoderWeightsError):
        BackboneEncoder(["features.1"], SMALL, download=False)
    fell_back = BackboneEncoder(["features.1"], SMALL, download=False, fallback="random", seed=4)
    assert fell_back.spec["fallback_used"] and fell_back.spec["used"] == "random"
    asked = BackboneEncoder(["features.1"], SMALL, weights="random", seed=4)
    assert asked.spec["fingerprint"] == fell_back.spec["fingerprint"] and not asked.spec["fallback_used"]


def test_imagenet_weights_load_from_the_cache(empty_hub: Path):
    """A file at the cache path is what torchvision's weights API loads (here a seeded network saved there)."""
    model = _seeded(SMALL, 9)
    path = imagenet_cache_path(SMALL)
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)
    cached = BackboneEncoder(["features.2"], SMALL, download=False)
    from_file = BackboneEncoder(["features.2"], SMALL, weights=str(path))
    seeded = BackboneEncoder(["features.2"], SMALL, weights="random", seed=9)
    assert cached.spec["fingerprint"] == from_file.spec["fingerprint"] == seeded.spec["fingerprint"]
    assert cached.spec["used"] == "imagenet" and cached.spec["file"] == str(path)
    assert from_file.spec["used"] == str(path)


def test_wrong_state_dict_is_one_clear_error(tmp_path: Path):
    path = tmp_path / f"{SMALL}.pth"
    torch.save(_seeded(SMALL, 0).state_dict(), path)
    with pytest.raises(EncoderWeightsError, match="not a resnet50 state dict"):
        BackboneEncoder(["layer1"], "resnet50", weights=str(path))


def test_feature_info_channels_and_stride(resnet, convnext):
    assert resnet.feature_info() == {
        "layer1": (256, 4),
        "layer2": (512, 8),
        "layer3": (1024, 16),
        "layer4": (2048, 32),
    }
    assert resnet.feature_info(["layer3"]) == {"layer3": (1024, 16)}
    assert convnext.feature_info() == {"features.3": (192, 8), "features.5": (384, 16)}
    with pytest.raises(ConfigError, match="not a feature map"):
        BackboneEncoder(["flatten"], SMALL, weights="random").feature_info()


def test_node_names_and_bad_names():
    names = node_names("resnet50")
    assert names[0] == "x" and "layer3.5.relu_2" in names and names[-1] == "fc"
    assert {"layer1", "layer4", "layer4.2"} <= set(module_names("resnet50"))
    with pytest.raises(ConfigError, match=r"resnet50 has no node\(s\) \['layer5'\].*layer4.*nn.backbones resnet50"):
        BackboneEncoder(["layer5"], "resnet50", weights="random")
    with pytest.raises(ConfigError, match="encoder.network='resnet500'.*resnet50"):
        BackboneEncoder(["layer1"], "resnet500", weights="random")


def test_build_dispatch_and_vgg_only_methods_refuse_backbones():
    built = build_any_encoder({"network": SMALL, "weights": "random"}, ["features.1"])
    assert isinstance(built, BackboneEncoder)
    vgg = build_any_encoder({"weights": "random"}, ["relu1_1"])
    assert vgg.spec["fingerprint"] == build_encoder({"weights": "random"}, ["relu1_1"]).spec["fingerprint"]
    with pytest.raises(ConfigError, match="got 'resnet50': this takes VGG encoders only"):
        build_encoder({"network": "resnet50", "weights": "random"}, ["layer1"])
    with pytest.raises(ConfigError, match="metric_encoder.arch=vgg_normalised"):
        build_any_encoder({"network": "resnet50", "arch": "vgg_normalised"}, ["layer1"], key="metric_encoder")
    with pytest.raises(ConfigError, match="unknown encoder config key"):
        build_any_encoder({"network": "resnet50", "layers": ["layer1"]}, ["layer1"])


@pytest.mark.parametrize(
    ("method", "cls", "match"),
    [
        ("adain", "AdaINModule", "method.bottleneck is not set for encoder.network=resnet50"),
        ("linear", "LinearModule", "method=linear's decoder mirrors VGG-19"),
        ("wct", "WCTModule", "method=wct's decoders mirror VGG-19"),
        ("fast", "FastStyleModule", "got 'resnet50': this takes VGG encoders only"),
    ],
)
def test_methods_built_on_vgg_layers_refuse_a_backbone_in_one_line(method: str, cls: str, match: str):
    """Linear, WCT and fast style are built around VGG's layers: a backbone is refused in one line before anything
    runs. AdaIN takes one, but has no default bottleneck for it outside the encoder's config file: one line too."""
    from importlib import import_module

    module = getattr(import_module(f"styletransfer.methods.{method}"), cls)
    extra = {"styles": [str(SKIMAGE_DATA / "coffee.png")]} if method == "fast" else {}
    with pytest.raises(ConfigError, match=match) as info:
        module(encoder={"network": "resnet50", "weights": "random"}, **extra)
    assert "\n" not in str(info.value)


def test_a_network_with_a_buffer_outside_its_state_dict_is_built_with_it(monkeypatch):
    """A state dict fills a network built on the meta device whole (strict); a buffer it does not hold (none of
    torchvision's classification networks has one today) would be left as uninitialised memory there, so such a
    network is built with its own initialisation and then given the state dict."""
    from styletransfer.nn import backbones

    class WithTable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.register_buffer("table", torch.arange(6.0), persistent=False)

    monkeypatch.setattr(backbones, "_model", lambda network: WithTable())
    state = WithTable().state_dict()
    model = backbones._load_state("with_table", state, "<state dict>")
    assert torch.equal(model.table, torch.arange(6.0)) and torch.equal(model.conv.weight, state["conv.weight"])


def test_state_dict_in_memory():
    state = _seeded(SMALL, 3).state_dict()
    given = BackboneEncoder(["features.1"], SMALL, weights=state)
    assert given.spec["weights"] == given.spec["used"] == "state_dict"
    same_seed = BackboneEncoder(["features.1"], SMALL, weights="random", seed=3)
    assert given.spec["fingerprint"] == same_seed.spec["fingerprint"]
    with pytest.raises(EncoderWeightsError, match=f"<state dict> are not a {SMALL} state dict"):
        BackboneEncoder(["features.1"], SMALL,
                        weights={k: v for k, v in state.items() if not k.startswith("classifier.3.")})
