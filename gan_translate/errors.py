"""The one exception type for a user's mistake.

Anything the user can fix (a bad option, a missing folder, an unreadable image) is raised as ``UserError`` with a single
line that names the culprit. The command-line entry points catch it, print ``error: <message>`` to stderr and exit with
code 2 -- no traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix; the message is one line that names the bad file or option."""
