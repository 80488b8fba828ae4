"""Paired image metrics -- PSNR, SSIM, L1 -- on 8-bit images, one value per image.

Every metric is computed on images as they are saved: tensors in [-1, 1] are mapped to [0, 255] and rounded to integers
(``quantize``), so a score in metrics.json can be recomputed from the PNG files. Values are per image; a data set's
figure is the mean over its images (the convention of pix2pix-style evaluations; a pooled MSE would weight large images
more).

SSIM follows Wang, Bovik, Sheikh, Simoncelli, "Image Quality Assessment: From Error Visibility to Structural
Similarity", IEEE TIP 2004, with the settings that scikit-image uses for ``structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255)``: an 11x11 Gaussian window of sigma 1.5, K1 = 0.01,
K2 = 0.03, the map averaged over the positions where the window fits inside the image, then over channels.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["PAIRED_METRICS", "PSNR_CAP", "SSIM_WINDOW", "quantize", "psnr", "ssim", "l1", "gaussian_window"]

DATA_RANGE = 255.0
PSNR_CAP = 100.0  # identical images have infinite PSNR; capping keeps means finite (documented in metrics.json)
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scipy's gaussian_filter default, which fixes the window at 2 * int(3.5 * 1.5 + 0.5) + 1 = 11
SSIM_WINDOW = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1
SSIM_K1, SSIM_K2 = 0.01, 0.03


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> the float values in [0, 255] their 8-bit PNG holds (clipped and rounded as save_image does)."""
    return ((torch.nan_to_num(images.detach().float()).clamp(-1, 1) + 1) * 127.5).round()


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two NCHW batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image of two NCHW batches in [0, 255]; capped at ``PSNR_CAP``."""
    _check(a, b)
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    floor = DATA_RANGE**2 / 10 ** (PSNR_CAP / 10)
    return (10 * torch.log10(DATA_RANGE**2 / mse.clamp_min(floor))).float()


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per image of two NCHW batches, in 0-255 units."""
    _check(a, b)
    return (a.double() - b.double()).abs().flatten(1).mean(1).float()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian of ``size`` taps (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of every channel (N*C, 1, H, W)."""
    k = window.numel()
    x = F.conv2d(x, window.view(1, 1, k, 1))
    return F.conv2d(x, window.view(1, 1, 1, k))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image of two NCHW batches in [0, 255] (mean over the SSIM map and channels).

    Images smaller than the 11x11 window on a side get NaN (scikit-image refuses them); callers leave those out.
    """
    _check(a, b)
    n, c, h, w = a.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        return torch.full((n,), float("nan"))
    # float64: the variance terms are differences of large numbers (uxx - ux^2) and lose digits in float32
    x = a.double().reshape(n * c, 1, h, w)
    y = b.double().reshape(n * c, 1, h, w)
    window = gaussian_window().to(x.device)
    # scikit-image filters the whole image and then crops (window - 1) / 2 pixels off every side: the crop leaves
    # exactly the positions whose window lies inside the image, which a 'valid' convolution computes directly.
    mu_x, mu_y = _filter(x, window), _filter(y, window)
    var_x = _filter(x * x, window) - mu_x * mu_x
    var_y = _filter(y * y, window) - mu_y * mu_y
    cov = _filter(x * y, window) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(n, c, -1).mean(2).mean(1).float().cpu()


PAIRED_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "psnr": psnr,
    "ssim": ssim,
    "l1": l1,
}

DEFINITIONS: dict[str, str] = {
    "psnr": f"PSNR in dB of output vs target, 8-bit images (data range 255), per image then averaged; "
            f"identical images count as {PSNR_CAP:g} dB",
    "ssim": "SSIM (Wang et al. 2004) of output vs target, 8-bit images, Gaussian window 11x11 sigma 1.5, K1 0.01, "
            "K2 0.03, data range 255, map mean over valid window positions then over channels; per image then "
            "averaged (= scikit-image structural_similarity(gaussian_weights=True, sigma=1.5, "
            "use_sample_covariance=False, data_range=255))",
    "l1": "mean absolute difference of output vs target in 0-255 units, 8-bit images, per image then averaged",
    "rec_l1": "reconstruction vs input: mean absolute difference in 0-255 units of the 8-bit images, per image then "
              "averaged; CycleGAN's held-out cycle L1, L1(G_B(G_A(x)), x) for AtoB and L1(G_A(G_B(y)), y) for BtoA "
              "(MIXGAN: G_c's reconstruction); computed with l1",
    "fid": "Frechet Inception Distance (Heusel et al. 2017) between the outputs and the real images of the target "
           "domain: Inception-v3 pool3 features (2048-d) of images resized bilinearly to 299x299; "
           "||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))",
    "kid": "Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / d + 1)^3 on the "
           "same features, mean and std over 100 random subsets of min(1000, n // 2) images of each set (half the "
           "set below 2000 images, so that the subsets differ and the std measures something)",
}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation of the finite values (NaN when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))


KNOWN_METRICS: tuple[str, ...] = ("psnr", "ssim", "l1", "fid", "kid")
