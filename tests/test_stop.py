"""Stopping a run the ways users and schedulers do, with DataLoader workers, under the launcher: SIGTERM to the launcher
(`kill PID`), SIGINT to the whole process group (Ctrl-C), SIGTERM to the group (`timeout`, schedulers, `docker stop`).
Each saves at a step boundary, prints one line and no traceback of ours, and `--continue_train` resumes from there;
a worker that died leaves the last good checkpoint and says so."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from gan_translate.engine.checkpoint import find_checkpoint, load_state
from gan_translate.engine.distributed import usable_cores
from tests.conftest import REPO, tiny_run
from tests.test_train import accelerate_launch, launcher_env

STEP_LOGGED = re.compile(r"[1-9]\d*/\d+ \[")  # tqdm's "3/400000 [" once a step is done


def _start(command: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    """In a session of its own, as a terminal or a scheduler starts a job: its process group can be signalled."""
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=cwd, env={**launcher_env(), "PYTHONUNBUFFERED": "1"}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_a_step(proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not STEP_LOGGED.search(log.read_text()):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "no step logged in time:\n" + log.read_text()[-3000:]
        time.sleep(0.2)


def _wait_for_the_run(run: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the launcher has exited and the trainers have let go of the run folder (accelerate's one-process launcher
    dies at once on SIGTERM; its trainer then stops on its own)."""
    proc.wait(timeout=timeout)
    deadline = time.time() + timeout
    while (run / ".owner").exists() and (run / ".owner").read_text().strip():
        assert time.time() < deadline, "the trainer did not let go of the run folder"
        time.sleep(0.2)


def _our_tracebacks(out: str) -> list[str]:
    """Traceback frames of our own code (the launchers print their own on a signal: not ours to change)."""
    return [line for line in out.splitlines() if line.strip().startswith("File ") and
            ("gan_translate" in line or "train.py" in line)] + [line for line in out.splitlines() if
                                                              re.match(r"\[rank\d+\]: Traceback", line)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="signals to CPU runs (the GPU path is the same code)")
