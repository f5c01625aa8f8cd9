"""Neural Style (Gatys): the style losses, total variation, the matrix square root, layer weights and blended
style targets against hand computations and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from styletransfer.methods.gatys.losses import (
    STYLE_LOSSES,
    GramStyleLoss,
    MeanStdStyleLoss,
    Wasserstein2StyleLoss,
    gram_loss,
    normalise_layer_weights,
    wasserstein2_loss,
)
from styletransfer.nn.losses import tv_loss
from styletransfer.nn.stats import gram_matrix, sqrtm_psd


def test_gram_matrix_and_losses_equal_hand_computation() -> None:
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    expected = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / (2 * 1 * 2)
    assert torch.allclose(gram_matrix(features)[0], expected)
    target = torch.tensor([[1.0, 2.0], [2.0, 6.0]])
    hand = ((1.25 - 1) ** 2 + (2.75 - 2) ** 2 * 2 + (6.25 - 6) ** 2) / 4
    assert gram_loss(features, target).item() == pytest.approx(hand)
    assert GramStyleLoss(target)(features).item() == pytest.approx(hand)
    assert STYLE_LOSSES == {"gram": GramStyleLoss, "mean_std": MeanStdStyleLoss, "wasserstein2": Wasserstein2StyleLoss}
    # mean/std: channels [1, 2, 3] (mean 2, unbiased variance 1) and [0, 0, 6] (mean 2, unbiased variance 12); eps 1e-5
    features = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]]).view(1, 2, 1, 3)
    loss = MeanStdStyleLoss(torch.tensor([1.0, 2.0]).view(1, 2, 1, 1), torch.tensor([1.0, 3.0]).view(1, 2, 1, 1))
    hand = (1.0 ** 2 + 0.0) / 2 + ((math.sqrt(1 + 1e-5) - 1) ** 2 + (math.sqrt(12 + 1e-5) - 3) ** 2) / 2
    assert loss(features).item() == pytest.approx(hand, rel=1e-6)


def test_tv_loss_equals_hand_computation() -> None:
    image = torch.tensor([[0.0, 1.0], [3.0, 5.0]]).view(1, 1, 2, 2)
    # dx: 1-0, 5-3 ; dy: 3-0, 5-1 ; divided by the 4 pixels
    assert tv_loss(image, power=2).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert tv_loss(image, power=1).item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert tv_loss(torch.full((2, 3, 5, 5), 0.3)).item() == 0.0


def test_wasserstein2_equals_closed_form_for_diagonal_gaussians() -> None:
    # Two channels over 4 positions: means (1, 2), variances (1, 4), uncorrelated.
    features = torch.tensor([[0.0, 2.0, 0.0, 2.0], [0.0, 0.0, 4.0, 4.0]]).view(1, 2, 2, 2)
    t_mean, t_cov = torch.tensor([0.0, 2.0]), torch.diag(torch.tensor([4.0, 1.0]))
    eps = 1e-4  # added to the feature covariance's diagonal
    std, t_std = torch.tensor([1.0, 2.0]).pow(2).add(eps).sqrt(), torch.tensor([2.0, 1.0])
    hand = ((1.0 - 0.0) ** 2 + 0.0 + ((std - t_std) ** 2).sum().item()) / 2
    assert wasserstein2_loss(features, t_mean, t_cov).item() == pytest.approx(hand, rel=1e-4)
    same = wasserstein2_loss(features, features.mean((2, 3))[0], torch.diag(std.pow(2)))
    assert abs(same.item()) < 1e-4
    # the module takes raw moments (second = S_t + mu mu^T) and adds eps to the target covariance too
    module = Wasserstein2StyleLoss(t_mean[None].double(), (t_cov + t_mean[:, None] * t_mean[None, :])[None].double())
    t_std = t_std.pow(2).add(eps).sqrt()
    assert module(features).item() == pytest.approx((1.0 + ((std - t_std) ** 2).sum().item()) / 2, rel=1e-5)
    assert sorted(name for name, _ in module.named_buffers()) == ["cov", "cov_sqrt", "mean"]


def test_wasserstein2_gradient_with_fewer_positions_than_channels() -> None:
    """Deep layers of small images give nearly singular covariances; the gradient must still be right."""
    g = torch.Generator().manual_seed(0)
    features = torch.rand(1, 16, 2, 3, generator=g, dtype=torch.float64).requires_grad_()
    style_loss = Wasserstein2StyleLoss.from_features(torch.rand(1, 16, 3, 2, generator=g))
    loss = style_loss(features)
    loss.backward()
    step = -features.grad / features.grad.norm() * 1e-4
    with torch.no_grad():
        plus, minus = style_loss(features + step), style_loss(features - step)
    assert (plus - minus).item() / 2 == pytest.approx((features.grad * step).sum().item(), rel=0.05)
    assert plus < loss < minus


def test_matrix_square_root_and_its_gradient() -> None:
    a = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spd = (a @ a.T + 0.1 * torch.eye(5, dtype=torch.float64)).float()
    root = sqrtm_psd(spd)
    assert torch.allclose(root @ root, spd, atol=1e-4)
    x = spd.clone().requires_grad_()
    sqrtm_psd(x).trace().backward()  # d tr(sqrt(A)) / dA = A^(-1/2) / 2
    assert torch.allclose(x.grad, torch.linalg.inv(root) / 2, atol=1e-3)


def test_style_layer_weights() -> None:
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert normalise_layer_weights("equal", layers) == [0.2] * 5
    weights = normalise_layer_weights([256, 64, 16, 4, 1], layers)
    assert weights == pytest.approx([256 / 341, 64 / 341, 16 / 341, 4 / 341, 1 / 341])
    with pytest.raises(ValueError, match="3 entries for 5 style layers"):
        normalise_layer_weights([1, 2, 3], layers)


def test_blended_style_targets_are_the_blend_of_the_statistics() -> None:
    """Gram blends Gram matrices, mean/std means and stds, Wasserstein-2 raw moments (so an equal blend of two
    same-sized maps is the Gaussian fit of both together), then builds S_t and S_t^(1/2) once."""
    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.rand(1, 3, 2, 2, generator=g), torch.rand(1, 3, 2, 2, generator=g)
    flat1, flat2 = f1.reshape(3, 4), f2.reshape(3, 4)
    target = GramStyleLoss.blended([GramStyleLoss.statistics(f) for f in (f1, f2)], [0.25, 0.75]).gram
    assert torch.allclose(target[0], 0.25 * flat1 @ flat1.T / 12 + 0.75 * flat2 @ flat2.T / 12)
    mean_std = MeanStdStyleLoss.blended([MeanStdStyleLoss.statistics(f) for f in (f1, f2)], [0.25, 0.75])
    assert torch.allclose(mean_std.mean.flatten(), 0.25 * flat1.mean(1) + 0.75 * flat2.mean(1))
    stds = [(flat.var(1, unbiased=True) + 1e-5).sqrt() for flat in (flat1, flat2)]
    assert torch.allclose(mean_std.std.flatten(), 0.25 * stds[0] + 0.75 * stds[1])
    w2 = Wasserstein2StyleLoss.blended([Wasserstein2StyleLoss.statistics(f) for f in (f1, f2)], [0.5, 0.5])
    both = torch.cat([flat1, flat2], dim=1).double()
    centred = both - both.mean(1, keepdim=True)
    cov = centred @ centred.T / 8 + 1e-4 * torch.eye(3, dtype=torch.float64)
    assert torch.allclose(w2.mean[0], both.mean(1)) and torch.allclose(w2.cov[0], cov)
    assert torch.allclose(w2.cov_sqrt[0] @ w2.cov_sqrt[0], cov)

