"""Figures for TPFR (issue 4): peer-layer memory, training step time, style-code separation of a run, a result grid.

    python scripts/tpfr_report.py memory --size 256 --size 512            # peak RSS of the peer layer (subprocesses)
    python scripts/tpfr_report.py steptime --size 128 --size 256 --ngf 64 # seconds per training step after warm-up
    python scripts/tpfr_report.py probe --run checkpoints/NAME [--tensorboard]   # intra/inter style-code distances
    python scripts/tpfr_report.py grid --run checkpoints/NAME --content DIR --style DIR --out grid.png

"probe" encodes a fixed probe set -- 4 seeded crops of every style image of the run's dataroot/style (each image or
subfolder one class) and of its photos -- with every kept checkpoint's encoder and reports the mean TPFR code distance
(SmoothL1 summed over channels, averaged over pixels) between crops of one class (intra) and of different classes
(inter), for the style classes and photo vs style. With --tensorboard it also writes them as probe/* scalars into the
run's logs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------------
# memory of the peer layer
# ---------------------------------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _memory_child(size: int, chunk: int, train: bool, dense: bool) -> dict:
    """Runs in a fresh process: the peer layer at paper width on one image and one style image of ``size`` px (latent
    size / 4); peak RSS above the RSS after the inputs were made."""
    from gan_translate.nets.peer import PeerRegularization

    torch.manual_seed(0)
    side = size // 4
    layer = PeerRegularization(256, 512, k=5, chunk=chunk).train(train)
    latents = [torch.randn(1, c, side, side, requires_grad=train) for c in (256, 512, 256, 512)]
    before = _rss_mb()
    start = time.perf_counter()
    if dense:  # the authors' formulation: full (pixels x peers) distance and score matrices, masked softmax
        q, p = latents[0][0].flatten(1).t(), latents[2][0].flatten(1).t()
        with torch.set_grad_enabled(train):
            att = layer.style_attention
            e = att.scores(q, "query")[:, None] + att.scores(p, "peer")[None, :]
            dist = torch.cdist(q, p)
            kth = dist.topk(5, dim=1, largest=False).values[:, -1:]
            out = torch.softmax(torch.nn.functional.softplus(e) + (dist > kth).float() * -1e9, 1) @ latents[3][0] \
                .flatten(1).t()
            if train:
                out.sum().backward()
    else:
        with torch.set_grad_enabled(train):
            new_c, new_s = layer(*latents)
            if train:
                (new_c.sum() + new_s.sum()).backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"size": size, "latent": f"{side}x{side}", "pixels": side * side, "chunk": chunk, "train": train,
            "dense_stage1_only": dense, "peak_extra_mb": round(peak - before, 1), "seconds": round(seconds, 2)}


def cmd_memory(args: argparse.Namespace) -> None:
    for size in args.size:
        for train in ([False, True] if args.train else [False]):
            for dense in ([False, True] if args.dense else [False]):
                code = (f"import sys, json; sys.path.insert(0, {str(REPO / 'scripts')!r}); import tpfr_report as r; "
                        f"print(json.dumps(r._memory_child({size}, {args.chunk}, {train}, {dense})))")
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
                print(proc.stdout.strip() or proc.stderr.strip().splitlines()[-1], flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# step time
# ---------------------------------------------------------------------------------------------------------------------


def cmd_steptime(args: argparse.Namespace) -> None:
    from gan_translate.models import create_model
    from gan_translate.models.base import StepContext
    from gan_translate.models.tpfr import TPFROptions

    device = torch.device(args.device)
    for size in args.size:
        torch.manual_seed(0)
        options = TPFROptions(model="tpfr", ngf=args.ngf, ndf=args.ngf, n_blocks=args.n_blocks, crop_size=size,
                              batch_size=args.batch_size)
        model = create_model(options).to(device)
        batch = {k: torch.rand(args.batch_size, 3, size, size, device=device) * 2 - 1
                 for k in ("A", "A2", "style", "style2")}
        batch["style_label"] = torch.arange(args.batch_size, device=device)
        ctx = StepContext(step=0, epoch=0, backward=lambda loss: loss.backward())
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        for _ in range(args.warmup):
            model.training_step(batch, ctx)
        sync()
        times, cpu_times = [], []
        for _ in range(args.steps):
            start, cpu_start = time.perf_counter(), time.process_time()
            model.training_step(batch, ctx)
            sync()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        extra = {}
        if device.type == "cuda":
            extra["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
            torch.cuda.reset_peak_memory_stats()
        print(json.dumps({"size": size, "ngf": args.ngf, "n_blocks": args.n_blocks, "batch": args.batch_size,
                          "device": str(device), "threads": torch.get_num_threads(),
                          "seconds_per_step": [round(t, 3) for t in times],
                          "median": round(sorted(times)[len(times) // 2], 3),
                          # CPU seconds of this process: on a shared machine, closer to what the step costs alone
                          "cpu_seconds_per_step": [round(t, 3) for t in cpu_times], **extra}), flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# style-code separation on a fixed probe set
# ---------------------------------------------------------------------------------------------------------------------


def _load(run: Path, ckpt: Path, training: bool = False):
    from gan_translate.config import load_options
    from gan_translate.engine.checkpoint import load_net
    from gan_translate.models import create_model
    from gan_translate.models.tpfr import TPFROptions

    options = load_options(TPFROptions, ckpt / "config.yaml")
    model = create_model(options, training=training).eval()
    for name in model.inference_nets:
        load_net(model.nets[name], ckpt, name)
    return model, options


def _probe_set(options, crops: int, style_root: Path | None, content_root: Path | None):
    """(images (M, 3, s, s), labels: class index, -1 for photos), seeded crops of every image."""
    from types import SimpleNamespace

    from gan_translate.data import build_transform, get_params, item_rng, list_images, load_image
    from gan_translate.data.styles import style_classes

    root = Path(options.dataroot)
    style_root = style_root or root / "style"
    content_root = content_root or root / "content"
    opt = SimpleNamespace(preprocess=options.preprocess, load_size=options.load_size, crop_size=options.crop_size,
                          no_flip=True)
    images, labels = [], []
    sources = [(label, paths) for label, (_, paths) in enumerate(style_classes(style_root))]
    sources.append((-1, list_images(content_root)))
    for label, paths in sources:
        for index, path in enumerate(paths):
            img = load_image(path, 3)
            for crop in range(crops):
                rng = item_rng(1234, crop, index)
                images.append(build_transform(opt, get_params(opt, img.size, rng), grayscale=False)(img))
                labels.append(label)
    return torch.stack(images), torch.tensor(labels)


@torch.no_grad()
def probe_distances(model, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    from gan_translate.models.tpfr import code_distance

    codes = torch.cat([model.encode(images[i: i + 16])["style"] for i in range(0, len(images), 16)])
    m = len(codes)
    first, second = torch.triu_indices(m, m, offset=1)
    dist = torch.cat([code_distance(codes[first[i: i + 256]], codes[second[i: i + 256]])
                      for i in range(0, len(first), 256)])
    a, b = labels[first], labels[second]
    styles = (a >= 0) & (b >= 0)
    kinds = {"style_intra": styles & (a == b), "style_inter": styles & (a != b),
             "photo_intra": (a < 0) & (b < 0), "photo_vs_style": (a < 0) != (b < 0)}
    out = {k: dist[mask].mean().item() for k, mask in kinds.items() if mask.any()}
    out["style_inter_over_intra"] = out["style_inter"] / out["style_intra"]
    return out


def cmd_probe(args: argparse.Namespace) -> None:
    from gan_translate.engine.checkpoint import list_checkpoints, load_state

    run = Path(args.run)
    ckpts = sorted(list_checkpoints(run), key=lambda c: load_state(c)["progress"]["step"])
    writer = None
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "logs" / "probe"))
    if not ckpts:
        raise SystemExit(f"no checkpoints in {run}")
    _, options = _load(run, ckpts[0])
    probe = _probe_set(options, args.crops, Path(args.style_dir) if args.style_dir else None,
                       Path(args.content_dir) if args.content_dir else None)
    # step 0: the initial weights, made as the trainer makes them (seeded; E is the first network built)
    from gan_translate.models import create_model

    torch.manual_seed(options.seed)
    models = [("init", 0, create_model(options, training=False).eval())]
    seen = set()
    for ckpt in ckpts:
        step = load_state(ckpt)["progress"]["step"]
        if step not in seen:
            seen.add(step)
            models.append((ckpt.name, step, _load(run, ckpt)[0]))
    for name, step, model in models:
        result = probe_distances(model, *probe)
        print(json.dumps({"checkpoint": name, "step": step, **{k: round(v, 4) for k, v in result.items()}}),
              flush=True)
        if writer is not None:
            for key, value in result.items():
                writer.add_scalar(f"probe/{key}", value, step)
    if writer is not None:
        writer.close()


# ---------------------------------------------------------------------------------------------------------------------
# content | style | result grid
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def cmd_grid(args: argparse.Namespace) -> None:
    import torchvision

    from gan_translate.data import list_images, load_image, pil_to_tensor
    from gan_translate.engine.checkpoint import find_checkpoint

    run = Path(args.run)
    model, _ = _load(run, find_checkpoint(run, args.epoch))
    size = args.size

    def load(path: str) -> torch.Tensor:
        return pil_to_tensor(load_image(path, 3).resize((size, size)))[None]

    contents = list_images(args.content)[: args.num_content]
    tiles = []
    for style_path in list_images(args.style):
        style = load(style_path)
        for path in contents:
            content = load(path)
            tiles += [content[0], style[0], model.translate({"A": content, "style": style})["stylized"][0]]
    grid = torchvision.utils.make_grid([(t + 1) / 2 for t in tiles], nrow=3 * args.per_row, padding=2)
    torchvision.utils.save_image(grid.clamp(0, 1), args.out)
    print(f"wrote {args.out}: {len(tiles) // 3} content | style | result triples")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("memory")
    p.add_argument("--size", type=int, action="append", required=True)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--train", action="store_true", help="also forward + backward in training mode")
    p.add_argument("--dense", action="store_true", help="also the dense formulation (stage 1 only) for comparison")
    p.set_defaults(func=cmd_memory)
    p = sub.add_parser("steptime")
    p.add_argument("--size", type=int, action="append", required=True)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--n_blocks", type=int, default=6)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_steptime)
    p = sub.add_parser("probe")
    p.add_argument("--run", required=True)
    p.add_argument("--crops", type=int, default=4)
    p.add_argument("--style_dir", default="")
    p.add_argument("--content_dir", default="")
    p.add_argument("--tensorboard", action="store_true")
    p.set_defaults(func=cmd_probe)
    p = sub.add_parser("grid")
    p.add_argument("--run", required=True)
    p.add_argument("--epoch", default="latest")
    p.add_argument("--content", required=True)
    p.add_argument("--style", required=True)
    p.add_argument("--num_content", type=int, default=4)
    p.add_argument("--per_row", type=int, default=2)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_grid)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
