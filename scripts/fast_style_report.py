"""Figures for the fast style networks: a single-style network against stylize (Gatys, L-BFGS) on held-out photos, the
speed of both, and a 4-style conditional network against four single-style networks.

    python scripts/fast_style_report.py losses --steps 2000 --size 128 --out docs/fast_style     # ~25 min CPU at 128 px
    python scripts/fast_style_report.py speed --sizes 256,512,1024 --run DIR/single
    python scripts/fast_style_report.py multi --steps 500 --size 128 --out docs/fast_style

"losses" trains ``fast_style`` (train.py, the Caffe VGG-19 of the style extra, Johnson's pinned weights) on
``../shared/data/styles/content`` minus the held-out photos with one painting, saving checkpoints at step 0+1, 10% and
the end; every checkpoint's content and style loss on the held-out photos is computed with the run's own loss (same
VGG, layers, Gram normalisation, weights), and so are stylize's results after 50, 100 and 500 L-BFGS iterations from
the content image (stylize optimises its own Gram loss on the same VGG and layers; every number is measured with the
run's loss). It writes losses.json and grid.png
(photo | network | stylize 500). The paper's run is 40,000 steps at batch 4 on MS-COCO at 256 px.
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


def _train(root: Path, out: Path, name: str, steps: int, size: int, *extra: str) -> Path:
    save = max(1, steps // 10)
    cmd = [sys.executable, str(REPO / "train.py"), "--model", "fast_style", "--dataroot", str(root),
           "--checkpoints_dir", str(out), "--name", name, "--max_steps", str(steps), "--load_size", str(size),
           "--crop_size", str(size), "--style_size", str(size * 2), "--save_latest_freq", str(save),
           "--keep_last", "20", "--num_threads", "0", "--num_cpu_threads", "1", "--display_freq", str(steps), *extra]
    subprocess.run(cmd, check=True)
    return out / name


def _evaluator(run: Path, size: int):
    """The run's model in training form (its VGG, targets and weights) and a function image -> (content, style)."""
    from gan_translate.config import load_options
    from gan_translate.models.fast_style import FastStyleModel, FastStyleOptions

    options = load_options(FastStyleOptions, run / "config.yaml")
    model = FastStyleModel(options)

    @torch.no_grad()
    def losses(photo: torch.Tensor, image: torch.Tensor) -> tuple[float, float]:
        c = model._features(photo, model._content_layers)
        f = model._features(image, model._content_layers + model._style_layers)
        content = sum(torch.nn.functional.mse_loss(f[k], c[k]) for k in model._content_layers)
        labels = torch.zeros(1, dtype=torch.long)
        style = sum(torch.nn.functional.mse_loss(model.gram(f[k]), model._target(labels, i, f[k].shape[1]))
                    for i, k in enumerate(model._style_layers))
        return float(content * options.content_weight), float(style * options.style_weight)

    return model, losses


def _photos(size: int) -> list[torch.Tensor]:
    from gan_translate.stylize import load_resized

    return [load_resized(DATA / "content" / name, size) for name in HELD_OUT]


def losses_command(args: argparse.Namespace) -> None:
    from gan_translate.inference import load_model
    from gan_translate.nets.vgg import build_vgg19
    from gan_translate.stylize import StylizeSettings, stylize

    out = Path(args.out)
    root = _folder(out, [args.painting])
    run = _train(root, out, "single", args.steps, args.size)
    model, losses = _evaluator(run, args.size)
    photos = _photos(args.size)
    report: dict = {"steps": args.steps, "size": args.size, "painting": args.painting, "network": {}, "stylize": {}}
    for ckpt in sorted(run.glob("step_*")):
        net, _, _ = load_model(ckpt, device="cpu")
        with torch.no_grad():
            outs = [net.translate({"A": p})["stylized"] for p in photos]
        values = [losses(p, o) for p, o in zip(photos, outs)]
        report["network"][ckpt.name] = [sum(v[i] for v in values) / len(values) for i in (0, 1)]
    o = model.opt
    vgg = build_vgg19("", last_layer="relu4_3", pool="max", kind="caffe")
    style = _photos_style(args.painting, args.size * 2)
    grid = []
    for photo in photos:
        images = {}
        settings = StylizeSettings(image_size=args.size, steps=500, content_layers=tuple(o.content_layers.split(",")),
                                   style_layers=tuple(o.style_layers.split(",")), pool="max", save_every=50)
        stylize(vgg, photo, [style], settings, progress=False,
                callback=lambda step, image, store=images: store.__setitem__(step, image.detach().clone()))
        for step in (50, 100, 500):
            if step in images:
                report["stylize"].setdefault(str(step), []).append(losses(photo, images[step]))
        grid.append((photo, net.translate({"A": photo})["stylized"], images.get(500, photo)))
    report["stylize"] = {k: [sum(x[i] for x in v) / len(v) for i in (0, 1)] for k, v in report["stylize"].items()}
    (out / "losses.json").write_text(json.dumps(report, indent=2))
    _save_grid(grid, out / "grid.png")
    print(json.dumps(report, indent=2))


