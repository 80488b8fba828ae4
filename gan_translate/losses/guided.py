"""Spatial control of the Gram loss: guide masks per region (Gatys, Ecker, Bethge, Hertzmann, Shechtman, "Controlling
Perceptual Factors in Neural Style Transfer", CVPR 2017, sec. 4; Luan et al.'s segmentation-augmented style loss,
"Deep Photo Style Transfer", CVPR 2017, is the same idea).

A guide T_r is an image-sized map in [0, 1] saying which pixels belong to region r. It is carried down to each VGG
layer's map (``propagate_guides``), normalised so that mean(T^2) = 1, and the style statistics of a region are the
Gram matrix of the features weighted by the guide:

    G_r = (F .* T_r)(F .* T_r)^T / M          (M = H W; with T_r normalised, the Gram of region r's positions)

The loss of a layer is sum_r w_r E(G_r(x), A_r) with E the Gatys distance of ``losses.style`` (sum (G - A)^2 /
(4 C^2)), A_r the style image's guided Gram for the same region, and w_r = 1 / n_regions (the region weights sum to 1).
One all-ones guide is the plain Gram loss, exactly.

Propagation modes (how a pixel guide becomes a guide on a deeper map):
- ``simple``: the guide resized to the map's size (nearest). Gatys et al. use it when every region has its own style
  image.
- ``all``: the neurons whose receptive field touches the region (a 3x3 convolution dilates the guide by one cell, a
  2x2 pooling keeps a cell if any of its four is guided). Grows with depth.
- ``inside``: the neurons whose receptive field lies inside the region only (erosion instead of dilation), so
  features near a boundary do not mix the two regions' statistics. Shrinks with depth; Gatys et al. use it for regions
  of one style image.
The image border is never a region boundary: the zero padding of VGG's convolutions sees no region's pixels.
``grow`` then widens (k > 0) or erodes (k < 0) every layer's guide by |k| cells.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gan_translate.losses.style import StyleLoss, _gatys_distance, gram_matrix

__all__ = ["GUIDE_MODES", "GuidedGramLoss", "guided_gram_matrices", "normalise_guides", "propagate_guides"]

GUIDE_MODES = ("simple", "all", "inside")
THRESHOLD = 0.5  # guides are binarised after propagation (Gatys et al.'s th = 0.5)


def _dilate(guide: torch.Tensor, cells: int = 1) -> torch.Tensor:
    """Max over the (2 cells + 1)^2 neighbourhood; max_pool pads with -inf, so the border does not count."""
    return F.max_pool2d(guide, 2 * cells + 1, stride=1, padding=cells)


def _erode(guide: torch.Tensor, cells: int = 1) -> torch.Tensor:
    return -_dilate(-guide, cells)


def grow(guide: torch.Tensor, cells: int) -> torch.Tensor:
    """Widen (cells > 0) or erode (cells < 0) guides (R, H, W) by |cells| map cells."""
    if cells == 0:
        return guide
    batch = guide.unsqueeze(1)
    out = _dilate(batch, cells) if cells > 0 else _erode(batch, -cells)
    return out.squeeze(1)


def propagate_guides(guides: torch.Tensor, features: nn.Sequential, layer_names: Sequence[str],
                     wanted: Iterable[str], mode: str = "simple", grow_cells: int = 0) -> dict[str, torch.Tensor]:
    """Image guides (R, H, W) in [0, 1] -> binary guides (R, h_l, w_l) at each layer in ``wanted``.

    Args:
        features: the VGG ``features`` (its convolutions and poolings set the receptive fields and map sizes).
        layer_names: the name of each module of ``features``.
        mode: simple | all | inside (see the module docstring).
        grow_cells: widen (> 0) or erode (< 0) each layer's guide by that many cells after propagating.
    """
    if mode not in GUIDE_MODES:
        raise ValueError(f"guide mode must be one of {GUIDE_MODES}, got {mode!r}")
    wanted = set(wanted)
    out: dict[str, torch.Tensor] = {}
    current = guides.float().unsqueeze(1)  # (R, 1, H, W): the regions act as a batch
    size = tuple(guides.shape[-2:])
    for name, module in zip(layer_names, features):
        if isinstance(module, nn.Conv2d):
            if mode == "all":
                current = _dilate(current)
            elif mode == "inside":
                current = _erode(current)
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            ceil = bool(module.ceil_mode)
            size = tuple((s + 1) // 2 if ceil else s // 2 for s in size)
            if mode == "all":
                current = F.max_pool2d(current, 2, 2, ceil_mode=ceil)
            elif mode == "inside":
                current = -F.max_pool2d(-current, 2, 2, ceil_mode=ceil)
        if name in wanted:
            guide = (F.interpolate(guides.float().unsqueeze(1), size=size, mode="nearest") if mode == "simple"
                     else current)
            out[name] = grow((guide >= THRESHOLD).float().squeeze(1), grow_cells)
        if len(out) == len(wanted):
            break
    return out


def normalise_guides(guides: torch.Tensor) -> torch.Tensor:
    """Each guide (R, h, w) divided by sqrt(mean(T^2)), so that mean(T^2) = 1 (an empty guide stays zero)."""
    scale = guides.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt()
    return torch.where(scale > 0, guides / scale.clamp_min(1e-12), torch.zeros_like(guides))


def guided_gram_matrices(feat: torch.Tensor, guides: torch.Tensor) -> torch.Tensor:
    """(F .* T_r)(F .* T_r)^T / M for a map (1, C, h, w) and normalised guides (R, h, w): (R, C, C)."""
    weighted = feat[0].unsqueeze(0) * guides.unsqueeze(1)  # (R, C, h, w)
    return gram_matrix(weighted)


class GuidedGramLoss(StyleLoss):
    """The guided Gram loss of one layer.

    Args:
        content_guides: the synthesis' guides at this layer (R, h, w), binary (from ``propagate_guides``).
        style_guides: per style image its guides at this layer (R, h', w') -- zero for a region that style image
            does not hold.
    A region's target blends the style images that hold it, their blending weights renormalised over those images.
    Regions with an empty synthesis guide at this layer (eroded away, or too small) are left out.
    """

    def __init__(self, content_guides: torch.Tensor, style_guides: Sequence[torch.Tensor]) -> None:
        self.content_guides = normalise_guides(content_guides)
        self.style_guides = [normalise_guides(g) for g in style_guides]
        present = content_guides.flatten(1).amax(1) > 0
        self.regions = [r for r in range(content_guides.shape[0])
                        if bool(present[r]) and any(bool(g[r].amax() > 0) for g in style_guides)]

    def target(self, style_feat: torch.Tensor) -> torch.Tensor:  # unused: targets() needs the image's index
        raise NotImplementedError("GuidedGramLoss pairs each style map with its guides: call targets()")

    def targets(self, style_feats: Sequence[torch.Tensor], weights: Sequence[float]
                ) -> list[tuple[float, torch.Tensor]]:
        if len(style_feats) != len(self.style_guides):
            raise ValueError(f"{len(style_feats)} style maps for {len(self.style_guides)} sets of guides")
        channels = style_feats[0].shape[1]
        blended = style_feats[0].new_zeros(len(self.content_guides), channels, channels)
        for r in self.regions:
            holders = [(w, f, g) for f, g, w in zip(style_feats, self.style_guides, weights) if g[r].amax() > 0]
            total = sum(w for w, _, _ in holders)
            for w, f, g in holders:
                gram = guided_gram_matrices(f.detach(), g[r: r + 1])[0]
                blended[r] += gram * (w / total if total > 0 else 1.0 / len(holders))
        return [(1.0, blended)]

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.regions:
            return feat.new_zeros(())
        index = torch.tensor(self.regions, device=feat.device)
        grams = guided_gram_matrices(feat, self.content_guides[index])
        per_region = torch.stack([_gatys_distance(g.unsqueeze(0), t.unsqueeze(0))
                                  for g, t in zip(grams, target[index])])
        return per_region.mean()  # region weights 1 / n_regions
