"""How many processes this job has, and the Accelerator that joins them.

Launchers say in the environment that a job has several processes: torchrun and ``accelerate launch --multi_gpu`` set
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, MPI launchers (mpirun, srun with PMI) ``PMI_SIZE`` or ``OMPI_COMM_WORLD_SIZE``.
Accelerate joins such processes over NCCL when CUDA works, but on a machine without an accelerator it does so only
when asked for the CPU (``ACCELERATE_USE_CPU``, ``accelerate launch --cpu``); otherwise every process silently trains a
whole run of its own, all of them in the same run folder. ``make_accelerator`` asks for the CPU (gloo) itself in that
case, and refuses to train when the accelerator still ended up with fewer processes than the environment announced.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate import utils as acc_utils

from gan_translate.errors import UserError

# What launchers set for the number of processes of the whole job (the names accelerate's own state reads).
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# Set for each process by launchers that start several processes per machine; MPI launchers set their own names.
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")
_LAUNCHER_VARIABLES = ("ACCELERATE_DYNAMO_BACKEND", "TORCHELASTIC_RUN_ID")  # accelerate launch, torchrun set them
LOCAL_SIZE_VARIABLES = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
                        "MV2_COMM_WORLD_LOCAL_SIZE")


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
    """Whether a launcher that starts several processes per machine (or MPI) started this one."""
    return _int_from_env(LOCAL_RANK_VARIABLES) is not None


def started_by_a_launcher() -> bool:
    """Whether ``accelerate launch`` (also with one process) or torchrun started this process."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES) or _started_by_a_launcher()


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


# ----------------------------------------------------------------------------------------------------------------------
# CPU threads
# ----------------------------------------------------------------------------------------------------------------------
# `accelerate launch` always hands its processes OMP_NUM_THREADS: the value of its --num_cpu_threads_per_process, which
# defaults to the launcher's own OMP_NUM_THREADS, else to 1 (and to cores / processes with --cpu only); torchrun sets 1
# when it starts several processes. That 1 is no one's choice, and on a CPU it runs the whole training on one core. The
# launcher's own command line and environment (its /proc entries: it is our parent) tell a chosen value from it.


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, physical cores only, within a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        import psutil

        cores = min(cores, psutil.cpu_count(logical=False) or cores)
    except ImportError:
        pass
    try:  # cgroup v2 (docker --cpus, Kubernetes limits): "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(cores, 1)


def _parent_launch() -> tuple[list[str], dict[str, str]] | None:
    """The command line and initial environment of the launcher that started this process (Linux), else None."""
    parent = Path(f"/proc/{os.getppid()}")
    try:
        argv = parent.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0")
        environ = parent.joinpath("environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    return argv, dict(item.split("=", 1) for item in environ if "=" in item)


def chosen_omp_threads() -> tuple[int, str] | None:
    """OMP_NUM_THREADS when someone chose it -- the user, or accelerate's --num_cpu_threads_per_process -- and not a
    launcher's default; with the name of who chose it."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not value.isdigit() or int(value) < 1:
        return None
    threads = int(value)
    if not started_by_a_launcher():
        return threads, f"OMP_NUM_THREADS={threads}"
    launch = _parent_launch()
    if launch is None:  # cannot look at the launcher: trust the value
        return threads, f"OMP_NUM_THREADS={threads}"
    argv, environ = launch
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "\0"
    launcher_args = next((argv[:i] for i, arg in enumerate(argv) if Path(arg).name == script), argv)
    if any(arg.startswith("--num_cpu_threads") for arg in launcher_args):  # argparse also takes a prefix
        return threads, f"accelerate launch --num_cpu_threads_per_process {threads}"
    if "OMP_NUM_THREADS" in environ:
        return threads, f"OMP_NUM_THREADS={threads}"
    return None


def choose_cpu_threads(requested: int) -> tuple[int, str]:
    """Torch threads for a process training on the CPU, and why: ``requested`` (our --num_cpu_threads) if > 0, else
    a number the user gave the launcher, else this machine's cores divided among the job's processes on it."""
    if requested > 0:
        return requested, f"--num_cpu_threads {requested}"
    chosen = chosen_omp_threads()
    if chosen:
        return chosen
    cores, local = usable_cores(), local_world_size()
    return max(1, cores // local), f"{cores} cores / {local} process{'es' if local > 1 else ''} on this machine"


def broadcast_buffers(nets: Any) -> None:
    """Copies rank 0's buffers (BatchNorm running statistics, counters) of every network to every rank; nothing to do
    in a single process. The trainer calls it after each step: DDP synchronises gradients, and a wrapped network's
    buffers only at the start of its forward, while a model may run a network unwrapped or frozen (its encoder in a
    later phase, a peer layer) whose statistics each rank then updates on its own data. Rank 0's are the ones the
    checkpoints hold. One collective per network and dtype (the buffers travel flattened together)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if torch.distributed.get_world_size() == 1:
        return
    for net in nets:
        groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
        for buffer in getattr(net, "module", net).buffers():
            groups.setdefault((buffer.dtype, buffer.device), []).append(buffer.data)
        for buffers in groups.values():
            flat = torch.cat([b.reshape(-1) for b in buffers])
            torch.distributed.broadcast(flat, src=0)
            offset = 0
            for b in buffers:
                b.copy_(flat[offset:offset + b.numel()].view_as(b))
                offset += b.numel()


def reuse_freed_memory() -> bool:
    """Asks glibc's malloc to keep freed blocks of up to 32 MB for reuse instead of handing them back to the system.

    By default glibc unmaps large freed blocks and trims the heap, so that the next step's tensors land on fresh pages
    that the kernel must fault in and zero: 70,000 page faults per pix2pix 256 px step on CPU, about a tenth of its
    time (docs/performance.md). The peak memory stays the same. Returns whether it applied (Linux with glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (e.g. musl)
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from glibc's malloc.h
    return all(mallopt(param, value) == 1 for param, value in (
        (m_mmap_threshold, 32 << 20),  # the largest glibc accepts; a 256 px activation map is 17 MB
        (m_trim_threshold, 1 << 30),
        (m_top_pad, 64 << 20),
    ))


def weights_digest(nets: dict[str, torch.nn.Module]) -> str:
    """sha256 of every network's state (weights and buffers), in a fixed order: equal on ranks that agree."""
    digest = hashlib.sha256()
    for name, net in sorted(nets.items()):
        for key, tensor in sorted(getattr(net, "module", net).state_dict().items()):
            digest.update(name.encode() + key.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()
