"""Content and style losses on CNN feature maps (N, C, H, W): the statistics that neural style transfer matches.

Notation: a layer's map has C channels ("N_l" in the papers) and M = H*W positions ("M_l"); f_k is the C-vector at
position k. Normalised Gram matrix: G^ = F F^T / M (the papers' G divided by M, so that maps of different sizes --
a style image need not have the content's size -- have comparable statistics).

- Gram (Gatys, Ecker, Bethge, CVPR 2016, eq. 4): E = sum_ij (G_ij - A_ij)^2 / (4 C^2 M^2) = sum (G^ - A^)^2 / (4 C^2).
- Shifted ("transformed") Gram (Berger & Memisevic, ICLR 2017): cross-correlations of the map with itself shifted by
  delta columns (horizontal) or rows (vertical); each compared as above, and the two directions averaged (the paper
  sums them: a factor 2 in the weight) so that delta = 0 gives back the Gram loss exactly.
- MMD (Li, Wang, Liu, Hou, "Demystifying Neural Style Transfer", IJCAI 2017): the style loss is MMD^2 between the
  position samples {f_k} and {s_k}, divided by Z: linear kernel x.y (Z = C; MMD^2 = |mean f - mean s|^2), polynomial
  (x.y + c)^2 (Z = C^2; with c = 0, Gram loss = MMD^2 / (4 C^2)), Gaussian exp(-gamma |x - y|^2) with gamma = 1 / mean
  squared distance (Z = 1), and BN statistics (1/C) sum_c [(mu_c - mu_s,c)^2 + (sigma_c - sigma_s,c)^2].
- MRF (Li & Wand, CVPR 2016, eq. 2): sum_i |Psi_i(F) - Psi_NN(i)(S)|^2 over the 3x3 patches Psi_i of the synthesis,
  NN(i) the style patch of highest normalised cross-correlation, found with one convolution. Averaged here over the
  patches and their C*3*3 entries (the paper sums): the weight does not depend on the image size, and the value is on
  the scale of the content loss (a mean squared feature difference).
- Content: mean squared difference of the maps (Gatys eq. 1 is half the sum: the same gradient direction; the mean
  keeps weights independent of the image size). Total variation: mean squared difference of neighbouring pixels.
- Mean/std (Huang & Belongie, ICCV 2017, eq. 10 as in the PyTorch port): MSE of the channel means plus MSE of the
  channel standard deviations -- the same number as the BN-statistics loss.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from gan_translate.errors import UserError
from gan_translate.losses.histogram import HistogramLoss
from gan_translate.losses.reshuffle import ReshuffleLoss
from gan_translate.losses.style_base import StyleLoss

__all__ = [
    "STYLE_LOSSES",
    "BNStatisticsLoss",
    "GaussianMMDLoss",
    "GramLoss",
    "HistogramLoss",
    "LinearMMDLoss",
    "MRFLoss",
    "PolyMMDLoss",
    "ReshuffleLoss",
    "ShiftedGramLoss",
    "StyleLoss",
    "content_loss",
    "gram_loss",
    "gram_matrix",
    "kernel_matrix",
    "mean_std",
    "mean_std_loss",
    "mmd2",
    "mrf_loss",
    "patches",
    "shifted_gram_matrices",
    "tv_loss",
]

STD_EPS = 1e-5  # inside the square root: keeps the gradient finite for channels that a ReLU switched off


# ----------------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------------


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrices F F^T / M of (N, C, H, W) maps: (N, C, C)."""
    flat = feat.flatten(2)
    return flat @ flat.transpose(1, 2) / flat.shape[-1]


