"""The two-stage peer-regularization layer of TPFR (Svoboda et al., CVPR 2020), written for bounded memory.

Each pixel of the content latent ("query") is rebuilt from its k nearest pixels among the peers (the style images'
latents), with learned attention over those k:

- stage 1, style recombination: kNN between the query's z_c and the peers' z_c; the new z_s is the attention-weighted
  sum of the neighbours' z_s; z_c is kept.
- stage 2, content recombination: kNN between the new z_s and the peers' z_s; the new z_c is the weighted sum of the
  neighbours' z_c.

Attention scores (Velickovic et al.'s additive form, as the authors' code): e_ij = a1 . h(x_i) + a2 . h(y_j), with a
shared MLP h (Linear, BatchNorm1d, ReLU, twice: C -> C/2 -> C/4), then dropout, softplus, -1e9 outside the k nearest
neighbours and a softmax over the peers. Because the masked entries are exactly zero after the softmax, the layer here
never builds the dense (pixels x peer pixels) score matrix: it finds each query pixel's k nearest peers in chunks of
``chunk`` query pixels (squared Euclidean distances, no gradient: they only select), then scores, drops out, softplus-es
and normalises only those k. Memory is O(chunk x peer pixels) for the search plus O(pixels x k x C) for the result,
instead of O(pixels x peer pixels x 2) -- a 512 px image (128 x 128 latent) against one 512 px style image needs 64 MB
for the search with chunk 1024 instead of 2 GB.

Peers: "sample" (this project's default) -- sample i's pixels see only the pixels of style image i; "batch" (the
authors' code) -- every sample sees the pixels of every style image of the batch. The MLP's BatchNorm1d normalises
over all query pixels (and, separately, all peer pixels) of the batch in training mode, as the authors' code does; in
eval mode it uses running statistics and samples are independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PEER_MODES", "PeerAttention", "PeerRegularization", "Attention", "knn_indices"]

PEER_MODES = ("sample", "batch")
_STAGES = ("style", "content")


@dataclass
class Attention:
    """Sparse attention of one stage: ``index[n, q, j]`` is the j-th nearest peer pixel of query pixel q of sample n
    (an index into that sample's list of peer pixels, ordered by peer image then row-major pixel) and ``weight`` its
    attention weight; the weights of each query pixel sum to one and every other peer pixel has weight zero."""

    index: torch.Tensor  # (N, Q, k) int64
    weight: torch.Tensor  # (N, Q, k)
    num_peers: int  # peer pixels per sample

    def dense(self) -> torch.Tensor:
        """The full (N, Q, num_peers) attention matrix (for inspection and tests; large)."""
        n, q, _ = self.index.shape
        out = self.weight.new_zeros(n, q, self.num_peers)
        return out.scatter_add(2, self.index, self.weight)


def knn_indices(query: torch.Tensor, peers: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Indices (Q, k) of the ``k`` peers (rows of ``peers``, (P, C)) nearest to each row of ``query`` (Q, C) in squared
    Euclidean distance, nearest first, searching ``chunk`` query rows at a time. No gradient (the kNN only selects).
    """
    with torch.no_grad():
        query, peers = query.detach(), peers.detach()
        # |q - p|^2 = |q|^2 - 2 q.p + |p|^2; |q|^2 is the same along a row, so it cannot change the ranking
        peer_norms = peers.pow(2).sum(1)
        parts = []
        for start in range(0, query.shape[0], chunk):
            distances = torch.addmm(peer_norms, query[start: start + chunk], peers.t(), alpha=-2.0)
            parts.append(distances.topk(k, dim=1, largest=False).indices)
    return torch.cat(parts, 0)


class PeerAttention(nn.Module):
    """The learned scoring of one stage over ``dim``-channel keys: MLP h (dim -> dim/2 -> dim/4, BatchNorm1d + ReLU),
    the two linear scorers a1 (query side) and a2 (peer side), and dropout on the scores."""

    def __init__(self, dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        if dim < 4:
            raise ValueError(f"peer attention needs at least 4 key channels, got {dim}")
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim // 2), nn.BatchNorm1d(dim // 2), nn.ReLU(),
            nn.Linear(dim // 2, dim // 4), nn.BatchNorm1d(dim // 4), nn.ReLU(),
        )
        self.score_query = nn.Linear(dim // 4, 1)
        self.score_peer = nn.Linear(dim // 4, 1)
        self.dropout_rate = dropout

    def dropout(self, scores: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Inverted dropout of the scores in training mode; the mask comes from ``generator`` (a CPU generator the
        caller owns, so that a resumed run draws the same masks) or from torch's global one."""
        if not self.training or self.dropout_rate == 0:
            return scores
        device = "cpu" if generator is not None else scores.device
        keep = torch.rand(scores.shape, generator=generator, device=device).to(scores.device) >= self.dropout_rate
        return scores * keep / (1.0 - self.dropout_rate)

    def scores(self, keys: torch.Tensor, side: str) -> torch.Tensor:
        """Per-pixel scalar scores of (R, dim) keys: a1 . h(x) for side "query", a2 . h(y) for side "peer"."""
        scorer = self.score_query if side == "query" else self.score_peer
        return scorer(self.mlp(keys)).squeeze(1)


def _pixels(fmap: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W, C), row-major pixels."""
    return fmap.flatten(2).transpose(1, 2)


class PeerRegularization(nn.Module):
    """Two-stage peer regularization (see the module docstring).

    Args:
        content_nc / style_nc: channels of z_c and z_s (paper 256 and 512).
        k: nearest neighbours per pixel (paper 5).
        dropout: on the attention scores (paper 0.2).
        peers: "sample" or "batch".
        chunk: query pixels per kNN search block (memory knob; results do not depend on it).

    Call: ``layer(content, style, peer_content, peer_style)`` with query latents (N, C, H, W) and peer latents
    (M, C, H', W') -> ``(new z_c, new z_s)`` shaped like the query's. With peers "sample", M must equal N.
    """

    def __init__(self, content_nc: int = 256, style_nc: int = 512, *, k: int = 5, dropout: float = 0.2,
                 peers: str = "sample", chunk: int = 1024) -> None:
        super().__init__()
        if peers not in PEER_MODES:
            raise ValueError(f"unknown peer mode {peers!r}; choose one of {', '.join(PEER_MODES)}")
        if k < 1 or chunk < 1:
            raise ValueError(f"k and chunk must be >= 1, got {k} and {chunk}")
        self.k, self.peers, self.chunk = k, peers, chunk
        self.style_attention = PeerAttention(content_nc, dropout)  # stage 1 scores content keys
        self.content_attention = PeerAttention(style_nc, dropout)  # stage 2 scores style keys
        self.last_attention: dict[str, Attention] = {}
        self.generator: torch.Generator | None = None  # source of the dropout masks (None: torch's global one)

    # ---- one stage
    def _peer_groups(self, n: int, m: int) -> list[slice]:
        """The peer images of each of the ``n`` samples, as slices of the ``m`` peer images."""
        if self.peers == "batch":
            return [slice(0, m)] * n
        if m != n:
            raise ValueError(f"per-sample peers need one style image per content image, got {n} and {m}")
        return [slice(i, i + 1) for i in range(n)]

    def attend(self, stage: str, query_keys: torch.Tensor, peer_keys: torch.Tensor,
               peer_values: torch.Tensor) -> torch.Tensor:
        """One recombination stage on pixel lists: query keys (N, Q, Ck), peer keys (M, P, Ck), peer values
        (M, P, Cv) -> (N, Q, Cv). The stage's sparse attention is kept in ``last_attention[stage]``."""
        scorer = self.style_attention if stage == "style" else self.content_attention
        n, q, ck = query_keys.shape
        m, p, _ = peer_keys.shape
        # scores of every pixel at once, so that BatchNorm sees the whole batch as in the authors' code
        query_scores = scorer.scores(query_keys.reshape(n * q, ck), "query").view(n, q)
        peer_scores = scorer.scores(peer_keys.reshape(m * p, ck), "peer").view(m, p)
        outputs, indices, weights = [], [], []
        groups = self._peer_groups(n, m)
        for i, group in enumerate(groups):
            keys = peer_keys[group].reshape(-1, ck)
            k = min(self.k, keys.shape[0])
            index = knn_indices(query_keys[i], keys, k, self.chunk)  # (Q, k)
            logits = query_scores[i].unsqueeze(1) + peer_scores[group].reshape(-1)[index]
            weight = torch.softmax(F.softplus(scorer.dropout(logits, self.generator)), dim=1)
            values = peer_values[group].reshape(-1, peer_values.shape[-1])[index]  # (Q, k, Cv)
            outputs.append(torch.einsum("qk,qkc->qc", weight, values))
            indices.append(index)
            weights.append(weight.detach())
        num_peers = (groups[0].stop - groups[0].start) * p
        self.last_attention[stage] = Attention(torch.stack(indices), torch.stack(weights), num_peers)
        return torch.stack(outputs)

    # ---- the two stages
    def recombine_style(self, content: torch.Tensor, style: torch.Tensor, peer_content: torch.Tensor,
                        peer_style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: ``(z_c unchanged, new z_s)`` -- the new style is gathered from the peers whose content is near."""
        n, _, h, w = style.shape
        new_style = self.attend("style", _pixels(content), _pixels(peer_content), _pixels(peer_style))
        return content, new_style.transpose(1, 2).reshape(n, -1, h, w)

    def recombine_content(self, new_style: torch.Tensor, peer_content: torch.Tensor,
                          peer_style: torch.Tensor) -> torch.Tensor:
        """Stage 2: the new z_c, gathered from the peers whose style is near the new style."""
        n, _, h, w = new_style.shape
        new_content = self.attend("content", _pixels(new_style), _pixels(peer_style), _pixels(peer_content))
        return new_content.transpose(1, 2).reshape(n, -1, h, w)

    def forward(self, content: torch.Tensor, style: torch.Tensor, peer_content: torch.Tensor,
                peer_style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        content, new_style = self.recombine_style(content, style, peer_content, peer_style)
        new_content = self.recombine_content(new_style, peer_content, peer_style)
        return new_content, new_style
