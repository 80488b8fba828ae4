"""Long runs survive: NaN/Inf steps are skipped, SIGTERM saves and exits cleanly, SIGKILL never leaves a broken
latest checkpoint, a failed write keeps the previous checkpoint, and a crafted pickle is refused without running."""

from __future__ import annotations

import errno
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gan_translate.engine.checkpoint as checkpoint
from gan_translate.cli import train_main
from gan_translate.config import load_options
from gan_translate.engine.checkpoint import find_checkpoint, load_net, load_state
from gan_translate.engine.safety import GracefulStop, GuardedOptimizer, StepGuard, TrainingDiverged
from gan_translate.engine.stopping import Snapshot, StepAbandoned, StepWindow, StopWatcher
from gan_translate.errors import UserError
from gan_translate.models import create_model, model_class
from gan_translate.models.pix2pix import Pix2PixModel
from tests.conftest import REPO, tiny_run


def test_guard_skips_every_update_of_a_bad_step() -> None:
    calls: list[float] = []
    guard = StepGuard(lambda loss: calls.append(loss.item()), lambda t: t, max_bad_steps=2)
    param = torch.nn.Parameter(torch.ones(1))
    optim = GuardedOptimizer(torch.optim.SGD([param], lr=1.0), guard)

    guard.begin_step()
    guard.backward(torch.tensor(1.0))
    param.grad = torch.ones(1)
    optim.step()
    assert guard.end_step({"a": 1.0}, 1) is None and param.item() == 0.0 and calls == [1.0]

    guard.begin_step()
    guard.backward(torch.tensor(float("nan")))
    guard.backward(torch.tensor(2.0))  # later losses of a bad step are not back-propagated either
    optim.step()
    assert param.item() == 0.0 and calls == [1.0]
    assert guard.end_step({"a": float("nan")}, 2) == "step 2: loss a is nan, step skipped (1 in a row)"
    guard.begin_step()
    with pytest.raises(TrainingDiverged, match=r"training diverged: loss b is inf at step 3 \(2 bad steps in a row\)"):
        guard.end_step({"a": 1.0, "b": float("inf")}, 3)


def _poison_from_step(monkeypatch: pytest.MonkeyPatch, first_bad: int, last_bad: int = 10**9) -> None:
    original = Pix2PixModel.training_step

    def poisoned(self, batch, ctx):  # noqa: ANN001
        if first_bad <= ctx.step + 1 <= last_bad:
            batch = {**batch, "B": batch["B"] * float("nan")}
        return original(self, batch, ctx)

    monkeypatch.setattr(Pix2PixModel, "training_step", poisoned)


