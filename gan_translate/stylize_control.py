"""The controls of ``stylize`` that run it more than once or with extra inputs: guided regions (masks), the
coarse-to-fine schedule, the scale-control style image and Luan et al.'s two-stage photorealistic recipe.

    # each region of the photo takes the style of the same region of the painting (masks: colour-coded images)
    python -m gan_translate stylize --content city.jpg --style painting.jpg --content_mask city_mask.png \\
        --style_masks painting_mask.png
    # one style image per region: the sky (blue in the mask) from one painting, the ground (green) from another
    python -m gan_translate stylize --content city.jpg --style sky.jpg ground.jpg --content_mask city_mask.png \\
        --style_regions blue green
    # Gatys et al. 2017's high-resolution procedure: 500 steps at 512 px, upsample, 200 steps at 1024 px
    python -m gan_translate stylize --content city.jpg --style painting.jpg --scales 512,1024 --scale_steps 500,200
    # a new style image: the coarse painting's layout with the fine image's brush strokes, then used as the style
    python -m gan_translate stylize --content city.jpg --style coarse.jpg --fine_style fine.jpg
    # Deep Photo Style Transfer (Luan et al. 2017): two stages, the second with the matting Laplacian
    python -m gan_translate stylize --content photo.jpg --style other_photo.jpg --photorealistic

References: Gatys, Ecker, Bethge, Hertzmann, Shechtman, "Controlling Perceptual Factors in Neural Style Transfer",
CVPR 2017 (guided Gram matrices, guide propagation, 512 -> 1024 px refinement, scale control); Luan, Paris,
Shechtman, Bala, "Deep Photo Style Transfer", CVPR 2017 (matting Laplacian regulariser, segmentation-augmented style
loss, two stages of 1000 L-BFGS iterations each).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from gan_translate.config import comma_list
from gan_translate.data.images import load_image
from gan_translate.data.masks import PALETTE, check_regions, masks_from_regions, read_mask
from gan_translate.errors import UserError
from gan_translate.losses.guided import GUIDE_MODES
from gan_translate.losses.matting import matting_laplacian
from gan_translate.nets.vgg import VGG19
from gan_translate.nets.vgg_weights import CAFFE_SCALE
from gan_translate.stylize import MIN_SIZE, StylizeResult, StylizeSettings, load_resized, prepare_images, stylize

__all__ = ["Controls", "add_control_options", "combine_scales", "controls_from_args", "photorealistic_settings",
           "run_controlled", "scale_schedule"]

FINE_STYLE_LAYERS = ("relu1_1", "relu2_1")  # Gatys et al.'s scale control at 512 px (up to relu4_1 at 1024 px)
LATER_SCALE_SHARE = 0.4  # Gatys et al.: 500 iterations at 512 px, then 200 at 1024 px
# Luan et al.'s weights, on their scale (Caffe VGG-19 on 0..255 pixels, Gram / (C H W) with a mean over C^2 entries):
# content 5, style 100 per layer, TV 1e-3 (on half the summed squared differences), matting 1e4 (on V in [0, 1]).
LUAN_CONTENT, LUAN_STYLE, LUAN_TV, LUAN_MATTING = 5.0, 100.0, 1e-3, 1e4


@dataclass
class Controls:
    """What the command line asked for beyond one plain ``stylize`` run."""

    content_mask: str = ""
    style_masks: tuple[str, ...] = ()
    style_regions: tuple[str, ...] = ()
    scales: tuple[int, ...] = ()
    scale_steps: tuple[int, ...] = ()
    fine_style: str = ""
    fine_style_layers: tuple[str, ...] = FINE_STYLE_LAYERS
    fine_style_steps: int = 500
    photorealistic: bool = False

    @property
    def active(self) -> bool:
        return bool(self.content_mask or self.scales or self.fine_style or self.photorealistic)

    def validate(self, n_styles: int) -> None:
        if (self.style_masks or self.style_regions) and not self.content_mask:
            raise UserError("options --style_masks/--style_regions need --content_mask")
        if self.content_mask:
            if bool(self.style_masks) == bool(self.style_regions):
                raise UserError("option --content_mask: give either --style_masks (one mask per style image) or "
                                "--style_regions (one mask colour per style image)")
            given, option = ((self.style_masks, "style_masks") if self.style_masks
                             else (self.style_regions, "style_regions"))
            if len(given) != n_styles:
                raise UserError(f"option --{option}: {len(given)} given for {n_styles} style images")
            for name in self.style_regions:
                if name not in PALETTE:
                    raise UserError(f"option --style_regions: '{name}' is not a mask colour ({', '.join(PALETTE)})")
        if any(s < MIN_SIZE for s in self.scales):
            raise UserError(f"option --scales: every size must be at least {MIN_SIZE}")
        if self.scale_steps and len(self.scale_steps) != len(self.scales):
            raise UserError(f"option --scale_steps: {len(self.scale_steps)} for {len(self.scales)} scales")
        if min(self.scale_steps, default=1) < 1 or self.fine_style_steps < 1:
            raise UserError("options --scale_steps/--fine_style_steps: steps must be at least 1")
        if self.fine_style and n_styles != 1:
            raise UserError(f"option --fine_style: combines with one --style image, got {n_styles}")


def add_control_options(parser: argparse.ArgumentParser) -> None:
    """The options of this module on the ``stylize`` parser."""
    a = parser.add_argument
    colours = ", ".join(PALETTE)
    a("--content_mask", default="", metavar="IMG",
      help=f"guided regions: a colour-coded mask of the content ({colours}), regions matched by colour")
    a("--style_masks", nargs="+", default=(), metavar="IMG",
      help="one colour-coded mask per style image: region X of the content takes the style of region X")
    a("--style_regions", nargs="+", default=(), metavar="COLOUR",
      help="instead of --style_masks: one colour per style image, the whole style image goes to that region")
    a("--guide_mode", default="auto", choices=("auto", *GUIDE_MODES),
      help="how masks reach deeper layers: simple (resized), all (every neuron that sees the region), inside (only "
           "neurons that see nothing else); auto = inside with one style image, simple with one per region")
    a("--guide_grow", type=int, default=0, metavar="K",
      help="widen (K > 0) or erode (K < 0) every layer's mask by K cells (default: 0)")
    a("--scales", type=comma_list(int, "scales"), default=(), metavar="PX,...",
      help="coarse-to-fine: optimise at each longer side in turn, the previous result upsampled as the start "
           "(e.g. 512,1024; replaces --image_size)")
    a("--scale_steps", type=comma_list(int, "scale_steps"), default=(), metavar="N,...",
      help="steps at each scale (default: --steps at the first, 40%% of it at the others, as 500 then 200)")
    a("--fine_style", default="", metavar="IMG",
      help="scale control: first give the --style image this image's fine texture (its coarse layout stays), then "
           "use the result as the style")
    a("--fine_style_layers", type=comma_list(str, "fine_style_layers"), default=FINE_STYLE_LAYERS, metavar="L,...",
      help="layers that carry the fine texture (default: relu1_1,relu2_1)")
    a("--fine_style_steps", type=int, default=500, metavar="N", help="steps of the scale-control image (default: 500)")
    a("--photorealistic", action="store_true",
      help="Deep Photo Style Transfer: Luan et al.'s weights, max pooling, --steps without then --steps with the "
           "matting Laplacian (masks optional)")
    a("--matting_weight", type=float, default=-1.0, metavar="W",
      help="weight of the matting-Laplacian term (default: 0; with --photorealistic Luan et al.'s 1e4 on their "
           "scale)")


def controls_from_args(args: argparse.Namespace) -> Controls:
    return Controls(content_mask=args.content_mask, style_masks=tuple(args.style_masks),
                    style_regions=tuple(args.style_regions), scales=tuple(args.scales),
                    scale_steps=tuple(args.scale_steps), fine_style=args.fine_style,
                    fine_style_layers=tuple(args.fine_style_layers), fine_style_steps=args.fine_style_steps,
                    photorealistic=args.photorealistic)


def photorealistic_settings(settings: StylizeSettings) -> StylizeSettings:
    """Luan et al.'s weights on this project's scale (``stage_settings`` adds TV and matting per stage).

    The project's VGG features are the Caffe network's divided by ``CAFFE_SCALE`` = k, so a content MSE is theirs / k^2
    and a Gram distance theirs / k^4; dividing their whole objective by k^2 gives content 5, style 400 k^2 / C_l^2 per
    layer on this project's sum (G^ - A^)^2 / (4 C^2), matting 1e4 / k^2.
    """
    k2 = CAFFE_SCALE ** 2
    layer_weights = tuple(4 * LUAN_STYLE * k2 / VGG19.channels(layer) ** 2 for layer in settings.style_layers)
    return replace(settings, content_weight=LUAN_CONTENT, content_layers=("relu4_2",), content_layer_weights=(),
                   style_weight=1.0, style_layer_weights=layer_weights, style_losses={"gram": 1.0}, pool="max",
                   matting_weight=0.0)


def default_matting_weight(photorealistic: bool) -> float:
    """Luan et al.'s lambda = 1e4 on this project's scale with --photorealistic, else off."""
    return LUAN_MATTING / CAFFE_SCALE ** 2 if photorealistic else 0.0


def luan_tv_weight(height: int, width: int) -> float:
    """Their TV (1e-3 x half the summed squared neighbour differences of 0..255 pixels) as a weight on this project's
    mean squared differences of [-1, 1] pixels, divided by k^2 as the other weights."""
    return LUAN_TV * 0.5 * 127.5 ** 2 * 3 * height * width / CAFFE_SCALE ** 2


def scale_schedule(controls: Controls, settings: StylizeSettings) -> list[tuple[int, int]]:
    """(longer side, steps) of each scale: one scale at --image_size without --scales."""
    if not controls.scales:
        return [(settings.image_size, settings.steps)]
    steps = controls.scale_steps or tuple([settings.steps] + [max(1, round(settings.steps * LATER_SCALE_SHARE))]
                                          * (len(controls.scales) - 1))
    return list(zip(controls.scales, steps))


def combine_scales(vgg: VGG19, coarse: torch.Tensor, fine: torch.Tensor, settings: StylizeSettings, *,
                   layers: Sequence[str] = FINE_STYLE_LAYERS, steps: int = 500, progress: bool = True) -> torch.Tensor:
    """Gatys et al.'s scale control: the coarse style image, started from itself, takes the fine image's Gram
    statistics on shallow layers only (small receptive fields: texture, not layout); no content term."""
    fine_settings = replace(settings, content_layers=(), content_layer_weights=(), content_weight=0.0,
                            style_layers=tuple(layers), style_layer_weights=(), style_losses={"gram": 1.0},
                            init="content", steps=steps, tv_weight=0.0, matting_weight=0.0, save_every=0)
    return stylize(vgg, coarse, [fine], fine_settings, progress=progress).image.clamp(-1, 1)


def _resize_guides(guides: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(guides.unsqueeze(0), size=tuple(size), mode="nearest")[0]


def _read_guides(controls: Controls, content_path: str, style_paths: Sequence[str],
                 say: Callable[[str], None]) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
    """The masks at their images' full sizes (read once; each working size resizes them, nearest). The notes about
    resized masks are said only once every mask has passed its checks (a mistake is then the only line)."""
    if not controls.content_mask:
        return None
    notes: list[str] = []
    content = read_mask(controls.content_mask, load_image(content_path, 3).size, what="content mask", say=notes.append)
    if controls.style_masks:
        styles = [read_mask(m, load_image(p, 3).size, what="style mask", say=notes.append)
                  for m, p in zip(controls.style_masks, style_paths)]
        check_regions(content, controls.content_mask, styles, controls.style_masks)
    else:
        styles = masks_from_regions(controls.style_regions, [load_image(p, 3).size for p in style_paths])
        check_regions(content, controls.content_mask, styles, [f"--style_regions {r}" for r in controls.style_regions])
    for note in notes:
        say(note)
    return content, styles


def run_controlled(vgg: VGG19, settings: StylizeSettings, controls: Controls, content_path: str,
                   style_paths: Sequence[str], *, style_weights: Sequence[float] | None = None,
                   device: torch.device | str = "cpu", progress: bool = True,
                   callback: Callable[[int, torch.Tensor], None] | None = None,
                   on_step: Callable[[int, torch.Tensor], None] | None = None,
                   say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> StylizeResult:
    """Loads the images (and masks) at each scale and runs ``stylize`` as the controls say; the losses of every run
    are concatenated. Returns the last run's result (its image at the last scale's working size)."""
    controls.validate(len(style_paths))
    guides = _read_guides(controls, content_path, style_paths, say)
    combined: torch.Tensor | None = None
    result: StylizeResult | None = None
    losses: list[float] = []
    for index, (size, steps) in enumerate(scale_schedule(controls, settings)):
        content = load_resized(content_path, size).to(device)
        style_size = round(size * settings.style_scale)
        styles = [load_resized(p, style_size).to(device) for p in style_paths]
        if controls.fine_style:
            if combined is None:
                say(f"scale control: giving {style_paths[0]} the texture of {controls.fine_style} "
                    f"({controls.fine_style_steps} steps on {','.join(controls.fine_style_layers)})")
                fine = load_resized(controls.fine_style, style_size).to(device)
                combined = combine_scales(vgg, styles[0], fine, settings, layers=controls.fine_style_layers,
                                          steps=controls.fine_style_steps, progress=progress)
            styles = [F.interpolate(combined, size=styles[0].shape[-2:], mode="bicubic",
                                    align_corners=False).clamp(-1, 1)]
        work_content, work_styles = prepare_images(content, styles, settings.preserve_color)
        scaled_guides = None
        if guides is not None:
            scaled_guides = (_resize_guides(guides[0], content.shape[-2:]),
                             [_resize_guides(g, s.shape[-2:]) for g, s in zip(guides[1], styles)])
        init = None
        if result is not None:
            init = F.interpolate(result.image, size=content.shape[-2:], mode="bicubic",
                                 align_corners=False).clamp(-1, 1)
        stages = [replace(settings, steps=steps)]
        if controls.photorealistic:
            height, width = content.shape[-2:]
            second = replace(settings, steps=steps, tv_weight=luan_tv_weight(height, width))
            # the first scale runs both of Luan et al.'s stages; later scales refine with the matting term on
            stages = [replace(second, matting_weight=0.0), second] if index == 0 else [second]
        laplacian = None
        for stage in stages:
            if stage.matting_weight > 0 and laplacian is None:
                say(f"matting Laplacian of {content_path} at {content.shape[-1]}x{content.shape[-2]}")
                laplacian = matting_laplacian((content[0] + 1) / 2).to(device)
            if len(stages) > 1 or len(scale_schedule(controls, settings)) > 1:
                say(f"stylize at {content.shape[-1]}x{content.shape[-2]}: {stage.steps} steps"
                    + (f", matting weight {stage.matting_weight:.3g}" if stage.matting_weight else ""))
            result = stylize(vgg, work_content, work_styles, stage, style_weights=style_weights, progress=progress,
                             callback=callback, guides=scaled_guides, laplacian=laplacian, init_image=init,
                             on_step=on_step)
            init = result.image
            losses.extend(result.losses)
    assert result is not None
    return StylizeResult(image=result.image, losses=losses, parts=result.parts)
