"""Keeping a long run alive: skipping non-finite steps, and stopping cleanly on SIGINT/SIGTERM.

``StepGuard`` stands between a model and its optimizers. A model calls ``ctx.backward(loss)`` and
``optimizer.step()`` as usual; when a loss is NaN or Inf on any rank (the ranks agree through one all-reduce, so
DDP's collectives stay matched), its backward is not run and every optimizer step of that training step is skipped,
so neither the weights nor Adam's moments see the bad value. After ``max_bad_steps`` consecutive bad steps the run
stops with a message naming the loss term and the step; the last good checkpoint stays the latest one.
"""

from __future__ import annotations

import math
import signal
from typing import Any, Callable

import torch

from gan_translate.errors import UserError


class TrainingDiverged(UserError):
    """Too many consecutive non-finite steps; the message names the loss term and the step."""


class GuardedOptimizer:
    """Forwards everything to the wrapped optimizer, but ``step()`` does nothing in a step marked bad."""

    def __init__(self, optimizer: Any, guard: "StepGuard") -> None:
        self.optimizer = optimizer
        self._guard = guard

    def step(self, *args: Any, **kwargs: Any) -> Any:
        if self._guard.bad:
            return None
        return self.optimizer.step(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


class StepGuard:
    """Per-step bookkeeping of non-finite losses (see the module docstring)."""

    def __init__(self, backward: Callable[[torch.Tensor], None], all_reduce_min: Callable[[torch.Tensor], torch.Tensor],
                 max_bad_steps: int) -> None:
        self._backward = backward
        self._all_reduce_min = all_reduce_min
        self.max_bad_steps = max_bad_steps
        self.bad = False
        self.consecutive_bad = 0
        self.skipped_total = 0

    def begin_step(self) -> None:
        self.bad = False

    def backward(self, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all().float().reshape(1)
        if self._all_reduce_min(finite).item() < 1 or self.bad:
            self.bad = True  # once a step is bad, later losses of it are not back-propagated either
            return
        self._backward(loss)

    def end_step(self, logs: dict[str, float], step: int) -> str | None:
        """Counts the step; returns a warning line for a skipped step, raises after too many in a row."""
        bad_terms = [k for k, v in logs.items() if not math.isfinite(v)]
        if not self.bad and not bad_terms:
            self.consecutive_bad = 0
            return None
        self.bad = True
        self.consecutive_bad += 1
        self.skipped_total += 1
        term = bad_terms[0] if bad_terms else "a loss"
        value = logs.get(term, float("nan"))
        if self.consecutive_bad >= self.max_bad_steps:
            raise TrainingDiverged(f"training diverged: loss {term} is {value} at step {step} "
                                   f"({self.consecutive_bad} bad steps in a row); the last good checkpoint is kept")
        return f"step {step}: loss {term} is {value}, step skipped ({self.consecutive_bad} in a row)"


class GracefulStop:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (then it saves and exits cleanly).

    A second signal while stopping restores the default handler's behaviour (KeyboardInterrupt / termination).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # asked twice: stop now
            self.restore()
            signal.raise_signal(signum)
            return
        self.requested = signal.Signals(signum).name

    def install(self) -> "GracefulStop":
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (e.g. called from a worker thread): keep default handling
            self._previous.clear()
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
