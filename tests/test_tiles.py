"""Tiles (``gan_translate.tiles``): away from the seams a tiled ResNet translation equals the untiled one where its
layers are local (no norm, BatchNorm in eval mode); tiles cover the image and blend; load_translator takes them."""

from __future__ import annotations

import itertools

import pytest
import torch

from gan_translate.errors import UserError
from gan_translate.nets.generators import ResnetGenerator
from gan_translate.tiles import (
    TiledGenerator,
    feather_ramp,
    tile_positions,
    translate_tiled,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# receptive-field radius of a resnet_<n>blocks at stride 4: conv7 (3) + two stride-2 convs (1 + 2) + 2n conv3 at
# stride 4 (8n) + two transposed convs (4 + 2) + conv7 (3)
def _radius(n_blocks: int) -> int:
    return 15 + 8 * n_blocks


def _core_mask(height: int, width: int, tile: int, overlap: int, stride: int, radius: int) -> torch.Tensor:
    """Pixels covered by one tile only, farther than ``radius`` from each of its edges inside the image."""
    covered = torch.zeros(height, width, dtype=torch.int32)
    inner = torch.zeros(height, width, dtype=torch.bool)
    for y in tile_positions(height, tile, overlap, stride):
        for x in tile_positions(width, tile, overlap, stride):
            h, w = min(tile, height), min(tile, width)
            covered[y:y + h, x:x + w] += 1
            top = y + (radius if y > 0 else 0)
            bottom = y + h - (radius if y + h < height else 0)
            left = x + (radius if x > 0 else 0)
            right = x + w - (radius if x + w < width else 0)
            inner[top:bottom, left:right] = True
    return inner & (covered == 1)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_tiles_equal_untiled_translation_away_from_the_seams(norm: str) -> None:
    torch.manual_seed(0)
    net = ResnetGenerator(3, 3, ngf=4, norm=norm, n_blocks=1).eval()  # BatchNorm: running statistics
    if norm == "batch":
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(1, 3, 120, 200) * 2 - 1
    tile, overlap = 96, 16
    with torch.no_grad():
        whole = net(x)
        tiled = translate_tiled(net, x, tile, overlap=overlap, stride=net.stride, min_size=net.min_size)
    assert tiled.shape == whole.shape
    core = _core_mask(120, 200, tile, overlap, net.stride, _radius(1))
    assert core.float().mean() > 0.15  # the comparison covers a good part of the image
    diff = (tiled - whole).abs()[0].amax(0)
    assert diff[core].max().item() < 1e-5
    assert diff.max().item() > 1e-4  # near the seams the tiles do differ: the mask is not vacuous
    assert diff.max().item() < 0.5  # and the blend keeps them close


def test_instance_norm_tiles_differ_but_stay_close() -> None:
    """Instance norm uses each tile's own statistics: never exactly equal, close on a uniform texture."""
    torch.manual_seed(0)
    net = ResnetGenerator(3, 3, ngf=4, norm="instance", n_blocks=1).eval()
    x = torch.rand(1, 3, 96, 160) * 2 - 1
    with torch.no_grad():
        whole, tiled = net(x), TiledGenerator(net, 64, 16)(x)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    assert 0 < (tiled - whole).abs().mean().item() < 0.1


def test_positions_cover_the_image_on_the_stride_and_weights_feather() -> None:
    starts = tile_positions(300, 128, 16, 4)
    assert starts[0] == 0 and starts[-1] == 300 - 128 and all(s % 4 == 0 for s in starts)
    assert all(b - a <= 128 - 16 for a, b in itertools.pairwise(starts))  # neighbours overlap by >= 16
    assert tile_positions(100, 128, 16, 4) == [0]
    ramp = feather_ramp(64, 32, 200, 16)
    assert ramp[0] < 0.05 and ramp[-1] < 0.05 and torch.all(ramp[16:48] == 1) and torch.all(ramp > 0)
    assert torch.all(feather_ramp(64, 0, 64, 16) == 1)  # image edges are not seams


def test_odd_sizes_and_a_constant_generator_blend_exactly() -> None:
    """Odd image sizes are padded to the stride as untiled; a generator with a constant-per-pixel output (1x1 conv)
    gives the same result tiled or not, everywhere (the weights sum to one)."""
    net = torch.nn.Conv2d(3, 2, 1)
    x = torch.rand(2, 3, 77, 131)
    with torch.no_grad():
        out = translate_tiled(net, x, 40, overlap=12, stride=4)
        assert out.shape == (2, 2, 77, 131)
        assert torch.allclose(out, net(x), atol=1e-5)


def test_tile_refused_for_models_that_cannot_be_cut() -> None:
    from gan_translate.tiles import tiled_generators

    model = torch.nn.Module()
    model.nets = torch.nn.ModuleDict({"decoder": torch.nn.Conv2d(3, 3, 1)})
    model.inference_nets, model.name = ("decoder",), "adain"
    with pytest.raises(UserError, match="option --tile: model adain has no image-to-image generator"), \
            tiled_generators(model, 64):
        pass
