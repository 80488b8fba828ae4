"""ImagePool: fill-up, swapping, capacity, determinism and exact resume from its state dict."""

from __future__ import annotations

import io

import pytest
import torch

from gan_translate.models.image_pool import ImagePool


def batch(start: int, n: int = 1) -> torch.Tensor:
    """n images (1x2x2) whose pixels all hold their id, so every returned image can be traced."""
    ids = torch.arange(start, start + n, dtype=torch.float32)
    return ids.view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()


def ids_of(images: torch.Tensor) -> list[int]:
    return [int(img[0, 0, 0]) for img in images]


def seeded_pool(size: int, seed: int = 0) -> ImagePool:
    return ImagePool(size, generator=torch.Generator().manual_seed(seed))


def test_pool_size_zero_returns_input_unchanged():
    pool = seeded_pool(0)
    images = torch.rand(3, 3, 4, 4, requires_grad=True)
    assert pool.query(images) is images
    assert len(pool) == 0


def test_fills_up_returning_the_new_images():
    pool = seeded_pool(4)
    assert ids_of(pool.query(batch(0, 3))) == [0, 1, 2]
    assert ids_of(pool.query(batch(3, 1))) == [3]
    assert len(pool) == 4
    assert sorted(ids_of(torch.stack(pool.images))) == [0, 1, 2, 3]


def test_full_pool_swaps_about_half_and_never_grows():
    pool = seeded_pool(5)
    pool.query(batch(0, 5))
    returned_old = 0
    for step in range(200):
        new_id = 100 + step
        (out,) = ids_of(pool.query(batch(new_id)))
        assert len(pool) == 5
        stored = ids_of(torch.stack(pool.images))
        if out == new_id:
            assert new_id not in stored  # returned as is, not stored
        else:
            returned_old += 1
            assert out < new_id and new_id in stored and out not in stored  # swapped in place of the returned one
    assert 70 < returned_old < 130  # probability 0.5 over 200 draws


def test_return_shape_and_detached_clones():
    pool = seeded_pool(2)
    images = torch.rand(3, 3, 8, 8, requires_grad=True)
    out = pool.query(images * 1.0)
    assert out.shape == (3, 3, 8, 8) and not out.requires_grad
    assert all(not img.requires_grad for img in pool.images)
    before = pool.images[0].clone()
    with torch.no_grad():
        images.add_(1.0)  # the caller changing its tensor later must not alter the pool
    assert torch.equal(pool.images[0], before)


def test_same_seed_same_choices_other_seed_differs():
    def run(seed: int) -> list[int]:
        pool = seeded_pool(3, seed)
        return [i for step in range(40) for i in ids_of(pool.query(batch(step)))]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_default_generator_follows_torch_manual_seed():
    def run() -> list[int]:
        torch.manual_seed(123)
        pool = ImagePool(3)
        return [i for step in range(30) for i in ids_of(pool.query(batch(step)))]

    assert run() == run()


@pytest.mark.parametrize("prefill", [0, 2, 6])
def test_state_dict_round_trip_continues_exactly(prefill):
    pool = seeded_pool(4, seed=3)
    for step in range(prefill):
        pool.query(batch(step))

    buffer = io.BytesIO()
    torch.save(pool.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # loadable without unpickling arbitrary objects

    resumed = seeded_pool(4, seed=999)
    resumed.load_state_dict(state)
    original_future = [ids_of(pool.query(batch(100 + i, 2))) for i in range(0, 40, 2)]
    resumed_future = [ids_of(resumed.query(batch(100 + i, 2))) for i in range(0, 40, 2)]
    assert original_future == resumed_future
    assert ids_of(torch.stack(pool.images)) == ids_of(torch.stack(resumed.images))


def test_state_dict_layout_and_size_check():
    pool = seeded_pool(3)
    state = pool.state_dict()
    assert state["images"].numel() == 0 and state["pool_size"] == 3
    pool.query(batch(0, 3))
    state = pool.state_dict()
    assert state["images"].shape == (3, 1, 2, 2)
    with pytest.raises(ValueError, match="holds 3 images but this pool's size is 2"):
        seeded_pool(2).load_state_dict(state)


def test_restored_images_follow_the_query_dtype():
    pool = seeded_pool(1)
    pool.query(batch(0))
    restored = seeded_pool(1)
    restored.load_state_dict(pool.state_dict())
    out = restored.query(batch(5).to(torch.float64))
    assert out.dtype == torch.float64 and all(img.dtype == torch.float64 for img in restored.images)


def test_negative_size_rejected():
    with pytest.raises(ValueError, match="pool_size must be >= 0"):
        ImagePool(-1)
