"""Antialiased resampling: a fixed binomial blur before subsampling and after zero-insertion upsampling.

Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019; used by default in CUT (Park et al. 2020),
whose generator and PatchGAN replace each stride-2 convolution by a stride-1 convolution followed by ``BlurDownsample``
and each transposed convolution by ``BlurUpsample`` followed by a stride-1 convolution. The kernels are buffers named
``filt`` (as in the authors' code, so their state-dict keys line up), not parameters: parameter counts are unchanged.

- ``BlurDownsample``: reflect pad 1, depthwise [1, 2, 1] x [1, 2, 1] / 16, stride 2: H x W -> ceil(H/2) x ceil(W/2).
- ``BlurUpsample``: replicate pad 1, depthwise transposed convolution with [1, 3, 3, 1] x [1, 3, 3, 1] / 16 (it sums to
  4 = stride^2, so a constant map stays constant), stride 2, then a crop: H x W -> 2H x 2W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BlurDownsample", "BlurUpsample", "binomial_kernel"]


def binomial_kernel(taps: tuple[float, ...], channels: int, total: float = 1.0) -> torch.Tensor:
    """The separable kernel outer(taps, taps), scaled to sum to ``total``, as a depthwise weight (channels, 1, k, k)."""
    row = torch.tensor(taps, dtype=torch.float32)
    kernel = torch.outer(row, row)
    kernel = kernel * (total / kernel.sum())
    return kernel.expand(channels, 1, *kernel.shape).contiguous()


class BlurDownsample(nn.Module):
    """Blur, then keep every second pixel (the 'Downsample' of the CUT code with its default 3-tap filter)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("filt", binomial_kernel((1.0, 2.0, 1.0), channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt.to(x.dtype), stride=2, groups=self.channels)

    def extra_repr(self) -> str:
        return f"{self.channels}"


class BlurUpsample(nn.Module):
    """Zero-insertion x2, then blur: a fixed transposed convolution (the 'Upsample' of the CUT code, 4-tap filter)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("filt", binomial_kernel((1.0, 3.0, 3.0, 1.0), channels, total=4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # After the replicate pad of 1 the transposed convolution (padding 2) gives 2H + 2 rows; dropping the first
        # and the last one centres the result on the input grid (the even kernel has no middle tap).
        up = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.filt.to(x.dtype), stride=2,
                                padding=2, groups=self.channels)
        return up[:, :, 1:-1, 1:-1]

    def extra_repr(self) -> str:
        return f"{self.channels}"
