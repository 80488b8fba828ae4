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


def torch_load_refusal(err: BaseException) -> str:
    """In our words, why ``torch.load(..., weights_only=True)`` did not load a file: torch's own text for a pickle that
    needs code ("Weights only load failed ... Re-running `torch.load` with `weights_only` set to `False` ...") reads
    as advice to switch the protection off."""
    import re

    text = str(err)
    if "Unsupported global" in text:  # a pickle that names a class or function: loading it would run code
        found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w.]+)", text)
        names = f" (it names {found.group(1)})" if found else ""
        return (f"it is a pickle that would run code to load{names}; weight files are read as plain tensors only, "
                "and nothing from this one was run")
    if "Weights only load failed" in text or "UnpicklingError" in type(err).__name__:
        return ("cannot read it as a weight file: it is damaged, or was not written by torch.save "
                "(nothing in it was run)")
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first[:200]


def quiet_torch_load(path, **kwargs):  # noqa: ANN001, ANN201 -- torch is imported by the caller already
    """``torch.load`` without torch's warning about the pickle protocol of a file it is about to refuse anyway."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, **kwargs)
