"""End to end: pix2pix and CycleGAN train a few steps, write checkpoints, TensorBoard events and samples, and resume
exactly; two processes under `accelerate launch` keep identical weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gan_translate.cli import train_main
from gan_translate.engine.checkpoint import find_checkpoint, load_state
from gan_translate.engine.distributed import usable_cores
from tests.conftest import REPO, SHARED_DATA, tiny_run

NETS = {"pix2pix": ("G", "D"), "cyclegan": ("G_A", "G_B", "D_A", "D_B")}


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(ckpt.glob("net_*.safetensors")):
        out.update({f"{f.stem}.{k}": v for k, v in load_file(str(f)).items()})
    return out


def events(run: Path) -> EventAccumulator:
    files = list((run / "logs").rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard events under {run}"
    acc = EventAccumulator(str(files[0].parent), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize("model", ["pix2pix", "cyclegan"])
def test_trains_and_writes_everything(model: str, tiny_data: Path, tmp_path: Path) -> None:
    assert train_main(tiny_run(model, tiny_data, tmp_path, "run", "--max_steps", "5")) == 0
    run = tmp_path / "run"
    ckpt = find_checkpoint(run)
    assert ckpt.name == "step_00000005"
    assert sorted(p.stem for p in ckpt.glob("net_*.safetensors")) == sorted(f"net_{n}" for n in NETS[model])
    state = load_state(ckpt)
    assert state["progress"] == {"step": 5, "epoch": 1, "batch_in_epoch": 1}  # 4 batches per epoch
    assert (run / "config.yaml").read_text() == (ckpt / "config.yaml").read_text()
    assert "model: " + model in (run / "config.yaml").read_text()
    assert sorted(p.name for p in (run / "samples").glob("*.png"))[:2] == ["step_00000001.png", "step_00000002.png"]

    tb = events(run)
    scalars = tb.Tags()["scalars"]
    expected_losses = {"pix2pix": ["loss/G_GAN", "loss/G_L1", "loss/D"],
                       "cyclegan": ["loss/D_A", "loss/G_A", "loss/cycle_A", "loss/idt_A", "loss/D_B", "loss/cycle_B"]}
    for tag in expected_losses[model] + ["lr/G", "lr/D"]:
        assert tag in scalars, (tag, scalars)
    assert [e.step for e in tb.Scalars("lr/G")] == [1, 2, 3, 4, 5]
    # The linear policy keeps lr for n_epochs=1 epoch, then decays: epoch 2 runs at 2/3 of it.
    lrs = [e.value for e in tb.Scalars("lr/G")]
    assert lrs[:4] == pytest.approx([2e-4] * 4) and lrs[4] == pytest.approx(2e-4 * 2 / 3)
    assert any(t.startswith("samples/real_A") for t in tb.Tags()["images"])
    assert "config/text_summary" in tb.Tags()["tensors"]


@pytest.mark.parametrize("model", ["pix2pix", "cyclegan"])
def test_resume_is_exact(model: str, tiny_data: Path, tmp_path: Path, trained_steps: list[int]) -> None:
    """6 steps straight == 3 steps, stop, --continue_train to 6 (crossing an epoch boundary, where the LR decays):
    the resumed process runs steps 4-6 only (a fresh start would reach the same weights, the seed being fixed).
    pix2pix runs unet_64 here so that its dropout layer (torch's global RNG) is part of what must replay."""
    extra = ["--netG", "unet_64"] if model == "pix2pix" else []
    assert train_main(tiny_run(model, tiny_data, tmp_path, "straight", "--max_steps", "6", *extra)) == 0
    assert train_main(tiny_run(model, tiny_data, tmp_path, "resumed", "--max_steps", "3", *extra)) == 0
    first = weights(find_checkpoint(tmp_path / "resumed"))
    trained_steps.clear()
    assert train_main(tiny_run(model, tiny_data, tmp_path, "resumed", "--max_steps", "6", "--continue_train",
                               *extra)) == 0
    assert trained_steps == [3, 4, 5], "the resumed run did not start at its checkpoint"
    straight = weights(find_checkpoint(tmp_path / "straight"))
    resumed = weights(find_checkpoint(tmp_path / "resumed"))
    assert straight.keys() == resumed.keys()
    assert not all(torch.equal(first[k], resumed[k]) for k in first), "the resumed run did not train"
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), f"{key} differs after resume"
    s_state = load_state(find_checkpoint(tmp_path / "straight"))
    r_state = load_state(find_checkpoint(tmp_path / "resumed"))
    assert s_state["progress"] == r_state["progress"] == {"step": 6, "epoch": 1, "batch_in_epoch": 2}
    assert s_state["schedulers"]["G"]["last_epoch"] == r_state["schedulers"]["G"]["last_epoch"] == 1


