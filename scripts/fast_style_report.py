"""Figures for the fast style networks: a single-style network against Gatys' optimisation on held-out photos, the
speed of both, and a 4-style conditional network against four single-style networks.

    python scripts/fast_style_report.py losses --steps 400 --size 128 --out /tmp/fast_style   # ~20 min on 2 busy cores
    python scripts/fast_style_report.py speed --run /tmp/fast_style/single --sizes 256,512,1024
    python scripts/fast_style_report.py multi --steps 100 --size 128 --out /tmp/fast_style

"losses" trains ``fast_style`` (train.py, the Caffe VGG-19 of the style extra, Johnson's pinned weights) on
``../shared/data/styles/content`` minus three held-out photos, with one painting, saving a checkpoint every 10% of the
run. The untrained network (the run's seed), the 10% checkpoint and the last one are scored on the held-out photos
with the run's own loss (same VGG, layers, Gram normalisation, weights, style targets). Gatys' method is run on the same
photos and the same loss: L-BFGS from the photo, one iteration per step, a history of 100 and no line search
(``stylize``'s optimiser; here on the loss divided by its starting value, a constant), scored after 50, 100 and 500
iterations. (``stylize``'s command line weights its layers and normalises its Grams differently, so its loss would not
be comparable.) It writes losses.json and grid.png (photo | network | Gatys after the last scored iteration).

"speed" times the network (images per second, fp32 and bf16 autocast, interleaved) and one L-BFGS iteration of Gatys'
method at each size; stylize's seconds per image are 500 x that iteration time (the paper's 500 iterations).

"multi" trains one conditional network on four paintings for 4 x ``--steps`` steps and four single-style networks for
``--steps`` each (the same number of training images per style) and scores each style of each on the held-out photos;
it also writes blend.png (photo | style 1 | 50/50 blend | style 2).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "styles"
HELD_OUT = ("chicago.jpg", "golden_gate.jpg", "sailboat.jpg")


def _folder(out: Path, paintings: list[str]) -> Path:
    root = out / "data"
    shutil.rmtree(root, ignore_errors=True)
    (root / "content").mkdir(parents=True)
    (root / "style").mkdir()
    for photo in sorted((DATA / "content").iterdir()):
        if photo.name not in HELD_OUT:
            (root / "content" / photo.name).symlink_to(photo)
    for name in paintings:
        (root / "style" / name).symlink_to(DATA / "style" / name)
    return root


def _train(root: Path, out: Path, name: str, steps: int, args: argparse.Namespace) -> Path:
    shutil.rmtree(out / name, ignore_errors=True)
    save = max(1, steps // 10)
    cmd = [sys.executable, str(REPO / "train.py"), "--model", "fast_style", "--dataroot", str(root),
           "--checkpoints_dir", str(out), "--name", name, "--max_steps", str(steps), "--load_size", str(args.size),
           "--crop_size", str(args.size), "--style_size", str(args.size), "--batch_size", str(args.batch_size),
           "--save_latest_freq", str(save), "--keep_last", "20", "--num_threads", "0",
           "--display_freq", str(steps), "--print_freq", str(save)]
    if args.threads:
        cmd += ["--num_cpu_threads", str(args.threads)]
    subprocess.run(cmd, check=True)
    return out / name


class RunLoss:
    """A trained run's loss: its VGG, style targets, layers, Gram normalisation and weights, on (1, 3, H, W) images."""

    def __init__(self, run: Path) -> None:
        from gan_translate.config import load_options
        from gan_translate.models.fast_style import FastStyleModel, FastStyleOptions

        self.options = load_options(FastStyleOptions, run / "config.yaml")
        self.model = FastStyleModel(self.options)  # training form: builds the VGG and the style targets

    def __call__(self, photo: torch.Tensor, image: torch.Tensor, style: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        with torch.no_grad():
            target = m._features(photo, m._content_layers)
        f = m._features(image, m._content_layers + m._style_layers)
        content = sum(F.mse_loss(f[k], target[k]) for k in m._content_layers)
        labels = torch.tensor([style])
        style_loss = sum(F.mse_loss(m.gram(f[k]), m._target(labels, i, f[k].shape[1]))
                         for i, k in enumerate(m._style_layers))
        return content * self.options.content_weight, style_loss * self.options.style_weight


def _photos(size: int) -> list[torch.Tensor]:
    from gan_translate.stylize import load_resized

    return [load_resized(DATA / "content" / name, size) for name in HELD_OUT]


def _mean(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    return [sum(float(p[i]) for p in pairs) / len(pairs) for i in (0, 1)]


def _untrained(run: Path):
    """The network as training starts: the run's options and seed (the trainer seeds before building the model)."""
    from gan_translate.config import load_options
    from gan_translate.models.fast_style import FastStyleModel, FastStyleOptions

    options = load_options(FastStyleOptions, run / "config.yaml")
    torch.manual_seed(options.seed)
    return FastStyleModel(options, training=False)


def _score(net, loss: RunLoss, photos: list[torch.Tensor], style: int = 0) -> tuple[list[float], list[torch.Tensor]]:
    net.set_style(style)
    with torch.no_grad():
        outs = [net.translate({"A": p})["stylized"] for p in photos]
        return _mean([loss(p, o, style) for p, o in zip(photos, outs)]), outs


def gatys(loss: RunLoss, photo: torch.Tensor, iterations: list[int], laps: list[float] | None = None
          ) -> dict[int, tuple[list[float], torch.Tensor]]:
    """L-BFGS on the run's loss from the photo (``stylize``'s optimiser); the losses and image at each iteration.
    ``laps`` receives the seconds of every iteration."""
    from gan_translate.stylize import OPTIMIZERS

    image = photo.clone().requires_grad_(True)
    optimizer = OPTIMIZERS["lbfgs"]([image], 0.0)
    # The objective divided by its value at the start, a constant: the minimiser is the same, but without a line search
    # L-BFGS's first step (lr / |gradient|_1) is otherwise ~1e-7 long at these loss scales and its curvature pair then
    # sends some photos to 1e26.
    with torch.no_grad():
        scale = float(sum(loss(photo, image)))

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        content, style = loss(photo, image)
        total = (content + style) / scale
        total.backward()
        return total

    found = {}
    for step in range(1, max(iterations) + 1):
        begin = time.perf_counter()
        optimizer.step(closure)
        if laps is not None:
            laps.append(time.perf_counter() - begin)
        if step in iterations:
            with torch.no_grad():
                found[step] = (_mean([loss(photo, image)]), image.detach().clamp(-1, 1).clone())
    return found


def losses_command(args: argparse.Namespace) -> None:
    from gan_translate.engine.checkpoint import list_checkpoints
    from gan_translate.inference import load_model

    out = Path(args.out)
    iterations = [int(s) for s in args.lbfgs.split(",")]
    start = time.time()
    run = out / "single"
    reused = args.reuse and (run / "LATEST").exists()
    if not reused:
        run = _train(_folder(out, [args.painting]), out, "single", args.steps, args)
    train_s = None if reused else round(time.time() - start)
    loss = RunLoss(run)
    photos = _photos(args.size)
    checkpoints = [c for c in list_checkpoints(run) if c.name.startswith("step_")]
    report: dict = {"steps": args.steps, "batch_size": args.batch_size, "size": args.size, "painting": args.painting,
                    "held_out": list(HELD_OUT), "train_seconds": train_s, "vgg": loss.options.vgg,
                    "content_weight": loss.options.content_weight, "style_weight": loss.options.style_weight,
                    "network": {}, "gatys_lbfgs": {}}
    report["network"]["step 0"], _ = _score(_untrained(run), loss, photos)
    for ckpt in (checkpoints[0], checkpoints[-1]):
        net, _, _ = load_model(ckpt, device="cpu")
        step = int(ckpt.name.split("_")[1])
        report["network"][f"step {step}"], outs = _score(net, loss, photos)
    per_iteration = {n: [] for n in iterations}
    grid = []
    for photo, network in zip(photos, outs):
        found = gatys(loss, photo, iterations)
        for n in iterations:
            per_iteration[n].append(found[n][0])
        grid.append((photo, network, found[max(iterations)][1]))
    report["gatys_lbfgs"] = {str(n): [sum(v[i] for v in per_iteration[n]) / len(photos) for i in (0, 1)]
                             for n in iterations}
    (out / "losses.json").write_text(json.dumps(report, indent=2))
    _save_grid(grid, out / "grid.png")
    print(json.dumps(report, indent=2))


def _save_grid(rows, path: Path) -> None:
    """Rows of images (1, 3, H, W) in [-1, 1] of one size each, saved as a PNG grid."""
    import torchvision

    tiles = [(t[0].clamp(-1, 1) + 1) / 2 for row in rows for t in row]
    height = min(t.shape[-2] for t in tiles)
    width = min(t.shape[-1] for t in tiles)
    torchvision.utils.save_image([t[:, :height, :width] for t in tiles], path, nrow=len(rows[0]), padding=2,
                                 pad_value=1.0)


def speed_command(args: argparse.Namespace) -> None:
    """Images per second of the network (fp32 and bf16 autocast, interleaved) and seconds per image of Gatys' method
    (500 x one timed L-BFGS iteration on the run's loss) at each size, with the caller's torch threads."""
    from gan_translate.inference import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, _, _ = load_model(args.run, device="cpu")
    loss = RunLoss(Path(args.run))
    results = {"threads": torch.get_num_threads()}
    for size in [int(s) for s in args.sizes.split(",")]:
        x = torch.rand(1, 3, size, size) * 2 - 1
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        with torch.no_grad():
            for precision in times:  # warm-up
                with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                    model.translate({"A": x})
            for _ in range(args.repeat):  # interleaved: fp32, bf16, fp32, bf16, ...
                for precision, laps in times.items():
                    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                        begin = time.perf_counter()
                        model.translate({"A": x})
                        laps.append(time.perf_counter() - begin)
        lbfgs_laps: list[float] = []
        gatys(loss, x, [args.lbfgs_iterations], lbfgs_laps)
        lbfgs_s = sum(lbfgs_laps) / len(lbfgs_laps)
        row = {p: round(1 / (sum(t) / len(t)), 3) for p, t in times.items()}
        row["gatys_500_s"] = round(500 * lbfgs_s, 1)
        row["speedup_fp32"] = round(row["gatys_500_s"] * row["fp32"])
        results[f"{size}px"] = row
        print(f"{size} px: network {row['fp32']:.3g} img/s fp32, {row['bf16']:.3g} img/s bf16; Gatys 500 L-BFGS "
              f"iterations {row['gatys_500_s']:.4g} s/img; {row['speedup_fp32']}x", flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "speed.json").write_text(json.dumps(results, indent=2))


def multi_command(args: argparse.Namespace) -> None:
    """4 paintings: one conditional network trained 4 x steps vs four single-style networks of ``steps`` each."""
    from gan_translate.inference import load_model

    out = Path(args.out)
    paintings = args.paintings.split(",")
    photos = _photos(args.size)
    report: dict = {"steps_per_style": args.steps, "batch_size": args.batch_size, "size": args.size,
                    "held_out": list(HELD_OUT), "single": {}, "conditional": {}}
    multi_run = _train(_folder(out / "multi", paintings), out / "multi", "run", 4 * args.steps, args)
    multi_loss = RunLoss(multi_run)
    multi, _, _ = load_model(multi_run, device="cpu")
    for index, painting in enumerate(paintings):
        single_run = _train(_folder(out / f"single{index}", [painting]), out / f"single{index}", "run", args.steps,
                            args)
        single, _, _ = load_model(single_run, device="cpu")
        report["single"][painting], _ = _score(single, RunLoss(single_run), photos)
        report["conditional"][painting], _ = _score(multi, multi_loss, photos, index)
    rows = []
    for photo in photos:
        with torch.no_grad():
            outs = [multi.translate({"A": photo, "style_mix": mix})["stylized"]
                    for mix in ([1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 1.0, 0, 0])]
        rows.append((photo, *outs))
    _save_grid(rows, out / "blend.png")
    (out / "multi.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("losses", "multi"):
        p = sub.add_parser(name)
        p.add_argument("--steps", type=int, default=400 if name == "losses" else 100, help="training steps (per style)")
        p.add_argument("--size", type=int, default=128, help="training and evaluation size (longer side)")
        p.add_argument("--batch_size", type=int, default=4)
        p.add_argument("--threads", type=int, default=0, help="torch threads when training (0 = the trainer's choice)")
        p.add_argument("--out", default="/tmp/fast_style")
    sub.choices["losses"].add_argument("--painting", default="brushstrokes.jpg")
    sub.choices["losses"].add_argument("--lbfgs", default="50,100,500", help="L-BFGS iterations to score")
    sub.choices["losses"].add_argument("--reuse", action="store_true", help="score OUT/single as trained (no training)")
    sub.choices["multi"].add_argument("--paintings", default="brushstrokes.jpg,asheville.jpg,goeritz.jpg,"
                                                             "en_campo_gris.jpg")
    p = sub.add_parser("speed")
    p.add_argument("--run", required=True, help="a fast_style run folder (the losses command's OUT/single)")
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--lbfgs_iterations", type=int, default=3, help="L-BFGS iterations timed per size")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--out", default="", help="folder for speed.json")
    args = parser.parse_args()
    {"losses": losses_command, "speed": speed_command, "multi": multi_command}[args.command](args)


if __name__ == "__main__":
    main()
