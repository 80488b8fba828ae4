"""The matting Laplacian (Levin, Lischinski, Weiss, "A Closed-Form Solution to Natural Image Matting", PAMI 2008) and
Luan et al.'s photorealism regulariser built on it ("Deep Photo Style Transfer", CVPR 2017, eq. 2).

For a photo I with pixels in [0, 1], over every 3x3 window w_k (mean mu_k, covariance Sigma_k, |w_k| = 9):

    L_ij = sum_{k : i, j in w_k} ( delta_ij - (1 + (I_i - mu_k)^T (Sigma_k + eps/9 Id)^-1 (I_j - mu_k)) / 9 )

L is symmetric and positive semi-definite, each row sums to zero, and V^T L V is (close to) zero exactly when V is
locally an affine function of I's colours -- so sum_c V_c^T L V_c over the output's channels penalises everything that
is not a locally affine colour transform of the photo (Luan et al. weight it 1e4).

The build is vectorised: the windows' statistics are batched 3x3 inversions, and since every pair (i, j) in a window
lies within 2 pixels, L is accumulated as 25 offset planes (one per (dy, dx) in -2..2) by 81 slice additions -- no loop
over pixels or windows -- then turned into a sparse COO matrix of at most 25 entries per pixel (row-major pixel order).
"""

from __future__ import annotations

import torch

__all__ = ["MATTING_EPS", "matting_laplacian", "matting_loss"]

MATTING_EPS = 1e-7  # Luan et al.'s code (Levin et al. suggest 1e-7 too; the TF port uses 1e-5)


def matting_laplacian(image: torch.Tensor, eps: float = MATTING_EPS, radius: int = 1) -> torch.Tensor:
    """The matting Laplacian of ``image`` (3, H, W) or (1, 3, H, W) in [0, 1], as a coalesced sparse COO tensor
    (H W, H W) in float32 (computed in float64), pixel index y * W + x."""
    if image.dim() == 4:
        image = image[0]
    img = image.detach().to("cpu", torch.float64)
    channels, height, width = img.shape
    size = 2 * radius + 1
    area = size * size
    if height < size or width < size:
        raise ValueError(f"image {height}x{width} is smaller than one {size}x{size} window")
    wh, ww = height - size + 1, width - size + 1  # window centres (the windows that fit)
    # (wh, ww, area, C): the pixels of every window, window offset (a // size, a % size)
    windows = torch.stack([img[:, dy: dy + wh, dx: dx + ww] for dy in range(size) for dx in range(size)], dim=-1)
    windows = windows.permute(1, 2, 3, 0)
    mean = windows.mean(dim=2, keepdim=True)
    centred = windows - mean
    cov = centred.transpose(-1, -2) @ centred / area  # (wh, ww, C, C), population covariance
    inverse = torch.linalg.inv(cov + (eps / area) * torch.eye(channels, dtype=torch.float64))
    affinity = (1 + centred @ inverse @ centred.transpose(-1, -2)) / area  # (wh, ww, area, area)

    affinity = affinity.permute(2, 3, 0, 1).contiguous()  # (area, area, wh, ww): contiguous planes to add

    span = 2 * (size - 1) + 1  # offsets -2..2 for 3x3 windows
    planes = torch.zeros(span * span, height, width, dtype=torch.float64)  # planes[o, y, x] = A[(y,x), (y,x)+o]
    for a in range(area):
        ay, ax = divmod(a, size)
        for b in range(area):
            by, bx = divmod(b, size)
            offset = (by - ay + size - 1) * span + (bx - ax + size - 1)
            planes[offset, ay: ay + wh, ax: ax + ww] += affinity[a, b]
    centre = (span * span) // 2
    planes = -planes
    planes[centre] -= planes.sum(0)  # D - A: D = the row sums of A (the number of windows holding the pixel)

    # Row-major assembly: for a pixel, offsets in (dy, dx) order have increasing column indices y' W + x', so the
    # entries come out sorted by (row, col) and the tensor is coalesced as built.
    dy, dx = (torch.arange(span * span) // span - (size - 1)), (torch.arange(span * span) % span - (size - 1))
    ys = torch.arange(height).view(height, 1, 1)
    xs = torch.arange(width).view(1, width, 1)
    inside = (ys + dy >= 0) & (ys + dy < height) & (xs + dx >= 0) & (xs + dx < width)  # (H, W, 25)
    values = planes.permute(1, 2, 0)
    keep = inside & (values != 0)
    rows = (ys * width + xs).expand(height, width, span * span)[keep]
    cols = ((ys + dy) * width + xs + dx)[keep]
    n = height * width
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values[keep].float(), (n, n), is_coalesced=True,
                                   check_invariants=False)


def matting_loss(image: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
    """sum_c V_c^T L V_c for the output ``image`` (1, 3, H, W) in [-1, 1] (V = (image + 1) / 2 in [0, 1]);
    differentiable in ``image`` through ``torch.sparse.mm`` (gradient 2 L V)."""
    # Always float32: L's entries reach ~1e7 (eps 1e-7 in flat windows) and cancel to zero row sums, which bf16
    # cannot hold -- under bf16 autocast the product would be cast down and the loss would be noise.
    with torch.autocast(device_type=image.device.type, enabled=False):
        v = ((image[0].float() + 1) / 2).flatten(1).t()  # (H W, 3)
        return (v * torch.sparse.mm(laplacian.float(), v)).sum()
