"""AdaIN: the AdaIN identity, the decoder, test-time controls (alpha, interpolation, colour, masks), and training on
the shared loop end to end (random VGG weights: the plumbing and the maths, not the pictures)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gan_translate.cli import train_main
from gan_translate.config import resolve
from gan_translate.data.colour import match_colour
from gan_translate.data.styles import ensure_builtin_styles
from gan_translate.engine.checkpoint import find_checkpoint, load_state
from gan_translate.errors import UserError
from gan_translate.losses.style import mean_std
from gan_translate.models import create_model
from gan_translate.models.adain import DECODER_PARAMS, AdaINDecoder, AdaINModel, AdaINOptions, adaptive_instance_norm
from gan_translate.nets import vgg as vgg_module
from gan_translate.nets.vgg import LAYER_NAMES
from tests.conftest import logged_scalars


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def images(seed: int, n: int, height: int, width: int) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def model() -> AdaINModel:
    options = resolve(AdaINOptions, "adain", ["--vgg_weights", "random", "--dataroot", "unused"])
    torch.manual_seed(0)
    return create_model(options, training=False).eval()


class Capture:
    """Records the decoder's input (the AdaIN target t)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        self.handle = net.register_forward_pre_hook(lambda _, args: self.inputs.append(args[0].detach()))

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def test_adain_output_has_exactly_the_style_statistics() -> None:
    content = torch.randn(2, 8, 5, 6, dtype=torch.float64) * 3 + 1
    style = torch.randn(2, 8, 7, 4, dtype=torch.float64) * 0.5 - 2
    out = adaptive_instance_norm(content, *mean_std(style, eps=0.0), eps=0.0)
    out_mean, out_std = mean_std(out, eps=0.0)
    style_mean, style_std = mean_std(style, eps=0.0)
    torch.testing.assert_close(out_mean, style_mean)
    torch.testing.assert_close(out_std, style_std)
    # With the default eps = 1e-5 (sigma = sqrt(var + eps) on both sides) the output's std is the style's sigma to
    # within eps / (2 var(content)).
    target_mean, target_std = mean_std(style)
    out_mean, out_std = mean_std(adaptive_instance_norm(content, target_mean, target_std), eps=0.0)
    torch.testing.assert_close(out_mean, target_mean)
    torch.testing.assert_close(out_std, target_std, rtol=1e-5, atol=0)


def test_decoder_mirrors_the_encoder() -> None:
    decoder = AdaINDecoder()
    assert sum(p.numel() for p in decoder.parameters()) == DECODER_PARAMS == 3_505_219
    assert sum(isinstance(m, torch.nn.Upsample) and m.mode == "nearest" for m in decoder) == 3
    assert sum(isinstance(m, torch.nn.ReflectionPad2d) for m in decoder) == 9  # one per conv, as the encoder's 9 convs
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) for m in decoder)
    assert decoder(torch.zeros(1, 512, 3, 5)).shape == (1, 3, 24, 40)