@pytest.mark.parametrize("how", ["SIGTERM to the launcher", "SIGINT to the group", "SIGTERM to the group"])
def test_a_stopped_run_saves_says_so_and_resumes(how: str, tiny_data: Path, tmp_path: Path) -> None:
    sig = signal.SIGINT if "SIGINT" in how else signal.SIGTERM
    processes = [] if how == "SIGINT to the group" else ["--multi_gpu", "--num_processes", "2"]
    argv = tiny_run("pix2pix", tiny_data, tmp_path, "stop", "--n_epochs", "100000", "--num_threads", "2")
    log = tmp_path / "train.log"
    proc = _start(accelerate_launch(*processes, str(REPO / "train.py"), *argv), log, tmp_path)
    _wait_for_a_step(proc, log)
    if how == "SIGTERM to the launcher":
        # The folder is taken: a second training on it stops at once and names the first.
        second = subprocess.run([sys.executable, str(REPO / "train.py"), *argv], capture_output=True, text=True,
                                env=launcher_env(), timeout=120, cwd=tmp_path)
        assert second.returncode == 2 and re.search(r"^error: run folder .*stop is being written by pid \d+ on ",
                                                    second.stderr, re.M), second.stderr[-2000:]
        os.kill(proc.pid, sig)
    else:
        os.killpg(proc.pid, sig)
    _wait_for_the_run(tmp_path / "stop", proc)
    out = log.read_text()
    stops = re.findall(rf"stopped by {sig.name} at step (\d+); checkpoint \S+ saved, resume with --continue_train",
                       out)
    assert len(stops) == 1, out[-3000:]
    assert not _our_tracebacks(out), out[-3000:]
    assert "DataLoader worker" not in out
    step = int(stops[0])
    ckpt = find_checkpoint(tmp_path / "stop")
    assert ckpt.name == f"step_{step:08d}" and load_state(ckpt)["progress"]["step"] == step
    if processes:
        assert len(load_state(ckpt)["rng"]) == 2
    else:  # `accelerate launch train.py` as the README has it: the cores, not the launcher's one thread
        cores = usable_cores()
        assert f"training on cpu: 1 process, {cores} torch thread{'s' if cores > 1 else ''} ({cores} cores" in out
    if how != "SIGTERM to the launcher":
        return
    resumed = subprocess.run([sys.executable, str(REPO / "train.py"), *argv, "--continue_train", "--max_steps",
                              str(step + 1)], capture_output=True, text=True, env=launcher_env(), timeout=300,
                             cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {ckpt} at step {step}" in resumed.stdout
    assert f"done: {step + 1} steps" in resumed.stdout


def test_dead_workers_keep_the_last_good_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    argv = tiny_run("pix2pix", tiny_data, tmp_path, "dead", "--n_epochs", "100000", "--num_threads", "2",
                    "--save_latest_freq", "2")
    log = tmp_path / "train.log"
    proc = _start([sys.executable, str(REPO / "train.py"), *argv], log, tmp_path)
    deadline = time.time() + 300
    while not (tmp_path / "dead" / "LATEST").exists():
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    workers = psutil.Process(proc.pid).children()
    assert len(workers) == 2
    workers[0].kill()  # the OOM killer's way
    proc.wait(timeout=120)
    out = log.read_text()
    assert proc.returncode == 2, out[-3000:]
    # Worded by timing: torch's SIGCHLD handler ("killed by signal"), its queue ("exited unexpectedly"), or a batch's
    # hand-over cut off mid-way
    last = re.findall(r"^error: stopped at step (\d+): (?:DataLoader worker \(pid \d+\) is killed by signal: Killed|"
                      r"DataLoader worker \(pid\(s\) \d+\) exited unexpectedly|"
                      r"a DataLoader worker died while handing over a batch \(.+\)); "
                      r"the last good checkpoint (\S+) is kept; resume with --continue_train$", out, re.M)
    assert len(last) == 1, out[-3000:]
    assert Path(last[0][1]) == find_checkpoint(tmp_path / "dead")
    assert not _our_tracebacks(out)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a step slower than the launcher's grace period on a CPU")
def test_a_step_slower_than_the_launchers_grace_period_keeps_the_last_step(tmp_path: Path) -> None:
    """`timeout` (SIGTERM to the whole process group) stops `accelerate launch train.py` while a step is in flight.

    The launcher then terminates its process tree and kills what is left 5 seconds later. The step is slow the way a
    user's is: CycleGAN at its paper size (256 px crops, resnet_9blocks, ngf/ndf 64) on the built-in data, about 12 s
    per step on a quiet 2-core CPU. The step in flight is dropped; the last completed one is saved in time, the stop
    line says so, --continue_train resumes from it, and no process of the run is left.
    """
    argv = ["--model", "cyclegan", "--name", "slow", "--checkpoints_dir", str(tmp_path), "--load_size", "286",
            "--crop_size", "256", "--ngf", "64", "--ndf", "64", "--netG", "resnet_9blocks", "--max_steps", "50"]
    log = tmp_path / "train.log"
    proc = _start(accelerate_launch(str(REPO / "train.py"), *argv), log, tmp_path)
    _wait_for_a_step(proc, log, timeout=600)
    time.sleep(3)  # well inside step 2's forward pass, before its first optimizer update
    tree = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGTERM)
    _wait_for_the_run(tmp_path / "slow", proc)
    out = log.read_text()
    stops = re.findall(r"stopped by SIGTERM at step (\d+); checkpoint \S+ saved, resume with --continue_train", out)
    assert len(stops) == 1, out[-3000:]
    step = int(stops[0])
    assert step >= 1 and f"(step {step + 1} was in progress and is dropped)" in out, out[-3000:]
    ckpt = find_checkpoint(tmp_path / "slow")
    assert ckpt.name == f"step_{step:08d}" and load_state(ckpt)["progress"]["step"] == step
    assert not _our_tracebacks(out), out[-3000:]
    time.sleep(1)  # a process killed by the launcher needs a moment to be reaped
    left = [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not left, f"processes left behind: {left}"
    resumed = subprocess.run([sys.executable, str(REPO / "train.py"), *argv, "--continue_train", "--max_steps",
                              str(step)], capture_output=True, text=True, env=launcher_env(), timeout=300,
                             cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {ckpt} at step {step}" in resumed.stdout
