"""Spatial control (guided Gram, guide propagation, masks), coarse-to-fine, scale control and the photorealistic recipe
(matting Laplacian): the properties the papers define, on tiny images and a random VGG-19."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gan_translate import stylize_control as control
from gan_translate.cli import main
from gan_translate.data.masks import PALETTE, read_mask
from gan_translate.errors import UserError
from gan_translate.losses.guided import GuidedGramLoss, normalise_guides, propagate_guides
from gan_translate.losses.matting import matting_laplacian, matting_loss
from gan_translate.losses.style import GramLoss, gram_loss, gram_matrix
from gan_translate.nets.vgg import LAYER_NAMES, VGG19, build_vgg19
from gan_translate.stylize import GatysObjective, StylizeSettings, stylize
from tests.test_stylize import SMALL, image

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = ("relu1_1", "relu2_1", "relu3_1")


@pytest.fixture(scope="module")
def vgg():
    return build_vgg19("random", last_layer="relu3_1", pool="avg")


def two_regions(height: int, width: int, split: int) -> torch.Tensor:
    """Guides (2, H, W): rows above ``split`` and the rest."""
    guides = torch.zeros(2, height, width)
    guides[0, :split] = 1
    guides[1, split:] = 1
    return guides


# ----------------------------------------------------------------------------------------------------------------------
# Guided Gram
# ----------------------------------------------------------------------------------------------------------------------


def test_all_ones_guide_is_the_plain_gram_loss(vgg) -> None:
    feat, style = torch.randn(1, 8, 6, 7), torch.randn(1, 8, 5, 9)
    guided = GuidedGramLoss(torch.ones(1, 6, 7), [torch.ones(1, 5, 9)])
    (_, target), = guided.targets([style], [1.0])
    assert torch.equal(guided.loss(feat, target), gram_loss(feat, GramLoss().target(style)))
    # through the whole objective: guides of ones give the unguided total exactly
    content, style_img, x = image(0, 24, 24), image(1, 24, 32), image(5, 24, 24)
    settings = StylizeSettings(**SMALL)
    plain = GatysObjective(vgg, content, [style_img], [1.0], settings)(x)[0]
    ones = GatysObjective(vgg, content, [style_img], [1.0], settings,
                          guides=(torch.ones(1, 24, 24), [torch.ones(1, 24, 32)]))(x)[0]
    assert torch.equal(plain, ones)


def test_guides_are_normalised_and_regions_weigh_equally() -> None:
    guides = normalise_guides(two_regions(6, 4, 2))
    torch.testing.assert_close(guides.pow(2).mean(dim=(-2, -1)), torch.ones(2))
    feat, style = torch.randn(1, 5, 6, 4), torch.randn(1, 5, 8, 8)
    style_guides = two_regions(8, 8, 5)
    loss = GuidedGramLoss(two_regions(6, 4, 2), [style_guides])
    (_, target), = loss.targets([style], [1.0])
    # region r's statistics are the Gram of its own positions only
    torch.testing.assert_close(target[0], gram_matrix(style[..., :5, :])[0])
    torch.testing.assert_close(target[1], gram_matrix(style[..., 5:, :])[0])
    per_region = [gram_loss(feat[..., :2, :], target[0]), gram_loss(feat[..., 2:, :], target[1])]
    torch.testing.assert_close(loss.loss(feat, target), 0.5 * (per_region[0] + per_region[1]))  # weights 1/2, 1/2


def test_regions_take_their_own_style_images(vgg) -> None:
    """One style image per region: region r's target is the Gram of style image r alone (blend weights apply only
    among images that hold the region)."""
    feats = [torch.randn(1, 4, 6, 6), torch.randn(1, 4, 7, 5)]
    style_guides = [torch.stack([torch.ones(6, 6), torch.zeros(6, 6)]),
                    torch.stack([torch.zeros(7, 5), torch.ones(7, 5)])]
    loss = GuidedGramLoss(two_regions(6, 6, 3), style_guides)
    (_, target), = loss.targets(feats, [0.3, 0.7])
    torch.testing.assert_close(target[0], gram_matrix(feats[0])[0])
    torch.testing.assert_close(target[1], gram_matrix(feats[1])[0])


def test_propagation_modes(vgg) -> None:
    ceil_net = VGG19(last_layer="relu3_1", ceil_mode=True)
    guides = two_regions(37, 29, 15)
    names = LAYER_NAMES[: len(ceil_net.features)]
    shapes = {k: v.shape[-2:] for k, v in ceil_net.extract(torch.zeros(1, 3, 37, 29), LAYERS).items()}
    carried = {mode: propagate_guides(guides, ceil_net.features, names, LAYERS, mode) for mode in
               ("simple", "all", "inside")}
    for mode, layers in carried.items():
        for layer in LAYERS:
            assert layers[layer].shape[-2:] == shapes[layer], (mode, layer)  # ceil(h / 2) per pooling
    assert tuple(shapes["relu2_1"]) == (math.ceil(37 / 2), math.ceil(29 / 2))
    # "inside" shrinks each region with depth, "all" grows it; "simple" lies between
    for r in range(2):
        share = {mode: [float(layers[layer][r].mean()) for layer in LAYERS] for mode, layers in carried.items()}
        assert share["inside"] == sorted(share["inside"], reverse=True) and share["inside"][-1] < share["inside"][0]
        assert share["all"] == sorted(share["all"]) and share["all"][-1] > share["all"][0]
        for i in range(len(LAYERS)):
            assert share["inside"][i] <= share["simple"][i] <= share["all"][i]
    # inside: the two regions never overlap and leave a gap at the boundary; all: they overlap there
    deep_in, deep_all = carried["inside"]["relu3_1"], carried["all"]["relu3_1"]
    assert float((deep_in[0] * deep_in[1]).sum()) == 0 and float(deep_in.sum(0).min()) == 0
    assert float((deep_all[0] * deep_all[1]).sum()) > 0
    # the image border is not a region boundary: a region covering the whole image survives "inside" intact
    whole = propagate_guides(torch.ones(1, 37, 29), ceil_net.features, names, LAYERS, "inside")
    assert all(bool(g.all()) for g in whole.values())
    # grow: k > 0 widens, k < 0 erodes
    wider = propagate_guides(guides, ceil_net.features, names, LAYERS, "simple", grow_cells=1)
    narrower = propagate_guides(guides, ceil_net.features, names, LAYERS, "simple", grow_cells=-1)
    assert wider["relu1_1"].sum() > carried["simple"]["relu1_1"].sum() > narrower["relu1_1"].sum()


def test_guided_stylize_lowers_the_loss(vgg) -> None:
    settings = StylizeSettings(**SMALL)
    guides = (two_regions(24, 24, 10), [two_regions(24, 32, 12)])
    result = stylize(vgg, image(0, 24, 24), [image(1, 24, 32)], settings, progress=False, guides=guides)
    assert result.losses[-1] < 0.8 * result.losses[0]
    with pytest.raises(UserError, match="gram style loss only"):
        stylize(vgg, image(0, 24, 24), [image(1, 24, 32)], StylizeSettings(**{**SMALL, "style_losses": {"bn": 1.0}}),
                progress=False, guides=guides)


# ----------------------------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------------------------


def save_mask(path: Path, rows: list[tuple[int, tuple[int, int, int]]], width: int) -> Path:
    """A mask of horizontal bands: (height, colour) from the top."""
    array = np.concatenate([np.tile(np.array(colour, np.uint8), (h, width, 1)) for h, colour in rows])
    Image.fromarray(array).save(path)
    return path


def test_read_mask_palette_and_resize(tmp_path: Path) -> None:
    path = save_mask(tmp_path / "m.png", [(3, (0, 0, 255)), (2, (250, 250, 8)), (1, (128, 128, 128))], 4)
    said: list[str] = []
    guides = read_mask(path, (4, 6), say=said.append)
    names = list(PALETTE)
    assert guides.shape == (9, 6, 4) and not said
    assert guides[names.index("blue")][:3].all() and guides[names.index("yellow")][3:5].all()
    assert guides[names.index("grey")][5].all() and guides.sum(0).eq(1).all()
    resized = read_mask(path, (8, 12), say=said.append)
    assert resized.shape == (9, 12, 8) and len(said) == 1 and str(path) in said[0] and "nearest" in said[0]
    bad = save_mask(tmp_path / "bad.png", [(2, (0, 0, 255)), (2, (200, 30, 30))], 4)
    with pytest.raises(UserError, match=f"^mask {bad}: colour \\(200, 30, 30\\)"):
        read_mask(bad, (4, 4))


@pytest.fixture()
def mask_files(tmp_path: Path) -> dict[str, Path]:
    from gan_translate.data.images import save_image

    paths = {name: tmp_path / f"{name}.png" for name in ("content", "style", "style2")}
    save_image(image(0, 40, 48)[0], paths["content"])
    save_image(image(1, 36, 36)[0], paths["style"])
    save_image(image(2, 30, 50)[0], paths["style2"])
    paths["content_mask"] = save_mask(tmp_path / "cm.png", [(20, (0, 0, 255)), (20, (0, 255, 0))], 48)
    paths["style_mask"] = save_mask(tmp_path / "sm.png", [(9, (0, 0, 255)), (9, (0, 255, 0))], 18)  # half size
    paths["blue_only"] = save_mask(tmp_path / "blue.png", [(36, (0, 0, 255))], 36)
    paths["red_only"] = save_mask(tmp_path / "red.png", [(36, (255, 0, 0))], 36)
    paths["smudged"] = save_mask(tmp_path / "smudged.png", [(20, (0, 0, 255)), (20, (90, 160, 40))], 48)
    return paths


def stylize_cmd(files: dict[str, Path], tmp_path: Path, *extra: str) -> list[str]:
    return ["stylize", "--content", str(files["content"]), "--vgg_weights", "random", "--image_size", "32",
            "--steps", "2", "--quiet", "--style_layers", "relu1_1,relu2_1", "--content_layers", "relu2_1",
            "--out", str(tmp_path / "out.png"), *extra]


def test_cli_guided_regions(mask_files: dict[str, Path], tmp_path: Path, capsys) -> None:
    f = mask_files
    assert main(stylize_cmd(f, tmp_path, "--style", str(f["style"]), "--content_mask", str(f["content_mask"]),
                            "--style_masks", str(f["style_mask"]))) == 0
    err = capsys.readouterr().err
    assert err.count("resized (nearest)") == 1 and str(f["style_mask"]) in err
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (48, 40)
    assert main(stylize_cmd(f, tmp_path, "--style", str(f["style"]), str(f["style2"]), "--content_mask",
                            str(f["content_mask"]), "--style_regions", "blue", "green", "--guide_mode", "all")) == 0


@pytest.mark.parametrize("case, message", [
    ("outside", "content mask {smudged}: colour (90, 160, 40)"),
    ("absent", "content mask {content_mask}: region 'green' is in no style mask"),
    ("empty", "style mask {red_only}: empty"),
    ("count", "option --style_masks: 2 given for 1 style images"),
    ("colour", "option --style_regions: 'pink' is not a mask colour"),
])
def test_cli_bad_masks_exit_2(mask_files: dict[str, Path], tmp_path: Path, capsys, case: str, message: str) -> None:
    f = mask_files
    extra = {
        "outside": ["--style", str(f["style"]), "--content_mask", str(f["smudged"]), "--style_masks",
                    str(f["style_mask"])],
        "absent": ["--style", str(f["style"]), "--content_mask", str(f["content_mask"]), "--style_masks",
                   str(f["blue_only"])],
        "empty": ["--style", str(f["style"]), str(f["style2"]), "--content_mask", str(f["content_mask"]),
                  "--style_masks", str(f["style_mask"]), str(f["red_only"])],
        "count": ["--style", str(f["style"]), "--content_mask", str(f["content_mask"]), "--style_masks",
                  str(f["style_mask"]), str(f["blue_only"])],
        "colour": ["--style", str(f["style"]), "--content_mask", str(f["content_mask"]), "--style_regions", "pink"],
    }[case]
    assert main(stylize_cmd(f, tmp_path, *extra)) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(err) == 1 and err[0].startswith("error: " + message.format(**{k: str(v) for k, v in f.items()}))
    assert not (tmp_path / "out.png").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Matting Laplacian
# ----------------------------------------------------------------------------------------------------------------------


def photo(height: int = 14, width: int = 17, seed: int = 0) -> torch.Tensor:
    """(3, H, W) in [0, 1]: smooth colours plus a little noise, like a photo's."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 4, 4, generator=g)
    smooth = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[0]
    return (smooth + 0.03 * torch.rand(3, height, width, generator=g)).clamp(0, 1)


