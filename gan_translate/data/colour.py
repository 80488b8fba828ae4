"""Colour preservation for style transfer (Gatys, Bethge, Hertzmann, Shechtman, "Preserving Color in Neural Artistic
Style Transfer", arXiv:1606.05897, 2016), on platform image tensors: RGB, (N, 3, H, W) or (3, H, W), in [-1, 1].

- Luminance-only transfer: stylise the luminance channel (Y of YIQ) and put the content's chrominance (I, Q) back.
  Before that the style's luminance is shifted and scaled to the content's mean and standard deviation.
- Colour histogram matching: an affine map of the style image's RGB values that gives them the content's mean and
  covariance, applied before the transfer. The matrix is Sigma_c^(1/2) Sigma_s^(-1/2) with symmetric square roots
  ("sym", the Image Analogies variant that the paper prefers) or L_c L_s^(-1) with Cholesky factors ("chol").
  AdaIN's colour preservation (Huang & Belongie 2017, sec. 7) is the same operation.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["MATCH_METHODS", "combine_luminance", "luminance", "match_colour", "match_luminance", "rgb_to_yiq",
           "yiq_to_rgb"]

# NTSC YIQ (the paper's choice of a luminance/chrominance space), applied to [0, 1] RGB.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.595716, -0.274453, -0.321263],
                            [0.211456, -0.522591, 0.311135]], dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_EPS = 1e-5  # added to covariance diagonals: a flat (single-colour) image has a singular covariance


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    m = matrix.to(image.device, image.dtype)
    return torch.einsum("ij,...jhw->...ihw", m, image)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB -> YIQ of the [0, 1] image (Y in [0, 1])."""
    return _apply(_RGB_TO_YIQ, (image + 1) / 2)


def yiq_to_rgb(yiq: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_yiq``: back to [-1, 1] RGB (not clipped)."""
    return _apply(_YIQ_TO_RGB, yiq) * 2 - 1


def luminance(image: torch.Tensor) -> torch.Tensor:
    """The luminance as a grey RGB image in [-1, 1] (Y repeated in the three channels, what VGG is fed)."""
    y = rgb_to_yiq(image)[..., :1, :, :]
    return (y * 2 - 1).expand_as(image).contiguous()


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style's grey luminance image with its mean and standard deviation set to the content's (per image)."""
    ys, yc = luminance(style)[..., :1, :, :], luminance(content)[..., :1, :, :]
    dims = (-2, -1)
    matched = (ys - ys.mean(dims, keepdim=True)) / ys.std(dims, keepdim=True).clamp_min(1e-6)
    matched = matched * yc.std(dims, keepdim=True) + yc.mean(dims, keepdim=True)
    return matched.expand_as(style).contiguous()


def combine_luminance(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The luminance of ``stylised`` with the chrominance (I, Q) of ``content`` (same size), as [-1, 1] RGB."""
    yiq = torch.cat([rgb_to_yiq(stylised)[..., :1, :, :], rgb_to_yiq(content)[..., 1:, :, :]], dim=-3)
    return yiq_to_rgb(yiq).clamp(-1, 1)


def _sym_sqrt(cov: torch.Tensor, power: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag_embed(values.clamp_min(_EPS) ** power) @ vectors.transpose(-2, -1)


def _sym_transfer(cov_source: torch.Tensor, cov_target: torch.Tensor) -> torch.Tensor:
    return _sym_sqrt(cov_target, 0.5) @ _sym_sqrt(cov_source, -0.5)


def _chol_transfer(cov_source: torch.Tensor, cov_target: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cholesky(cov_target) @ torch.linalg.inv(torch.linalg.cholesky(cov_source))


MATCH_METHODS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sym": _sym_transfer,
    "chol": _chol_transfer,
}


def _mean_cov(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = image.reshape(3, -1).to(torch.float64)
    mean = pixels.mean(1, keepdim=True)
    centred = pixels - mean
    cov = centred @ centred.t() / pixels.shape[1] + _EPS * torch.eye(3, dtype=torch.float64, device=image.device)
    return mean, cov


def match_colour(source: torch.Tensor, target: torch.Tensor, method: str = "sym") -> torch.Tensor:
    """``source`` (3, H, W) with its RGB mean and covariance made equal to those of ``target`` (3, H', W').

    Values are clipped to [-1, 1] afterwards (the match is exact before clipping).
    """
    if method not in MATCH_METHODS:
        raise ValueError(f"unknown colour matching method {method!r}; choose one of {sorted(MATCH_METHODS)}")
    if source.dim() == 4:
        return torch.stack([match_colour(s, target[min(i, target.shape[0] - 1)], method)
                            for i, s in enumerate(source)])
    mean_s, cov_s = _mean_cov(source)
    mean_t, cov_t = _mean_cov(target)
    matrix = MATCH_METHODS[method](cov_s, cov_t)
    pixels = source.reshape(3, -1).to(torch.float64)
    matched = matrix @ (pixels - mean_s) + mean_t
    return matched.to(source.dtype).reshape(source.shape).clamp(-1, 1)
