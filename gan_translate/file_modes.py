"""Files a user shares get the permissions every other tool gives them: ``0666`` less the umask (``0644`` under the
usual umask 022).

Two of our writers create files readable by their owner only: ``tempfile.mkstemp`` (our atomic image writes) and
safetensors' ``save_file``. A gallery of test.py's images or a run folder served to colleagues would then show broken
images and unreadable weights; ``share_like_umask`` puts them right after writing.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc/self/status``), else by setting and
    restoring it under a lock."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def share_like_umask(path: str | os.PathLike) -> None:
    """Gives the regular file ``path`` the mode a plain ``open(path, "w")`` would have given it."""
    try:
        os.chmod(path, 0o666 & ~current_umask())
    except OSError:  # not ours to change (another owner): leave it as it is
        pass
