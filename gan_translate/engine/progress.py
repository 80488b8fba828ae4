"""What the user sees of a run's progress, and the counters every checkpoint saves."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

BAR_LOSSES = 3  # loss terms shown on the progress bar; all of them go to TensorBoard and loss_log.txt
BAR_METER = 52  # what tqdm's own part of the line takes besides the description (percent, counts, times, rate)


def bar_postfix(logs: dict[str, float], epoch: int, desc_width: int, columns: int | None = None) -> str:
    """The bar's postfix: the epoch and the first few loss terms, 3 significant digits, only as many as fit in the
    terminal beside tqdm's meter (a line longer than the terminal wraps, and every refresh then leaves a line)."""
    columns = columns or shutil.get_terminal_size().columns
    budget = columns - desc_width - BAR_METER
    parts = [f"ep {epoch}"] + [f"{k} {v:.3g}" for k, v in list(logs.items())[:BAR_LOSSES]]
    shown: list[str] = []
    for part in parts:
        if len(" ".join([*shown, part])) > budget:
            break
        shown.append(part)
    return " ".join(shown)


@dataclass
class Progress:
    """Where the run is: the counters saved in every checkpoint."""

    step: int = 0  # optimisation steps done
    epoch: int = 0  # current epoch, 0-based
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
