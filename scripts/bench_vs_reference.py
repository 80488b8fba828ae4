"""test.py against the reference's test.py, side by side in one run: seconds per image, interleaved, as ratios.

    ../shared/anchors/reference.sh /tmp/ref                       # once: unpack the reference
    python scripts/bench_vs_reference.py --ref /tmp/ref --facades ../shared/data/facades [--repeats 2] [--quick]

Both translate the facades test pairs with the SAME weights (random, paper architectures: pix2pix unet_256 with batch
norm and dropout, CycleGAN resnet_9blocks with instance norm; made by the reference's own define_G, imported here
with `python -m gan_translate import reference`). Each configuration runs with --num_test SMALL and --num_test N and
the per-image time is the difference divided by N - SMALL, so start-up (imports, loading) is removed. The
reference's CycleGAN test writes both translations and both cycles of each image pair; ours translates both ways, and
with --reconstruct also writes the cycles (a row each). Runs of ours and of the reference alternate, so a machine
whose speed drifts affects both alike; the table gives medians over --repeats. Everything is written under --work
(default /tmp/bench_vs_reference).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MAKE_WEIGHTS = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from models.networks import define_G
torch.manual_seed(0)
out = sys.argv[2]
torch.save(define_G(3, 3, 64, "unet_256", "batch", True).state_dict(), f"{out}/p2p/latest_net_G.pth")
for key in ("G_A", "G_B"):
    torch.save(define_G(3, 3, 64, "resnet_9blocks", "instance", False).state_dict(), f"{out}/cyc/latest_net_{key}.pth")
"""


def _run(cmd: list[str], cwd: Path) -> float:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return seconds


