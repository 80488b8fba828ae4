"""`import adain` and `import tpfr`: files in the source projects' layouts (their networks built here from the spec,
random weights) import into runs whose outputs are the source networks' outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from gan_translate.cli import main
from gan_translate.inference import load_model
from import_sources import TPFRGenerator, adain_decoder, adain_style_transfer, adain_vgg, randomize

TOL = 1e-5
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adain_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torch.nn.Module, torch.nn.Module]:
    """A training snapshot decoder_iter_N.pth.tar and the VGG under the README's spelling, in one folder."""
    folder = tmp_path_factory.mktemp("adain")
    torch.manual_seed(0)
    vgg, decoder = randomize(adain_vgg(), seed=1).eval(), randomize(adain_decoder(), seed=2).eval()
    with torch.no_grad():  # the normalised VGG's first layer: RGB [0, 1] -> BGR 0..255 minus the mean, as shipped
        vgg[0].weight.copy_(torch.tensor([[0, 0, 255.0], [0, 255.0, 0], [255.0, 0, 0]]).view(3, 3, 1, 1))
        vgg[0].bias.copy_(-torch.tensor([103.939, 116.779, 123.68]))
        for m in list(vgg)[1:]:  # weights at the normalised network's scale (mean activations about 1)
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(0.02 if m.in_channels == 3 else 1.0)
    torch.save(decoder.state_dict(), folder / "decoder_iter_160000.pth.tar")
    torch.save(vgg.state_dict(), folder / "vgg_normalized.pth")
    return folder / "decoder_iter_160000.pth.tar", folder / "vgg_normalized.pth", vgg, decoder


def test_adain_official_weights_give_the_official_outputs(adain_files, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    decoder_file, vgg_file, vgg, decoder = adain_files
    # --vgg not given: found beside the decoder under either spelling
    assert main(["import", "adain", "--decoder", str(decoder_file), "--name", "official",
                 "--checkpoints_dir", str(tmp_path)]) == 0
    assert "vgg_normalized.pth" in capsys.readouterr().out
    config = (tmp_path / "official" / "config.yaml").read_text()
    assert "vgg: normalised" in config and "sample_std: true" in config
    model, _, _ = load_model(tmp_path / "official", device="cpu")
    gen = torch.Generator().manual_seed(4)
    content, style = torch.rand(1, 3, 64, 48, generator=gen), torch.rand(1, 3, 40, 56, generator=gen)
    with torch.no_grad():
        theirs = adain_style_transfer(vgg, decoder, content, style).clamp(0, 1)
        ours = model.translate({"A": content * 2 - 1, "style": style * 2 - 1})["stylized"]
    diff = ((ours + 1) / 2 - theirs).abs().max().item()
    print(f"adain: max abs difference {diff:.2e} (images in [0, 1])")
    assert diff <= TOL
    # the run folder is self-contained: the encoder's weights live in it
    assert (tmp_path / "official" / "vgg_normalised.safetensors").is_file()
    assert "load_size: 512" in config  # the port's training resize, also its test-time --content_size


def test_stylize_accepts_the_normalised_vgg(adain_files, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, vgg_file, _, _ = adain_files
    Image.new("RGB", (40, 40), (30, 140, 60)).save(tmp_path / "c.png")
    Image.effect_noise((40, 40), 60).convert("RGB").save(tmp_path / "s.png")
    assert main(["stylize", "--content", str(tmp_path / "c.png"), "--style", str(tmp_path / "s.png"), "--out",
                 str(tmp_path / "o.png"), "--vgg_weights", str(vgg_file), "--image_size", "32", "--steps", "2",
                 "--style_layers", "relu1_1,relu2_1", "--content_layers", "relu3_1", "--quiet"]) == 0
    assert "VGG-19: normalised" in capsys.readouterr().err
    assert Image.open(tmp_path / "o.png").size == (40, 40)


def test_tpfr_released_layout_gives_the_authors_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    source = randomize(TPFRGenerator(ngf=8, n_blocks=2), seed=3).eval()
    torch.save({"module." + k: v for k, v in source.state_dict().items()}, tmp_path / "200_net_G.pth")
    assert main(["import", "tpfr", str(tmp_path / "200_net_G.pth"), "--name", "tpfr",
                 "--checkpoints_dir", str(tmp_path / "ck")]) == 0
    assert "--eval" in capsys.readouterr().out
    model, options, _ = load_model(tmp_path / "ck" / "tpfr", device="cpu", eval_mode=True)
    assert (options.ngf, options.n_blocks, options.knn, options.peers) == (8, 2, 5, "batch")
    gen = torch.Generator().manual_seed(1)
    content, style = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1, torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        theirs = source.stylize_image(content, style)
        ours = model.translate({"A": content, "style": style})["stylized"]
    diff = (ours - theirs).abs().max().item()
    assert diff <= TOL
    capsys.readouterr()
    assert main(["train", "--name", "tpfr", "--checkpoints_dir", str(tmp_path / "ck"), "--continue_train"]) == 2
    assert "pass --discriminator 200_net_D.pth" in capsys.readouterr().err
    # with their D (model_pred.{0,2,5,8,11}) every network is there: the run can be fine-tuned
    from gan_translate.engine.checkpoint import load_state
    from gan_translate.nets.tpfr_parts import ConditionalNoisyDiscriminator

    disc = randomize(ConditionalNoisyDiscriminator(3, 4), seed=5).state_dict()
    torch.save({k.replace("net.model.", "model_pred."): v for k, v in disc.items()}, tmp_path / "200_net_D.pth")
    assert main(["import", "tpfr", str(tmp_path / "200_net_G.pth"), "--discriminator", str(tmp_path / "200_net_D.pth"),
                 "--name", "full", "--checkpoints_dir", str(tmp_path / "ck")]) == 0
    assert load_state(tmp_path / "ck" / "full" / "epoch_000")["imported"]["fine_tune"] is True
    print(f"tpfr: max abs difference {diff:.2e}")


def test_tpfr_refuses_other_layouts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save({"model.1.weight": torch.zeros(4, 3, 7, 7), "model.3.conv_block.1.weight": torch.zeros(1)},
               tmp_path / "g.pth")
    assert main(["import", "tpfr", str(tmp_path / "g.pth"), "--name", "x", "--checkpoints_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a TPFR generator" in err[0] and "reference ResNet generator" in err[0]
