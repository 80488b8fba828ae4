"""fast_style: Johnson et al.'s transformation network and Dumoulin et al.'s conditional instance norm (the "must test"
lists of STYLE-FAMILY-2.md sections 1 and 2), trained, tested, exported and bad input refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gan_translate.cli import main
from gan_translate.data.styles import ensure_builtin_styles
from gan_translate.engine.checkpoint import find_checkpoint, load_state
from gan_translate.inference import load_translator
from gan_translate.models.fast_style import FastStyleModel
from gan_translate.nets.fast_style import (
    ConditionalInstanceNorm,
    FastStyleNet,
    TotalVariationGrad,
    lua_total_variation,
    median_filter3,
)
from gan_translate.nets.vgg16 import build_perceptual_vgg
from tests.conftest import logged_scalars

pytestmark = pytest.mark.usefixtures("one_thread")


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------------------------------------------------
# Section 1: Johnson et al.
# ----------------------------------------------------------------------------------------------------------------------


def test_parameter_counts_of_the_papers_layouts() -> None:
    assert count(FastStyleNet(32)) == 1_679_235  # c9s1-32, d64, d128, R128 x 5, u64, u32, c9s1-3
    assert count(FastStyleNet(16)) == 424_899  # the authors' half-width instance-norm models
    assert count(FastStyleNet(32, padding="reflect_start", output="tanh150")) == 1_679_235
    for n in (1, 4, 10):  # magenta: no conv biases, a normalised last layer, 3,206 per style
        net = FastStyleNet(32, n, upsample="resize", output="sigmoid", conv_bias=False, final_norm=True)
        assert count(net) == 1_674_432 + 3_206 * n


def test_reflect_start_keeps_the_size_with_the_papers_internal_sizes() -> None:
    net = FastStyleNet(4, padding="reflect_start", output="tanh150").eval()
    sizes = {}
    net.conv1.register_forward_hook(lambda m, i, o: sizes.update(conv1_in=i[0].shape[-1]))
    net.conv3.register_forward_hook(lambda m, i, o: sizes.update(down=o.shape[-1]))
    net.res[-1].register_forward_hook(lambda m, i, o: sizes.update(res=o.shape[-1]))
    with torch.no_grad():
        out = net(torch.rand(1, 3, 256, 256) * 2 - 1)
    assert out.shape == (1, 3, 256, 256)
    assert sizes == {"conv1_in": 336, "down": 84, "res": 64}


@pytest.mark.parametrize("padding", ["reflect", "reflect_start"])
def test_translate_keeps_odd_sizes(padding: str) -> None:
    model = _inference_model(padding=padding)
    with torch.no_grad():
        out = model.translate({"A": torch.rand(2, 3, 37, 53) * 2 - 1})["stylized"]
    assert out.shape == (2, 3, 37, 53) and out.abs().max() <= 1


def test_residual_shortcut_is_the_two_pixel_centre_crop() -> None:
    net = FastStyleNet(4, padding="reflect_start")
    block = net.res[0]
    with torch.no_grad():
        block.in2.weight.zero_()  # the residual branch gives 0: the block returns its shortcut
        block.in2.bias.zero_()
        x = torch.randn(1, 16, 20, 24)
        y = block(x, torch.ones(1, 1))
    assert y.shape == (1, 16, 16, 20)
    assert torch.equal(y, x[..., 2:-2, 2:-2])


def test_instance_norm_uses_each_images_statistics_in_eval_mode() -> None:
    net = FastStyleNet(4).eval()
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        alone = net(a)
        together = net(torch.cat([a, b * 0.1]))[:1]
        norm = net.in1
        h = net.conv1(net.to_network(a))
        normed = norm(h, torch.ones(1, 1))
    assert torch.allclose(alone, together, atol=1e-5)
    assert normed.mean(dim=(-2, -1)).abs().max() < 1e-5  # gamma 1, beta 0: zero mean per image and channel
    assert not list(net.buffers(recurse=True)) or all("running" not in n for n, _ in net.named_buffers())


def test_tv_layer_gradient_equals_autograd_of_half_the_squared_differences() -> None:
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    (TotalVariationGrad.apply(x, 0.3) * upstream).sum().backward()
    layer = x.grad.clone()
    x.grad = None
    ((x * upstream).sum() + 0.3 * lua_total_variation(x)).backward()
    assert torch.allclose(layer, x.grad)


def test_median_filter_3x3() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0  # an isolated spot vanishes
    assert median_filter3(x).abs().max() == 0
    ramp = torch.arange(25.0).view(1, 1, 5, 5)
    assert torch.equal(median_filter3(ramp)[..., 1:-1, 1:-1], ramp[..., 1:-1, 1:-1])  # linear ramps are kept


def test_gram_is_divided_by_chw_and_the_style_loss_is_its_mse(style_model: FastStyleModel) -> None:
    feat = torch.randn(2, 5, 3, 4)
    flat = feat.flatten(2)
    expected = flat @ flat.transpose(1, 2) / (5 * 3 * 4)
    assert torch.allclose(style_model.gram(feat), expected)
    style_model.opt.gram_norm = "hw"
    try:
        assert torch.allclose(style_model.gram(feat), expected * 5)
    finally:
        style_model.opt.gram_norm = "chw"


def test_vgg_layer_names_resolve_on_vgg16_and_vgg19(tmp_path: Path) -> None:
    import torchvision

    torch.save(torchvision.models.vgg16(weights=None).state_dict(), tmp_path / "vgg16.pth")
    layers = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    for weights, arch in ((str(tmp_path / "vgg16.pth"), "vgg16"), ("random", "vgg19")):
        vgg = build_perceptual_vgg(weights, last_layer="relu4_3")
        assert vgg.arch == arch
        feats = vgg.extract(torch.zeros(1, 3, 32, 32), layers)
        assert [f.shape[1] for f in feats.values()] == [64, 128, 256, 512]
        assert [f.shape[-1] for f in feats.values()] == [32, 16, 8, 4]


def test_style_targets_are_computed_once_at_the_style_size(style_model: FastStyleModel, styles_data: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from gan_translate.data.images import load_image, pil_to_tensor

    first = min((styles_data / "style" / "dots").glob("*.png"))
    image = load_image(first, 3).resize((24, 24), 3)  # style_size 24 (longer side), bicubic
    feats = style_model._features(pil_to_tensor(image)[None], ["relu1_2"])
    expected = style_model.gram(feats["relu1_2"])[0]
    got = style_model._target(torch.tensor([0]), 0, 64)[0]
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)

    def again(*args, **kwargs):
        raise AssertionError("style targets recomputed during training")

    monkeypatch.setattr(style_model, "_style_targets", again)
    before = style_model.targets.clone()
    batch = {"A": torch.rand(4, 3, 16, 16) * 2 - 1, "style_label": torch.tensor([0, 1, 2, 3])}
    from gan_translate.models import StepContext

    style_model.training_step(batch, StepContext(0, 0, lambda loss: loss.backward()))
    assert torch.equal(style_model.targets, before)


# ----------------------------------------------------------------------------------------------------------------------
# Section 2: conditional instance norm
# ----------------------------------------------------------------------------------------------------------------------


def test_one_hot_mixing_reproduces_the_gathered_gamma_beta() -> None:
    norm = ConditionalInstanceNorm(6, 3)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 5, 5)
    out = norm(x, F.one_hot(torch.tensor([2, 0]), 3).float())
    normed = F.instance_norm(x, eps=1e-5)
    gathered = normed * norm.weight[[2, 0]][..., None, None] + norm.bias[[2, 0]][..., None, None]
    assert torch.allclose(out, gathered, atol=1e-6)


def test_mixture_weights_are_used_as_given() -> None:
    norm = ConditionalInstanceNorm(4, 2)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(1, 4, 6, 6)
    w = torch.tensor([[2.0, 1.0]])  # sums to 3, not normalised
    normed = F.instance_norm(x, eps=1e-5)
    expected = normed * (2 * norm.weight[0] + norm.weight[1])[None, :, None, None] \
        + (2 * norm.bias[0] + norm.bias[1])[None, :, None, None]
    assert torch.allclose(norm(x, w), expected, atol=1e-5)


def test_one_style_equals_an_affine_instance_norm_network() -> None:
    norm = ConditionalInstanceNorm(8, 1)
    reference = torch.nn.InstanceNorm2d(8, affine=True)
    with torch.no_grad():
        reference.weight.uniform_(0, 1)  # the Lua initialisation
        reference.bias.normal_()
        norm.weight.copy_(reference.weight[None])
        norm.bias.copy_(reference.bias[None])
    x = torch.randn(3, 8, 7, 5)
    assert torch.allclose(norm(x, torch.ones(3, 1)), reference(x), atol=1e-6)


def test_a_batch_of_mixed_labels_applies_each_label_to_its_own_element() -> None:
    torch.manual_seed(0)
    net = FastStyleNet(4, 3)
    with torch.no_grad():
        for norm in net.norms():
            norm.weight.normal_(1, 0.5)
            norm.bias.normal_()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():
        batch = net(x, F.one_hot(labels, 3).float())
        alone = torch.cat([net(x[i:i + 1], F.one_hot(labels[i:i + 1], 3).float()) for i in range(3)])
    assert torch.allclose(batch, alone, atol=1e-5)
    assert not torch.allclose(batch[0], net(x[:1], F.one_hot(torch.tensor([0]), 3).float())[0], atol=1e-3)


# ----------------------------------------------------------------------------------------------------------------------
# Training, the run folder and the commands
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def styles_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_builtin_styles(tmp_path_factory.mktemp("fast_styles"), size=24, n_content=4, per_class=1)


@pytest.fixture(scope="module")
def style_model(styles_data: Path) -> FastStyleModel:
    from gan_translate.config import resolve
    from gan_translate.models.fast_style import FastStyleOptions

    options = resolve(FastStyleOptions, "fast_style", ["--dataroot", str(styles_data), "--vgg_weights", "random",
                                                       "--ngf", "4", "--style_size", "24"])
    return FastStyleModel(options)


def _inference_model(**kwargs) -> FastStyleModel:
    from gan_translate.models.fast_style import FastStyleOptions

    return FastStyleModel(FastStyleOptions(model="fast_style", ngf=4, **kwargs), training=False)


def run_args(data: Path, checkpoints: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--model", "fast_style", "--dataroot", str(data), "--checkpoints_dir", str(checkpoints),
            "--name", name, "--vgg_weights", "random", "--ngf", "4", "--load_size", "16", "--crop_size", "16",
            "--style_size", "16", "--batch_size", "2", "--num_threads", "0", "--print_freq", "1",
            "--display_freq", "100", "--save_latest_freq", "1000", *extra]


def test_train_test_resume_and_export(styles_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(run_args(styles_data, tmp_path, "run", "--max_steps", "2")) == 0
    assert "losses on VGG19" in capsys.readouterr().out
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "style_names: dots,ink,stripes,warm" in config and "vgg_arch: vgg19" in config
    assert "content_weight: 100000.0" in config  # pinned to the (torchvision-preprocessed random) VGG
    # exact resume: 2 + 2 == 4 straight
    assert main(run_args(styles_data, tmp_path, "run", "--max_steps", "4", "--continue_train")) == 0
    assert main(run_args(styles_data, tmp_path / "b", "run", "--max_steps", "4")) == 0
    resumed = load_file(str(find_checkpoint(tmp_path / "run") / "net_transformer.safetensors"))
    straight = load_file(str(find_checkpoint(tmp_path / "b" / "run") / "net_transformer.safetensors"))
    assert load_state(find_checkpoint(tmp_path / "run"))["progress"]["step"] == 4
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    # test.py on a folder of photos, a style by name and a blend
    photos = styles_data / "content"
    for extra in (["--style", "warm"], ["--style_weights", "0.5,0,0,0.5"]):
        assert main(["test", "--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", str(photos),
                     "--results_dir", str(tmp_path / "res"), "--num_test", "2", *extra]) == 0
    assert len(list((tmp_path / "res" / "run").rglob("*.png"))) >= 4
    # load_translator: a style index, a name, a blend
    t = load_translator(tmp_path / "run", device="cpu")
    from PIL import Image

    photo = Image.new("RGB", (37, 53), (90, 120, 200))
    outs = [t(photo, style=3), t(photo, style="warm"), t(photo, style_weights=[0, 0, 0, 1])]
    assert outs[0].size == (37, 53) or outs[0].size == t.size_for((37, 53))
    assert list(outs[0].getdata()) == list(outs[1].getdata()) == list(outs[2].getdata())
    # ONNX export of the chosen style
    onnx_file = tmp_path / "fs.onnx"
    assert main(["export", "--name", "run", "--checkpoints_dir", str(tmp_path), "--output", str(onnx_file)]) == 0
    import onnx

    onnx.checker.check_model(str(onnx_file))


def test_adding_styles_trains_only_their_gamma_beta(styles_data: Path, tmp_path: Path) -> None:
    assert main(run_args(styles_data, tmp_path, "base", "--max_steps", "2")) == 0
    base = load_file(str(find_checkpoint(tmp_path / "base") / "net_transformer.safetensors"))
    new = tmp_path / "new_styles"
    (new / "style").mkdir(parents=True)
    (new / "content").symlink_to(styles_data / "content")
    for name in ("stripes", "ink"):
        (new / "style" / f"{name}2").symlink_to(styles_data / "style" / name)
    assert main(run_args(new, tmp_path, "added", "--max_steps", "3", "--add_styles_to",
                         str(tmp_path / "base"))) == 0
    added = load_file(str(find_checkpoint(tmp_path / "added") / "net_transformer.safetensors"))
    changed_rows = 0
    for key, value in base.items():
        if value.dim() == 2 and value.shape[0] == 4:  # a conditional norm: 4 old styles + 2 new rows
            assert added[key].shape == (6, value.shape[1])
            assert torch.equal(added[key][:4], value), key
            changed_rows += int(not torch.equal(added[key][4:], torch.ones_like(added[key][4:]) * (
                1.0 if key.endswith("weight") else 0.0)))
        else:
            assert torch.equal(added[key], value), key
    assert changed_rows > 0  # the new styles did train
    assert "style_names: dots,ink,stripes,warm,ink2,stripes2" in (tmp_path / "added" / "config.yaml").read_text()


def test_bad_input_one_line_exit_2(styles_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    (empty / "style").mkdir(parents=True)
    (empty / "content").symlink_to(styles_data / "content")
    assert main(run_args(empty, tmp_path, "e", "--max_steps", "1")) == 2
    assert "no style images" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "e" / "LATEST").exists()
    # a VGG-16 file of another layout (VGG-16 with batch norm)
    import torchvision

    torch.save(torchvision.models.vgg16_bn(weights=None).state_dict(), tmp_path / "vgg16_bn.pth")
    args = run_args(styles_data, tmp_path, "v", "--max_steps", "1")
    args[args.index("random")] = str(tmp_path / "vgg16_bn.pth")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "VGG-16 layout" in err[0]
    # test time: a style index out of range, blend weights of the wrong length
    assert main(run_args(styles_data, tmp_path, "ok", "--max_steps", "1")) == 0
    capsys.readouterr()
    for extra, words in ((["--style", "7"], "out of range"), (["--style_weights", "1,0"], "2 weights for 4 styles")):
        assert main(["test", "--name", "ok", "--checkpoints_dir", str(tmp_path), "--dataroot",
                     str(styles_data / "content"), "--results_dir", str(tmp_path / "r2"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "r2").exists()


def test_quick_preset_losses_fall(tmp_path: Path) -> None:
    """The quick preset as a new user runs it (built-in data, the style extra's Caffe VGG-19), shortened to its first 60
    steps: the content and the style loss both fall (means of logged steps 1-10 against 41-60).

    The preset itself (300 steps) was checked by running it in full and looking at test.py's outputs: each of the four
    styles visible, the facades recognisable; over its 300 steps the content loss fell from 1.33e5 to 7.0e4 and the
    style loss from 1.41e5 to 7.4e4 (means of the first and last 30 logged steps). The content falls first, the style
    mostly after step 150, hence the wider final window here."""
    from gan_translate.nets.vgg_weights import bundled_caffe_vgg19

    if bundled_caffe_vgg19() is None:
        pytest.skip("needs the style extra's Caffe VGG-19")
    assert main(["train", "--model", "fast_style", "--checkpoints_dir", str(tmp_path), "--name", "quick",
                 "--max_steps", "60", "--print_freq", "1", "--display_freq", "1000", "--save_latest_freq", "1000",
                 "--num_cpu_threads", "1"]) == 0  # one thread, as the module: the test machine is shared
    for tag, factor in (("loss/content", 0.8), ("loss/style", 0.95)):
        values = logged_scalars(tmp_path / "quick", tag)
        assert len(values) == 60
        first, last = sum(values[:10]) / 10, sum(values[40:]) / 20
        assert last < factor * first, (tag, first, last)