def test_checkpoints_rotate_and_epochs_are_kept(tiny_data: Path, tmp_path: Path) -> None:
    argv = tiny_run("pix2pix", tiny_data, tmp_path, "rot", "--max_steps", "9", "--save_latest_freq", "2",
                    "--keep_last", "2", "--save_epoch_freq", "1")
    assert train_main(argv) == 0
    run = tmp_path / "rot"
    names = sorted(p.name for p in run.iterdir() if p.is_dir() and p.name.startswith(("step_", "epoch_")))
    assert names == ["epoch_001", "epoch_002", "step_00000008", "step_00000009"]
    assert (run / "LATEST").read_text().strip() == "step_00000009"
    assert not list(run.glob(".tmp-*"))


def launcher_env() -> dict[str, str]:
    """The environment of a user's shell: none of the variables a launcher or a test harness may have left."""
    unset = ("ACCELERATE_USE_CPU", "OMP_NUM_THREADS", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
             "MASTER_ADDR", "MASTER_PORT")
    return {k: v for k, v in os.environ.items() if k not in unset}


def accelerate_launch(*args: str) -> list[str]:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    assert accelerate, "accelerate's launcher is not installed"
    return [accelerate, "launch", *args]


@pytest.mark.parametrize("model", ["pix2pix", "cyclegan"])  # BatchNorm + dropout; InstanceNorm + image pools
def test_two_processes_stay_in_sync(model: str, tiny_data: Path, tmp_path: Path) -> None:
    """The README's `accelerate launch --multi_gpu --num_processes 2 train.py ...`, as a user types it, on a machine
    without a GPU: one distributed run over gloo, identical weights -- also with data that does not split evenly over
    the ranks (7 images, batches of 2 per process)."""
    argv = accelerate_launch("--multi_gpu", "--num_processes", "2", str(REPO / "train.py"),
                             *tiny_run(model, tiny_data, tmp_path, "ddp", "--max_dataset_size", "7",
                                       "--n_epochs_decay", "1", *(["--netG", "unet_64"] if model == "pix2pix" else [])))
    proc = subprocess.run(argv, capture_output=True, text=True, env=launcher_env(), timeout=600, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "weights identical on all 2 ranks" in out
    if not torch.cuda.is_available():
        threads = max(1, usable_cores() // 2)  # the cores shared by this machine's 2 processes, not the launcher's 1
        assert f"training on cpu: 2 processes (gloo), {threads} torch thread" in out, out[-3000:]
    # One run: 7 images over 2 processes x 2 per batch = 2 steps per epoch (the last batch is completed by wrapping
    # around), 2 epochs; one process training alone would have run 4 steps per epoch.
    assert out.count("done: 4 steps") == 1, out[-3000:]
    state = load_state(find_checkpoint(tmp_path / "ddp"))
    assert state["progress"] == {"step": 4, "epoch": 2, "batch_in_epoch": 0}
    assert len(state["rng"]) == 2


@pytest.mark.skipif(not (SHARED_DATA / "facades").is_dir(), reason="../shared/data/facades is absent")
def test_pix2pix_on_real_facades(tmp_path: Path) -> None:
    argv = ["--model", "pix2pix", "--dataroot", str(SHARED_DATA / "facades"), "--direction", "BtoA",
            "--checkpoints_dir", str(tmp_path), "--name", "facades", "--netG", "unet_32", "--ngf", "8", "--ndf", "8",
            "--load_size", "36", "--crop_size", "32", "--max_dataset_size", "6", "--batch_size", "2",
            "--num_threads", "0", "--max_steps", "3"]
    assert train_main(argv) == 0
    assert (find_checkpoint(tmp_path / "facades") / "net_G.safetensors").is_file()
