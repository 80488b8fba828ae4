"""`import fast_style`: a pytorch/examples fast_neural_style TransformerNet (built here from STYLE-FAMILY-2.md
section 1, random weights) imports into a run whose outputs are that network's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gan_translate.cli import main
from gan_translate.inference import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-4  # on 0..1 images


class PaddedConv(nn.Module):
    """Reflection pad k // 2, then a valid convolution; optional nearest x2 upsampling first."""

    def __init__(self, c_in, c_out, k, stride=1, up=False):
        super().__init__()
        self.up = up
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        self.conv2d = nn.Conv2d(c_in, c_out, k, stride)

    def forward(self, x):
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv2d(self.reflection_pad(x))


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.in1 = PaddedConv(c, c, 3), nn.InstanceNorm2d(c, affine=True)
        self.conv2, self.in2 = PaddedConv(c, c, 3), nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
        return x + self.in2(self.conv2(F.relu(self.in1(self.conv1(x)))))


class SourceTransformerNet(nn.Module):
    """The layout of the spec: c9s1-32, d64, d128, 5 residual blocks, resize-conv 64, 32, c9s1-3; IN affine after
    every conv but the last; RGB 0..255 in and out, no output activation."""

    def __init__(self, w=32):
        super().__init__()
        self.conv1, self.in1 = PaddedConv(3, w, 9), nn.InstanceNorm2d(w, affine=True)
        self.conv2, self.in2 = PaddedConv(w, 2 * w, 3, 2), nn.InstanceNorm2d(2 * w, affine=True)
        self.conv3, self.in3 = PaddedConv(2 * w, 4 * w, 3, 2), nn.InstanceNorm2d(4 * w, affine=True)
        for i in range(1, 6):
            setattr(self, f"res{i}", Residual(4 * w))
        self.deconv1, self.in4 = PaddedConv(4 * w, 2 * w, 3, up=True), nn.InstanceNorm2d(2 * w, affine=True)
        self.deconv2, self.in5 = PaddedConv(2 * w, w, 3, up=True), nn.InstanceNorm2d(w, affine=True)
        self.deconv3 = PaddedConv(w, 3, 9)

    def forward(self, x):
        y = F.relu(self.in1(self.conv1(x)))
        y = F.relu(self.in2(self.conv2(y)))
        y = F.relu(self.in3(self.conv3(y)))
        for i in range(1, 6):
            y = getattr(self, f"res{i}")(y)
        y = F.relu(self.in4(self.deconv1(y)))
        y = F.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


def _source(seed: int, width: int) -> SourceTransformerNet:
    torch.manual_seed(seed)
    net = SourceTransformerNet(width).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
        net.deconv3.conv2d.weight.mul_(60)  # outputs spanning about 0..255, as a trained network's
        net.deconv3.conv2d.bias.fill_(127)
    return net


@pytest.mark.parametrize("old_file", [False, True])
def test_imported_transformer_net_gives_the_sources_outputs(tmp_path: Path, old_file: bool,
                                                             capsys: pytest.CaptureFixture) -> None:
    net = _source(1, 8)
    state = net.state_dict()
    if old_file:  # PyTorch 0.3 files: running statistics of every instance norm, which the source deletes on load
        for key in [k for k in state if k.endswith(".weight") and ".in" in f".{k}" and state[k].dim() == 1]:
            prefix = key[: -len("weight")]
            state[prefix + "running_mean"] = torch.randn(state[key].shape)
            state[prefix + "running_var"] = torch.rand(state[key].shape)
    torch.save(state, tmp_path / "mosaic.pth")
    assert main(["import", "fast_style", str(tmp_path / "mosaic.pth"), "--name", "mosaic",
                 "--checkpoints_dir", str(tmp_path / "ck")]) == 0
    assert "style 'mosaic'" in capsys.readouterr().out
    model, options, _ = load_model(tmp_path / "ck" / "mosaic", device="cpu", eval_mode=True)
    assert (options.arch, options.ngf, options.style_names) == ("examples", 8, "mosaic")
    photo = torch.rand(2, 3, 44, 60, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs = net(photo * 255).clamp(0, 255) / 255
        ours = (model.translate({"A": photo * 2 - 1})["stylized"] + 1) / 2
    diff = (ours - theirs).abs().max().item()
    print(f"fast_style import: max abs difference {diff:.2e} (images in [0, 1])")
    assert diff <= TOL


def test_a_file_of_another_layout_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "vgg.pth")
    assert main(["import", "fast_style", str(tmp_path / "vgg.pth"), "--name", "x",
                 "--checkpoints_dir", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a fast_neural_style TransformerNet" in err[0]
    assert not (tmp_path / "ck" / "x").exists()
