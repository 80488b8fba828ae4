"""Translating large images in tiles: bounded memory for any image size (``--tile N`` of test.py, the demo and
``load_translator(tile=N)``).

The image is padded to the generator's stride once (as an untiled pass pads it), then cut into tiles of ``tile``
pixels that overlap by ``overlap``; tiles start at multiples of the stride, so each tile sees the same sampling grid
as the whole image would. Every tile is translated alone and the outputs are blended with weights that fall linearly
to (almost) zero across the overlap ("feathering"), so no seam shows where neighbouring tiles disagree slightly.

What tiles change: a pixel's output depends on the input within the generator's receptive field. Where that field
lies inside one tile (farther than the field's radius from every tile edge that is not an image edge) the result
equals untiled translation exactly, for generators whose layers are local: no normalisation, or BatchNorm in eval
mode (running statistics). Instance normalisation (CycleGAN's default) and BatchNorm in train mode normalise with
each tile's own statistics, so colours and contrast follow each tile's content and differ slightly from an untiled
pass everywhere; the feathering hides the steps between tiles but does not remove the difference. The U-Net's field
covers its whole 256-pixel input, so for unet_256 tiles of the training crop (256) match what it was trained on, and
no pixel equals the untiled result.

Memory: one tile's activations plus the input and the output image (float32), instead of the whole image's
activations (a resnet_9blocks at 4096x4096 needs tens of GB).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from gan_translate.errors import UserError
from gan_translate.nets.layers import bare, pad_to_multiple

__all__ = [
    "TiledGenerator",
    "default_overlap",
    "feather_ramp",
    "tile_positions",
    "tiled_generators",
    "translate_tiled",
]


def default_overlap(tile: int, stride: int = 1) -> int:
    """An eighth of the tile, rounded to the stride (at least one stride): wide enough for the blend to hide seams."""
    step = max(1, stride)
    return max(step, (tile // 8) // step * step)


def tile_positions(size: int, tile: int, overlap: int, stride: int = 1) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``size`` (every start a multiple of ``stride``), neighbours
    overlapping by at least ``overlap``; the last tile ends at ``size``."""
    if size <= tile:
        return [0]
    step = max(stride, (tile - overlap) // stride * stride)
    starts = list(range(0, size - tile, step))
    last = size - tile  # a multiple of the stride when size and tile are
    if not starts or starts[-1] != last:
        starts.append(last)
    return starts


def feather_ramp(length: int, start: int, size: int, overlap: int) -> torch.Tensor:
    """Blend weights along one axis of a tile at ``start`` of ``length`` pixels in an image of ``size``: 1 inside,
    rising linearly over ``overlap`` pixels at edges that are not the image's own edges."""
    w = torch.ones(length)
    if overlap <= 0:
        return w
    ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap  # never exactly 0: weights sum above 0
    n = min(overlap, length)
    if start > 0:
        w[:n] = ramp[:n]
    if start + length < size:
        w[length - n:] = torch.minimum(w[length - n:], ramp[:n].flip(0))
    return w


def translate_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, *, overlap: int,
                    stride: int = 1, min_size: int = 1) -> torch.Tensor:
    """``fn`` (a size-preserving generator) applied to ``x`` (N, C, H, W) tile by tile, outputs feather-blended.

    ``tile`` and ``overlap`` are rounded to multiples of ``stride``; ``x`` is padded to the stride first (reflection,
    as ``run_padded``) and the output cropped back, so a tile never needs padding of its own.
    """
    step = max(1, stride)
    tile = max(step, tile // step * step, -(-min_size // step) * step)
    overlap = min(tile - step, -(-overlap // step) * step) if tile > step else 0
    padded, (left, right, top, bottom) = pad_to_multiple(x, step, min_size)
    height, width = padded.shape[-2:]
    if height <= tile and width <= tile:
        out = fn(padded)
    else:
        out = None
        weight = torch.zeros(1, 1, height, width, device=x.device)
        for y in tile_positions(height, tile, overlap, step):
            for x0 in tile_positions(width, tile, overlap, step):
                h, w = min(tile, height), min(tile, width)
                piece = fn(padded[..., y:y + h, x0:x0 + w]).float()
                if out is None:
                    out = torch.zeros(piece.shape[0], piece.shape[1], height, width, device=x.device)
                blend = (feather_ramp(h, y, height, overlap)[:, None] * feather_ramp(w, x0, width, overlap)[None])
                blend = blend.to(x.device)
                out[..., y:y + h, x0:x0 + w] += piece * blend
                weight[..., y:y + h, x0:x0 + w] += blend
                del piece
        out = out / weight
    return out[..., top:height - bottom, left:width - right]


class TiledGenerator(nn.Module):
    """A generator run in tiles (its forward); the wrapped network keeps its weights and mode."""

    def __init__(self, net: nn.Module, tile: int, overlap: int | None = None) -> None:
        super().__init__()
        self.net = net
        inner = bare(net)
        self.stride, self.min_size = int(getattr(inner, "stride", 1)), int(getattr(inner, "min_size", 1))
        self.tile = tile
        self.overlap = default_overlap(tile, self.stride) if overlap is None else overlap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return translate_tiled(self.net, x, self.tile, overlap=self.overlap, stride=self.stride,
                               min_size=self.min_size)


def _image_generators(model: nn.Module) -> list[str]:
    """The inference networks when every one maps an image to an image (pix2pix, CycleGAN, CUT), else []: a model
    whose networks pass codes or features between them (style transfer, MIXGAN, TPFR) cannot be cut into tiles."""
    from gan_translate.nets.generators import PaddedGenerator

    keys = list(model.inference_nets)
    return keys if keys and all(isinstance(bare(model.nets[k]), PaddedGenerator) for k in keys) else []


@contextlib.contextmanager
def tiled_generators(model: nn.Module, tile: int, overlap: int | None = None) -> Iterator[None]:
    """Within the block, the model's image-to-image generators (ResNet, U-Net) run in tiles of ``tile`` pixels;
    ``tile`` 0 changes nothing. Models without such a generator (style transfer, MIXGAN's encoders) are refused."""
    if not tile:
        yield
        return
    keys = _image_generators(model)
    if not keys:
        raise UserError(f"option --tile: model {model.name} has no image-to-image generator to run in tiles")
    if overlap is not None and overlap >= tile:
        raise UserError(f"option --tile_overlap: {overlap} must be smaller than --tile {tile}")
    originals = {k: model.nets[k] for k in keys}
    try:
        for k in keys:
            model.nets[k] = TiledGenerator(originals[k], tile, overlap)
        yield
    finally:
        for k, net in originals.items():
            model.nets[k] = net
