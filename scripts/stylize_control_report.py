"""Figures and numbers of docs/stylize.md's guided-regions, coarse-to-fine and photorealistic sections.

    python scripts/stylize_control_report.py                    # 256 px, 100 steps (a busy 2-core CPU)
    python scripts/stylize_control_report.py --size 512 --steps 500

Needs ../shared/data/styles (content photos and paintings; nothing from it is written into the repository) and the
Caffe VGG-19 (`pip install gan_translate[style]`). Writes docs/stylize_regions.png and docs/stylize_photo.png and prints
markdown tables: the matting Laplacian's build time, entries and memory at 256, 512 and 700 px, and seconds per
L-BFGS step of each method in fp32 and under bf16 autocast, measured side by side (interleaved).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan_translate import stylize_control as control  # noqa: E402
from gan_translate.cli import main  # noqa: E402
from gan_translate.data.masks import PALETTE, masks_from_regions, read_mask  # noqa: E402
from gan_translate.losses.matting import matting_laplacian  # noqa: E402
from gan_translate.nets.vgg import build_vgg19  # noqa: E402
from gan_translate.stylize import StylizeSettings, load_resized, stylize  # noqa: E402

CONTENT, SKY_STYLE, GROUND_STYLE = "content/chicago.jpg", "style/brushstrokes.jpg", "style/contrast_of_forms.jpg"
PHOTO_STYLE = "content/newyork.jpg"  # a night photo: Luan et al.'s day-to-night kind of pair
PANEL = 200  # panel height in the grids
MAX_BYTES = 300 * 1024


def sky_mask(photo: Path, out: Path) -> Path:
    """Sky (blue in the mask) above a per-column horizon, ground (green) below: the horizon is the first pixel from
    the top that is neither bluish-bright sky nor bright grey cloud, smoothed over neighbouring columns."""
    rgb = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32) / 255
    r, b = rgb[..., 0], rgb[..., 2]
    light = rgb.mean(-1)
    sky = ((b > r + 0.05) & (light > 0.45)) | ((light > 0.75) & (rgb.max(-1) - rgb.min(-1) < 0.12))
    height, width = sky.shape
    first_ground = np.where(~sky.any(0), 0, np.argmax(~sky, axis=0))  # the first non-sky row of each column
    first_ground[sky.all(0)] = height
    horizon = np.array([np.median(first_ground[max(0, x - 4): x + 5]) for x in range(width)]).astype(int)
    mask = np.zeros((height, width, 3), np.uint8)
    rows = np.arange(height)[:, None]
    mask[rows < horizon[None]] = (0, 0, 255)
    mask[rows >= horizon[None]] = (0, 255, 0)
    Image.fromarray(mask).save(out)
    return out


def panel(path_or_image, label: str) -> Image.Image:
    img = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image).convert("RGB")
    img = img.resize((max(1, round(img.width * PANEL / img.height)), PANEL), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (img.width, PANEL + 16), "white")
    out.paste(img, (0, 16))
    ImageDraw.Draw(out).text((3, 2), label, fill="black")
    return out


def grid(panels: list[Image.Image], path: Path) -> None:
    sheet = Image.new("RGB", (sum(p.width for p in panels) + 4 * (len(panels) - 1), panels[0].height), "white")
    x = 0
    for p in panels:
        sheet.paste(p, (x, 0))
        x += p.width + 4
    sheet.save(path, optimize=True)
    if path.stat().st_size > MAX_BYTES:  # docs figures stay small: 256 colours (median cut) instead of true colour
        sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def run_cli(args: list[str]) -> float:
    start = time.perf_counter()
    code = main(["stylize", "--vgg", "caffe", "--quiet", *args])
    if code != 0:
        raise SystemExit(f"stylize failed ({code}): {args}")
    return time.perf_counter() - start


def laplacian_table(photo: Path) -> None:
    print("\n| longer side | pixels | build (s) | non-zeros | non-zeros / pixel | memory (MB, COO) |")
    print("|---|---|---|---|---|---|")
    for size in (256, 512, 700):
        img = (load_resized(photo, size)[0] + 1) / 2
        start = time.perf_counter()
        lap = matting_laplacian(img)
        seconds = time.perf_counter() - start
        n, nnz = img.shape[1] * img.shape[2], lap._nnz()
        memory = nnz * (lap.values().element_size() + 2 * lap.indices().element_size()) / 2**20
        print(f"| {size} | {img.shape[2]}x{img.shape[1]} | {seconds:.1f} | {nnz:,} | {nnz / n:.1f} | {memory:.0f} |")


def regions_example(data: Path, tmp: Path, docs: Path, size: int, steps: int, style_weight: float) -> None:
    content = data / CONTENT
    mask = sky_mask(content, tmp / "sky_mask.png")
    common = ["--content", str(content), "--image_size", str(size), "--steps", str(steps), "--style_weight",
              str(style_weight)]
    both = [str(data / SKY_STYLE), str(data / GROUND_STYLE)]
    blended = run_cli([*common, "--style", *both, "--out", str(tmp / "blended.png")])
    guided = run_cli([*common, "--style", *both, "--content_mask", str(mask), "--style_regions", "blue", "green",
                      "--out", str(tmp / "guided.png")])
    print(f"two regions at {size} px, {steps} steps: unguided {blended:.0f} s, guided {guided:.0f} s (whole command)")
    grid([panel(content, "content"), panel(mask, "mask: sky blue, ground green"),
          panel(data / SKY_STYLE, "style for the sky"), panel(data / GROUND_STYLE, "style for the ground"),
          panel(tmp / "blended.png", "both styles, no mask"), panel(tmp / "guided.png", "--style_regions blue green")],
         docs / "stylize_regions.png")


def photo_example(data: Path, tmp: Path, docs: Path, size: int, steps: int) -> None:
    content, style = data / CONTENT, data / PHOTO_STYLE
    vgg = build_vgg19("", last_layer="relu5_1", pool="max", kind="caffe")
    settings = control.photorealistic_settings(StylizeSettings(image_size=size, steps=steps, save_every=steps))
    settings.matting_weight = control.default_matting_weight(True)
    stages: list[torch.Tensor] = []
    start = time.perf_counter()
    result = control.run_controlled(vgg, settings, control.Controls(photorealistic=True), str(content), [str(style)],
                                    progress=False, callback=lambda step, image: stages.append(image.clone()))
    seconds = time.perf_counter() - start
    print(f"photorealistic at {size} px, 2 x {steps} steps: {seconds:.0f} s; loss {result.losses[0]:.4g} -> "
          f"{result.losses[-1]:.4g}; final parts {result.parts}")

    def pil(t: torch.Tensor) -> Image.Image:
        return Image.fromarray(((t[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())

    grid([panel(content, "content"), panel(style, "style photo"), panel(pil(stages[0]), "stage 1: no matting term"),
          panel(pil(stages[-1]), "stage 2: --photorealistic")], docs / "stylize_photo.png")


def speed_table(data: Path, tmp: Path, size: int, steps: int, repeats: int) -> None:
    """Seconds per L-BFGS step (the objective's setup and the Laplacian's build left out), fp32 and bf16 autocast
    interleaved in one process on the same images."""
    content = load_resized(data / CONTENT, size)
    sky, ground, night = (load_resized(data / p, size) for p in (SKY_STYLE, GROUND_STYLE, PHOTO_STYLE))
    mask = read_mask(tmp / "sky_mask.png", Image.open(data / CONTENT).size)
    content_guides = torch.nn.functional.interpolate(mask[None], size=content.shape[-2:], mode="nearest")[0]
    regions = masks_from_regions(["blue", "green"], [(s.shape[-1], s.shape[-2]) for s in (sky, ground)])
    vgg_avg = build_vgg19("", last_layer="relu5_1", pool="avg", kind="caffe")
    vgg_max = build_vgg19("", last_layer="relu5_1", pool="max", kind="caffe")
    photo = control.photorealistic_settings(StylizeSettings(image_size=size, steps=steps))
    photo.matting_weight = control.default_matting_weight(True)
    photo.tv_weight = control.luan_tv_weight(*content.shape[-2:])
    laplacian = matting_laplacian((content[0] + 1) / 2)
    plain = StylizeSettings(image_size=size, steps=steps)
    cases = {
        "plain gram": lambda: stylize(vgg_avg, content, [sky], plain, progress=False),
        "guided regions (2 styles)": lambda: stylize(vgg_avg, content, [sky, ground], plain, progress=False,
                                                     guides=(content_guides, regions)),
        "--photorealistic, stage 2 (matting)": lambda: stylize(vgg_max, content, [night], photo, progress=False,
                                                               laplacian=laplacian),
    }
    print(f"\n| method ({size} px, {steps} steps) | fp32 s/step | bf16 autocast s/step | fp32 loss | bf16 loss |")
    print("|---|---|---|---|---|")
    for name, run in cases.items():
        times: dict[str, list[float]] = {}
        finals: dict[str, float] = {}
        for precision in ("fp32", "bf16") * repeats:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                result = run()
            times.setdefault(precision, []).append((time.perf_counter() - start) / steps)
            finals[precision] = result.losses[-1]
        print(f"| {name} | {min(times['fp32']):.2f} | {min(times['bf16']):.2f} | {finals['fp32']:.4g} | "
              f"{finals['bf16']:.4g} |")


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "styles")
    p.add_argument("--docs", type=Path, default=REPO / "docs")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--speed_steps", type=int, default=5)
    p.add_argument("--style_weight", type=float, default=100.0, help="of the two-region example")
    p.add_argument("--speed_repeats", type=int, default=2, help="fp32/bf16 pairs per method (the fastest counts)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--only", nargs="+", default=["laplacian", "regions", "photo", "speed"])
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    assert set(PALETTE) >= {"blue", "green"}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        sky_mask(args.data / CONTENT, tmp / "sky_mask.png")
        read_mask(tmp / "sky_mask.png", Image.open(args.data / CONTENT).size)  # the mask passes the CLI's checks
        if "laplacian" in args.only:
            laplacian_table(args.data / CONTENT)
        if "regions" in args.only:
            regions_example(args.data, tmp, args.docs, args.size, args.steps, args.style_weight)
        if "photo" in args.only:
            photo_example(args.data, tmp, args.docs, args.size, args.steps)
        if "speed" in args.only:
            speed_table(args.data, tmp, args.size, args.speed_steps, args.speed_repeats)


if __name__ == "__main__":
    main_()
