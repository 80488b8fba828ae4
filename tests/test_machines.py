"""Several machines, simulated on the loopback interface: each launcher (accelerate launch or torchrun) is one
"machine". One run over both (either start order; identical weights; one run's step count; rank 0 alone writes),
exact resume with both launchers, a lost machine (frozen by SIGSTOP, or killed) stops the survivor within --ddp_timeout
with one line naming the last checkpoint, a failed checkpoint write on rank 0 stops every rank, and a run folder that
another machine cannot see is refused at start.

These are the suite's slowest tests (marked slow: each starts two launchers and their workers, four Python + torch
start-ups, for a few seconds of training; 30-60 s a test on the 2 shared cores): what they check exists only across
processes and launchers."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gan_translate.engine.checkpoint import find_checkpoint, load_state
from tests.conftest import REPO, tiny_run
from tests.test_train import accelerate_launch, launcher_env, weights

pytestmark = pytest.mark.slow  # see the module docstring
TIMEOUT = 300  # seconds a launcher may take on a busy shared machine before the test gives up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_command(launcher: str, rank: int, port: int, train_args: list[str]) -> list[str]:
    """The README's command for machine ``rank`` of two, with the main process on this host."""
    if launcher == "accelerate":
        return accelerate_launch("--multi_gpu", "--num_machines", "2", "--machine_rank", str(rank),
                                 "--num_processes", "2", "--main_process_ip", "127.0.0.1",
                                 "--main_process_port", str(port), "--same_network", str(REPO / "train.py"),
                                 *train_args)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun is not installed"
    return [torchrun, "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1", "--master_addr",
            "127.0.0.1", "--master_port", str(port), str(REPO / "train.py"), *train_args]


