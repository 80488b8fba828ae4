"""Learning-rate schedules, stepped once per epoch by the trainer (as in the pix2pix/CycleGAN reference).

- "linear": constant for ``n_epochs`` epochs, then linear decay towards 0 over ``n_epochs_decay`` (pix2pix, CycleGAN,
  TPFR: "100 epochs constant + 100 linear decay");
- "step": times ``gamma`` every ``lr_decay_iters`` epochs;
- "plateau": times 0.2 when a monitored metric stops improving (its ``step`` takes the metric);
- "cosine": cosine annealing to 0 over the whole run (Loshchilov & Hutter 2017).
"""

from __future__ import annotations

from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim import lr_scheduler

__all__ = ["POLICIES", "LinearDecay", "build_scheduler"]


class LinearDecay:
    """LR factor for epoch index ``epoch`` (0-based, as LambdaLR counts):
    ``1 - max(0, epoch + epoch_count - n_epochs) / (n_epochs_decay + 1)``, the reference's rule.

    ``epoch_count`` is the number of the first epoch of this run (1 for a fresh one), so a run started at a later
    epoch picks up the curve where it left. A class rather than a lambda so that the scheduler's state pickles.
    """

    def __init__(self, n_epochs: int, n_epochs_decay: int, epoch_count: int = 1):
        self.n_epochs = n_epochs
        self.n_epochs_decay = n_epochs_decay
        self.epoch_count = epoch_count

    def __call__(self, epoch: int) -> float:
        return 1.0 - max(0, epoch + self.epoch_count - self.n_epochs) / float(self.n_epochs_decay + 1)


def _linear(
    optimizer: Optimizer, *, n_epochs: int, n_epochs_decay: int, epoch_count: int, **_
) -> lr_scheduler.LRScheduler:
    return lr_scheduler.LambdaLR(optimizer, lr_lambda=LinearDecay(n_epochs, n_epochs_decay, epoch_count))


def _step(optimizer: Optimizer, *, lr_decay_iters: int, gamma: float, **_) -> lr_scheduler.LRScheduler:
    return lr_scheduler.StepLR(optimizer, step_size=lr_decay_iters, gamma=gamma)


def _plateau(optimizer: Optimizer, **_) -> lr_scheduler.ReduceLROnPlateau:
    # the reference's settings: a 1% relative improvement counts, five flat epochs divide the LR by 5
    return lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, threshold=0.01, patience=5)


def _cosine(
    optimizer: Optimizer, *, n_epochs: int, n_epochs_decay: int, total_steps: int | None, **_
) -> lr_scheduler.LRScheduler:
    period = total_steps if total_steps is not None else n_epochs + n_epochs_decay
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, period), eta_min=0)


_BUILDERS: dict[str, Callable[..., lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau]] = {
    "linear": _linear,
    "step": _step,
    "plateau": _plateau,
    "cosine": _cosine,
}
POLICIES: tuple[str, ...] = tuple(_BUILDERS)


def build_scheduler(
    optimizer: Optimizer,
    policy: str,
    *,
    n_epochs: int,
    n_epochs_decay: int,
    lr_decay_iters: int = 50,
    epoch_count: int = 1,
    gamma: float = 0.1,
    total_steps: int | None = None,
) -> lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau:
    """Make the LR scheduler ``policy`` for ``optimizer``; the trainer calls its ``step()`` once per epoch.

    Args:
        policy: one of ``POLICIES``.
        n_epochs / n_epochs_decay: epochs at the initial LR, then epochs of decay ("linear"); their sum is the
            cosine period.
        lr_decay_iters: "step" decays every this many epochs.
        epoch_count: the number of the run's first epoch (1 for a fresh run), for "linear".
        gamma: the "step" decay factor.
        total_steps: overrides the cosine period, for a trainer that counts the run in steps of its own.

    Raises:
        ValueError: for an unknown policy or negative epoch counts.
    """
    if policy not in _BUILDERS:
        raise ValueError(f"unknown lr policy {policy!r}; choose one of {list(POLICIES)}")
    if n_epochs < 0 or n_epochs_decay < 0:
        raise ValueError(f"n_epochs and n_epochs_decay must be >= 0, got {n_epochs} and {n_epochs_decay}")
    return _BUILDERS[policy](
        optimizer,
        n_epochs=n_epochs,
        n_epochs_decay=n_epochs_decay,
        lr_decay_iters=lr_decay_iters,
        epoch_count=epoch_count,
        gamma=gamma,
        total_steps=total_steps,
    )
