"""DataLoader worker processes: ending them with the run, and noticing one that died.

The loaders keep their workers alive between epochs (persistent workers); these functions reach into torch's
iterator for what its public API does not offer: shutting them down now, and asking whether one has ended.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def shut_down_workers(loaders: Iterable[Any]) -> None:
    """Ends the DataLoader workers now rather than at exit (torch's own shutdown). It also stops torch watching them,
    so a worker that dies later raises nothing."""
    for loader in {id(x): x for x in loaders if x is not None}.values():
        iterator = getattr(loader, "_iterator", None)
        if iterator is None or not hasattr(iterator, "_shutdown_workers"):
            continue
        iterator._shutdown_workers()
        loader._iterator = None
        for worker in getattr(iterator, "_workers", []):
            # torch's last resort for a worker that does not exit is SIGTERM, which ours ignore (safety.py);
            # one left alive would then hang the interpreter's exit, which joins it.
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=5)


def a_worker_died(loaders: Iterable[Any]) -> bool:
    """Whether a DataLoader worker of these loaders has ended while torch still watches it."""
    return any(not worker.is_alive()
               for loader in loaders if loader is not None
               for worker in getattr(getattr(loader, "_iterator", None), "_workers", []))