def shifted_gram_matrices(feat: torch.Tensor, delta: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Berger & Memisevic's cross-correlation matrices (N, C, C) for a shift of ``delta`` columns and of ``delta`` rows.

    Horizontal: sum over positions (y, x) of f(y, x) f(y, x + delta)^T, over the overlap, divided by its size; vertical
    likewise with rows. ``delta`` is clipped to the map's width/height minus one.
    """
    height, width = feat.shape[-2:]
    dx, dy = min(delta, width - 1), min(delta, height - 1)

    def cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a.flatten(2), b.flatten(2)
        return a @ b.transpose(1, 2) / a.shape[-1]

    horizontal = cross(feat[..., :, : width - dx], feat[..., :, dx:])
    vertical = cross(feat[..., : height - dy, :], feat[..., dy:, :])
    return horizontal, vertical


def mean_std(feat: torch.Tensor, eps: float = STD_EPS, *, unbiased: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over positions, each (N, C, 1, 1); std = sqrt(population var + eps)
    (``unbiased``: the sample variance, as AdaIN's PyTorch port)."""
    flat = feat.flatten(2)
    mean = flat.mean(-1)
    std = (flat.var(-1, unbiased=unbiased) + eps).sqrt()
    return mean[..., None, None], std[..., None, None]


def positions(feat: torch.Tensor) -> torch.Tensor:
    """The position samples of one map (1, C, H, W) or (C, H, W) as an (M, C) matrix."""
    if feat.dim() == 4:
        if feat.shape[0] != 1:
            raise ValueError(f"expected one map, got a batch of {feat.shape[0]}")
        feat = feat[0]
    return feat.flatten(1).t()


def patches(feat: torch.Tensor, size: int = 3, stride: int = 1) -> torch.Tensor:
    """All ``size`` x ``size`` patches of one map (1, C, H, W) at ``stride``, as rows of a (K, C * size * size) matrix
    (channel-major, then row, then column: the layout of a conv weight)."""
    if feat.dim() != 4 or feat.shape[0] != 1:
        raise ValueError(f"expected one map (1, C, H, W), got shape {tuple(feat.shape)}")
    return F.unfold(feat, size, stride=stride)[0].t()


# ----------------------------------------------------------------------------------------------------------------------
# Losses as functions
# ----------------------------------------------------------------------------------------------------------------------


def _gatys_distance(matrices: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum (G^ - A^)^2 / (4 C^2), averaged over the batch."""
    channels = matrices.shape[-1]
    return ((matrices - targets) ** 2).sum(dim=(-2, -1)).mean() / (4 * channels * channels)


def gram_loss(feat: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Gatys et al.'s per-layer style loss E_l between the maps ``feat`` and a normalised Gram matrix (C, C)."""
    return _gatys_distance(gram_matrix(feat), target_gram)


def kernel_matrix(kernel: str, x: torch.Tensor, y: torch.Tensor, *, c: float = 0.0, gamma: float = 1.0) -> torch.Tensor:
    """k(x_i, y_j) for rows x (M1, C) and y (M2, C): "linear" x.y, "poly" (x.y + c)^2, "gaussian" exp(-gamma|x-y|^2)."""
    if kernel == "linear":
        return x @ y.t()
    if kernel == "poly":
        return (x @ y.t() + c) ** 2
    if kernel == "gaussian":
        return torch.exp(-gamma * torch.cdist(x, y).pow(2))
    raise ValueError(f"unknown kernel {kernel!r}; choose linear, poly or gaussian")


def mmd2(x: torch.Tensor, y: torch.Tensor, kernel: str, **params: float) -> torch.Tensor:
    """The (biased, V-statistic) squared MMD between samples x (M1, C) and y (M2, C), from full kernel matrices:
    mean k(x, x') + mean k(y, y') - 2 mean k(x, y). Quadratic in the sample count: the reference computation."""
    return (kernel_matrix(kernel, x, x, **params).mean() + kernel_matrix(kernel, y, y, **params).mean()
            - 2 * kernel_matrix(kernel, x, y, **params).mean())


def mean_std_loss(feat: torch.Tensor, target_mean: torch.Tensor, target_std: torch.Tensor) -> torch.Tensor:
    """MSE(mean) + MSE(std) over channels (and batch): AdaIN's style term, and Li et al.'s BN-statistics loss."""
    mean, std = mean_std(feat)
    return F.mse_loss(mean, target_mean.expand_as(mean)) + F.mse_loss(std, target_std.expand_as(std))


def mrf_loss(feat: torch.Tensor, style_patches: torch.Tensor, *, size: int = 3, stride: int = 1) -> torch.Tensor:
    """Li & Wand's MRF loss: mean over the synthesis patches (and their entries) of (patch - nearest style patch)^2.

    The nearest neighbour maximises the normalised cross-correlation; the style patches, divided by their norms, are
    the weights of one convolution over ``feat`` (the synthesis patch's own norm does not change the arg max).

    Args:
        feat: synthesis maps (N, C, H, W).
        style_patches: (K, C * size * size), from ``patches``.
    """
    channels, height, width = feat.shape[1:]
    if min(height, width) < size:
        raise UserError(f"mrf loss: a synthesis map of {height}x{width} holds no {size}x{size} patch "
                        "(use a larger --image_size or shallower --mrf_layers)")
    synth = F.unfold(feat, size, stride=stride).transpose(1, 2)  # (N, L, D)
    with torch.no_grad():
        unit = style_patches / style_patches.norm(dim=1, keepdim=True).clamp_min(1e-8)
        scores = F.conv2d(feat, unit.view(-1, channels, size, size), stride=stride)  # (N, K, h, w), L = h * w
        nearest = scores.flatten(2).argmax(dim=1)  # (N, L)
    return ((synth - style_patches[nearest]) ** 2).mean()


def content_loss(feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of feature maps (Gatys et al. eq. 1 up to a constant factor)."""
    return F.mse_loss(feat, target.expand_as(feat))


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation: mean squared difference between vertical plus horizontal neighbours."""
    vertical = (image[..., 1:, :] - image[..., :-1, :]) ** 2
    horizontal = (image[..., :, 1:] - image[..., :, :-1]) ** 2
    return vertical.mean() + horizontal.mean()


# ----------------------------------------------------------------------------------------------------------------------
# Losses as objects: the statistics of a style image are computed once (``target``), then compared at every step
# ----------------------------------------------------------------------------------------------------------------------


class GramLoss(StyleLoss):
    """Gatys et al. 2016: Gram matrices."""

    def target(self, style_feat: torch.Tensor) -> torch.Tensor:
        return gram_matrix(style_feat)

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return gram_loss(feat, target)


class ShiftedGramLoss(StyleLoss):
    """Berger & Memisevic: Gram matrices of the map against itself shifted by ``delta`` (horizontal and vertical)."""

    def __init__(self, delta: int) -> None:
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}")
        self.delta = delta

    def target(self, style_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return shifted_gram_matrices(style_feat, self.delta)

    def loss(self, feat: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        horizontal, vertical = shifted_gram_matrices(feat, self.delta)
        return 0.5 * (_gatys_distance(horizontal, target[0]) + _gatys_distance(vertical, target[1]))


class LinearMMDLoss(StyleLoss):
    """Li et al. 2017, linear kernel: |mean f - mean s|^2 / C (matches the channel means only)."""

    def target(self, style_feat: torch.Tensor) -> torch.Tensor:
        return style_feat.flatten(2).mean(-1)

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((feat.flatten(2).mean(-1) - target) ** 2).sum(-1).mean() / feat.shape[1]


class PolyMMDLoss(StyleLoss):
    """Li et al. 2017, kernel (x.y + c)^2, divided by C^2; computed in closed form from Gram matrices and means:
    MMD^2 = |G^_f - G^_s|^2 + 2c |mean f - mean s|^2 (the c^2 terms cancel)."""

    def __init__(self, c: float = 0.0) -> None:
        self.c = float(c)

    def target(self, style_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gram_matrix(style_feat), style_feat.flatten(2).mean(-1)

    def loss(self, feat: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        gram, mean = target
        value = ((gram_matrix(feat) - gram) ** 2).sum(dim=(-2, -1))
        if self.c:
            value = value + 2 * self.c * ((feat.flatten(2).mean(-1) - mean) ** 2).sum(-1)
        return value.mean() / feat.shape[1] ** 2


class GaussianMMDLoss(StyleLoss):
    """Li et al. 2017, Gaussian kernel with gamma = 1 / mean squared distance (held constant for the gradient).

    The kernel matrices are quadratic in the number of positions, so maps larger than ``samples`` positions are
    compared on ``samples`` random positions of each side, redrawn at every call from a seeded generator (the
    reference code also draws random pairs each step). Smaller maps are compared exactly.
    """

    def __init__(self, samples: int = 1024, seed: int = 0) -> None:
        if samples < 2:
            raise ValueError(f"samples must be >= 2, got {samples}")
        self.samples = samples
        self.generator = torch.Generator().manual_seed(seed)

    def _subsample(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= self.samples:
            return x
        index = torch.randperm(x.shape[0], generator=self.generator)[: self.samples]
        return x[index.to(x.device)]

    def target(self, style_feat: torch.Tensor) -> torch.Tensor:
        return positions(style_feat)

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = feat.new_zeros(())
        for one in feat:
            x, y = self._subsample(positions(one)), self._subsample(target)
            with torch.no_grad():
                mean_sq = torch.cat([torch.cdist(x, x).pow(2).flatten(), torch.cdist(y, y).pow(2).flatten(),
                                     torch.cdist(x, y).pow(2).flatten()]).mean()
                gamma = float(1.0 / mean_sq.clamp_min(1e-12))
            total = total + mmd2(x, y, "gaussian", gamma=gamma)
        return total / feat.shape[0]


class BNStatisticsLoss(StyleLoss):
    """Li et al. 2017, BN statistics: (1/C) sum_c [(mu_c - mu_s,c)^2 + (sigma_c - sigma_s,c)^2]."""

    def target(self, style_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mean_std(style_feat)

    def loss(self, feat: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return mean_std_loss(feat, *target)


class MRFLoss(StyleLoss):
    """Li & Wand 2016: nearest-neighbour patch matching. With several style images the patches of all of them form
    one pool (a patch is matched, not averaged, so blending weights do not apply)."""

    def __init__(self, size: int = 3, stride: int = 2, style_stride: int = 2) -> None:
        self.size, self.stride, self.style_stride = size, stride, style_stride

    def target(self, style_feat: torch.Tensor) -> torch.Tensor:
        height, width = style_feat.shape[-2:]
        if min(height, width) < self.size:
            raise UserError(f"mrf loss: a style map of {height}x{width} holds no {self.size}x{self.size} patch "
                            "(use larger style images or shallower --mrf_layers)")
        return patches(style_feat, self.size, self.style_stride)

    def targets(self, style_feats: Sequence[torch.Tensor], weights: Sequence[float]) -> list[tuple[float, Any]]:
        pooled = torch.cat([self.target(f.detach()) for f in style_feats])
        return [(1.0, pooled)]

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mrf_loss(feat, target, size=self.size, stride=self.stride)


STYLE_LOSSES: dict[str, type[StyleLoss]] = {
    "gram": GramLoss,
    "shifted_gram": ShiftedGramLoss,
    "mmd_linear": LinearMMDLoss,
    "mmd_poly": PolyMMDLoss,
    "mmd_gaussian": GaussianMMDLoss,
    "bn": BNStatisticsLoss,
    "mrf": MRFLoss,
    "histogram": HistogramLoss,
    "reshuffle": ReshuffleLoss,
}