def _setup(work: Path, ref: Path, facades: Path) -> Path:
    """Weights (reference format and imported), an unaligned view of the facades test pairs for CycleGAN."""
    for sub in ("weights/p2p", "weights/cyc"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    if not (work / "weights/cyc/latest_net_G_B.pth").exists():
        subprocess.run([sys.executable, "-c", MAKE_WEIGHTS, str(ref), str(work / "weights")], check=True)
    ours = work / "checkpoints"
    if not (ours / "p2p").exists():
        subprocess.run([sys.executable, "-m", "gan_translate", "import", "reference",
                        str(work / "weights/p2p/latest_net_G.pth"), "--model", "pix2pix", "--name", "p2p",
                        "--direction", "BtoA", "--no_dropout", "false", "--checkpoints_dir", str(ours)], check=True,
                       cwd=REPO)
        subprocess.run([sys.executable, "-m", "gan_translate", "import", "reference", str(work / "weights/cyc"),
                        "--name", "cyc", "--checkpoints_dir", str(ours)], check=True, cwd=REPO)
    for name in ("p2p", "cyc"):  # the reference reads checkpoints_dir/name/latest_net_*.pth
        target = work / "ref_checkpoints" / name
        target.mkdir(parents=True, exist_ok=True)
        for f in (work / "weights" / name).glob("*.pth"):
            if not (target / f.name).exists():
                shutil.copy(f, target / f.name)
    unaligned = work / "facades_unaligned"
    if not (unaligned / "testB").is_dir():
        from PIL import Image

        (unaligned / "testA").mkdir(parents=True)
        (unaligned / "testB").mkdir(parents=True)
        for path in sorted((facades / "test").glob("*.jpg")):
            pair = Image.open(path).convert("RGB")
            half = pair.width // 2
            pair.crop((0, 0, half, pair.height)).save(unaligned / "testA" / f"{path.stem}.png")
            pair.crop((half, 0, pair.width, pair.height)).save(unaligned / "testB" / f"{path.stem}.png")
    return ours


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", required=True, help="the unpacked reference (../shared/anchors/reference.sh DIR)")
    p.add_argument("--facades", default=str(REPO.parent / "shared" / "data" / "facades"))
    p.add_argument("--work", default="/tmp/bench_vs_reference")
    p.add_argument("--num_test", type=int, default=56)
    p.add_argument("--small", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--only", choices=("pix2pix", "cyclegan"), help="run one model's rows")
    p.add_argument("--quick", action="store_true", help="pix2pix only (the same as --only pix2pix)")
    args = p.parse_args()
    work, ref, facades = Path(args.work), Path(args.ref).resolve(), Path(args.facades).resolve()
    ours = _setup(work, ref, facades)
    unaligned = work / "facades_unaligned"

    def ours_cmd(name: str, root: Path, *extra: str) -> list[str]:
        return [sys.executable, "test.py", "--name", name, "--checkpoints_dir", str(ours), "--dataroot", str(root),
                "--eval", "--metrics", "none", "--results_dir", str(work / "results_ours"), *extra]

    def ref_cmd(name: str, root: Path, *extra: str) -> list[str]:
        return [sys.executable, "test.py", "--name", name, "--checkpoints_dir", str(work / "ref_checkpoints"),
                "--dataroot", str(root), "--eval", "--results_dir", str(work / "results_ref"),
                *extra]

    ref_p2p = ref_cmd("p2p", facades, "--model", "pix2pix", "--direction", "BtoA")
    ref_cyc = ref_cmd("cyc", unaligned, "--model", "cycle_gan", "--no_dropout")
    pix2pix_rows = [  # (label, our command, the reference's command)
        ("pix2pix, our default scale, fp32", ours_cmd("p2p", facades), ref_p2p),
        ("pix2pix, 256x256 as the reference, fp32",
         ours_cmd("p2p", facades, "--load_size", "256", "--crop_size", "256"), ref_p2p),
        ("pix2pix, 256x256, bf16",
         ours_cmd("p2p", facades, "--load_size", "256", "--crop_size", "256", "--mixed_precision", "bf16"), ref_p2p),
        ("pix2pix, --load_size 286 (padded to 512), fp32", ours_cmd("p2p", facades, "--load_size", "286"), ref_p2p),
    ]
    at_256 = ("--load_size", "256", "--crop_size", "256")
    cyclegan_rows = [  # the reference's test also writes the cycles: ours does with --reconstruct
        ("CycleGAN both ways, our default scale, fp32", ours_cmd("cyc", unaligned), ref_cyc),
        ("CycleGAN both ways, 256x256, fp32", ours_cmd("cyc", unaligned, *at_256), ref_cyc),
        ("CycleGAN both ways, 256x256, bf16", ours_cmd("cyc", unaligned, *at_256, "--mixed_precision", "bf16"),
         ref_cyc),
        ("CycleGAN both ways and the cycles (--reconstruct), 256x256, fp32",
         ours_cmd("cyc", unaligned, *at_256, "--reconstruct"), ref_cyc),
        ("CycleGAN both ways and the cycles (--reconstruct), 256x256, bf16",
         ours_cmd("cyc", unaligned, *at_256, "--reconstruct", "--mixed_precision", "bf16"), ref_cyc),
    ]
    only = "pix2pix" if args.quick else args.only
    rows = {"pix2pix": pix2pix_rows, "cyclegan": cyclegan_rows}.get(only, pix2pix_rows + cyclegan_rows)
    span = args.num_test - args.small
    times: dict[tuple[int, str], list[float]] = {}
    print("| configuration | ours s/image | reference s/image | speed-up |\n|---|---|---|---|", flush=True)
    for repeat in range(args.repeats):
        for index, (label, mine, theirs) in enumerate(rows):
            for who, cmd, cwd in (("ours", mine, REPO), ("ref", theirs, ref)):  # interleaved
                t_small = _run(cmd + ["--num_test", str(args.small)], cwd)
                t_all = _run(cmd + ["--num_test", str(args.num_test)], cwd)
                times.setdefault((index, who), []).append((t_all - t_small) / span)
            if repeat == args.repeats - 1:  # each row as soon as its medians are known
                a, b = statistics.median(times[(index, "ours")]), statistics.median(times[(index, "ref")])
                print(f"| {label} | {a:.3f} | {b:.3f} | {b / a:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