def _photos_style(name: str, size: int) -> torch.Tensor:
    from gan_translate.stylize import load_resized

    return load_resized(DATA / "style" / name, size)


def _save_grid(rows, path: Path) -> None:
    import torchvision

    tiles = []
    for row in rows:
        height = min(t.shape[-2] for t in row)
        width = min(t.shape[-1] for t in row)
        tiles += [(t[0, :, :height, :width].clamp(-1, 1) + 1) / 2 for t in row]
    torchvision.utils.save_image(tiles, path, nrow=3, padding=2)


def speed_command(args: argparse.Namespace) -> None:
    """Images per second of the network (fp32, bf16), interleaved, at each size; one thread per the caller's
    torch settings."""
    from gan_translate.inference import load_model

    model, _, _ = load_model(args.run, device="cpu")
    for size in [int(s) for s in args.sizes.split(",")]:
        x = torch.rand(1, 3, size, size) * 2 - 1
        result = {}
        for _ in range(2):  # interleaved: fp32, bf16, fp32, bf16
            for precision in ("fp32", "bf16"):
                with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                    model.translate({"A": x})
                    start = time.perf_counter()
                    for _ in range(args.repeat):
                        model.translate({"A": x})
                    result[precision] = args.repeat / (time.perf_counter() - start)
        print(f"{size} px: {result['fp32']:.2f} img/s fp32, {result['bf16']:.2f} img/s bf16")


def multi_command(args: argparse.Namespace) -> None:
    """4 paintings: one conditional network trained 4 x steps vs four single-style networks of ``steps`` each."""
    out = Path(args.out)
    paintings = args.paintings.split(",")
    report: dict = {"steps_per_style": args.steps, "single": {}, "multi": {}}
    multi = _train(_folder(out / "multi", paintings), out / "multi", "run", 4 * args.steps, args.size)
    for index, painting in enumerate(paintings):
        single = _train(_folder(out / f"single{index}", [painting]), out / f"single{index}", "run", args.steps,
                        args.size)
        _, losses = _evaluator(single, args.size)
        from gan_translate.inference import load_model

        photos = _photos(args.size)
        for label, run, style in (("single", single, 0), ("multi", multi, index)):
            net, _, _ = load_model(run, device="cpu")
            net.set_style(style)
            with torch.no_grad():
                values = [losses(p, net.translate({"A": p})["stylized"]) for p in photos]
            report[label][painting] = [sum(v[i] for v in values) / len(values) for i in (0, 1)]
    (out / "multi.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("losses")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--painting", default="brushstrokes.jpg")
    p.add_argument("--out", default="docs/fast_style")
    p = sub.add_parser("speed")
    p.add_argument("--run", required=True)
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--repeat", type=int, default=3)
    p = sub.add_parser("multi")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--paintings", default="brushstrokes.jpg,asheville.jpg,goeritz.jpg,en_campo_gris.jpg")
    p.add_argument("--out", default="docs/fast_style")
    args = parser.parse_args()
    {"losses": losses_command, "speed": speed_command, "multi": multi_command}[args.command](args)


if __name__ == "__main__":
    main()
