"""The one exception type for a user's mistake.

Anything the user can fix (a bad option, a missing folder, an unreadable image) is raised as ``UserError`` with a single
line that names the culprit. The command-line entry points catch it, print ``error: <message>`` to stderr and exit with
code 2 -- no traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix; the message is one line that names the bad file or option."""


def user_error_in_worker(err: BaseException) -> str | None:
    """The message of a UserError (of any subclass) raised inside a DataLoader worker, which the loader re-raises as
    a ``RuntimeError`` whose text embeds the worker's traceback; None for any other error."""
    text = str(err)
    if not isinstance(err, RuntimeError) or "Original Traceback" not in text:
        return None
    names = set()
    todo = [UserError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    last = text.strip().splitlines()[-1]
    head, _, message = last.partition(": ")
    if head.rsplit(".", 1)[-1] not in names:
        return None
    return message.strip() or head