def test_nan_steps_are_skipped_and_weights_stay_finite(tiny_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _poison_from_step(monkeypatch, 2, 3)
    assert train_main(tiny_run("pix2pix", tiny_data, tmp_path, "nan", "--max_steps", "5")) == 0
    ckpt = find_checkpoint(tmp_path / "nan")
    model = create_model(load_options(Pix2PixModel.Options, ckpt / "config.yaml"), training=True)
    for name, net in model.nets.items():
        load_net(net, ckpt, name)
        assert all(torch.isfinite(p).all() for p in net.parameters()), name
    adam = load_state(ckpt)["optimizers"]["G"]["state"]
    assert all(s["step"].item() == 3 for s in adam.values())  # 5 steps, 2 skipped: Adam saw 3 updates


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    _poison_from_step(monkeypatch, 3)
    argv = tiny_run("pix2pix", tiny_data, tmp_path, "div", "--max_steps", "8", "--save_latest_freq", "1",
                    "--max_bad_steps", "2")
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "error: training diverged: loss G_L1 is nan at step 4 (2 bad steps in a row); " \
                  "the last good checkpoint is kept"
    assert find_checkpoint(tmp_path / "div").name == "step_00000002"


def test_failed_write_keeps_the_previous_checkpoint(tiny_data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = checkpoint.save_file
    writes = {"n": 0}

    def disk_full_on_second_checkpoint(tensors, path):  # noqa: ANN001
        if "step_00000002" in str(path) or ".tmp-step_00000002" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        writes["n"] += 1
        return real_save(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", disk_full_on_second_checkpoint)
    argv = tiny_run("pix2pix", tiny_data, tmp_path, "full", "--max_steps", "3", "--save_latest_freq", "1")
    assert train_main(argv) == 2
    run = tmp_path / "full"
    assert find_checkpoint(run).name == "step_00000001"
    assert load_state(run / "step_00000001")["progress"]["step"] == 1
    assert not list(run.glob(".tmp-*"))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "run" / "step_00000001"
    ckpt.mkdir(parents=True)
    with open(ckpt / checkpoint.STATE_FILE, "wb") as f:
        pickle.dump({"progress": Exploit()}, f, protocol=2)
    with pytest.raises(UserError, match=r"refusing to load .*training_state.pt: not a plain training state"):
        load_state(ckpt)
    assert not marker.exists()


def _launch(argv: list[str], cwd: Path) -> tuple[subprocess.Popen, Path]:
    """Starts train.py; its output goes to a file (a pipe nobody reads would block the process when full)."""
    log = cwd / f"train-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *argv], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    return proc, log


def _wait_for_new_checkpoint(run: Path, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Waits until this process has written a checkpoint of its own (LATEST changes)."""
    before = (run / "LATEST").read_text() if (run / "LATEST").exists() else None
    deadline = time.time() + timeout
    while not (run / "LATEST").exists() or (run / "LATEST").read_text() == before:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint written in time:\n" + log.read_text()[-3000:]
        time.sleep(0.1)


def test_sigterm_saves_and_exits_cleanly(tiny_data: Path, tmp_path: Path) -> None:
    argv = tiny_run("pix2pix", tiny_data, tmp_path, "term", "--n_epochs", "100000", "--save_latest_freq", "3")
    proc, log = _launch(argv, tmp_path)
    _wait_for_new_checkpoint(tmp_path / "term", proc, log)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert "stopped by SIGTERM at step" in out
    step = int(out.split("stopped by SIGTERM at step ")[1].split(";")[0])
    ckpt = find_checkpoint(tmp_path / "term")
    assert ckpt.name == f"step_{step:08d}" and load_state(ckpt)["progress"]["step"] == step


def test_sigkill_at_random_moments_leaves_a_loadable_latest(tiny_data: Path, tmp_path: Path) -> None:
    """A few random kills here; scripts/kill_soak.py runs the long version."""
    rng = random.Random(0)
    argv = tiny_run("cyclegan", tiny_data, tmp_path, "kill", "--n_epochs", "100000", "--save_latest_freq", "1",
                    "--keep_last", "2")
    last_step = 0
    for trial in range(3):
        proc, log = _launch(argv + (["--continue_train"] if trial else []), tmp_path)
        _wait_for_new_checkpoint(tmp_path / "kill", proc, log)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
        ckpt = find_checkpoint(tmp_path / "kill")
        state = load_state(ckpt)
        assert state["progress"]["step"] > last_step, log.read_text()[-3000:]  # resumed and went further
        last_step = state["progress"]["step"]
        cls = model_class("cyclegan")
        model = cls(load_options(cls.Options, ckpt / "config.yaml"), training=True)
        for name, net in model.nets.items():
            load_net(net, ckpt, name)


def _aligned_folder_with_a_truncated_jpeg(root: Path) -> Path:
    import io

    from PIL import Image

    train = root / "train"
    train.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (64, 32), (40 * i, 90, 200)).save(train / f"{i}.jpg")
    noise = io.BytesIO()
    Image.effect_noise((64, 32), 60).convert("RGB").save(noise, "JPEG")
    (train / "9_truncated.jpg").write_bytes(noise.getvalue()[:400])
    return root


@pytest.mark.parametrize("workers", ["0", "1"])
def test_bad_image_stops_with_its_name_or_is_skipped(tmp_path: Path, workers: str,
                                                     capsys: pytest.CaptureFixture) -> None:
    data = _aligned_folder_with_a_truncated_jpeg(tmp_path / "data")
    argv = ["--model", "pix2pix", "--dataroot", str(data), "--checkpoints_dir", str(tmp_path / "ck"), "--name", "bad",
            "--netG", "unet_32", "--ngf", "8", "--ndf", "8", "--load_size", "32", "--crop_size", "32",
            "--num_threads", workers, "--max_steps", "2"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: cannot read image {data / 'train' / '9_truncated.jpg'}: corrupt header (Truncated File Read)"
    assert not (tmp_path / "ck" / "bad").exists()
    assert train_main(argv + ["--skip_bad_images"]) == 0
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().err
    assert find_checkpoint(tmp_path / "ck" / "bad").name == "step_00000002"


def test_resume_with_other_network_options_names_the_key(tiny_data: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    assert train_main(tiny_run("pix2pix", tiny_data, tmp_path, "mm", "--max_steps", "1")) == 0
    capsys.readouterr()
    assert train_main(tiny_run("pix2pix", tiny_data, tmp_path, "mm", "--max_steps", "2", "--continue_train",
                               "--ngf", "16")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "net_G.safetensors: key '" in err and "has shape (8," in err
    assert "expects (16," in err and "\n" not in err


def test_a_stop_before_the_first_update_drops_the_step_and_one_after_it_finishes_it() -> None:
    stop = {"requested": False}
    window = StepWindow(lambda: stop["requested"], single_process=True)
    guard = StepGuard(lambda loss: loss.backward(), lambda t: t, max_bad_steps=2, window=window,
                      stop_requested=lambda: stop["requested"])
    first = torch.nn.Parameter(torch.ones(1))
    second = torch.nn.Parameter(torch.ones(1))
    optim_a = GuardedOptimizer(torch.optim.SGD([first], lr=1.0), guard)
    optim_b = GuardedOptimizer(torch.optim.SGD([second], lr=1.0), guard)

    # the signal comes during the step's forward/backward: no weight moves, the snapshot is the one to save
    window.mark_clean(Snapshot(progress={"step": 7}, rng={}, model_state={}))
    guard.begin_step()
    guard.backward((first * 2).sum())
    stop["requested"] = True
    with pytest.raises(StepAbandoned):
        optim_a.step()
    assert first.item() == 1.0 and window.claim_save() and window.snapshot.progress == {"step": 7}

    # the signal comes after the first update: the step is finished (the other optimizer still steps)
    stop["requested"] = False
    first.grad = None
    window = StepWindow(lambda: stop["requested"], single_process=True)
    guard.window = window
    window.mark_clean(Snapshot(progress={"step": 8}, rng={}, model_state={}))
    guard.begin_step()
    guard.backward((first * 2 + second * 3).sum())
    optim_a.step()
    stop["requested"] = True
    guard.backward((second * 0).sum())  # the ranks agree on the stop here; too late to drop the step
    optim_b.step()
    assert first.item() == -1.0 and second.item() == -2.0 and not window.claim_save()


def test_the_stop_watcher_is_woken_by_a_signal_while_the_main_thread_computes() -> None:
    woken: list[str] = []
    stop = GracefulStop().install()
    watcher = StopWatcher(woken.append).start()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not woken and time.monotonic() < deadline:
            torch.ones(256, 256) @ torch.ones(256, 256)  # busy in C++ code, as in a backward pass
        assert woken == ["SIGTERM"] and stop.requested == "SIGTERM"
    finally:
        watcher.stop()
        stop.restore()
