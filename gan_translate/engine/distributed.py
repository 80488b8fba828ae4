"""How many processes this job has, and the Accelerator that joins them.

Launchers say in the environment that a job has several processes: torchrun and ``accelerate launch --multi_gpu`` set
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, MPI launchers (mpirun, srun with PMI) ``PMI_SIZE`` or ``OMPI_COMM_WORLD_SIZE``.
Accelerate joins such processes over NCCL when CUDA works, but on a machine without an accelerator it does so only
when asked for the CPU (``ACCELERATE_USE_CPU``, ``accelerate launch --cpu``); otherwise every process silently trains a
whole run of its own, all of them in the same run folder. ``make_accelerator`` asks for the CPU (gloo) itself in that
case, and refuses to train when the accelerator still ended up with fewer processes than the environment announced.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import Accelerator
from accelerate import utils as acc_utils

from gan_translate.errors import UserError

# What launchers set for the number of processes of the whole job (the names accelerate's own state reads).
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# Set for each process by launchers that start several processes per machine; MPI launchers set their own names.
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")
LOCAL_SIZE_VARIABLES = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")


def _int_from_env(names: tuple[str, ...]) -> tuple[int, str] | None:
    """The first of ``names`` that is set to an integer, with its name."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.lstrip("-").isdigit():
            return int(value), name
    return None


def announced_world_size() -> tuple[int, str]:
    """The number of processes the environment says this job has (1 when nothing says so), and the variable."""
    found = _int_from_env(WORLD_SIZE_VARIABLES)
    return found if found and found[0] > 1 else (1, "")


def local_world_size() -> int:
    """Processes of this job on this machine (1 without a launcher)."""
    found = _int_from_env(LOCAL_SIZE_VARIABLES)
    return max(found[0], 1) if found else 1


def process_rank() -> int:
    """This process's global rank as the launcher announced it (0 without a launcher)."""
    found = _int_from_env(("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"))
    return found[0] if found else 0


def _has_accelerator() -> bool:
    """Whether a device Accelerate would run DDP on is usable (CUDA, or one of the others it knows)."""
    if torch.cuda.is_available():
        return True
    checks = ("is_xpu_available", "is_npu_available", "is_mlu_available", "is_musa_available", "is_sdaa_available",
              "is_hpu_available", "is_neuron_available")
    for name in checks:
        check = getattr(acc_utils, name, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # noqa: BLE001 -- a probe of an absent vendor library must not stop a CPU run
            continue
    return False


def _started_by_a_launcher() -> bool:
    return _int_from_env(LOCAL_RANK_VARIABLES) is not None


def make_accelerator(**kwargs: Any) -> Accelerator:
    """An ``Accelerator`` that joins every process the launcher started: on CPU over gloo when no accelerator is there.

    Raises:
        UserError: the environment announces several processes but this one could not join them (one line that
            says what happened and what to type).
    """
    world, variable = announced_world_size()
    cpu = bool(kwargs.pop("cpu", False)) or (world > 1 and _started_by_a_launcher() and not _has_accelerator())
    accelerator = Accelerator(cpu=cpu, **kwargs)
    if world > 1 and accelerator.num_processes != world:
        if not _started_by_a_launcher():
            hint = (f"this process was not started by a launcher (no LOCAL_RANK); unset {variable} to train in one "
                    f"process, or start all of them with `accelerate launch --multi_gpu --num_processes {world} "
                    "train.py ...` (or torchrun)")
        else:
            hint = ("start them with `accelerate launch --multi_gpu --num_processes N train.py ...` on a machine whose "
                    "devices work, or add `--cpu` to train on the CPU")
        raise UserError(f"{variable}={world} says this job has {world} processes, but this one joined "
                        f"{accelerator.num_processes} (device {accelerator.device}); nothing was trained: {hint}")
    return accelerator
