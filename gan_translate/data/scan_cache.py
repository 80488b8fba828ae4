"""The header scan of image folders, saved once so that other processes of a run reuse it instead of repeating it.

Every dataset reads each image's header when it is built (so a bad file stops the run before training, not hours in).
On a million files that is minutes, and every rank of a distributed run did it again. The trainer builds the main
process's dataset first (``accelerator.main_process_first``) with a cache file in the run folder; the main process
scans and writes the file, the other ranks find it and only list the folders: a folder whose listing equals the cached
one takes the cached sizes (and the cached reasons for unreadable files).

A changed file with an unchanged name is not re-read from the cache; loading it still fails with a clear message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CACHE_FORMAT = "gan_translate-scan-cache"
CACHE_VERSION = 1

# One probe result per listed file: (width, height), or the reason it could not be read.
Probe = tuple[int, int] | str


class ScanCache:
    """Header-scan results by folder, loaded from ``path`` when it exists; ``save`` writes what was added.

    Args:
        path: the cache file (a JSON file; written atomically).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.folders: dict[str, dict] = {}
        self._dirty = False
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") == CACHE_FORMAT and data.get("version") == CACHE_VERSION:
                self.folders = data["folders"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # no cache, or an unusable one: scan afresh

    @staticmethod
    def _relative(folder: str, paths: list[str]) -> list[str]:
        prefix = folder.rstrip(os.sep) + os.sep
        return [p[len(prefix):] if p.startswith(prefix) else p for p in paths]

    def lookup(self, folder: str | os.PathLike, paths: list[str]) -> list[Probe] | None:
        """The cached probe results of ``paths`` (the listing of ``folder``), or None unless the listing is the same."""
        entry = self.folders.get(str(folder))
        if entry is None or entry["paths"] != self._relative(str(folder), paths):
            return None
        return [tuple(result) if isinstance(result, list) else result for result in entry["probes"]]

    def store(self, folder: str | os.PathLike, paths: list[str], probes: list[Probe]) -> None:
        self.folders[str(folder)] = {"paths": self._relative(str(folder), paths),
                                     "probes": [list(p) if isinstance(p, tuple) else p for p in probes]}
        self._dirty = True

    def save(self) -> None:
        """Write the cache if anything was added (atomically: a reader never sees half a file)."""
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION, "folders": self.folders},
                                   separators=(",", ":")))
        os.replace(temp, self.path)
        self._dirty = False