def test_matting_laplacian_structure() -> None:
    img = photo()
    laplacian = matting_laplacian(img)
    dense = laplacian.to_dense().double()
    n = img.shape[1] * img.shape[2]
    assert dense.shape == (n, n) and laplacian.is_coalesced()
    torch.testing.assert_close(dense, dense.t(), rtol=0, atol=1e-3 * dense.abs().max().item())
    assert dense.sum(1).abs().max() < 1e-6 * dense.abs().max()  # L @ 1 = 0
    g = torch.Generator().manual_seed(1)
    for _ in range(5):  # PSD: x^T L x >= 0 (up to float32 rounding of the entries)
        x = torch.randn(n, generator=g, dtype=torch.float64)
        assert x @ dense @ x >= -1e-6 * (x @ x) * dense.abs().max()
    # every pixel pairs with the pixels within 2 px: 25 per interior pixel
    assert laplacian._nnz() <= 25 * n and (dense[n // 2 + 8] != 0).sum() == 25
    rows, cols = laplacian.indices()
    w = img.shape[2]
    assert ((rows // w - cols // w).abs().max() <= 2) and ((rows % w - cols % w).abs().max() <= 2)


def test_matting_loss_ignores_affine_colour_changes_and_has_gradient_2LV() -> None:
    img = photo()
    laplacian = matting_laplacian(img)
    g = torch.Generator().manual_seed(2)
    matrix, offset = torch.randn(3, 3, generator=g) * 0.4, torch.rand(3, generator=g) * 0.3
    recoloured = (matrix @ img.flatten(1) + offset[:, None]).view_as(img)  # a global affine colour change
    other = photo(seed=5)
    affine_loss = matting_loss(recoloured[None] * 2 - 1, laplacian)
    other_loss = matting_loss(other[None] * 2 - 1, laplacian)
    assert affine_loss < 1e-4 * other_loss and affine_loss < 1e-2
    x = (other[None] * 2 - 1).requires_grad_(True)
    matting_loss(x, laplacian).backward()
    v = ((x.detach()[0] + 1) / 2).flatten(1).t()
    expected = (2 * laplacian.to_dense() @ v).t().reshape(1, 3, *img.shape[1:]) / 2  # dV/dx = 1/2
    torch.testing.assert_close(x.grad, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision leaves this term in float32
        assert matting_loss(recoloured[None] * 2 - 1, laplacian) == affine_loss


def test_matting_laplacian_builds_a_photo_quickly() -> None:
    """The build is vectorised: a 128 px photo (16k pixels, ~400k entries) is one pass, and has ~25 entries a pixel."""
    laplacian = matting_laplacian(torch.rand(3, 128, 96))
    n = 128 * 96
    assert 24 * n < laplacian._nnz() <= 25 * n


# ----------------------------------------------------------------------------------------------------------------------
# Schedules: coarse-to-fine, photorealistic stages, scale control
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every stylize call of the controls, with its inputs and result."""
    calls: list[dict] = []
    real = control.stylize

    def spy(vgg, content, styles, settings, **kwargs):
        result = real(vgg, content, styles, settings, **kwargs)
        calls.append(dict(content=content, styles=styles, settings=settings, result=result, **kwargs))
        return result

    monkeypatch.setattr(control, "stylize", spy)
    return calls


def test_coarse_to_fine_upsamples_the_result_as_the_next_init(vgg, mask_files, recorded) -> None:
    settings = StylizeSettings(**{**SMALL, "steps": 5})
    schedule = control.scale_schedule(control.Controls(scales=(512, 1024)), StylizeSettings(steps=500))
    assert schedule == [(512, 500), (1024, 200)]
    controls = control.Controls(scales=(32, 48), scale_steps=(3, 2))
    result = control.run_controlled(vgg, settings, controls, str(mask_files["content"]), [str(mask_files["style"])],
                                    progress=False, say=lambda line: None)
    assert [c["content"].shape[-1] for c in recorded] == [32, 48] and [c["settings"].steps for c in recorded] == [3, 2]
    assert recorded[0]["init_image"] is None
    expected = F.interpolate(recorded[0]["result"].image, size=(40, 48), mode="bicubic", align_corners=False)
    torch.testing.assert_close(recorded[1]["init_image"], expected.clamp(-1, 1))
    assert result.image.shape == (1, 3, 40, 48) and len(result.losses) == 4 + 3


def test_photorealistic_runs_two_stages_the_second_with_the_matting_term(vgg, mask_files, recorded) -> None:
    settings = control.photorealistic_settings(StylizeSettings(**{**SMALL, "steps": 3, "image_size": 32}))
    assert settings.pool == "max" and settings.content_weight == 5.0 and settings.content_layers == ("relu4_2",)
    settings.content_layers = ("relu2_2",)  # the random test network stops at relu3_1
    settings.matting_weight = control.default_matting_weight(True)
    controls = control.Controls(photorealistic=True, content_mask=str(mask_files["content_mask"]),
                                style_masks=(str(mask_files["style_mask"]),))
    control.run_controlled(vgg, settings, controls, str(mask_files["content"]), [str(mask_files["style"])],
                           progress=False, say=lambda line: None)
    first, second = recorded
    assert first["settings"].matting_weight == 0 and first["laplacian"] is None
    assert second["settings"].matting_weight == pytest.approx(1e4 / control.CAFFE_SCALE ** 2)
    assert second["laplacian"].shape == (32 * 27, 32 * 27)
    assert torch.equal(second["init_image"], first["result"].image)
    assert first["guides"] is not None and "matting" in second["result"].parts


def test_scale_control_keeps_the_coarse_layout_and_reads_shallow_layers(vgg, mask_files, recorded) -> None:
    coarse, fine = image(3, 24, 24), image(4, 24, 24)
    combined = control.combine_scales(vgg, coarse, fine, StylizeSettings(**SMALL), steps=4, progress=False)
    (call,) = recorded
    assert call["settings"].style_layers == ("relu1_1", "relu2_1") and call["settings"].content_weight == 0
    assert torch.equal(call["content"], coarse) and combined.shape == coarse.shape
    assert not torch.equal(combined, coarse)
