"""The interface of every style loss (``gan_translate.losses.style`` and the modules beside it)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch

__all__ = ["StyleLoss"]


class StyleLoss(ABC):
    """A style loss for one layer: ``target(style map)`` once, then ``loss(map, target)`` per optimisation step.

    Several style images: ``targets`` pairs each one's statistics with its blending weight and the loss is the
    weighted sum -- for the Gram-like losses the same minimiser as blending the statistics themselves.
    """

    @abstractmethod
    def target(self, style_feat: torch.Tensor) -> Any:
        """The statistics of one style image's map (1, C, H, W) that this loss matches."""

    @abstractmethod
    def loss(self, feat: torch.Tensor, target: Any) -> torch.Tensor:
        """The loss of the synthesis maps ``feat`` against ``target``."""

    def targets(self, style_feats: Sequence[torch.Tensor], weights: Sequence[float]) -> list[tuple[float, Any]]:
        """(weight, target) pairs for several style images."""
        return [(w, self.target(f.detach())) for f, w in zip(style_feats, weights)]

    def set_content(self, content_feat: torch.Tensor) -> None:
        """The content image's map at this loss's layer, given before ``targets``: losses whose target depends on the
        content (feature reshuffle) keep it; the others ignore it."""
        return None
