"""Keeping a long run alive: skipping non-finite steps, and stopping cleanly on SIGINT/SIGTERM.

However a run is stopped -- SIGTERM to the launcher (``kill PID``), to the whole process group (``timeout``, cluster
schedulers, ``docker stop``) or SIGINT to it (Ctrl-C) -- the trainer finishes the step it is in, saves a checkpoint,
prints one line and exits; ``--continue_train`` resumes from there. DataLoader workers ignore these signals (the trainer
shuts them down), and under ``accelerate launch`` the trainer also stops when the launcher dies. When the workers died
anyway (the OOM killer, a SIGKILL), the step in progress cannot complete: the last good checkpoint is kept and the
message says which.

``StepGuard`` stands between a model and its optimizers. A model calls ``ctx.backward(loss)`` and
``optimizer.step()`` as usual; when a loss is NaN or Inf on any rank (the ranks agree through one all-reduce, so
DDP's collectives stay matched), its backward is not run and every optimizer step of that training step is skipped,
so neither the weights nor Adam's moments see the bad value. After ``max_bad_steps`` consecutive bad steps the run
stops with a message naming the loss term and the step; the last good checkpoint stays the latest one.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import sys
import time
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
        if self._guard.window is not None:  # a pending stop may drop the step here, before any weight changes
            self._guard.window.before_update()
        return self.optimizer.step(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


class StepGuard:
    """Per-step bookkeeping of non-finite losses (see the module docstring)."""

    def __init__(self, backward: Callable[[torch.Tensor], None], all_reduce_min: Callable[[torch.Tensor], torch.Tensor],
                 max_bad_steps: int, window: Any = None, stop_requested: Callable[[], bool] | None = None) -> None:
        self._backward = backward
        self.window = window  # stopping.StepWindow: whether the step in flight may still be dropped
        self._stop_requested = stop_requested or (lambda: False)
        self._all_reduce_min = all_reduce_min
        self.max_bad_steps = max_bad_steps
        self.bad = False
        self.consecutive_bad = 0
        self.skipped_total = 0

    def begin_step(self) -> None:
        self.bad = False

    def backward(self, loss: torch.Tensor) -> None:
        # One all-reduce agrees on both: finite losses, and no stop asked for on any rank
        flags = torch.stack([torch.isfinite(loss.detach()).all().float().reshape(()).cpu(),
                             torch.tensor(0.0 if self._stop_requested() else 1.0)])
        finite, go_on = self._all_reduce_min(flags).tolist()
        if go_on < 1 and self.window is not None:
            self.window.abandon_if_clean()  # raises StepAbandoned unless an optimizer has updated already
        if finite < 1 or self.bad:
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


class TrainingInterrupted(UserError):
    """The run stopped without a checkpoint at the step it reached; the message names the checkpoint that is kept."""


class GracefulStop:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (then it saves and exits cleanly).

    One stop request often arrives twice within milliseconds: Ctrl-C or a scheduler signals the whole process group,
    and the launcher (torch elastic, also behind ``accelerate launch --multi_gpu``) passes the signal it got on to its
    workers. A repeat within ``echo_window`` seconds is that echo and is ignored; a later one means "stop now": the
    default behaviour is restored and the signal re-raised (KeyboardInterrupt / termination).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, echo_window: float = 2.0) -> None:
        self.requested: str | None = None
        self.echo_window = echo_window
        self._requested_at = 0.0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if time.monotonic() - self._requested_at < self.echo_window:
                return
            self.restore()  # asked again: stop now
            signal.raise_signal(signum)
            return
        self.requested = signal.Signals(signum).name
        self._requested_at = time.monotonic()

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


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers leave SIGINT/SIGTERM to the trainer.

    Ctrl-C, ``timeout`` and schedulers signal the whole process group. A worker that died of it would make the trainer
    fail mid-step (``DataLoader worker (pid N) is killed by signal``) before it could save; ignoring the signal, it
    keeps serving batches until the trainer has reached a step boundary and shuts it down. A worker still ends with the
    trainer: it checks that its parent lives and exits when it does not.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(signal.SIGKILL)  # a trainer killed outright (a launcher's SIGKILL) must not leave workers behind


def _die_with_parent(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)`` on Linux: this process gets ``sig`` when its parent ends."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(sig), 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def stop_when_the_launcher_dies() -> None:
    """Asks Linux to send this process SIGTERM when the process that started it ends (``prctl(PR_SET_PDEATHSIG)``).

    ``accelerate launch train.py`` dies at once on SIGTERM (``kill PID``) without passing it on, which would leave
    the training running, orphaned. Only used under a launcher: a run started from a shell (``nohup python train.py
    &``) must survive the shell.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    if not _die_with_parent(signal.SIGTERM):
        return
    if os.getppid() != parent:  # the launcher ended before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def is_worker_failure(err: BaseException) -> bool:
    """Whether ``err`` is torch's report of a DataLoader worker that died (killed, or exited unexpectedly)."""
    text = str(err)
    return isinstance(err, RuntimeError) and "DataLoader worker" in text and (
        "killed by signal" in text or "exited unexpectedly" in text)
