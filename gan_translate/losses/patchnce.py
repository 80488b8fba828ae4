"""PatchNCE: the contrastive loss of CUT (Park, Efros, Zhang, Zhu, "Contrastive Learning for Unpaired Image-to-Image
Translation", ECCV 2020, eq. 2-3).

Each query q_i (a patch of the output, embedded and L2-normalised) must pick its key k_i (the patch of the input at the
same place) out of the keys of the other sampled places: a cross-entropy over [q_i . k_i, q_i . k_j (j != i)] / T,
target 0. As in the authors' code, the keys are detached (no gradient reaches the key path, as in MoCo), the diagonal of
the negatives (the positive again) is masked with -10 before the temperature, and the loss is returned per patch (the
model takes the means over patches and layers, so that its lambda_NCE means what the authors' does).

The negatives come from the same image (default) or from every image of the minibatch; the number of images is read
from the tensors (rows / patches per image), never from a configured batch size, so that it is right on every process
of a distributed run and on a last, smaller batch (the authors' code used ``opt.batch_size``: their issue #67).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchNCELoss", "patch_nce"]

# Logit of a masked negative before the temperature: exp(-10 / 0.07) ~ 1e-62, i.e. no weight at all.
MASKED = -10.0


def patch_nce(q: torch.Tensor, k: torch.Tensor, patches_per_image: int, *, temperature: float = 0.07,
              negatives_from_minibatch: bool = False) -> torch.Tensor:
    """The PatchNCE loss of every query row, shape (rows,).

    Args:
        q: queries (rows, D), rows = images x patches_per_image, image-major (row i * P + p is patch p of image i).
        k: keys of the same shape, row for row the same places; detached here.
        patches_per_image: P, the places sampled per image.
        temperature: T (0.07 in the paper).
        negatives_from_minibatch: negatives from the patches of every image (SinCUT) instead of the same image only.
    """
    if q.shape != k.shape or q.dim() != 2:
        raise ValueError(f"queries and keys must both be (rows, dim); got {tuple(q.shape)} and {tuple(k.shape)}")
    rows, dim = q.shape
    if patches_per_image < 1 or rows % patches_per_image:
        raise ValueError(f"{rows} rows are not a whole number of images of {patches_per_image} patches")
    k = k.detach()
    positive = (q * k).sum(dim=1, keepdim=True)  # (rows, 1)
    groups = 1 if negatives_from_minibatch else rows // patches_per_image
    qg, kg = q.reshape(groups, -1, dim), k.reshape(groups, -1, dim)
    negatives = torch.bmm(qg, kg.transpose(1, 2))  # (groups, N, N): query n against every key of its group
    n = negatives.shape[1]
    diagonal = torch.eye(n, dtype=torch.bool, device=q.device)[None]
    negatives = negatives.masked_fill(diagonal, MASKED).reshape(rows, n)
    logits = torch.cat([positive, negatives], dim=1) / temperature
    target = torch.zeros(rows, dtype=torch.long, device=q.device)
    return F.cross_entropy(logits.float(), target, reduction="none")


class PatchNCELoss(nn.Module):
    """``patch_nce`` with its settings fixed (one instance serves every tapped layer: they are identical)."""

    def __init__(self, temperature: float = 0.07, negatives_from_minibatch: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.negatives_from_minibatch = negatives_from_minibatch

    def forward(self, q: torch.Tensor, k: torch.Tensor, patches_per_image: int) -> torch.Tensor:
        return patch_nce(q, k, patches_per_image, temperature=self.temperature,
                         negatives_from_minibatch=self.negatives_from_minibatch)
