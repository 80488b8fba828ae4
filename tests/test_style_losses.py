"""Style losses against the papers' formulas and the identities Li et al. (2017) prove, computed independently
(explicit sums and full kernel matrices) on small random feature maps in double precision."""

from __future__ import annotations

import pytest
import torch

from gan_translate.errors import UserError
from gan_translate.losses.style import (
    BNStatisticsLoss,
    GaussianMMDLoss,
    GramLoss,
    LinearMMDLoss,
    MRFLoss,
    PolyMMDLoss,
    ShiftedGramLoss,
    content_loss,
    gram_loss,
    gram_matrix,
    kernel_matrix,
    mean_std,
    mmd2,
    mrf_loss,
    patches,
    positions,
    shifted_gram_matrices,
    tv_loss,
)


def maps(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture()
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A synthesis map and a style map of a different size (C = 5)."""
    return maps(1, 5, 6, 7, seed=1), maps(1, 5, 8, 5, seed=2) * 1.5 + 0.3


def test_gram_loss_is_gatys_equation_4() -> None:
    """E_l = 1/(4 N^2 M^2) sum (G - A)^2 with unnormalised Gram matrices, for maps of the same size."""
    x, s = maps(1, 4, 5, 6, seed=3), maps(1, 4, 5, 6, seed=4)
    channels, m = 4, 30
    fx, fs = x[0].reshape(channels, m), s[0].reshape(channels, m)
    expected = ((fx @ fx.T - fs @ fs.T) ** 2).sum() / (4 * channels**2 * m**2)
    torch.testing.assert_close(GramLoss().loss(x, GramLoss().target(s)), expected)


def test_gram_loss_equals_poly_kernel_mmd_over_4c2(pair) -> None:
    """Li et al. 2017, eq. 7: Gram loss = MMD^2 with k(x, y) = (x.y)^2, divided by 4 N_l^2."""
    x, s = pair
    mmd = mmd2(positions(x), positions(s), "poly", c=0.0)  # full M x M kernel matrices
    channels = x.shape[1]
    torch.testing.assert_close(gram_loss(x, gram_matrix(s)), mmd / (4 * channels**2))
    # The Li et al. normalisation of the poly loss (Z = C^2) is therefore four times the Gram loss.
    torch.testing.assert_close(PolyMMDLoss().loss(x, PolyMMDLoss().target(s)), mmd / channels**2)


@pytest.mark.parametrize("c", [0.0, 1.5])
def test_poly_closed_form_matches_kernel_matrices(pair, c: float) -> None:
    x, s = pair
    loss = PolyMMDLoss(c)
    torch.testing.assert_close(loss.loss(x, loss.target(s)), mmd2(positions(x), positions(s), "poly", c=c) / 5**2)


def test_linear_mmd_is_the_squared_distance_of_means(pair) -> None:
    x, s = pair
    mmd = mmd2(positions(x), positions(s), "linear")
    distance = ((positions(x).mean(0) - positions(s).mean(0)) ** 2).sum()
    torch.testing.assert_close(mmd, distance)
    torch.testing.assert_close(LinearMMDLoss().loss(x, LinearMMDLoss().target(s)), distance / 5)


def test_shifted_gram_with_delta_zero_is_gram(pair) -> None:
    x, s = pair
    zero = ShiftedGramLoss(0)
    torch.testing.assert_close(zero.loss(x, zero.target(s)), gram_loss(x, gram_matrix(s)))
    two = ShiftedGramLoss(2)
    assert not torch.allclose(two.loss(x, two.target(s)), gram_loss(x, gram_matrix(s)))


def test_shifted_gram_matrices_by_explicit_sums() -> None:
    """Berger & Memisevic: A^{delta,h}_ij = mean over (y, x) of F_i(y, x) F_j(y, x + delta) on the overlap."""
    x = maps(1, 3, 4, 5, seed=5)
    delta = 2
    horizontal, vertical = shifted_gram_matrices(x, delta)
    f = x[0]
    h = torch.zeros(3, 3, dtype=torch.float64)
    v = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            h[i, j] = sum(f[i, r, c] * f[j, r, c + delta] for r in range(4) for c in range(5 - delta)) / (4 * 3)
            v[i, j] = sum(f[i, r, c] * f[j, r + delta, c] for r in range(4 - delta) for c in range(5)) / (2 * 5)
    torch.testing.assert_close(horizontal[0], h)
    torch.testing.assert_close(vertical[0], v)
    # A delta past the map is clipped to the last shift that still overlaps.
    torch.testing.assert_close(shifted_gram_matrices(x, 99)[0], shifted_gram_matrices(x, 4)[0])


def test_gaussian_mmd_with_mean_distance_bandwidth(pair) -> None:
    x, s = pair
    loss = GaussianMMDLoss(samples=1000)  # more than the positions: exact
    px, ps = positions(x), positions(s)
    all_sq = torch.cat([torch.cdist(a, b).pow(2).flatten() for a, b in ((px, px), (ps, ps), (px, ps))])
    gamma = 1 / all_sq.mean()
    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-gamma * torch.cdist(a, b) ** 2).mean()

    expected = k(px, px) + k(ps, ps) - 2 * k(px, ps)
    torch.testing.assert_close(loss.loss(x, loss.target(s)), expected)
    assert loss.loss(x, loss.target(x)).abs() < 1e-12 and expected > 0


def test_gaussian_mmd_subsamples_reproducibly() -> None:
    x, s = maps(1, 4, 12, 12, seed=6), maps(1, 4, 12, 12, seed=7)
    a, b = GaussianMMDLoss(samples=32, seed=3), GaussianMMDLoss(samples=32, seed=3)
    first = a.loss(x, a.target(s))
    assert first == b.loss(x, b.target(s))
    assert a.loss(x, a.target(s)) != first  # new positions at every call


def test_kernel_matrix_entries() -> None:
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([[3.0, -1.0]], dtype=torch.float64)
    assert kernel_matrix("linear", x, y).item() == pytest.approx(1.0)
    assert kernel_matrix("poly", x, y, c=2.0).item() == pytest.approx(9.0)
    assert kernel_matrix("gaussian", x, y, gamma=0.1).item() == pytest.approx(torch.exp(torch.tensor(-1.3)).item())
    with pytest.raises(ValueError):
        kernel_matrix("cubic", x, y)


def test_bn_statistics_loss_formula(pair) -> None:
    """Li et al. 2017, eq. 11: (1/C) sum_c [(mu_c - mu_s,c)^2 + (sigma_c - sigma_s,c)^2]."""
    x, s = pair
    fx, fs = x[0].reshape(5, -1), s[0].reshape(5, -1)
    expected = (((fx.mean(1) - fs.mean(1)) ** 2 + (fx.std(1, unbiased=False) - fs.std(1, unbiased=False)) ** 2).sum()
                / 5)
    torch.testing.assert_close(BNStatisticsLoss().loss(x, BNStatisticsLoss().target(s)), expected, rtol=1e-5,
                               atol=1e-6)  # sigma carries eps = 1e-5 inside the root
    mean, std = mean_std(x)
    assert mean.shape == std.shape == (1, 5, 1, 1)


def test_mrf_loss_is_zero_when_style_patches_contain_the_synthesis_patches() -> None:
    x = maps(1, 3, 6, 6, seed=8)
    style = maps(1, 3, 11, 13, seed=9)
    style[..., 2:8, 4:10] = x[0]  # the synthesis map sits inside the style map at an even offset
    for stride, style_stride in ((1, 1), (2, 2), (2, 1)):  # every synthesis patch is among the style patches
        loss = MRFLoss(size=3, stride=stride, style_stride=style_stride)
        assert loss.loss(x, loss.target(style)).item() == pytest.approx(0.0, abs=1e-20)
    other = MRFLoss(size=3, stride=1, style_stride=1)
    assert other.loss(x, other.target(maps(1, 3, 11, 13, seed=10))) > 0


def test_mrf_matches_by_normalised_cross_correlation() -> None:
    """The nearest style patch is the one pointing the same way, even when another is closer in Euclidean distance;
    the loss is then the squared distance to it, averaged over the synthesis patches and their entries."""
    x = maps(1, 2, 3, 3, seed=11)  # exactly one 3x3 patch
    p = x[0].reshape(1, -1)
    close_but_turned = p.roll(1, dims=1) * 0.9
    same_direction = p * 4.0
    style_patches = torch.cat([close_but_turned, same_direction])
    assert (p - close_but_turned).norm() < (p - same_direction).norm()
    torch.testing.assert_close(mrf_loss(x, style_patches, size=3), ((p - same_direction) ** 2).mean())
    # Several styles pool their patches into one target.
    pooled = MRFLoss(size=3, style_stride=1).targets([maps(1, 2, 4, 4, seed=12), maps(1, 2, 5, 5, seed=13)], [0.3, 0.7])
    assert len(pooled) == 1 and pooled[0][1].shape == (4 + 9, 18)
    assert patches(maps(1, 2, 4, 4), 3, 1).shape == (4, 18)
    with pytest.raises(UserError, match="style map of 2x2 holds no 3x3 patch"):
        MRFLoss(size=3).target(maps(1, 2, 2, 2))
    with pytest.raises(UserError, match="synthesis map of 2x5 holds no 3x3 patch"):
        mrf_loss(maps(1, 2, 2, 5), style_patches[:, :18])


def test_several_styles_weight_the_losses() -> None:
    x, a, b = maps(1, 3, 5, 5, seed=14), maps(1, 3, 5, 5, seed=15), maps(1, 3, 5, 5, seed=16)
    loss = GramLoss()
    targets = loss.targets([a, b], [0.25, 0.75])
    assert [w for w, _ in targets] == [0.25, 0.75]
    torch.testing.assert_close(targets[1][1], gram_matrix(b))
    weighted = sum(w * loss.loss(x, target) for w, target in targets)
    torch.testing.assert_close(weighted, 0.25 * gram_loss(x, gram_matrix(a)) + 0.75 * gram_loss(x, gram_matrix(b)))


def test_content_and_tv_values() -> None:
    a = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    assert content_loss(a, torch.zeros_like(a)).item() == pytest.approx((0 + 1 + 4 + 16) / 4)
    # vertical differences 2, 3; horizontal differences 1, 2
    assert tv_loss(a).item() == pytest.approx((4 + 9) / 2 + (1 + 4) / 2)
    assert tv_loss(torch.ones(1, 3, 5, 5)).item() == 0.0
