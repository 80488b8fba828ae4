"""Adversarial losses against hand computations on small tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gan_translate.losses import GAN_MODES, GANLoss, gradient_penalty, relativistic_average_lsgan


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values)


# --- GANLoss ---------------------------------------------------------------------------------------------------------


def test_lsgan_hand_values():
    loss = GANLoss("lsgan")
    assert loss(t(0.5), True).item() == pytest.approx(0.25)
    assert loss(t(0.5), False).item() == pytest.approx(0.25)
    assert loss(t(2.0, 0.0), True).item() == pytest.approx((1.0 + 1.0) / 2)
    assert loss(t(2.0, 0.0), False).item() == pytest.approx((4.0 + 0.0) / 2)


def test_vanilla_hand_values():
    loss = GANLoss("vanilla")
    # BCE with logits: real -> -log(sigmoid(x)), fake -> -log(1 - sigmoid(x))
    assert loss(t(0.0), True).item() == pytest.approx(math.log(2))
    x = 1.5
    assert loss(t(x), True).item() == pytest.approx(-math.log(1 / (1 + math.exp(-x))), rel=1e-6)
    assert loss(t(x), False).item() == pytest.approx(-math.log(1 - 1 / (1 + math.exp(-x))), rel=1e-6)


def test_wgangp_hand_values():
    loss = GANLoss("wgangp")
    pred = t(1.0, 2.0, 6.0)
    assert loss(pred, True).item() == pytest.approx(-3.0)
    assert loss(pred, False).item() == pytest.approx(3.0)
    assert loss(pred, True, for_discriminator=False).item() == pytest.approx(-3.0)


def test_hinge_differs_between_discriminator_and_generator():
    loss = GANLoss("hinge")
    pred = t(-1.0, 0.5, 2.0)
    # D real: mean(relu(1 - x)) = (2 + 0.5 + 0) / 3 ; D fake: mean(relu(1 + x)) = (0 + 1.5 + 3) / 3
    assert loss(pred, True).item() == pytest.approx(2.5 / 3)
    assert loss(pred, False).item() == pytest.approx(4.5 / 3)
    # G: -mean(x), no margin
    assert loss(pred, True, for_discriminator=False).item() == pytest.approx(-1.5 / 3)


def test_list_of_predictions_is_averaged():
    loss = GANLoss("lsgan")
    # scale 1: mean((0.5-1)^2) = 0.25; scale 2: mean((0-1)^2, (3-1)^2) = 2.5
    assert loss([t(0.5), t(0.0, 3.0)], True).item() == pytest.approx((0.25 + 2.5) / 2)
    assert loss((t(0.5),), True).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="empty"):
        loss([], True)


@pytest.mark.parametrize("mode", sorted(GAN_MODES))
def test_targets_follow_prediction_dtype_and_gradients_flow(mode):
    loss = GANLoss(mode)
    assert not list(loss.buffers())  # nothing stored that could be on the wrong device or dtype
    pred = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    value = loss(pred, True)
    assert value.dtype == torch.float64 and value.dim() == 0
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_lsgan_under_bfloat16_autocast():
    loss = GANLoss("lsgan")
    conv = nn.Conv2d(1, 1, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = conv(torch.rand(1, 1, 4, 4))
        value = loss(pred, False)
    assert torch.isfinite(value)


def test_unknown_mode():
    with pytest.raises(ValueError, match=r"unknown GAN mode 'wgan'.*'hinge', 'lsgan', 'vanilla', 'wgangp'"):
        GANLoss("wgan")


# --- gradient penalty ------------------------------------------------------------------------------------------------


class LinearCritic(nn.Module):
    """D(x) = sum(w * x) per sample: its input gradient is w everywhere, so the penalty is known in closed form."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).flatten(1).sum(1)


@pytest.mark.parametrize("kind", ["real", "fake", "mixed"])
def test_gradient_penalty_of_a_linear_critic(kind):
    weight = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]])  # norm 5
    critic = LinearCritic(weight)
    real, fake = torch.rand(2, 1, 2, 2), torch.rand(2, 1, 2, 2)
    penalty, grads = gradient_penalty(critic, real, fake, kind=kind, constant=1.0, lambda_gp=10.0)
    assert penalty.item() == pytest.approx(10.0 * (5.0 - 1.0) ** 2, rel=1e-5)
    assert grads.shape == (2, 4)
    assert torch.allclose(grads, weight.flatten().expand(2, 4))
    # create_graph: the penalty back-propagates into the critic's weights: d/dw 10 (||w|| - 1)^2 = 20 (5 - 1) w / 5
    penalty.backward()
    assert torch.allclose(critic.weight.grad, 20 * 4 * weight / 5, rtol=1e-4)


def test_gradient_penalty_mixed_interpolates_per_sample_and_is_seeded():
    seen = []

    def critic(x):
        seen.append(x.detach().clone())
        return x.sum()

    real, fake = torch.ones(3, 2, 2, 2), torch.zeros(3, 2, 2, 2)
    gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(1))
    gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(1))
    points = seen[0]
    # between real (1) and fake (0), one alpha per sample, shared by all its pixels
    assert torch.all((points >= 0) & (points <= 1))
    per_sample = points.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample))
    assert torch.equal(seen[0], seen[1])


def test_gradient_penalty_disabled_and_bad_kind():
    penalty, grads = gradient_penalty(lambda x: x.sum(), torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2), lambda_gp=0.0)
    assert penalty.item() == 0.0 and grads is None
    with pytest.raises(ValueError, match="unknown gradient penalty kind 'both'"):
        gradient_penalty(lambda x: x.sum(), torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2), kind="both")


def test_gradient_penalty_does_not_reach_the_generator():
    gen_weight = torch.tensor(2.0, requires_grad=True)
    fake = torch.rand(1, 1, 2, 2) * gen_weight
    penalty, _ = gradient_penalty(LinearCritic(torch.ones(1, 2, 2)), torch.rand(1, 1, 2, 2), fake)
    penalty.backward()
    assert gen_weight.grad is None


# --- relativistic average LSGAN --------------------------------------------------------------------------------------


def test_relativistic_average_lsgan_hand_values():
    real, fake = t(1.0, 3.0), t(0.0, -2.0)  # mean(real) = 2, mean(fake) = -1
    # D: real - mean(fake) - 1 = (1, 3) -> squares (1, 9), mean 5; fake - mean(real) + 1 = (-1, -3) -> mean 5
    assert relativistic_average_lsgan(real, fake, for_discriminator=True).item() == pytest.approx((5 + 5) / 2)
    # G: real - mean(fake) + 1 = (3, 5) -> mean 17; fake - mean(real) - 1 = (-3, -5) -> mean 17
    assert relativistic_average_lsgan(real, fake, for_discriminator=False).item() == pytest.approx((17 + 17) / 2)


def test_relativistic_average_lsgan_optimum_and_lists():
    real, fake = t(0.5, 0.5), t(-0.5, -0.5)  # real exactly one above the fake mean: D's loss is zero
    assert relativistic_average_lsgan(real, fake, True).item() == pytest.approx(0.0)
    assert relativistic_average_lsgan(real, fake, False).item() == pytest.approx(4.0)
    as_list = relativistic_average_lsgan([real, t(1.0, 3.0)], [fake, t(0.0, -2.0)], True)
    assert as_list.item() == pytest.approx((0.0 + 5.0) / 2)
    with pytest.raises(ValueError, match="2 real predictions but 1 fake"):
        relativistic_average_lsgan([real, real], [fake], True)
