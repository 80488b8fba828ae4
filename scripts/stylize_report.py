"""Figures for docs/stylize.md "Losses": each stylize loss beside the Gram-only baseline on one content photo and one
painting -- the picture grid, the loss curves and the seconds per image in fp32 and bf16.

    python scripts/stylize_report.py --content ../shared/data/styles/content/chicago.jpg \\
        --style ../shared/data/styles/style/picasso_self_portrait.jpg --image_size 256 --out_dir docs

Writes OUT_DIR/stylize_losses.png (content, style, one column per method; < 300 KB), OUT_DIR/stylize_loss_curves.png
(the total loss of every method against the iteration, log scale, each divided by its own start) and prints a
Markdown table (method, command options, seconds per image fp32, bf16) and a JSON line with all numbers. Each
method's result is kept in OUT_DIR/stylize_report_parts/ (its image and a JSON of its numbers) and the figures show
every method found there: invocations with different --methods (in parallel or one after the other) build one grid.

Every method runs with stylize's defaults plus its own options (METHODS). fp32: the whole run is timed. bf16: the
same run under CPU autocast (VGG convolutions in bfloat16), timed over --bf16_steps iterations and scaled to --steps,
unless --bf16_steps equals --steps. Timings are wall clock on whatever else the machine runs: compare them within one
invocation only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan_translate.data.images import tensor_to_pil  # noqa: E402
from gan_translate.nets.vgg import build_vgg19  # noqa: E402
from gan_translate.stylize import (  # noqa: E402
    HISTOGRAM_WEIGHT,
    LAPLACIAN_WEIGHT,
    StylizeSettings,
    finish,
    load_resized,
    stylize,
)

# label -> (StylizeSettings changes, the options that say the same on the command line)
METHODS: dict[str, tuple[dict, str]] = {
    "Gram (Gatys)": ({}, ""),
    "Gram + histogram": ({"style_losses": {"gram": 1.0, "histogram": HISTOGRAM_WEIGHT}},
                         f"--style_loss gram:1,histogram:{HISTOGRAM_WEIGHT:g}"),
    "feature reshuffle": ({"style_losses": {"reshuffle": 1.0}}, "--style_loss reshuffle"),
    "Gram + Laplacian": ({"laplacian_weight": LAPLACIAN_WEIGHT}, f"--laplacian_weight {LAPLACIAN_WEIGHT:g}"),
}
COLOURS = ((0, 0, 0), (200, 60, 40), (40, 110, 200), (40, 160, 70), (150, 60, 170))
TILE_HEIGHT = 200


def _run(vgg, content, style, settings: StylizeSettings, bf16: bool) -> tuple[torch.Tensor, list[float], float]:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        result = stylize(vgg, content, [style], settings, progress=False)
    return result.image, result.losses, time.perf_counter() - start


def _tile(image: Image.Image, label: str) -> Image.Image:
    image = image.convert("RGB")
    image = image.resize((round(image.width * TILE_HEIGHT / image.height), TILE_HEIGHT), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (image.width, TILE_HEIGHT + 18), "white")
    canvas.paste(image, (0, 18))
    ImageDraw.Draw(canvas).text((4, 3), label, fill=(0, 0, 0))
    return canvas


def _grid(tiles: list[Image.Image], path: Path) -> None:
    width = sum(t.width for t in tiles) + 4 * (len(tiles) - 1)
    grid = Image.new("RGB", (width, tiles[0].height), "white")
    x = 0
    for tile in tiles:
        grid.paste(tile, (x, 0))
        x += tile.width + 4
    # an adaptive palette keeps the PNG small (the docs' figures stay under 300 KB) at little visible cost
    grid.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        path, optimize=True)


def _curves(curves: dict[str, list[float]], path: Path, title: str) -> None:
    """Loss / start loss against the iteration, log10 scale, drawn with PIL (no plotting library needed)."""
    width, height, left, bottom, top = 640, 360, 60, 40, 30
    plot = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(plot)
    ratios = {k: [max(v / c[0], 1e-6) for v in c] for k, c in curves.items()}
    low = math.floor(math.log10(min(min(r) for r in ratios.values())))
    steps = max(len(c) for c in curves.values()) - 1
    x_of = lambda i: left + (width - left - 20) * i / max(steps, 1)  # noqa: E731
    # L-BFGS without a line search may overshoot in its first steps: those points are drawn at the frame's top
    y_of = lambda r: top + (height - top - bottom) * max(0.0, -math.log10(r)) / max(-low, 1)  # noqa: E731
    draw.rectangle((left, top, width - 20, height - bottom), outline=(120, 120, 120))
    for decade in range(low, 1):
        y = y_of(10.0 ** decade)
        draw.line((left, y, width - 20, y), fill=(225, 225, 225))
        draw.text((8, y - 6), f"1e{decade}", fill=(60, 60, 60))
    for i in range(0, steps + 1, max(1, steps // 5)):
        draw.text((x_of(i) - 8, height - bottom + 6), str(i), fill=(60, 60, 60))
    draw.text((width // 2 - 60, height - 16), "L-BFGS iteration", fill=(0, 0, 0))
    draw.text((left, 8), title, fill=(0, 0, 0))
    for n, (label, ratio) in enumerate(ratios.items()):
        colour = COLOURS[n % len(COLOURS)]
        draw.line([(x_of(i), y_of(r)) for i, r in enumerate(ratio)], fill=colour, width=2)
        draw.text((width - 190, top + 8 + 14 * n), label, fill=colour)
    plot.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--content", required=True)
    p.add_argument("--style", required=True)
    p.add_argument("--image_size", type=int, default=StylizeSettings().image_size)
    p.add_argument("--steps", type=int, default=StylizeSettings().steps)
    p.add_argument("--bf16_steps", type=int, default=10, help="iterations timed under bf16 autocast (0 = skip)")
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS), metavar="LABEL",
                   help="methods to run (default: all; none: only redraw the figures from the kept results)")
    p.add_argument("--vgg", default="caffe")
    p.add_argument("--out_dir", default=str(REPO / "docs"))
    args = p.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    vgg = build_vgg19("", last_layer="relu5_1", pool="avg", kind=args.vgg) if args.methods else None
    content = load_resized(args.content, args.image_size)
    style = load_resized(args.style, args.image_size)
    parts = out_dir / "stylize_report_parts"
    parts.mkdir(exist_ok=True)
    for label in args.methods:
        changes, options = METHODS[label]
        settings = StylizeSettings(image_size=args.image_size, steps=args.steps, **changes)
        image, losses, seconds = _run(vgg, content, style, settings, bf16=False)
        row = {"method": label, "options": options, "fp32_s": round(seconds, 1), "size": list(content.shape[-2:]),
               "steps": args.steps, "loss_start": losses[0], "loss_end": losses[-1]}
        if args.bf16_steps:
            short = StylizeSettings(image_size=args.image_size, steps=min(args.bf16_steps, args.steps), **changes)
            _, _, bf16_seconds = _run(vgg, content, style, short, bf16=True)
            row["bf16_s"] = round(bf16_seconds * args.steps / short.steps, 1)
        slug = "".join(ch if ch.isalnum() else "_" for ch in label)
        tensor_to_pil(finish(image, content, "none")[0]).save(parts / f"{slug}.png")
        (parts / f"{slug}.json").write_text(json.dumps({**row, "losses": losses}))
        print(json.dumps(row), flush=True)
    tiles = [_tile(tensor_to_pil(content[0]), "content"), _tile(tensor_to_pil(style[0]), "style")]
    curves: dict[str, list[float]] = {}
    rows: list[dict] = []
    for label in METHODS:  # every method done so far, in the table's order
        slug = "".join(ch if ch.isalnum() else "_" for ch in label)
        if not (parts / f"{slug}.json").is_file():
            continue
        row = json.loads((parts / f"{slug}.json").read_text())
        curves[label] = row.pop("losses")
        rows.append(row)
        with Image.open(parts / f"{slug}.png") as image:
            tiles.append(_tile(image, label))
    _grid(tiles, out_dir / "stylize_losses.png")
    _curves(curves, out_dir / "stylize_loss_curves.png",
            f"total loss / its start, {Path(args.content).name} + {Path(args.style).name}, {args.image_size} px")
    print("| method | options | s / image fp32 | s / image bf16 |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | `{row['options']}` | {row['fp32_s']} | {row.get('bf16_s', '-')} |")
    print(json.dumps({"threads": torch.get_num_threads(), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
