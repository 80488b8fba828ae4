"""What a new user meets in the first hour, beyond the stop tests: an image that breaks mid-run, messages, progress
bars within the terminal, files others can read, and test.py's results folders."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import REPO
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
                          env=launcher_env(), timeout=600, cwd=tmp_path)


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
