"""Laplacian loss: Li, Xu, Nie, Chua, "Laplacian-Steered Neural Style Transfer", ACM MM 2017.

VGG features keep the content's objects but lose its fine structure (thin edges, the outline of a face); the
Laplacian of the image is a detail map that keeps it. The loss compares the Laplacian of the synthesised image with
the content's, after average pooling by p x p pixels (the authors' default p = 4; several sizes with their own weights
are summed):

    D_p(x) = Laplacian( sum_c avgpool_p(x_c) ),  3x3 kernel [[0,-1,0],[-1,4,-1],[0,-1,0]], no padding
    L_lap = sum_p w_p mean (D_p(x) - D_p(content))^2

As in the authors' code the filter runs on the network's 0..255 pixel scale (the colour channels summed): on this
project's [-1, 1] images that is a factor 127.5 (the mean subtraction cancels, the kernel sums to zero), so their
weights mean the same here. The map of an H x W image is (floor(H/p) - 2) x (floor(W/p) - 2).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from gan_translate.errors import UserError

__all__ = ["LAPLACIAN_KERNEL", "PIXEL_SCALE", "LaplacianLoss", "check_pools", "laplacian_map"]

LAPLACIAN_KERNEL = ((0.0, -1.0, 0.0), (-1.0, 4.0, -1.0), (0.0, -1.0, 0.0))
PIXEL_SCALE = 127.5  # [-1, 1] -> the 0..255 range (minus a constant) the authors' network sees


def laplacian_map(image: torch.Tensor, pool: int) -> torch.Tensor:
    """D_p: the 3x3 Laplacian (valid) of the channel sum of ``image`` (N, C, H, W) in [-1, 1], average pooled by
    ``pool`` (kernel = stride = pool; 1 = no pooling), on the 0..255 scale: (N, 1, H // pool - 2, W // pool - 2)."""
    if pool < 1:
        raise ValueError(f"pool must be >= 1, got {pool}")
    pooled = F.avg_pool2d(image, pool) if pool > 1 else image
    kernel = torch.tensor(LAPLACIAN_KERNEL, dtype=image.dtype, device=image.device).view(1, 1, 3, 3)
    return F.conv2d(pooled.sum(dim=1, keepdim=True) * PIXEL_SCALE, kernel)


def check_pools(size: tuple[int, int], pools: Mapping[int, float]) -> None:
    """A one-line UserError when an image of ``size`` (H, W) pooled by one of ``pools`` holds no 3x3 window."""
    for pool in pools:
        if min(size) // pool < 3:
            raise UserError(f"option --laplacian_pools: a {size[0]}x{size[1]} image pooled by {pool} holds no 3x3 "
                            "Laplacian window")


class LaplacianLoss:
    """The Laplacian loss against one content image, its detail maps computed once.

    Args:
        content: (1, C, H, W) in [-1, 1].
        pools: pooling size in pixels -> weight, e.g. {4: 1.0} (the authors' default) or {4: 1.0, 16: 16.0}.
    """

    def __init__(self, content: torch.Tensor, pools: Mapping[int, float]) -> None:
        check_pools(tuple(content.shape[-2:]), pools)
        self.pools = dict(pools)
        self.targets = {pool: laplacian_map(content.detach(), pool) for pool in self.pools}

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        total = image.new_zeros(())
        for pool, weight in self.pools.items():
            total = total + weight * F.mse_loss(laplacian_map(image, pool), self.targets[pool].expand(
                image.shape[0], -1, -1, -1))
        return total
