"""Run folders for the demo's tests, and the demo served inside the test process.

One pix2pix run is trained for real (two steps, the trainer's own files); the other models' runs are written the way
the trainer writes them (config.yaml, a step checkpoint through ``save_checkpoint``) from untrained networks, which is
all the demo reads and takes a fraction of a second per run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan_translate.cli import train_main
from gan_translate.config import resolve
from gan_translate.engine.checkpoint import save_checkpoint
from gan_translate.models import model_class
from tests.conftest import tiny_run

SMALL = {
    "pix2pix": ["--netG", "unet_32", "--ngf", "8", "--ndf", "8", "--load_size", "36", "--crop_size", "32"],
    "cyclegan": ["--netG", "resnet_2blocks", "--ngf", "8", "--ndf", "8", "--load_size", "36", "--crop_size", "32"],
    "cut": ["--netG", "resnet_2blocks", "--nce_layers", "input,down1,block1", "--ngf", "8", "--ndf", "8",
            "--load_size", "36", "--crop_size", "32"],
    "mixgan": ["--ngf", "4", "--ndf", "4", "--z_dim", "8", "--fc_dim", "16", "--n_blocks", "1", "--load_size", "32",
               "--crop_size", "32"],
    "adain": ["--vgg_weights", "random", "--load_size", "40", "--crop_size", "32"],
    "tpfr": ["--ngf", "4", "--ndf", "4", "--n_blocks", "1", "--load_size", "36", "--crop_size", "32"],
}


def _untrained(checkpoints: Path, name: str, model: str, dataroot: Path, *extra: str):
    cls = model_class(model)
    options = resolve(cls.Options, model, ["--dataroot", str(dataroot), "--name", name,
                                           "--checkpoints_dir", str(checkpoints), *SMALL.get(model, []), *extra])
    torch.manual_seed(0)
    return options, cls(options, training=False)


def write_imported_run(checkpoints: Path, name: str, model: str, dataroot: Path) -> Path:
    """A run folder as ``python -m gan_translate import`` writes it (its own writer), from untrained networks."""
    from gan_translate.importers.common import write_run as write_imported

    options, built = _untrained(checkpoints, name, model, dataroot)
    return write_imported(options, dict(built.nets.items()), source="a test", fine_tune=True)


def write_run(checkpoints: Path, name: str, model: str, dataroot: Path, *extra: str, steps: int = 7) -> Path:
    """A run folder as the trainer leaves it, holding the model's untrained networks (seeded)."""
    options, built = _untrained(checkpoints, name, model, dataroot, *extra)
    run_dir = checkpoints / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(options.to_yaml())
    save_checkpoint(run_dir, f"step_{steps:08d}", nets=dict(built.nets.items()),
                    state={"progress": {"step": steps, "epoch": 0, "batch_in_epoch": steps}},
                    config_yaml=options.to_yaml(), keep_last=5)
    return run_dir


def make_runs(checkpoints: Path, facades: Path, styles: Path) -> dict[str, Path]:
    """pix2pix (trained 2 steps), cyclegan, cut, mixgan, adain, tpfr, and a run whose checkpoint lost its weights."""
    assert train_main(tiny_run("pix2pix", facades, checkpoints, "p2p", "--max_steps", "2")) == 0
    runs = {"pix2pix": checkpoints / "p2p"}
    runs["cyclegan"] = write_run(checkpoints, "cyc", "cyclegan", facades / "unaligned")
    runs["cut"] = write_run(checkpoints, "cut", "cut", facades / "unaligned")
    runs["mixgan"] = write_run(checkpoints, "mix", "mixgan", facades / "unaligned")
    runs["adain"] = write_run(checkpoints, "ada", "adain", styles)
    runs["tpfr"] = write_run(checkpoints, "tp", "tpfr", styles)
    runs["imported"] = write_imported_run(checkpoints, "imp", "cyclegan", facades / "unaligned")
    broken = write_run(checkpoints, "broken", "cyclegan", facades / "unaligned")
    (broken / "step_00000007" / "net_G_A.safetensors").unlink()
    runs["broken"] = broken
    empty = checkpoints / "untrained"  # a run that was started but never saved a checkpoint
    empty.mkdir()
    (empty / "config.yaml").write_text((runs["cyclegan"] / "config.yaml").read_text())
    runs["untrained"] = empty
    return runs


def picture(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A smooth colour image (gradients and a disc): something a browser shows and a network changes."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    disc = ((xx - w * 0.6) ** 2 + (yy - h * 0.45) ** 2 < (min(w, h) * 0.25) ** 2).astype(np.float32)
    array = np.stack([255 * xx / w, 255 * yy / h, 200 * disc + 30], -1) + rng.normal(0, 4, (h, w, 3))
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)
    return path
