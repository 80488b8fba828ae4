"""Feature reshuffle: Gu, Chen, Liao, Yuan, "Arbitrary Style Transfer with Deep Feature Reshuffle", CVPR 2018, in its
optimisation form.

The style image's feature map is rearranged to the content's layout: every content position takes the style patch
that resembles its own patch most, under a usage constraint -- every style position serves about N_c / N_s content
positions (N_c, N_s: the maps' position counts). With equal counts and 1x1 patches the result is a permutation of the
style map, so it has the style's Gram matrix (and every other position-free statistic) exactly, while each position
still holds a real style feature: global and local style in one target. The loss is the mean squared distance of the
synthesis' map to that target.

Matching (``constrained_matching``): similarity = normalised cross-correlation of k x k patches (the features at each
position L2-normalised, then the patch vector normalised). Greedy rounds: every unassigned content position proposes
to its most similar style position that still has room; each style position accepts its best proposals up to its
room; repeat. The room is floor(N_c / N_s) per style position first, then one more for the positions left over, so
every style position is used floor or ceil of N_c / N_s times (at most once when N_c < N_s). This replaces the
authors' PatchMatch-based approximation of the same constraint with an exact, vectorised one: O(N_c N_s) memory, fine
on CPU up to maps of ~64 x 64 (relu4_1 of a 512 px image).

Voting (``vote``): with k x k patches, a content position receives the average of the style features that the
matched patches covering it place there (the authors' ``avg_vote``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gan_translate.losses.style_base import StyleLoss

__all__ = ["ReshuffleLoss", "constrained_matching", "patch_similarity", "reshuffle_features", "vote"]


def _unit_patches(feat: torch.Tensor, size: int) -> torch.Tensor:
    """(C * size^2, M): every position's size x size patch (zero padded) of the position-normalised map, as unit
    vectors."""
    unit = feat / feat.norm(dim=1, keepdim=True).clamp_min(1e-8)
    cols = F.unfold(unit, size, padding=size // 2)[0]
    return cols / cols.norm(dim=0, keepdim=True).clamp_min(1e-8)


def patch_similarity(content: torch.Tensor, style: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Normalised cross-correlation (N_c, N_s) of the size x size patches around every position of two maps
    (1, C, H, W)."""
    return _unit_patches(content, size).t() @ _unit_patches(style, size)


def _assign(similarity: torch.Tensor, match: torch.Tensor, room: torch.Tensor) -> None:
    """Greedy rounds (module docstring) for the content positions with ``match == -1``; fills ``match`` and spends
    ``room`` in place. Stops when every content position is matched or no style position has room."""
    while True:
        free = (match < 0).nonzero().squeeze(1)
        if free.numel() == 0 or int(room.sum()) == 0:
            return
        scores = similarity[free].masked_fill(room[None] <= 0, float("-inf"))
        best_score, best = scores.max(dim=1)
        # rank the proposals to each style position by score: sort by score, then (stably) by style position
        by_score = best_score.argsort(descending=True)
        by_style = best[by_score].argsort(stable=True)
        order = by_score[by_style]
        targets = best[order]
        first = torch.ones_like(targets, dtype=torch.bool)
        first[1:] = targets[1:] != targets[:-1]
        starts = torch.cummax(torch.where(first, torch.arange(len(targets), device=targets.device), 0), 0).values
        rank = torch.arange(len(targets), device=targets.device) - starts
        accepted = rank < room[targets]
        match[free[order[accepted]]] = targets[accepted]
        room -= torch.bincount(targets[accepted], minlength=room.numel())


def constrained_matching(similarity: torch.Tensor) -> torch.Tensor:
    """For each content position (rows of ``similarity``, (N_c, N_s)) the style position it takes, every style
    position used floor(N_c / N_s) or ceil(N_c / N_s) times (at most once when N_c < N_s): (N_c,) indices."""
    n_content, n_style = similarity.shape
    match = torch.full((n_content,), -1, dtype=torch.long, device=similarity.device)
    each = n_content // n_style
    if each:
        _assign(similarity, match, torch.full((n_style,), each, dtype=torch.long, device=similarity.device))
    _assign(similarity, match, torch.ones(n_style, dtype=torch.long, device=similarity.device))
    return match


def vote(style: torch.Tensor, match: torch.Tensor, content_size: tuple[int, int], size: int) -> torch.Tensor:
    """The reshuffled map (1, C, H_c, W_c): content position q's size x size patch is the style patch around
    ``match[q]``; where patches overlap their features are averaged (only style cells inside the style map count)."""
    channels = style.shape[1]
    cols = F.unfold(style, size, padding=size // 2)[0][:, match]  # (C * size^2, N_c)
    inside = F.unfold(torch.ones_like(style[:, :1]), size, padding=size // 2)[0][:, match]  # (size^2, N_c)
    total = F.fold(cols[None], content_size, size, padding=size // 2)
    count = F.fold(inside[None], content_size, size, padding=size // 2)
    return total / count.clamp_min(1.0).expand(-1, channels, -1, -1) if size > 1 else total


def reshuffle_features(content: torch.Tensor, style: torch.Tensor, *, patch_size: int = 3,
                       alpha: float = 0.0) -> torch.Tensor:
    """The style map (1, C, H_s, W_s) reshuffled to the layout of the content map (1, C, H_c, W_c) under the usage
    constraint, blended as alpha * content + (1 - alpha) * reshuffled (the authors' decoder path uses alpha = 0.6;
    the optimisation leaves the content share to the content loss: alpha = 0)."""
    if content.shape[0] != 1 or style.shape[0] != 1:
        raise ValueError("reshuffle_features takes one content map and one style map")
    with torch.no_grad():
        match = constrained_matching(patch_similarity(content, style, patch_size))
        shuffled = vote(style, match, tuple(content.shape[-2:]), patch_size)
    return alpha * content + (1 - alpha) * shuffled


class ReshuffleLoss(StyleLoss):
    """Gu et al. 2018: mean squared distance to the style map reshuffled to the content's layout. Needs the content's
    map of the same layer (``set_content``) before ``target``."""

    def __init__(self, patch_size: int = 3) -> None:
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd and positive, got {patch_size}")
        self.patch_size = patch_size
        self.content: torch.Tensor | None = None

    def set_content(self, content_feat: torch.Tensor) -> None:
        self.content = content_feat.detach()

    def target(self, style_feat: torch.Tensor) -> torch.Tensor:
        if self.content is None:
            raise RuntimeError("ReshuffleLoss.target needs the content map first (set_content)")
        return reshuffle_features(self.content, style_feat, patch_size=self.patch_size)

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(feat, target.expand_as(feat))