class Machine:
    """One launcher with its output in files (pipes could fill up and block it)."""

    def __init__(self, command: list[str], log: Path, **popen) -> None:
        self.log = log
        self.out, self.err = open(f"{log}.out", "w"), open(f"{log}.err", "w")
        self.proc = subprocess.Popen(command, stdout=self.out, stderr=self.err, env=launcher_env(), cwd=log.parent,
                                     **popen)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.out.close()
            self.err.close()

    @property
    def output(self) -> str:
        return Path(f"{self.log}.out").read_text() + Path(f"{self.log}.err").read_text()

    @property
    def stderr(self) -> str:
        return Path(f"{self.log}.err").read_text()

    def processes(self) -> list[int]:
        """The launcher and every process under it (torchrun starts its workers in sessions of their own, so a
        process group or session would miss them: the tree is walked through /proc)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                continue
        return found

    def signal_all(self, sig: int) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def run_two(launcher: str, train_args: list[str], tmp: Path, tag: str, order: tuple[int, int] = (0, 1),
            extra: dict[int, list[str]] | None = None) -> list[Machine]:
    """Starts machines in ``order`` (a second apart) and waits for both; returns them indexed by machine rank."""
    port = free_port()
    machines: dict[int, Machine] = {}
    for rank in order:
        args = train_args + (extra or {}).get(rank, [])
        machines[rank] = Machine(machine_command(launcher, rank, port, args), tmp / f"{tag}_m{rank}")
        time.sleep(1)
    for machine in machines.values():
        machine.wait()
    return [machines[0], machines[1]]


def train_args(data: Path, tmp: Path, name: str, *extra: str) -> list[str]:
    # 8 pairs, batches of 2 per process: 2 steps per epoch on two ranks (4 alone)
    return tiny_run("pix2pix", data, tmp, name, "--ddp_timeout", "20", *extra)


def test_two_machines_train_one_run_and_resume_exactly(tiny_data: Path, tmp_path: Path) -> None:
    """4 steps straight through torchrun (machine 1 started first: it waits for the main process) equal 3 steps
    through accelerate launch, stopped, then resumed to 4 with both launchers (started in the other order)."""
    straight = run_two("torchrun", train_args(tiny_data, tmp_path, "straight", "--max_steps", "4"), tmp_path,
                       "straight", order=(1, 0))
    for machine in straight:  # each machine's log tells of the one run: 4 steps over both (alone: 8)
        out = machine.output
        assert machine.proc.returncode == 0, out[-3000:]
        assert "weights identical on all 2 ranks" in out and out.count("done: 4 steps") == 1, out[-2000:]
    state = load_state(find_checkpoint(tmp_path / "straight"))
    assert state["progress"] == {"step": 4, "epoch": 2, "batch_in_epoch": 0} and len(state["rng"]) == 2

    first = run_two("accelerate", train_args(tiny_data, tmp_path, "resumed", "--max_steps", "3"), tmp_path, "part1")
    assert all(m.proc.returncode == 0 for m in first), first[0].output[-3000:] + first[1].output[-3000:]
    second = run_two("accelerate", train_args(tiny_data, tmp_path, "resumed", "--max_steps", "4", "--continue_train"),
                     tmp_path, "part2", order=(1, 0))
    assert all(m.proc.returncode == 0 for m in second), second[0].output[-3000:] + second[1].output[-3000:]
    assert "resumed from" in second[0].output and "at step 3" in second[0].output
    a, b = weights(find_checkpoint(tmp_path / "straight")), weights(find_checkpoint(tmp_path / "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_a_lost_machine_stops_the_survivor_in_bounded_time(how: str, tiny_data: Path, tmp_path: Path) -> None:
    """SIGKILL (sockets reset: the survivor fails at its next collective) or SIGSTOP (sockets open, nothing answers:
    the survivor waits --ddp_timeout) of machine 1's launcher and every process under it, once a checkpoint exists;
    then the run resumes from that checkpoint with both launchers."""
    timeout = 6
    args = train_args(tiny_data, tmp_path, "run", "--max_steps", "100000", "--save_latest_freq", "2",
                      "--ddp_timeout", str(timeout))
    port = free_port()
    survivor = Machine(machine_command("accelerate", 0, port, args), tmp_path / "m0")
    lost = Machine(machine_command("torchrun", 1, port, args), tmp_path / "m1")  # the launchers mix
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (tmp_path / "run" / "LATEST").exists():
            assert survivor.proc.poll() is None and lost.proc.poll() is None, survivor.output[-3000:]
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.2)
        lost.signal_all(signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        code = survivor.wait()
    finally:
        lost.signal_all(signal.SIGKILL)
        lost.wait()
        if survivor.proc.poll() is None:
            survivor.signal_all(signal.SIGKILL)
    err = survivor.stderr
    assert code == 1, err[-3000:]
    what = "lost the connection to another process of this job: " + (
        "no answer for 6 s (--ddp_timeout)" if how == "frozen" else "it went away")
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and what in lines[0] and "the last checkpoint is" in lines[0], err[-3000:]
    assert "[rank0]: Traceback" not in err and "gloo" not in err, err[-3000:]
    # Bounded: the message names the cause -- the --ddp_timeout that ran out (frozen) or the reset connection
    # (killed) -- so the survivor stopped on it, not on the test's own TIMEOUT.
    if how == "frozen":
        return

    last = load_state(find_checkpoint(tmp_path / "run"))["progress"]["step"]
    resumed = run_two("accelerate", train_args(tiny_data, tmp_path, "run", "--continue_train", "--max_steps",
                                               str(last + 2)), tmp_path, "resume")
    assert all(m.proc.returncode == 0 for m in resumed), resumed[0].output[-3000:] + resumed[1].output[-3000:]
    assert f"at step {last}" in resumed[0].output and f"done: {last + 2} steps" in resumed[0].output


def _limit_file_size() -> None:
    """A full disk for the files a checkpoint writes (the networks' weights are over 1 MB; logs stay far smaller)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, 512 * 1024))


def test_a_failed_checkpoint_write_on_rank_0_stops_every_rank(tiny_data: Path, tmp_path: Path) -> None:
    argv = accelerate_launch("--multi_gpu", "--num_processes", "2", str(REPO / "train.py"),
                             *train_args(tiny_data, tmp_path, "full", "--max_steps", "6", "--save_latest_freq", "2"))
    proc = subprocess.run(argv, capture_output=True, text=True, env=launcher_env(), timeout=TIMEOUT, cwd=tmp_path,
                          preexec_fn=_limit_file_size)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: cannot write checkpoint step_00000002 in {tmp_path / 'full'}: ")
    assert "File too large" in lines[0] and "resume with --continue_train" in lines[0]
    # nobody trained on, and rank 1 stopped on rank 0's report, not after waiting out --ddp_timeout
    assert "done:" not in proc.stdout + proc.stderr and "no answer for" not in proc.stderr
    assert not list((tmp_path / "full").glob("step_*"))


def test_a_run_folder_another_machine_cannot_see_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    """Machine 1 gets another --checkpoints_dir, as when the folder is not on a shared file system."""
    args = train_args(tiny_data, tmp_path / "shared", "run", "--max_steps", "2")
    machines = run_two("accelerate", args, tmp_path, "unshared",
                       extra={1: ["--checkpoints_dir", str(tmp_path / "local1")]})
    assert all(m.proc.returncode != 0 for m in machines), machines[0].output[-3000:]  # the launchers say 1
    line = [x for x in machines[0].stderr.splitlines() if x.startswith("error: ")]
    assert len(line) == 1 and f"the run folder {tmp_path / 'shared' / 'run'} that rank 0 writes is not visible " \
        f"from {socket.gethostname()} (rank 1)" in line[0] and "must be one folder every machine shares" in line[0]
    assert not list((tmp_path / "shared" / "run").glob("step_*"))
    assert not (tmp_path / "local1" / "run").exists() or not list((tmp_path / "local1" / "run").iterdir())
