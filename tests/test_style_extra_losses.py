"""The histogram (Risser et al. 2017), Laplacian (Li et al. 2017) and feature-reshuffle (Gu et al. 2018) losses: each
method's defining property, on small random maps in double precision."""

from __future__ import annotations

import pytest
import torch

from gan_translate.errors import UserError
from gan_translate.losses.histogram import HistogramLoss, histogram_match, sorted_channels
from gan_translate.losses.laplacian import LaplacianLoss, laplacian_map
from gan_translate.losses.reshuffle import (
    ReshuffleLoss,
    constrained_matching,
    patch_similarity,
    reshuffle_features,
    vote,
)
from gan_translate.losses.style import gram_matrix

pytestmark = pytest.mark.usefixtures("one_thread")


def maps(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def permute_positions(feat: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The map with its positions shuffled (the same shuffle for every channel), and the shuffle."""
    perm = torch.randperm(feat[0, 0].numel(), generator=torch.Generator().manual_seed(seed))
    return feat.flatten(2)[..., perm].reshape(feat.shape), perm


# ----------------------------------------------------------------------------------------------------------------------
# Histogram loss
# ----------------------------------------------------------------------------------------------------------------------


def test_histogram_match_gives_the_style_values_per_channel_and_keeps_the_order() -> None:
    synth = maps(1, 4, 6, 5, seed=1)
    style = maps(1, 4, 5, 6, seed=2).relu() * 3 + torch.arange(4.0, dtype=torch.float64).view(1, 4, 1, 1)
    matched = histogram_match(synth, sorted_channels(style))
    # equal position counts: every channel holds exactly the style channel's values ...
    torch.testing.assert_close(matched.flatten(2).sort(-1).values, style.flatten(2).sort(-1).values)
    # ... in the order of the synthesis' values (a monotone remap; the style's zeros are ties)
    in_synth_order = matched.flatten(2).gather(-1, synth.flatten(2).argsort(-1))
    assert bool((in_synth_order.diff(dim=-1) >= 0).all())


def test_histogram_match_between_sizes_gives_the_style_quantiles() -> None:
    """A 20x20 synthesis against a 7x9 style: the matched channel's quantiles are the style's (up to the spacing of
    the style's order statistics), each channel its own."""
    synth = maps(1, 3, 20, 20, seed=3)
    style = maps(1, 3, 7, 9, seed=4) * torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64).view(1, 3, 1, 1) + 1
    matched = histogram_match(synth, sorted_channels(style))
    levels = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    for c in range(3):
        got = torch.quantile(matched[0, c].flatten(), levels)
        want = torch.quantile(style[0, c].flatten(), levels)
        spacing = style[0, c].flatten().sort().values.diff().max()
        assert (got - want).abs().max() <= spacing, c
        assert matched[0, c].min() >= style[0, c].min() and matched[0, c].max() <= style[0, c].max()


def test_histogram_loss_is_zero_for_a_rearranged_style_and_positive_otherwise() -> None:
    style = maps(1, 5, 6, 7, seed=5)
    loss = HistogramLoss()
    target = loss.target(style)
    rearranged, _ = permute_positions(style, seed=6)
    # each channel permuted on its own is still the same distribution per channel
    channelwise = torch.stack([permute_positions(style[:, c:c + 1], seed=10 + c)[0][:, 0] for c in range(5)], 1)
    assert float(loss.loss(rearranged, target)) == 0.0
    assert float(loss.loss(channelwise, target)) == 0.0
    torch.testing.assert_close(histogram_match(channelwise, target), channelwise)
    assert float(loss.loss(style * 1.1, target)) > 1e-4
    assert float(loss.loss(style + 0.2, target)) > 1e-4  # a mean shift: the Gram alone could trade it elsewhere


def test_histogram_loss_and_gradient_ignore_where_values_sit() -> None:
    """Permuting positions permutes the gradient and leaves the loss; the target is a constant (gradient
    2 (O - R(O)) / n)."""
    loss = HistogramLoss()
    target = loss.target(maps(1, 3, 4, 9, seed=7) * 2)
    synth = maps(1, 3, 6, 6, seed=8).requires_grad_(True)
    value = loss.loss(synth, target)
    (grad,) = torch.autograd.grad(value, synth)
    torch.testing.assert_close(grad, 2 * (synth - histogram_match(synth, target)).detach() / synth.numel())
    shuffled, perm = permute_positions(synth.detach(), seed=9)
    shuffled.requires_grad_(True)
    value_shuffled = loss.loss(shuffled, target)
    (grad_shuffled,) = torch.autograd.grad(value_shuffled, shuffled)
    torch.testing.assert_close(value_shuffled, value.detach())
    torch.testing.assert_close(grad_shuffled, grad.flatten(2)[..., perm].reshape(grad.shape))


def test_histogram_match_in_bfloat16_on_maps_longer_than_its_integers() -> None:
    """Under bf16 autocast the maps are bfloat16, which cannot count past 256: ranks stay exact."""
    style = maps(1, 2, 40, 48, seed=21).relu()
    synth = maps(1, 2, 48, 40, seed=22)
    matched = histogram_match(synth.bfloat16(), sorted_channels(style.bfloat16()))
    assert matched.dtype == torch.bfloat16
    torch.testing.assert_close(matched.double().flatten(2).sort(-1).values,
                               style.bfloat16().double().flatten(2).sort(-1).values)


# ----------------------------------------------------------------------------------------------------------------------
# Laplacian loss
# ----------------------------------------------------------------------------------------------------------------------


def test_laplacian_map_by_explicit_sums() -> None:
    image = maps(1, 3, 13, 10, seed=11)
    got = laplacian_map(image, 2)
    pooled = torch.zeros(6, 5, dtype=torch.float64)
    for y in range(6):
        for x in range(5):
            pooled[y, x] = image[0, :, 2 * y:2 * y + 2, 2 * x:2 * x + 2].sum() / 4
    pooled = pooled * 127.5
    want = torch.zeros(4, 3, dtype=torch.float64)
    for y in range(1, 5):
        for x in range(1, 4):
            want[y - 1, x - 1] = (4 * pooled[y, x] - pooled[y - 1, x] - pooled[y + 1, x] - pooled[y, x - 1]
                                  - pooled[y, x + 1])
    assert got.shape == (1, 1, 13 // 2 - 2, 10 // 2 - 2)
    torch.testing.assert_close(got[0, 0], want)


def test_laplacian_loss_is_zero_at_the_content_and_blind_to_constant_shifts() -> None:
    content = maps(1, 3, 32, 24, seed=12).clamp(-1, 1)
    loss = LaplacianLoss(content, {4: 1.0, 8: 16.0})
    assert float(loss(content)) == 0.0
    assert float(loss(content + 0.3)) == pytest.approx(0.0, abs=1e-18)
    shifted = content + torch.tensor([0.2, -0.1, 0.05], dtype=torch.float64).view(1, 3, 1, 1)
    assert float(loss(shifted)) == pytest.approx(0.0, abs=1e-18)
    other = maps(1, 3, 32, 24, seed=13).clamp(-1, 1)
    one, two = LaplacianLoss(content, {4: 1.0})(other), LaplacianLoss(content, {8: 1.0})(other)
    torch.testing.assert_close(loss(other), one + 16 * two)
    assert float(one) > 0 and float(two) > 0


def test_laplacian_loss_rejects_a_pool_larger_than_the_image() -> None:
    with pytest.raises(UserError, match="^option --laplacian_pools: a 16x16 image pooled by 8"):
        LaplacianLoss(maps(1, 3, 16, 16), {8: 1.0})


# ----------------------------------------------------------------------------------------------------------------------
# Feature reshuffle
# ----------------------------------------------------------------------------------------------------------------------


def test_reshuffle_with_equal_sizes_is_a_permutation_with_the_style_gram() -> None:
    content, style = maps(1, 8, 6, 7, seed=14), maps(1, 8, 7, 6, seed=15).relu()
    shuffled = reshuffle_features(content, style, patch_size=1)
    assert shuffled.shape == content.shape
    flat_style, flat_shuffled = style.flatten(2)[0].t(), shuffled.flatten(2)[0].t()  # (M, C) rows
    # every style position's feature vector appears exactly once
    match = constrained_matching(patch_similarity(content, style, 1))
    assert sorted(match.tolist()) == list(range(42))
    torch.testing.assert_close(flat_shuffled, flat_style[match])
    torch.testing.assert_close(gram_matrix(shuffled), gram_matrix(style), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_content, counts", [(48, {4}), (50, {4, 5}), (7, {0, 1})])
def test_every_style_position_is_used_about_equally_often(n_content: int, counts: set[int]) -> None:
    similarity = maps(n_content, 12, seed=16)
    similarity[:, 0] += 5  # every content position prefers style position 0: the constraint must spread them
    match = constrained_matching(similarity)
    used = torch.bincount(match, minlength=12)
    assert set(used.tolist()) == counts
    assert int(used.sum()) == n_content


def test_matching_prefers_the_most_similar_free_position() -> None:
    """A style map reshuffled to itself is itself: every position is its own best match."""
    style = maps(1, 6, 5, 5, seed=17).relu() + 0.1
    for size in (1, 3):
        torch.testing.assert_close(reshuffle_features(style, style, patch_size=size), style)


def test_votes_average_the_overlapping_patches() -> None:
    style = maps(1, 2, 4, 5, seed=18)
    match = torch.tensor([7, 0, 19, 12, 5, 3, 16, 9, 11])  # a 3x3 content map, arbitrary style positions
    got = vote(style, match, (3, 3), 3)
    want = torch.zeros(2, 3, 3, dtype=torch.float64)
    for y in range(3):
        for x in range(3):
            votes = []
            for qy in range(3):
                for qx in range(3):
                    dy, dx = y - qy, x - qx
                    if abs(dy) > 1 or abs(dx) > 1:
                        continue
                    sy, sx = divmod(int(match[qy * 3 + qx]), 5)
                    if 0 <= sy + dy < 4 and 0 <= sx + dx < 5:
                        votes.append(style[0, :, sy + dy, sx + dx])
            want[:, y, x] = torch.stack(votes).mean(0)
    torch.testing.assert_close(got[0], want)


def test_alpha_blends_toward_the_content_and_the_loss_needs_the_content() -> None:
    content, style = maps(1, 4, 5, 5, seed=19), maps(1, 4, 6, 4, seed=20)
    torch.testing.assert_close(reshuffle_features(content, style, alpha=1.0), content)
    loss = ReshuffleLoss(patch_size=3)
    with pytest.raises(RuntimeError, match="set_content"):
        loss.target(style)
    loss.set_content(content)
    target = loss.target(style)
    torch.testing.assert_close(target, reshuffle_features(content, style, patch_size=3))
    assert float(loss.loss(target, target)) == 0.0
    assert float(loss.loss(content, target)) > 0


# ----------------------------------------------------------------------------------------------------------------------
# The demo's stylize entry
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("choice, parts", [("histogram", {"content", "histogram"}),
                                           ("gram+histogram", {"content", "gram", "histogram"}),
                                           ("gram+laplacian", {"content", "gram", "laplacian"})])
def test_demo_offers_the_new_losses_and_the_papers_combinations(tmp_path, monkeypatch, choice: str,
                                                                 parts: set[str]) -> None:
    from PIL import Image as PILImage

    import gan_translate.stylize as stylize_module
    from gan_translate.demo.session import DemoSession

    seen: dict[str, float] = {}
    original = stylize_module.stylize  # the session imports it when called: patched here, it reports the parts

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        seen.update(result.parts)
        return result

    monkeypatch.setattr(stylize_module, "stylize", recording)
    for name, size in (("c.png", (48, 40)), ("s.png", (36, 36))):
        PILImage.effect_noise(size, 60).convert("RGB").save(tmp_path / name)
    out, line = DemoSession(vgg_weights="random").stylize(tmp_path / "c.png", tmp_path / "s.png", loss=choice,
                                                          image_size=32, steps=2)
    assert out.size == (48, 40) and f"stylize ({choice}, 2 iterations at 32 px)" in line
    assert set(seen) == parts
