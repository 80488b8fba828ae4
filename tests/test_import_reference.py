"""`python -m gan_translate import reference`: files written in the reference's layouts (networks built here from the
spec, random weights, torch.save as the reference does) import into runs that give the reference networks' outputs."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gan_translate.cli import main
from gan_translate.inference import load_model, load_translator
from import_sources import RefNLayerDiscriminator, RefResnetGenerator, RefUnetGenerator, randomize

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5
pytestmark = pytest.mark.usefixtures("one_thread")


def _import(*args: str) -> int:
    return main(["import", "reference", *args])


def _translate(run: Path, x: torch.Tensor, *, eval_mode: bool, seed: int = 0, key: str = "A") -> torch.Tensor:
    model, _, _ = load_model(run, device="cpu", eval_mode=eval_mode)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.translate({key: x})
    return out["fake_B" if key == "A" else "fake_A"]


def _source(net: torch.nn.Module, x: torch.Tensor, *, eval_mode: bool, seed: int = 0) -> torch.Tensor:
    net.train(not eval_mode)
    torch.manual_seed(seed)
    with torch.no_grad():
        return net(x)


# Each variant: (source network, how its file differs from a plain state dict, whether to compare in eval mode).
VARIANTS = {
    # CycleGAN 2018 uploads: InstanceNorm with running statistics, saved from a DataParallel wrapper
    "resnet_instance_stats_module": (lambda: RefResnetGenerator(3, 3, 4, "instance", n_blocks=2,
                                                                track_running_stats=True), "module.", False),
    # trained without --no_dropout: the second conv of each block moves from conv_block.5 to conv_block.6
    "resnet_dropout": (lambda: RefResnetGenerator(3, 3, 4, "instance", use_dropout=True, n_blocks=2), "", False),
    # PyTorch 0.3 era BatchNorm file: no num_batches_tracked; torch.compile prefix
    "resnet_batch_old": (lambda: RefResnetGenerator(1, 3, 4, "batch", n_blocks=3), "_orig_mod.-nbt", True),
    "resnet_none": (lambda: RefResnetGenerator(3, 3, 4, "none", n_blocks=1), "", False),
    # pix2pix: BatchNorm and dropout in train mode at test time (the reference without --eval), and with --eval
    "unet_batch_train": (lambda: RefUnetGenerator(3, 3, 5, 4, "batch", use_dropout=True), "", False),
    "unet_batch_eval": (lambda: RefUnetGenerator(3, 3, 6, 4, "batch", use_dropout=True), "", True),
    "unet_instance": (lambda: RefUnetGenerator(3, 1, 5, 4, "instance"), "", False),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_generator_file_imports_and_agrees(variant: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build, quirk, eval_mode = VARIANTS[variant]
    torch.manual_seed(1)
    net = randomize(build(), seed=2)
    state = net.state_dict()
    if "nbt" in quirk:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    prefix = quirk.split("-")[0]
    state = {prefix + k: v for k, v in state.items()}
    torch.save(state, tmp_path / "latest_net_G.pth")
    family = "pix2pix" if "unet" in variant else "cyclegan"
    dropout = ["--no_dropout", "false"] if "unet_batch" in variant else []
    assert _import(str(tmp_path / "latest_net_G.pth"), "--model", family, "--name", "run",
                   "--checkpoints_dir", str(tmp_path / "ck"), *dropout) == 0
    assert "imported G (latest_net_G.pth)" in capsys.readouterr().out
    x = torch.rand(2 if eval_mode else 1, net.model[1].in_channels if "resnet" in variant else
                   net.model.model[0].in_channels, 64, 64) * 2 - 1
    ours = _translate(tmp_path / "ck" / "run", x, eval_mode=eval_mode, seed=3)
    theirs = _source(net, x, eval_mode=eval_mode, seed=3)
    diff = (ours - theirs).abs().max().item()
    print(f"reference {variant}: max abs difference {diff:.2e}")
    assert diff <= TOL


def _reference_run(folder: Path, *, norm_said: str = "instance") -> dict[str, torch.nn.Module]:
    """A reference CycleGAN run folder: latest_net_{G_A,G_B,D_A,D_B}.pth and its train_opt.txt."""
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    nets = {"G_A": RefResnetGenerator(3, 3, 4, "instance", n_blocks=2),
            "G_B": RefResnetGenerator(3, 3, 4, "instance", n_blocks=2),
            "D_A": RefNLayerDiscriminator(3, 4, 3, "instance"), "D_B": RefNLayerDiscriminator(3, 4, 3, "instance")}
    for i, (name, net) in enumerate(nets.items()):
        torch.save(randomize(net, seed=i).state_dict(), folder / f"latest_net_{name}.pth")
    options = {"model": "cycle_gan", "netG": "resnet_2blocks", "ngf": 4, "ndf": 4, "norm": norm_said,
               "no_dropout": True, "load_size": 36, "crop_size": 32, "niter": 1, "niter_decay": 1,
               "gpu_ids": "0", "dataroot": "/not/on/this/machine"}
    lines = ["----------------- Options ---------------"]
    lines += [f"{k:>25}: {str(v):<30}" + ("\t[default: instance]" if k == "norm" else "") for k, v in options.items()]
    (folder / "train_opt.txt").write_text("\n".join(lines + ["----------------- End -------------------"]) + "\n")
    return nets


def test_run_folder_imports_all_four_and_fine_tunes(tiny_data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    nets = _reference_run(tmp_path / "myrun", norm_said="batch")
    ck = tmp_path / "ck"
    assert _import(str(tmp_path / "myrun"), "--name", "myrun", "--checkpoints_dir", str(ck)) == 0
    out = capsys.readouterr().out
    assert "train_opt.txt says norm=batch, but the weights hold norm=instance" in out  # the keys win, and say so
    x = torch.rand(1, 3, 40, 48) * 2 - 1
    for key, name in (("A", "G_A"), ("B", "G_B")):
        diff = (_translate(ck / "myrun", x, eval_mode=False, key=key) - _source(nets[name], x, eval_mode=False))
        assert diff.abs().max().item() <= TOL
    options = (ck / "myrun" / "config.yaml").read_text()
    assert "load_size: 36" in options and "n_epochs: 1" in options and "norm: instance" in options
    imported = load_file(str(ck / "myrun" / "epoch_000" / "net_D_A.safetensors"))

    # Fine-tuning as the README writes it: fresh optimizers, two steps, a checkpoint.
    cmd = [sys.executable, "train.py", "--name", "myrun", "--checkpoints_dir", str(ck), "--continue_train",
           "--dataroot", str(tiny_data / "unaligned"), "--max_steps", "2", "--batch_size", "1", "--num_threads", "0"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fine-tuning the weights imported from" in done.stdout + done.stderr
    assert "fresh optimizers" in done.stdout + done.stderr
    latest = (ck / "myrun" / "LATEST").read_text().strip()
    assert latest == "step_00000002"
    tuned = load_file(str(ck / "myrun" / latest / "net_D_A.safetensors"))
    assert any(not torch.equal(tuned[k], imported[k]) for k in imported)

    # and test.py reads the imported run
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (37, 29), (120, 30, 200)).save(photos / "odd.png")
    assert main(["test", "--name", "myrun", "--checkpoints_dir", str(ck), "--epoch", "0", "--dataroot", str(photos),
                 "--dataset_mode", "single", "--results_dir", str(tmp_path / "results"), "--metrics", "none"]) == 0
    written = list((tmp_path / "results").rglob("odd_fake_B.png"))
    assert written and Image.open(written[0]).size == (46, 36)  # at the training scale of train_opt.txt: 36 px


def test_single_generator_refuses_to_fine_tune(tiny_data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    torch.save(randomize(RefResnetGenerator(3, 3, 4, n_blocks=1)).state_dict(), tmp_path / "latest_net_G.pth")
    assert _import(str(tmp_path / "latest_net_G.pth"), "--model", "cyclegan", "--name", "h2z",
                   "--checkpoints_dir", str(tmp_path / "ck")) == 0
    image = load_translator(tmp_path / "ck" / "h2z")(Image.new("RGB", (33, 20)))
    assert min(image.size) == 286  # no train_opt.txt: the reference's default training scale, 286 then crop 256
    capsys.readouterr()
    assert main(["train", "--name", "h2z", "--checkpoints_dir", str(tmp_path / "ck"), "--continue_train",
                 "--dataroot", str(tiny_data / "aligned")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be fine-tuned" in err[0] and "never published discriminators" in err[0]


class _Payload:
    """What a malicious checkpoint would run on unpickling (it must not)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_pickles_that_need_code_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model.1.weight": torch.zeros(1), "evil": _Payload(marker)}, tmp_path / "evil.pth")
    torch.save({"args": argparse.Namespace(netG="resnet_9blocks"), "state_dict": {}}, tmp_path / "ns.pth")
    for name, needs in (("evil.pth", "getattr"), ("ns.pth", "argparse.Namespace")):
        assert _import(str(tmp_path / name), "--name", name, "--checkpoints_dir", str(tmp_path / "ck")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and "would need code" in err[0] and needs in err[0]
    assert not marker.exists()


def test_mismatched_files_say_what_they_resemble(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = randomize(RefUnetGenerator(3, 3, 5, 4, "batch")).state_dict()
    del state["model.model.1.model.2.running_mean"]
    state["model.model.1.model.9.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "broken.pth")
    torch.save({f"{i}.weight": torch.zeros(3, 3, 3, 3) for i in (1, 5, 28)}, tmp_path / "decoder.pth")
    expected = {"broken.pth": ["missing 'model.model.1.model.2.running_mean'",
                               "unexpected 'model.model.1.model.9.weight'", "looks like a reference U-Net"],
                "decoder.pth": ["AdaIN decoder"]}
    for name, phrases in expected.items():
        assert _import(str(tmp_path / name), "--name", name, "--checkpoints_dir", str(tmp_path / "ck")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0], err
        for phrase in phrases:
            assert phrase in err[0]


def test_lone_pix2pix_generator_tests_with_the_reference_test_command(tiny_data: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """Published pix2pix weights as the reference documents them: import the lone G, then its test command
    ``test.py --name ip --dataroot D --direction BtoA --eval`` with its habit ``--load_size N --crop_size N``. The
    generator does not know its direction: it translates the way asked, said in one line; outputs agree with the
    reference network's on the B halves."""
    torch.manual_seed(1)
    net = randomize(RefUnetGenerator(3, 3, 5, 4, "batch", use_dropout=True), seed=2)
    torch.save(net.state_dict(), tmp_path / "latest_net_G.pth")
    assert _import(str(tmp_path / "latest_net_G.pth"), "--model", "pix2pix", "--name", "ip",
                   "--checkpoints_dir", str(tmp_path / "ck")) == 0
    assert "direction: not recorded with a lone generator" in capsys.readouterr().out
    results = tmp_path / "results"
    assert main(["test", "--name", "ip", "--checkpoints_dir", str(tmp_path / "ck"), "--dataroot",
                 str(tiny_data / "aligned"), "--direction", "BtoA", "--eval", "--load_size", "32", "--crop_size", "32",
                 "--results_dir", str(results), "--metrics", "l1"]) == 0
    out = capsys.readouterr().out
    assert out.count("does not record which way it was trained: it translates BtoA as asked") == 1
    out_dir = results / "ip" / "test_latest_load32_crop32_eval"  # the scale and --eval name the folder
    report = (out_dir / "metrics.json").read_text()
    assert '"BtoA"' in report and "resize to 32x32 as the reference test.py does" in report
    for path in sorted((tiny_data / "aligned" / "test").glob("*.png")):
        pair = Image.open(path).convert("RGB")
        half = pair.crop((pair.width // 2, 0, pair.width, pair.height))  # B, the right half, is the input
        x = torch.from_numpy(np.asarray(half, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        theirs = ((_source(net, x, eval_mode=True)[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
        ours = np.asarray(Image.open(out_dir / "images" / f"{path.stem}_fake_B.png"))
        assert np.abs(ours.astype(np.float32) - theirs).max() <= 1  # one 8-bit level (rounding)
    # AtoB works too: nothing recorded forbids it
    assert main(["test", "--name", "ip", "--checkpoints_dir", str(tmp_path / "ck"), "--dataroot",
                 str(tiny_data / "aligned"), "--direction", "AtoB", "--eval", "--results_dir", str(results),
                 "--metrics", "none"]) == 0
