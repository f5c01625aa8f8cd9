"""The AdaIN decoder: release-compatible layout and output size equal to the input size."""

import pytest
import torch
from torch import nn

from styletransfer.methods.adain.model import AdaINDecoder


def release_decoder() -> nn.Sequential:
    """The original release's decoder, written out as in its source."""
    pad, conv, relu, up = nn.ReflectionPad2d, nn.Conv2d, nn.ReLU, nn.Upsample
    return nn.Sequential(
        pad(1), conv(512, 256, 3), relu(), up(scale_factor=2, mode="nearest"),
        pad(1), conv(256, 256, 3), relu(), pad(1), conv(256, 256, 3), relu(),
        pad(1), conv(256, 256, 3), relu(), pad(1), conv(256, 128, 3), relu(), up(scale_factor=2, mode="nearest"),
        pad(1), conv(128, 128, 3), relu(), pad(1), conv(128, 64, 3), relu(), up(scale_factor=2, mode="nearest"),
        pad(1), conv(64, 64, 3), relu(), pad(1), conv(64, 3, 3),
    )  # fmt: skip


def test_release_decoder_weights_load_and_give_the_same_output():
    reference = release_decoder()
    decoder = AdaINDecoder()
    assert list(decoder.state_dict()) == list(reference.state_dict())
    convs = [k.split(".")[0] for k in reference.state_dict() if k.endswith("weight")]
    assert convs == ["1", "5", "8", "11", "14", "18", "21", "25", "28"]
    decoder.load_state_dict(reference.state_dict())
    features = torch.randn(1, 512, 4, 5)
    torch.testing.assert_close(decoder(features), reference(features))
    torch.testing.assert_close(decoder(features, output_size=(32, 40)), reference(features))


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (33, 17)])
def test_output_size_equals_requested_size(size):
    decoder = AdaINDecoder()
    h, w = size
    features = torch.randn(2, 512, h // 8 or 1, w // 8 or 1)
    out = decoder(features, output_size=size)
    assert out.shape == (2, 3, h, w)
