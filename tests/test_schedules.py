"""LR schedules: each policy's curve over epochs, and state-dict round trips."""

from __future__ import annotations

import io
import math

import pytest
import torch

from gan_translate.engine.schedules import POLICIES, LinearDecay, build_scheduler

LR = 2e-4


def make_optimizer() -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=LR, betas=(0.5, 0.999))


def curve(scheduler, optimizer, epochs: int, metrics=None) -> list[float]:
    """LR used in each epoch, stepping once at each epoch's end as the trainer does."""
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step(metrics[epoch]) if metrics is not None else scheduler.step()
    return lrs


def test_policies_tuple():
    assert POLICIES == ("linear", "step", "plateau", "cosine")


def test_linear_curve():
    opt = make_optimizer()
    sched = build_scheduler(opt, "linear", n_epochs=2, n_epochs_decay=3)
    assert curve(sched, opt, 5) == pytest.approx([LR * f for f in [1, 1, 0.75, 0.5, 0.25]])


def test_linear_curve_resumed_at_a_later_epoch_count():
    # a run that starts at epoch 3 of the same plan continues the curve: 0.75, 0.5, 0.25
    opt = make_optimizer()
    sched = build_scheduler(opt, "linear", n_epochs=2, n_epochs_decay=3, epoch_count=3)
    assert curve(sched, opt, 3) == pytest.approx([LR * f for f in [0.75, 0.5, 0.25]])


def test_linear_decay_formula():
    rule = LinearDecay(n_epochs=100, n_epochs_decay=100, epoch_count=1)
    assert rule(0) == 1.0 and rule(99) == 1.0
    assert rule(100) == pytest.approx(1 - 1 / 101) and rule(199) == pytest.approx(1 / 101)


def test_step_curve():
    opt = make_optimizer()
    sched = build_scheduler(opt, "step", n_epochs=5, n_epochs_decay=5, lr_decay_iters=2)
    assert curve(sched, opt, 6) == pytest.approx([LR, LR, LR * 0.1, LR * 0.1, LR * 0.01, LR * 0.01])


def test_plateau_curve_follows_the_metric():
    opt = make_optimizer()
    sched = build_scheduler(opt, "plateau", n_epochs=10, n_epochs_decay=10)
    # improving for 3 epochs, then flat: after patience 5 flat epochs the LR drops by 0.2
    metrics = [3.0, 2.0, 1.0] + [1.0] * 8
    lrs = curve(sched, opt, len(metrics), metrics)
    assert lrs[:9] == pytest.approx([LR] * 9)
    assert lrs[9:] == pytest.approx([LR * 0.2] * 2)


def test_plateau_ignores_improvements_under_one_percent():
    opt = make_optimizer()
    sched = build_scheduler(opt, "plateau", n_epochs=1, n_epochs_decay=1)
    metrics = [1.0 * 0.999**k for k in range(8)]  # 0.1% better each epoch: below the 1% threshold
    assert curve(sched, opt, 8, metrics)[-1] == pytest.approx(LR * 0.2)


def test_cosine_curve():
    opt = make_optimizer()
    sched = build_scheduler(opt, "cosine", n_epochs=2, n_epochs_decay=2)
    expected = [LR * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert curve(sched, opt, 5) == pytest.approx(expected)
    assert expected[-1] == pytest.approx(0.0)


def test_cosine_total_steps_overrides_the_period():
    opt = make_optimizer()
    sched = build_scheduler(opt, "cosine", n_epochs=2, n_epochs_decay=2, total_steps=10)
    assert sched.T_max == 10


@pytest.mark.parametrize("policy", POLICIES)
def test_state_dict_round_trip(policy):
    def build():
        opt = make_optimizer()
        return opt, build_scheduler(opt, policy, n_epochs=2, n_epochs_decay=4, lr_decay_iters=2)

    metrics = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    uses_metric = policy == "plateau"
    opt, sched = build()
    curve(sched, opt, 3, metrics if uses_metric else None)

    buffer = io.BytesIO()
    torch.save({"scheduler": sched.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    opt2, sched2 = build()
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])

    rest = metrics[3:] if uses_metric else None
    assert curve(sched2, opt2, 6, rest) == pytest.approx(curve(sched, opt, 6, rest))


def test_invalid_policy_and_epochs():
    with pytest.raises(ValueError, match=r"unknown lr policy 'lambda'.*'linear', 'step', 'plateau', 'cosine'"):
        build_scheduler(make_optimizer(), "lambda", n_epochs=1, n_epochs_decay=1)
    with pytest.raises(ValueError, match="must be >= 0"):
        build_scheduler(make_optimizer(), "linear", n_epochs=-1, n_epochs_decay=1)
