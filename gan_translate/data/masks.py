"""Colour-coded region masks for guided style transfer, read as Luan et al.'s Deep Photo Style Transfer code reads its
segmentation masks: nine flat colours, a pixel belongs to a colour when each RGB channel (in [0, 1]) is below 0.1
("off") or above 0.9 ("on") as that colour says; grey is every channel in 0.4..0.6.

A content mask and one mask per style image share these colours: the region painted blue in the content takes its
style from the blue region of the style image(s). Masks are drawn without anti-aliasing: a pixel of any other colour
is a mistake in the mask (one line naming the file).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from gan_translate.data.images import load_image
from gan_translate.errors import UserError

__all__ = ["PALETTE", "check_regions", "mask_guides", "masks_from_regions", "read_mask", "region_names"]

# name -> per-channel state: 1 = above 0.9, 0 = below 0.1, 0.5 = within 0.4..0.6
PALETTE: dict[str, tuple[float, float, float]] = {
    "blue": (0, 0, 1), "green": (0, 1, 0), "black": (0, 0, 0), "white": (1, 1, 1), "red": (1, 0, 0),
    "yellow": (1, 1, 0), "grey": (0.5, 0.5, 0.5), "lightblue": (0, 1, 1), "purple": (1, 0, 1),
}
LOW, HIGH, GREY = 0.1, 0.9, (0.4, 0.6)


def _channel_test(values: np.ndarray, state: float) -> np.ndarray:
    if state == 1:
        return values > HIGH
    if state == 0:
        return values < LOW
    return (values >= GREY[0]) & (values <= GREY[1])


def classify(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) floats in [0, 1] -> (9, H, W) booleans, one per palette colour (at most one is set per pixel)."""
    return np.stack([_channel_test(rgb[..., 0], s[0]) & _channel_test(rgb[..., 1], s[1])
                     & _channel_test(rgb[..., 2], s[2]) for s in PALETTE.values()])


def read_mask(path: str | Path, size: tuple[int, int], *, what: str = "mask", say=None) -> torch.Tensor:
    """A mask file as (9, H, W) float guides (one per palette colour, 0 or 1) at ``size`` = (width, height).

    A mask of another size is resized (nearest neighbour: no new colours) and that is said once through ``say``
    (default: a line on stderr).

    Raises:
        UserError: the file cannot be read or holds a colour outside the palette (the message names the file).
    """
    return mask_guides(load_image(path, channels=3), size, path, what=what, say=say)


def mask_guides(img: Image.Image, size: tuple[int, int], path: str | Path, *, what: str = "mask",
                say=None) -> torch.Tensor:
    """``read_mask`` for an image already loaded (RGB); ``path`` names it in messages."""
    if img.size != tuple(size):
        (say or (lambda line: print(line, file=sys.stderr)))(
            f"note: {what} {path} is {img.width}x{img.height}, resized (nearest) to its image's {size[0]}x{size[1]}")
        img = img.resize(tuple(size), Image.Resampling.NEAREST)
    rgb = np.asarray(img, dtype=np.float32) / 255.0
    classes = classify(rgb)
    outside = ~classes.any(axis=0)
    if outside.any():
        y, x = (int(v[0]) for v in np.nonzero(outside))
        colour = tuple(int(c) for c in np.asarray(img)[y, x])
        raise UserError(f"{what} {path}: colour {colour} at ({x}, {y}) is outside the mask palette "
                        f"({', '.join(PALETTE)}; {int(outside.sum())} such pixels; draw masks without anti-aliasing)")
    return torch.from_numpy(classes.astype(np.float32))


def region_names(guides: torch.Tensor) -> list[str]:
    """The palette colours a mask (9, H, W) uses."""
    return [name for name, g in zip(PALETTE, guides) if bool(g.any())]


def check_regions(content: torch.Tensor, content_path: str | Path, styles: Sequence[torch.Tensor],
                  style_paths: Sequence[str | Path]) -> None:
    """Every region of the content mask must be in some style mask, and every style mask must share a region with
    the content mask (else it guides nothing: an empty mask)."""
    used = region_names(content)
    for guides, path in zip(styles, style_paths):
        if not set(region_names(guides)) & set(used):
            raise UserError(f"style mask {path}: empty: none of its regions ({', '.join(region_names(guides))}) is "
                            f"in the content mask ({', '.join(used)})")
    for name in used:
        if not any(name in region_names(g) for g in styles):
            raise UserError(f"content mask {content_path}: region '{name}' is in no style mask "
                            f"({', '.join(str(p) for p in style_paths)})")


def masks_from_regions(regions: Sequence[str], sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """One style image per region: style i is entirely region ``regions[i]`` (an all-ones guide of that colour at
    ``sizes[i]`` = (width, height))."""
    out = []
    for name, (width, height) in zip(regions, sizes):
        if name not in PALETTE:
            raise UserError(f"option --style_regions: '{name}' is not a mask colour ({', '.join(PALETTE)})")
        guides = torch.zeros(len(PALETTE), height, width)
        guides[list(PALETTE).index(name)] = 1.0
        out.append(guides)
    return out
