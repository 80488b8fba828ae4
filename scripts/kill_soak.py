"""Soak test of crash safety: kill a training run with SIGKILL at random moments, again and again, and check after
every kill that the latest checkpoint loads (networks and training state) and that resuming continues from it.

    python scripts/kill_soak.py --kills 20 [--model cyclegan] [--seed 0] [--workdir /tmp/soak]

Prints one line per kill and a summary: kills, unloadable checkpoints (must be 0), steps reached.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan_translate.config import load_options  # noqa: E402
from gan_translate.data.builtin import ensure_builtin_dataset  # noqa: E402
from gan_translate.engine.checkpoint import LATEST, find_checkpoint, load_net, load_state  # noqa: E402
from gan_translate.errors import UserError  # noqa: E402
from gan_translate.models import model_class  # noqa: E402


def run_argv(model: str, data: Path, workdir: Path) -> list[str]:
    view = "aligned" if model == "pix2pix" else "unaligned"
    net_g = "unet_32" if model == "pix2pix" else "resnet_2blocks"
    return ["--model", model, "--dataroot", str(data / view), "--checkpoints_dir", str(workdir), "--name", "soak",
            "--netG", net_g, "--ngf", "8", "--ndf", "8", "--load_size", "36", "--crop_size", "32", "--batch_size", "2",
            "--num_threads", "0", "--max_steps", "1000000", "--save_latest_freq", "1", "--keep_last", "2",
            "--print_freq", "50", "--display_freq", "50"]


def check(run: Path, model: str) -> int:
    """Loads the latest checkpoint completely; returns its step (raises on any problem)."""
    ckpt = find_checkpoint(run)
    state = load_state(ckpt)
    cls = model_class(model)
    net_model = cls(load_options(cls.Options, ckpt / "config.yaml"), training=True)
    for name, net in net_model.nets.items():
        load_net(net, ckpt, name)
    return int(state["progress"]["step"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--model", default="cyclegan", choices=["pix2pix", "cyclegan"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_delay", type=float, default=2.0, help="seconds after a checkpoint exists")
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="kill_soak_"))
    data = ensure_builtin_dataset(workdir / "data", seed=3, size=32, n_train=8, n_test=2)
    run = workdir / "soak"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    failures, steps = 0, []
    for kill in range(1, args.kills + 1):
        argv = run_argv(args.model, data, workdir) + (["--continue_train"] if (run / LATEST).exists() else [])
        proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *argv], cwd=workdir, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        before = (run / LATEST).read_text() if (run / LATEST).exists() else None
        while (not (run / LATEST).exists() or (run / LATEST).read_text() == before) and proc.poll() is None:
            time.sleep(0.05)  # wait until this process has written at least one checkpoint of its own
        time.sleep(rng.uniform(0.0, args.max_delay))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        try:
            step = check(run, args.model)
            steps.append(step)
            print(f"kill {kill:2d}: latest checkpoint loads, step {step}", flush=True)
        except (UserError, OSError, KeyError, RuntimeError) as exc:
            failures += 1
            print(f"kill {kill:2d}: UNLOADABLE latest checkpoint: {exc}\n{err[-2000:]}", flush=True)
    print(f"{args.kills} kills, {failures} unloadable checkpoints, steps reached: {steps[-1] if steps else 0}, "
          f"workdir {workdir}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
