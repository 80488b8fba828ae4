"""What to tell a user who lacks an optional part: the install command that fits how gan_translate is installed, and
whether a download could work at all before one is tried (an offline machine must not print torch's
``Downloading: "https://..."`` line before failing)."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def from_source_checkout() -> bool:
    """Whether this package runs from a source checkout (its setup.cfg beside it) rather than an installed wheel."""
    return (SOURCE_ROOT / "setup.cfg").is_file() and (SOURCE_ROOT / "gan_translate" / "__init__.py").is_file()


def install_hint(extra: str) -> str:
    """The command that installs the optional extra ``extra``, written for this installation."""
    if from_source_checkout():
        return f'pip install -e ".[{extra}]" (in {SOURCE_ROOT})'
    return f'pip install "gan_translate[{extra}]"'


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` accepts a connection within ``timeout`` seconds (no data is sent)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False
