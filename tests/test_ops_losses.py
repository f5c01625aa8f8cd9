"""AdaIN statistics and the AdaIN losses against hand computations."""

import pytest
import torch

from styletransfer.methods.adain.model import adain
from styletransfer.nn.losses import content_loss, mean_std_loss, mean_std_style_loss
from styletransfer.nn.stats import STD_EPS, mean_std


def test_mean_std_matches_hand_computation():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])  # one channel, values 1, 2, 3, 6
    mean, std = mean_std(x)
    assert mean.shape == (1, 1, 1, 1)
    assert mean.item() == pytest.approx(3.0)
    unbiased_var = ((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3
    assert std.item() == pytest.approx((unbiased_var + STD_EPS) ** 0.5)


def test_adain_output_carries_style_channel_statistics():
    gen = torch.Generator().manual_seed(0)
    content = torch.randn(2, 8, 9, 11, generator=gen) * 3 + 1
    style = torch.randn(2, 8, 5, 7, generator=gen) * torch.linspace(0.5, 4, 8).view(1, 8, 1, 1) - 2
    out = adain(content, style)
    assert out.shape == content.shape
    out_mean, out_std = mean_std(out)
    s_mean, s_std = mean_std(style)
    torch.testing.assert_close(out_mean, s_mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_std, s_std, atol=1e-3, rtol=1e-3)


def test_adain_broadcasts_one_style_over_a_batch():
    content = torch.randn(3, 4, 6, 6)
    style = torch.randn(1, 4, 6, 6) * 2 + 5
    out_mean, _ = mean_std(adain(content, style))
    torch.testing.assert_close(out_mean, mean_std(style)[0].expand(3, 4, 1, 1), atol=1e-4, rtol=1e-4)


def test_adain_rejects_channel_mismatch_and_tiny_maps():
    with pytest.raises(ValueError, match="channels"):
        adain(torch.randn(1, 4, 4, 4), torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match="too small"):
        mean_std(torch.randn(1, 4, 1, 1))


def test_content_loss_is_mse():
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    b = torch.tensor([[[[0.0, 2.0], [5.0, 4.0]]]])
    assert content_loss(a, b).item() == pytest.approx((1 + 0 + 4 + 0) / 4)


def test_mean_std_loss_is_mse_of_means_plus_mse_of_stds():
    gen = torch.Generator().manual_seed(1)
    f = torch.randn(2, 3, 4, 4, generator=gen)
    t = torch.randn(2, 3, 4, 4, generator=gen) * 2 + 1
    fm, fs = f.flatten(2).mean(2), (f.flatten(2).var(2, unbiased=True) + STD_EPS).sqrt()
    tm, ts = t.flatten(2).mean(2), (t.flatten(2).var(2, unbiased=True) + STD_EPS).sqrt()
    expected = ((fm - tm) ** 2).mean() + ((fs - ts) ** 2).mean()
    assert mean_std_loss(f, t).item() == pytest.approx(expected.item(), rel=1e-5)
    assert mean_std_loss(t, t).item() == pytest.approx(0.0, abs=1e-10)


def test_style_loss_sums_the_chosen_layers():
    feats = {"relu1_1": torch.randn(1, 2, 4, 4), "relu2_1": torch.randn(1, 2, 4, 4), "relu3_1": torch.randn(1, 2, 4, 4)}
    targets = {k: v * 2 + 1 for k, v in feats.items()}
    total, per_layer = mean_std_style_loss(feats, targets, ["relu1_1", "relu3_1"])
    assert set(per_layer) == {"relu1_1", "relu3_1"}
    expected = mean_std_loss(feats["relu1_1"], targets["relu1_1"]) + mean_std_loss(feats["relu3_1"], targets["relu3_1"])
    assert total.item() == pytest.approx(expected.item())
    with pytest.raises(ValueError):
        mean_std_style_loss(feats, targets, [])
