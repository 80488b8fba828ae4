"""`import cut`: CUT's antialiased generator (built here from the spec: blur-pool down, blur-upsample up, random
weights) and a CUT run folder with D and netF import into cut runs with the same outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gan_translate.cli import main
from gan_translate.inference import load_model
from import_sources import CUTResnetGenerator, randomize

pytestmark = pytest.mark.usefixtures("one_thread")


def _check(run: Path, source: torch.nn.Module) -> float:
    model, options, _ = load_model(run, device="cpu")
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        diff = (model.translate({"A": x})["fake_B"] - source(x)).abs().max().item()
    print(f"cut: max abs difference {diff:.2e}")
    return diff


def test_published_cut_generator_agrees(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    source = randomize(CUTResnetGenerator(ngf=4, n_blocks=3), seed=1)
    state = source.state_dict()
    assert state["model.7.filt"].shape == (8, 1, 3, 3) and state["model.15.filt"].shape == (16, 1, 4, 4)
    torch.save(state, tmp_path / "latest_net_G.pth")
    assert main(["import", "cut", str(tmp_path / "latest_net_G.pth"), "--name", "h2z_cut",
                 "--checkpoints_dir", str(tmp_path / "ck")]) == 0
    assert "antialiased" in capsys.readouterr().out
    assert _check(tmp_path / "ck" / "h2z_cut", source) <= 1e-5
    capsys.readouterr()
    assert main(["train", "--name", "h2z_cut", "--checkpoints_dir", str(tmp_path / "ck"), "--continue_train"]) == 2
    assert "cannot be fine-tuned" in capsys.readouterr().err


def test_cut_run_folder_with_d_and_f(tmp_path: Path) -> None:
    folder = tmp_path / "h2z"
    folder.mkdir()
    torch.manual_seed(0)
    source = randomize(CUTResnetGenerator(ngf=4, n_blocks=6), seed=2)
    torch.save(source.state_dict(), folder / "latest_net_G.pth")
    from gan_translate.nets import build_discriminator

    d = randomize(build_discriminator("basic", 3, ndf=4, norm="instance", antialias=True), seed=3)
    torch.save(d.state_dict(), folder / "latest_net_D.pth")
    channels = (3, 8, 16, 16, 16)  # their nce_layers 0,4,8,12,16: pixels, both downsampling convs, blocks 1 and 5
    f_state = {}
    for i, c in enumerate(channels):
        f_state |= {f"mlp_{i}.0.weight": torch.randn(32, c), f"mlp_{i}.0.bias": torch.randn(32),
                    f"mlp_{i}.2.weight": torch.randn(32, 32), f"mlp_{i}.2.bias": torch.randn(32)}
    torch.save(f_state, folder / "latest_net_F.pth")
    lines = [f"{k:>25}: {v:<30}" for k, v in {"model": "cut", "CUT_mode": "FastCUT", "netG": "resnet_6blocks",
                                               "ngf": "4", "ndf": "4", "nce_layers": "0,4,8,12,16",
                                               "no_antialias": "False", "netF_nc": "32", "lambda_NCE": "10.0"}.items()]
    (folder / "train_opt.txt").write_text("\n".join(lines) + "\n")
    assert main(["import", "cut", str(folder), "--name", "h2z", "--checkpoints_dir", str(tmp_path / "ck")]) == 0
    config = (tmp_path / "ck" / "h2z" / "config.yaml").read_text()
    assert "mode: fastcut" in config and "nce_layers: input,down1,down2,block1,block5" in config
    assert "nce_idt: false" in config and "netF_nc: 32" in config
    assert _check(tmp_path / "ck" / "h2z", source) <= 1e-5
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "ck" / "h2z" / "epoch_000" / "net_F.safetensors"))
    assert torch.equal(saved["mlps.1.0.weight"], f_state["mlp_1.0.weight"])