def test_encoder_is_frozen_vgg_to_relu4_1_outside_the_nets(model: AdaINModel) -> None:
    assert list(model.nets) == ["decoder"] and model.inference_nets == ("decoder",) and model.needs_style
    assert len(model.encoder.features) == LAYER_NAMES.index("relu4_1") + 1
    assert all(m.padding_mode == "reflect" for m in model.encoder.features if isinstance(m, torch.nn.Conv2d))
    assert not any(p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert not model.encoder.training
    model.eval()


def test_alpha_zero_decodes_the_content_features(model: AdaINModel) -> None:
    content, style = images(1, 2, 16, 24), images(2, 1, 24, 16)
    with torch.no_grad(), Capture(model.nets["decoder"]) as seen:
        model.stylize(content, [style], alpha=0.0)
        model.stylize(content, [style], alpha=1.0)
        model.stylize(content, [style], alpha=0.25)
        features = model.encoder(content)
        full = adaptive_instance_norm(features, *mean_std(model.encoder(style)))
    torch.testing.assert_close(seen.inputs[0], features)  # alpha 0: exactly the content features
    # (the style runs through the encoder as a batch of 2 inside stylize: float32 rounding differs slightly)
    torch.testing.assert_close(seen.inputs[1], full, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(seen.inputs[2], 0.25 * full + 0.75 * features, rtol=1e-4, atol=1e-4)


def test_style_interpolation_weights(model: AdaINModel) -> None:
    content, a, b = images(3, 1, 16, 16), images(4, 1, 16, 24), images(5, 1, 24, 16)
    with torch.no_grad(), Capture(model.nets["decoder"]) as seen:
        only_a = model.stylize(content, [a])
        model.stylize(content, [a, b], weights=[3.0, 1.0])
        one_zero = model.stylize(content, [a, b], weights=[1.0, 0.0])
        model.stylize(content, [b])
    torch.testing.assert_close(one_zero, only_a)
    torch.testing.assert_close(seen.inputs[1], 0.75 * seen.inputs[0] + 0.25 * seen.inputs[3])
    with pytest.raises(UserError, match="interpolation"):
        model.stylize(content, [a, b], weights=[1.0])


def test_spatial_control_gives_each_region_its_style(model: AdaINModel) -> None:
    """Left half: style a's statistics; right half: style b's (masks aligned with the 8-pixel feature grid)."""
    content, a, b = images(6, 1, 32, 32), images(7, 1, 24, 24) * 0.2, images(8, 1, 24, 24) * 0.9 + 0.05
    left = torch.zeros(1, 1, 32, 32)
    left[..., :16] = 1
    with torch.no_grad(), Capture(model.nets["decoder"]) as seen:
        model.stylize(content, [a, b], masks=[left, 1 - left])
        target = seen.inputs[0]
        features = model.encoder(content)
        for half, style in ((slice(0, 2), a), (slice(2, 4), b)):
            got_mean, got_std = mean_std(target[..., half], eps=0.0)
            want_mean, want_std = mean_std(model.encoder(style))
            torch.testing.assert_close(got_mean, want_mean, rtol=1e-4, atol=1e-5)
            # A channel the ReLU switched off in this region of the content has no variance to rescale.
            live = mean_std(features[..., half], eps=0.0)[1] > 0.1  # sigma = sqrt(var + 1e-5): exact to 5e-4
            assert live.float().mean() > 0.5
            torch.testing.assert_close(got_std[live], want_std[live], rtol=1e-3, atol=1e-5)
        everything = model.stylize(content, [a, b], masks=[torch.ones(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)])
        torch.testing.assert_close(everything, model.stylize(content, [a]))


def test_colour_preservation_matches_the_style_to_the_content_first(model: AdaINModel) -> None:
    content, style = images(9, 1, 16, 16) * 0.5, images(10, 1, 16, 16) * 0.3 + 0.2
    with torch.no_grad():
        preserved = model.stylize(content, [style], preserve_color=True)
        torch.testing.assert_close(preserved, model.stylize(content, [match_colour(style, content)]))
        assert not torch.allclose(preserved, model.stylize(content, [style]))


def test_translate_any_sizes(model: AdaINModel) -> None:
    content, style = images(11, 2, 19, 13), images(12, 2, 17, 24)
    with torch.no_grad():
        out = model.translate({"A": content, "style": style, "A_paths": ["a", "b"], "style_paths": ["s", "t"]})
    assert list(out) == ["stylized"]
    assert out["stylized"].shape == content.shape
    assert out["stylized"].min() >= -1 and out["stylized"].max() <= 1


def test_options_validation() -> None:
    def build(*argv: str) -> AdaINOptions:
        return resolve(AdaINOptions, "adain", ["--dataroot", "x", *argv])

    assert build().lr_decay_per_iter == 5e-5 and build().n_epochs_decay == 0 and build().style_weight == 10.0
    with pytest.raises(UserError, match="option --lr_decay_per_iter"):
        build("--n_epochs_decay", "5")
    assert build("--n_epochs_decay", "5", "--lr_decay_per_iter", "0").n_epochs_decay == 5
    with pytest.raises(UserError, match="option --alpha"):
        build("--alpha", "1.5")
    with pytest.raises(UserError, match="option --dataset_mode"):
        build("--dataset_mode", "aligned")


# ----------------------------------------------------------------------------------------------------------------------
# Training on the shared loop
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def styles_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_builtin_styles(tmp_path_factory.mktemp("styles"), size=16, n_content=4, per_class=1)


def adain_run(data: Path, checkpoints: Path, *extra: str) -> list[str]:
    return ["--model", "adain", "--dataroot", str(data), "--checkpoints_dir", str(checkpoints), "--name", "run",
            "--load_size", "16", "--crop_size", "16", "--batch_size", "2", "--num_threads", "0", "--print_freq", "1",
            "--display_freq", "2", *extra]


def test_trains_end_to_end_with_per_iteration_decay(styles_data: Path, tmp_path: Path) -> None:
    assert train_main(adain_run(styles_data, tmp_path, "--vgg_weights", "random", "--max_steps", "3",
                                "--lr_decay_per_iter", "0.5")) == 0
    ckpt = find_checkpoint(tmp_path / "run")
    assert ckpt.name == "step_00000003"
    assert sorted(p.name for p in ckpt.glob("net_*")) == ["net_decoder.safetensors"]  # no encoder in checkpoints
    assert load_state(ckpt)["progress"]["step"] == 3
    events = next((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    tb = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
    tb.Reload()
    assert {"loss/content", "loss/style", "lr/decoder"} <= set(tb.Tags()["scalars"])
    # lr / (1 + 0.5 * iteration), iteration 0, 1, 2 for logged steps 1, 2, 3
    assert [e.value for e in tb.Scalars("lr/decoder")] == pytest.approx([1e-4, 1e-4 / 1.5, 1e-4 / 2])
    assert all(e.value > 0 for e in tb.Scalars("loss/style"))
    assert sorted(p.name for p in (tmp_path / "run" / "samples").glob("*.png"))[:2] == ["step_00000001.png",
                                                                                        "step_00000002.png"]


def test_training_without_weights_fails_with_one_line(styles_data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv(vgg_module.OFFLINE_ENV, "1")
    monkeypatch.setattr(vgg_module, "bundled_caffe_vgg19", lambda: None)
    assert train_main(adain_run(styles_data, tmp_path, "--max_steps", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no VGG-19 weights: pass --vgg_weights FILE") and "548 MB" in err[-1]
    assert not (tmp_path / "run" / "LATEST").exists()


def test_quick_preset_losses_fall(tmp_path: Path) -> None:
    """The quick preset as a new user runs it (built-in data, the style extra's Caffe VGG-19), shortened to its first
    400 of 1200 steps: the content and the style loss both fall (means of steps 1-100 against 301-400).

    The preset itself was checked by running it in full and looking at test.py's outputs (docs/models/adain.md): the
    facades' window grids and each style visible. Its early steps are flat colours and stripes, whatever the rate: a
    decoder learns slowly at first, so this window is the shortest in which both losses fall clearly."""
    from gan_translate.nets.vgg_weights import bundled_caffe_vgg19

    if bundled_caffe_vgg19() is None:
        pytest.skip("needs the style extra's Caffe VGG-19")
    assert train_main(["--model", "adain", "--checkpoints_dir", str(tmp_path), "--name", "quick", "--max_steps", "400",
                       "--print_freq", "1", "--display_freq", "1000", "--save_latest_freq", "1000",
                       "--num_cpu_threads", "1"]) == 0  # one thread, as the module: the test machine is shared
    for tag, factor in (("loss/content", 0.95), ("loss/style", 0.9)):
        values = logged_scalars(tmp_path / "quick", tag)
        assert len(values) == 400
        first, last = sum(values[:100]) / 100, sum(values[300:]) / 100
        assert last < factor * first, (tag, first, last)
