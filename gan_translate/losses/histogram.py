"""Histogram loss: Risser, Wilmot, Barnes, "Stable and Controllable Neural Texture Synthesis and Style Transfer Using
Histogram Losses", 2017.

Many activation distributions share one Gram matrix (the Gram pins second moments, not the means and spreads
separately), which makes Gram-only synthesis unstable. The histogram loss pins each channel's whole distribution:

    R(O) = O with every channel remapped to the style channel's distribution (a monotone, rank-preserving remap)
    L_hist = mean (O - R(O))^2,  R(O) held constant (no gradient through the matching)

It is used beside the Gram loss (``--style_loss gram:1,histogram:W``), on relu1_1 and relu4_1 as in the paper.

Matching by quantiles, not bin counts: the style channel's sorted values are the target's quantile function, and the
synthesised activation of rank r (of M) takes the style's quantile (r + 1/2) / M, interpolated linearly between the
style's sorted values. This handles a style map of another size than the synthesis and needs no bin count (the
co-author's code uses 256 bins and the bin's lower edge; exact quantiles are the limit of that).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gan_translate.losses.style_base import StyleLoss

__all__ = ["HistogramLoss", "histogram_match", "sorted_channels"]

MAX_STYLE_SAMPLES = 1 << 16  # the quantile function of a larger style map is kept at this many evenly spaced ranks


def sorted_channels(feat: torch.Tensor, max_samples: int = MAX_STYLE_SAMPLES) -> torch.Tensor:
    """Each channel's values in ascending order, (C, K): the channel's empirical quantile function.

    Args:
        feat: one map (1, C, H, W) or (C, H, W).
        max_samples: longer channels are thinned to this many evenly spaced order statistics (the quantile function
            changes little, the memory of a 512 px relu1_1 map drops from 64 MB to 16 MB).
    """
    flat = feat.reshape(feat.shape[-3], -1)
    values = flat.sort(dim=1).values
    if values.shape[1] > max_samples:
        index = torch.linspace(0, values.shape[1] - 1, max_samples, device=values.device).round().long()
        values = values[:, index]
    return values


def histogram_match(feat: torch.Tensor, style_sorted: torch.Tensor) -> torch.Tensor:
    """R(feat): every channel of ``feat`` (N, C, H, W) remapped to the distribution whose sorted values per channel
    are ``style_sorted`` (C, K), keeping the order of the values within the channel. No gradient flows through it.

    The value of rank r among M (0-based; ties broken by position) becomes the style's quantile at (r + 1/2) / M,
    interpolated between the sorted style values (which sit at quantiles (k + 1/2) / K).
    """
    with torch.no_grad():
        batch, channels = feat.shape[:2]
        flat = feat.reshape(batch, channels, -1)
        count, samples = flat.shape[-1], style_sorted.shape[-1]
        order = flat.argsort(dim=-1, stable=True)  # order[..., r] = position holding the value of rank r
        # position of quantile (r + 1/2) / M in the style's sorted values, clamped to its ends
        # positions in float64 whatever the maps' dtype: bfloat16 cannot count past 256 exactly
        where = ((torch.arange(count, device=feat.device, dtype=torch.float64) + 0.5) * samples / count - 0.5)
        where = where.clamp(0, samples - 1)
        low = where.floor().long()
        high = (low + 1).clamp(max=samples - 1)
        precise = style_sorted.double() if style_sorted.dtype == torch.float64 else style_sorted.float()
        frac = (where - low).to(precise.dtype)
        quantiles = precise[:, low] * (1 - frac) + precise[:, high] * frac  # (C, M), ascending
        matched = torch.empty_like(flat)
        matched.scatter_(-1, order, quantiles.to(flat.dtype).expand(batch, channels, count))
        return matched.reshape(feat.shape)


class HistogramLoss(StyleLoss):
    """Risser et al. 2017: mean squared distance of the maps to their per-channel histogram match to the style."""

    def target(self, style_feat: torch.Tensor) -> torch.Tensor:
        return sorted_channels(style_feat)

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(feat, histogram_match(feat, target))
