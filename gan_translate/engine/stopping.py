"""Keeping the work of a stopped run whatever its step time.

A stop signal may come with little time to act: ``accelerate launch`` answers SIGTERM by terminating its whole process
tree and kills what is left 5 seconds later (torchrun, behind ``--multi_gpu``, waits 30 s). A step of a large model on a
CPU takes longer than that, so a run that finishes its step before saving would lose everything since its last
periodic checkpoint. Instead:

- Between the start of a step and its first optimizer update, the weights and optimizer state are still those of the
  last completed step (forward and backward only write gradients). ``StepWindow`` tracks that window; at its start the
  trainer takes a small ``Snapshot`` of what a step changes besides the weights: RNG states, image pools and the like,
  and the networks' buffers (BatchNorm statistics, updated in place by the forward pass).
- On a stop signal inside the window, the step in flight is abandoned and the last completed step is saved at once.
  With one process a watcher thread does it (``StopWatcher``): Python runs signal handlers only between bytecodes of
  the main thread, which may be inside a backward pass for many seconds. The watcher is woken through
  ``signal.set_wakeup_fd``, writes the checkpoint while the main thread computes, prints the stop line and ends the
  process. The main thread, should it reach an optimizer update first, abandons the step there
  (``StepAbandoned``).
- With several processes every rank must take the same decision (their collectives must match), so the ranks agree on
  a stop at each backward call, where they already agree on finite losses, and abandon the step together if no
  optimizer has updated yet.
- After the first optimizer update of a step the step is finished, and saved at its end, as before.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


class StepAbandoned(Exception):
    """Raised in the main thread at a safe point: the step in flight is dropped, the last completed one is saved."""


@dataclass
class Snapshot:
    """What a step changes besides weights and optimizer state, as it was after the last completed step."""

    progress: dict[str, int]
    rng: dict[str, Any]
    model_state: dict[str, Any]
    buffers: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # net name -> buffer name -> copy


def copy_buffers(nets: dict[str, torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """Copies of every network's buffers (BatchNorm running statistics: kilobytes, cheap at every step)."""
    return {name: {key: buf.detach().clone() for key, buf in getattr(net, "module", net).named_buffers()}
            for name, net in nets.items()}


CLEAN, DIRTY, ABANDONED, SAVING, SAVED = "clean", "dirty", "abandoned", "saving", "saved"


class StepWindow:
    """Whether the weights and optimizer state are still the last completed step's (state CLEAN).

    CLEAN -> DIRTY at the first optimizer update of a step; CLEAN -> ABANDONED when the main thread drops the step;
    CLEAN/ABANDONED -> SAVING when one thread (main or watcher) takes the save of the snapshot; SAVING -> SAVED.
    """

    def __init__(self, stop_requested: Callable[[], bool], single_process: bool) -> None:
        self._lock = threading.Lock()
        self._stop_requested = stop_requested
        self._single = single_process
        self.state = DIRTY
        self.snapshot: Snapshot | None = None
        self.saved = threading.Event()
        self.save_error: BaseException | None = None

    def mark_clean(self, snapshot: Snapshot) -> None:
        with self._lock:
            if self.state in (SAVING, SAVED):
                raise StepAbandoned
            self.snapshot = snapshot
            self.state = CLEAN

    def mark_dirty(self) -> None:
        with self._lock:
            if self.state in (SAVING, SAVED):
                raise StepAbandoned
            self.state = DIRTY

    def abandon_if_clean(self) -> None:
        """Called where all ranks have agreed on a stop: drops the step if no optimizer has updated yet."""
        with self._lock:
            if self.state == CLEAN:
                self.state = ABANDONED
            if self.state in (ABANDONED, SAVING, SAVED):
                raise StepAbandoned

    def before_update(self) -> None:
        """Called by every optimizer update; with one process a pending stop drops the step here."""
        with self._lock:
            if self.state in (ABANDONED, SAVING, SAVED) or \
                    (self.state == CLEAN and self._single and self._stop_requested()):
                if self.state == CLEAN:
                    self.state = ABANDONED
                raise StepAbandoned
            self.state = DIRTY

    def claim_save(self) -> bool:
        """Whether the caller is the one to save the snapshot (once, by one thread)."""
        with self._lock:
            if self.state in (CLEAN, ABANDONED):
                self.state = SAVING
                return True
            return False

    def finish_save(self, error: BaseException | None = None) -> None:
        with self._lock:
            self.state = SAVED
            self.save_error = error
        self.saved.set()


class StopWatcher:
    """A daemon thread woken by the first stop signal (``signal.set_wakeup_fd``) even while the main thread is inside
    a long C++ call; it calls ``on_signal(signal_name)`` once. Linux/macOS main thread only; else it does nothing."""

    def __init__(self, on_signal: Callable[[str], None]) -> None:
        self._on_signal = on_signal
        self._read_fd = self._write_fd = -1
        self._previous_fd: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> StopWatcher:
        if sys.platform.startswith("win") or threading.current_thread() is not threading.main_thread():
            return self
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        try:
            self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        except ValueError:
            self._close_fds()
            return self
        self._thread = threading.Thread(target=self._watch, name="stop-watcher", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        stop_signals = {int(signal.SIGINT), int(signal.SIGTERM)}
        while True:
            try:
                data = os.read(self._read_fd, 1)
            except OSError:
                return
            if not data:  # closed: the run ended
                return
            if data[0] in stop_signals:
                self._on_signal(signal.Signals(data[0]).name)
                return

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            signal.set_wakeup_fd(self._previous_fd if self._previous_fd is not None else -1)
        except ValueError:
            pass
        os.close(self._write_fd)  # the watcher reads end-of-file and returns
        self._write_fd = -1
        self._thread.join(timeout=5)
        self._thread = None
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._read_fd = self._write_fd = -1
