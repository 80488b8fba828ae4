"""Runs over several machines: a bounded wait for the others, one line when one is lost, rank 0's failures shared.

A distributed run is one process group; each collective (DDP's gradient all-reduce, the trainer's agreements, the
barrier after a checkpoint) waits for every rank. When a machine is lost the survivors learn it in one of two ways:

- it died (its processes killed, the machine rebooted): its sockets are reset and the survivors' next collective
  fails at once ("Connection reset by peer", "Connection closed by peer");
- it hung (processes frozen, a network partition): its sockets stay open and nothing answers; the survivors' next
  collective waits for the process group's timeout -- torch's default is 30 minutes; ``--ddp_timeout`` sets it.

Either way the backend raises a RuntimeError with a page of C++ context; ``lost_machine_message`` turns it into one
line, which the trainer completes with the run's last checkpoint. A failure on rank 0 alone that the others would
otherwise only meet as a timeout (its checkpoint write failing, its header scan finding a bad image) is sent to every
rank with ``rank0_outcome``, so that all of them stop with rank 0's message at once.
"""

from __future__ import annotations

import datetime
import secrets
import socket
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from accelerate.utils import InitProcessGroupKwargs

from gan_translate.errors import UserError

T = TypeVar("T")

SHARED_CHECK_FILE = ".shared-folder-check"
# What gloo and the c10d store say when a peer's sockets were closed or reset (a process or machine died).
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused",
              "recvValue failed", "connection closed")
_TIMED_OUT = ("Timed out", "timed out", "Timeout", "DEADLINE_EXCEEDED", "timeout caused pair closure")


class LostMachine(UserError):
    """Another process of the run stopped answering or went away; the message says which and the last checkpoint."""

    exit_code = 1  # not the user's mistake: the command was right and can be run again


def process_group_kwargs(timeout_s: float) -> list[Any]:
    """The Accelerator kwargs handler that gives the process group a timeout of ``timeout_s`` seconds."""
    return [InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=float(timeout_s)))]


def lost_machine_message(err: BaseException, timeout_s: float) -> str | None:
    """One line saying what a failed collective means, or None if ``err`` is not a lost peer."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    text = f"{type(err).__name__}: {err}"
    if any(sign in text for sign in _TIMED_OUT):
        return (f"lost the connection to another process of this job: no answer for {timeout_s:g} s "
                "(--ddp_timeout), its machine hung or the network between the machines failed")
    if any(sign in text for sign in _PEER_GONE) or isinstance(err, getattr(dist, "DistNetworkError", ())):
        return ("lost the connection to another process of this job: it went away (its machine or process stopped; "
                "its own message, if any, is above or in its machine's log)")
    return None


def broadcast_from_rank0(value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable value; one collective)."""
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def rank0_outcome(action: Callable[[], T], *, is_main: bool, distributed: bool,
                  describe: Callable[[BaseException], str | None]) -> T | None:
    """Runs ``action`` on rank 0 alone and tells every rank how it went.

    Returns what ``action`` returned (None on the other ranks). When it raised an error that ``describe`` turns into a
    message (a ``UserError``, a failed write), every rank raises ``UserError(message)``; other errors re-raise on rank 0
    (and the other ranks then meet it as a lost machine).
    """
    result, message, error = None, None, None
    if is_main:
        try:
            result = action()
        except Exception as err:  # noqa: BLE001 -- described and shared below, or re-raised
            message, error = describe(err), err
            if message is None:
                raise
    if distributed:
        message = broadcast_from_rank0(message)
    if message is not None:
        raise UserError(message) from error
    return result


def check_shared_run_folder(run_dir: Path, *, is_main: bool, rank: int) -> None:
    """Every process must see the run folder that rank 0 writes (checkpoints, the scan cache): rank 0 writes a token
    there and every rank reads it back. Call on all ranks of a distributed run.

    Raises:
        UserError: on every rank, naming the first machine (host and rank) that does not see rank 0's folder.
    """
    token = secrets.token_hex(8) if is_main else None
    marker = run_dir / SHARED_CHECK_FILE
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(token)
    token = broadcast_from_rank0(token)
    try:
        seen = marker.read_text() == token
    except OSError:
        seen = False
    everyone: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, (seen, socket.gethostname(), rank))
    if is_main:
        marker.unlink(missing_ok=True)
    blind = [(host, r) for ok, host, r in everyone if not ok]
    if blind:
        host, r = blind[0]
        raise UserError(f"the run folder {run_dir.resolve()} that rank 0 writes is not visible from {host} (rank {r}"
                        f"{f' and {len(blind) - 1} more' if len(blind) > 1 else ''}): with several machines, "
                        "--checkpoints_dir must be one folder every machine shares (only rank 0 writes checkpoints; "
                        "every rank reads them to resume)")


def describe_write_failure(err: BaseException) -> str:
    """The reason a file write failed, in one line (disk full and quotas come as OSError, or inside the message of
    the library that wrote: safetensors says "No space left on device (os error 28)")."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror + (f" ({err.filename})" if err.filename else "")
    text = " ".join(str(err).split())
    return text[:300] if text else type(err).__name__
