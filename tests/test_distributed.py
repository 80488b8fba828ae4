"""Several processes: a job that could not join its processes stops before training, one run folder has one writer,
a crashed save's leftovers go while a live writer's stay, and an error on any rank is shown once."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from gan_translate.cli import report_user_error, train_main
from gan_translate.engine.checkpoint import remove_stale_scratch
from gan_translate.engine.run_lock import OWNER_FILE, RunLock, this_host
from gan_translate.errors import UserError
from tests.conftest import REPO, tiny_run
from tests.test_train import accelerate_launch, launcher_env


def test_world_size_without_a_launcher_stops_with_what_to_type(tiny_data: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert train_main(tiny_run("pix2pix", tiny_data, tmp_path, "alone", "--max_steps", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: WORLD_SIZE=2 says this job has 2 processes, but this one joined 1")
    assert "unset WORLD_SIZE" in err and "accelerate launch --multi_gpu --num_processes 2" in err and "\n" not in err
    assert not (tmp_path / "alone").exists()


def test_a_second_training_on_a_run_folder_stops_and_names_the_first(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from gan_translate.engine.run_lock import RunLock\n"
        f"RunLock(Path({str(tmp_path / 'run')!r})).acquire(); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"run folder .*run is being written by pid {holder.pid} on "
                                            rf"{this_host()} \(started .*\): another training uses this --name"):
            RunLock(tmp_path / "run").acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path / "run")  # its owner is gone: the lock died with it
    lock.acquire()
    assert f'"pid": {os.getpid()}' in (tmp_path / "run" / OWNER_FILE).read_text()
    lock.release()


def test_a_lock_that_made_an_empty_folder_removes_it(tmp_path: Path) -> None:
    lock = RunLock(tmp_path / "new")
    lock.acquire()
    lock.release()
    assert not (tmp_path / "new").exists()


def test_stale_scratch_of_dead_writers_goes_live_writers_stays(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = this_host()
    try:
        folders = {name: tmp_path / name for name in (
            f".tmp-step_00000008-{host}-{sleeper.pid}",  # a live process on this machine is writing it
            f".tmp-step_00000008-{host}-{dead.pid}",  # its writer crashed
            f".old-epoch_002-{host}-{dead.pid}",
            f".tmp-step_00000004-{dead.pid}",  # an earlier version's name (no host)
            f".tmp-step_00000008-other.machine-{dead.pid}",  # another machine's: cannot be checked from here
        )}
        for path in folders.values():
            path.mkdir()
        removed = {p.name for p in remove_stale_scratch(tmp_path)}
        assert removed == {f".tmp-step_00000008-{host}-{dead.pid}", f".old-epoch_002-{host}-{dead.pid}",
                           f".tmp-step_00000004-{dead.pid}"}
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(folders) - removed)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_errors_are_shown_once_per_message_and_tagged_off_rank_0(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the markers of this "job"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert report_user_error("only rank 1 has this", rank_0_wait=0.1)
    assert capsys.readouterr().err == "\nerror (rank 1): only rank 1 has this\n"
    assert not report_user_error("only rank 1 has this", rank_0_wait=0.1)  # a second rank with the same message
    monkeypatch.setenv("RANK", "0")
    assert report_user_error("everyone has this")
    monkeypatch.setenv("RANK", "1")
    assert not report_user_error("everyone has this", rank_0_wait=0.1)
    assert capsys.readouterr().err == "error: everyone has this\n"


def _truncated_jpeg(path: Path) -> None:
    data = io.BytesIO()
    Image.effect_noise((64, 32), 60).convert("RGB").save(data, "JPEG")
    path.write_bytes(data.getvalue()[: len(data.getvalue()) * 2 // 3])  # the header reads, the pixels do not


def test_an_error_on_rank_1_alone_is_shown_under_the_launcher(tmp_path: Path) -> None:
    """In order (--serial_batches), one image per batch, rank 1 reads the second file first: only it fails."""
    train = tmp_path / "data" / "train"
    train.mkdir(parents=True)
    for i in (0, 2, 3):
        Image.new("RGB", (64, 32), (60 * i, 90, 200)).save(train / f"{i}.jpg")
    _truncated_jpeg(train / "1.jpg")
    argv = accelerate_launch("--multi_gpu", "--num_processes", "2", str(REPO / "train.py"), "--model", "pix2pix",
                             "--dataroot", str(tmp_path / "data"), "--checkpoints_dir", str(tmp_path / "ck"),
                             "--netG", "unet_32", "--ngf", "8", "--ndf", "8", "--load_size", "32", "--crop_size", "32",
                             "--batch_size", "1", "--num_threads", "0", "--serial_batches", "--max_steps", "2")
    proc = subprocess.run(argv, capture_output=True, text=True, env=launcher_env(), timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    expected = (f"error (rank 1): cannot read image {train / '1.jpg'}: file is truncated "
                "(remove it, or add --skip_bad_images")
    assert sum(line.startswith(expected) for line in lines) == 1, proc.stderr[-3000:]
    assert not any(line.startswith("error: cannot read image") for line in lines)
    # Rank 0, waiting for rank 1 in a collective, says why it stopped in one line too (no gloo traceback).
    assert "error: lost the connection to another process of this job: it went away" in proc.stderr
    assert "[rank0]: Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_threads_chosen_by_the_user_are_told_from_the_launchers_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import gan_translate.engine.distributed as distributed

    monkeypatch.setattr(distributed, "usable_cores", lambda: 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")  # started by accelerate launch
    monkeypatch.setattr(sys, "argv", ["/r/train.py", "--model", "pix2pix"])
    launcher = ["python", "accelerate", "launch", "--multi_gpu", "/r/train.py", "--model", "pix2pix"]
    monkeypatch.setattr(distributed, "_parent_launch", lambda: (launcher, {"PATH": "/bin"}))
    assert distributed.choose_cpu_threads(0) == (4, "8 cores / 2 processes on this machine")  # the launcher's 1
    assert distributed.choose_cpu_threads(3) == (3, "--num_cpu_threads 3")
    monkeypatch.setattr(distributed, "_parent_launch", lambda: (launcher, {"OMP_NUM_THREADS": "1"}))
    assert distributed.choose_cpu_threads(0) == (1, "OMP_NUM_THREADS=1")  # the user's shell had it
    flag = launcher[:3] + ["--num_cpu_threads_per_process", "1"] + launcher[3:]
    monkeypatch.setattr(distributed, "_parent_launch", lambda: (flag, {}))
    assert distributed.choose_cpu_threads(0) == (1, "accelerate launch --num_cpu_threads_per_process 1")
    after_script = launcher + ["--num_cpu_threads_per_process", "1"]  # the script's own argument, not the launcher's
    monkeypatch.setattr(distributed, "_parent_launch", lambda: (after_script, {}))
    assert distributed.choose_cpu_threads(0)[0] == 4
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND")  # python train.py: OMP_NUM_THREADS is the user's
    assert distributed.choose_cpu_threads(0) == (1, "OMP_NUM_THREADS=1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the threads of a CPU run")
def test_the_launchers_thread_option_is_honoured(tiny_data: Path, tmp_path: Path) -> None:
    """accelerate's --num_cpu_threads_per_process 1 hands the trainer the same OMP_NUM_THREADS=1 as its default; the
    trainer tells them apart (the default gets the cores: test_stop.py and test_train.py check those)."""
    argv = accelerate_launch("--num_cpu_threads_per_process", "1", str(REPO / "train.py"),
                             *tiny_run("pix2pix", tiny_data, tmp_path, "threads", "--max_steps", "1"))
    proc = subprocess.run(argv, capture_output=True, text=True, env=launcher_env(), timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = next(line for line in proc.stdout.splitlines() if line.startswith("training on"))
    assert first == "training on cpu: 1 process, 1 torch thread (accelerate launch --num_cpu_threads_per_process 1)"


def _buffers_after_a_step(rank: int, port: int, out: str) -> None:
    """One of two gloo processes: a BatchNorm net updates its statistics on this rank's own data, then the trainer's
    end-of-step synchronisation runs."""
    import torch.distributed as dist

    from gan_translate.engine.distributed import broadcast_buffers

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm1d(2))
        net[0](torch.randn(2, 3, 8, 8))
        net[1](torch.full((2, 4, 6, 6), float(rank + 1)) + torch.randn(2, 4, 6, 6))  # statistics differ per rank
        for _ in range(rank):
            net[1](torch.randn(2, 4, 6, 6))  # so do the counters (int64 buffers)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        broadcast_buffers([net])
        torch.save({"before": before, "after": net.state_dict()}, out)
    finally:
        dist.destroy_process_group()


def test_every_rank_keeps_rank_0s_buffers_after_a_step(tmp_path: Path) -> None:
    """The trainer's one buffer synchronisation: after a step, the running statistics (float and integer buffers) of
    every rank are rank 0's, which is what checkpoints hold; weights are left to DDP."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    files = [str(tmp_path / f"rank{r}.pt") for r in range(2)]
    mp.start_processes(_buffers_after_a_step_entry, args=(port, files), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(f) for f in files)
    buffers = ["1.running_mean", "1.running_var", "1.num_batches_tracked", "2.running_mean"]
    assert not torch.equal(r0["before"]["1.running_mean"], r1["before"]["1.running_mean"])
    assert r0["before"]["1.num_batches_tracked"] == 1 and r1["before"]["1.num_batches_tracked"] == 2
    for key in buffers:
        assert torch.equal(r0["after"][key], r0["before"][key]), key  # rank 0's stay as they were
        assert torch.equal(r1["after"][key], r0["before"][key]), key  # and rank 1 now holds them


def _buffers_after_a_step_entry(rank: int, port: int, files: list[str]) -> None:
    _buffers_after_a_step(rank, port, files[rank])
