"""One writer per run folder.

``checkpoints/NAME/.owner`` names the process that trains into the folder (pid, host, start time). The writer holds an
exclusive POSIX record lock (``lockf``) on it for as long as it runs; the kernel (or the NFS server) drops the lock when
the process ends, however it ends, so a crashed run never blocks the next one. (Not ``flock``: DataLoader workers
forked from the trainer would inherit a flock and keep it after a SIGKILL of the trainer; record locks are not
inherited.) A second training started on the same folder -- two
launches with the same ``--name``, or several processes that each believe they are the only one -- stops before it
writes anything, with one line that names the owner. On a filesystem without record locks the owner file alone decides:
an owner on this machine counts while its pid lives; an owner on another machine is trusted until its file is removed.

The same liveness test tells a crashed write's leftover temporary folder from one a live process is still writing
(``checkpoint.py`` names them ``.tmp-<tag>-<host>-<pid>``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

from gan_translate.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: the owner file alone
    fcntl = None  # type: ignore[assignment]

OWNER_FILE = ".owner"


def this_host() -> str:
    """This machine's name, made safe for a file name (temporary folders carry it)."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell it from a later process with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def writer_alive(host: str, pid: int) -> bool:
    """Whether the process ``pid`` on ``host`` may still be writing; True when that cannot be known (other host)."""
    return pid_alive(pid) if host == this_host() else True


class RunLock:
    """Exclusive ownership of a run folder for the lifetime of this process (see the module docstring)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / OWNER_FILE
        self._fd: int | None = None
        self._made_folder = False

    def _read_owner(self) -> dict:
        try:
            owner = json.loads(self.path.read_text() or "{}")
            return owner if isinstance(owner, dict) else {}
        except (OSError, ValueError):
            return {}

    def _busy(self, owner: dict) -> UserError:
        who = (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')} (started {owner.get('started', '?')})"
               if owner else "another process")
        return UserError(f"run folder {self.path.parent} is being written by {who}: another training uses this "
                         "--name; wait for it to end or stop it, or choose another --name")

    def _owner_alive(self, owner: dict) -> bool:
        if not owner.get("pid"):
            return False
        host, pid = str(owner.get("host", "")), int(owner["pid"])
        if host != this_host():
            return True
        ticks = owner.get("start_ticks")
        return pid_alive(pid) and (ticks is None or _start_ticks(pid) in (None, ticks))

    def acquire(self) -> None:
        """Takes the folder (creating it) or raises ``UserError`` naming the process that has it."""
        self._made_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: another process holds it
                    raise self._busy(self._read_owner()) from None
                except OSError:  # no record locks here (some network filesystems): the owner file decides
                    if self._owner_alive(self._read_owner()):
                        raise self._busy(self._read_owner()) from None
            elif self._owner_alive(self._read_owner()):
                raise self._busy(self._read_owner())
            owner = {"pid": os.getpid(), "host": this_host(), "start_ticks": _start_ticks(os.getpid()),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Empties the owner file and lets go of the lock (also done by the kernel when the process ends). A folder
        this lock created and nothing else was written to (the run failed before it started) is removed again."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        folder = self.path.parent
        # The scan cache (trainer.SCAN_CACHE_FILE) is no training output either.
        leftovers = {p.name for p in folder.iterdir()}
        if self._made_folder and leftovers <= {OWNER_FILE, "scan_cache.json"}:
            for name in leftovers:
                (folder / name).unlink(missing_ok=True)
            folder.rmdir()
        os.close(self._fd)  # closing the descriptor releases the lock
        self._fd = None
