"""CUT / FastCUT: the checks of specs/CUT.md section 9 (taps, parameter counts, blur kernels, PatchNCE closed forms,
patch-id reuse, flip bookkeeping, objective wiring, schedule and data rule), and end to end: both modes train into the
decay phase and test; two processes hold identical weights (resume and export: test_model_contract.py)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gan_translate import config, load_translator
from gan_translate.cli import train_main
from gan_translate.cli import test_main as run_test_command  # aliased: pytest would collect a test_main
from gan_translate.data import UnalignedDataset
from gan_translate.engine.checkpoint import find_checkpoint, load_state
from gan_translate.engine.schedules import LinearDecay
from gan_translate.evaluate import inception
from gan_translate.losses import patch_nce
from gan_translate.models import StepContext, create_model, model_class
from gan_translate.models.cut import CUTModel, PatchSampleMLP
from gan_translate.nets import build_discriminator, build_generator
from gan_translate.nets.blur import BlurDownsample, BlurUpsample
from tests.conftest import REPO
from tests.test_evaluate import tiny_inception_file
from tests.test_train import accelerate_launch, launcher_env, weights

pytestmark = pytest.mark.usefixtures("one_thread")

TAPS = ["input", "down1", "down2", "block1", "block5"]
T = 0.07


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def cut_options(*argv: str) -> config.TrainOptions:
    """CUT options as train.py resolves them (paper defaults + mode), with a user dataroot."""
    return config.resolve(model_class("cut").Options, "cut", ["--model", "cut", "--dataroot", "x", *argv])


def tiny_model(*argv: str) -> CUTModel:
    torch.manual_seed(0)
    return create_model(cut_options("--netG", "resnet_2blocks", "--ngf", "4", "--ndf", "4", "--num_patches", "16",
                                    "--nce_layers", "input,down1,down2,block1,block2", *argv))


# ---------------------------------------------------------------------------------------------------------------------
# Networks: taps, receptive fields, parameter counts, blur kernels
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("antialias, sizes, fields", [
    (True, [70, 64, 32, 16, 16], [1, 9, 15, 35, 99]),   # the authors' default layout (their 262/256/128/64/64 at 256)
    (False, [70, 32, 16, 16, 16], [1, 9, 13, 29, 93]),  # CycleGAN's layout, the same semantic taps
])
def test_tap_shapes_receptive_fields_and_early_stop(antialias: bool, sizes: list[int], fields: list[int]) -> None:
    g = build_generator("resnet_6blocks", 3, 3, ngf=4, norm="instance", antialias=antialias)
    ran_after = []
    g.model[g.taps["block5"] + 1].register_forward_hook(lambda *args: ran_after.append(1))
    feats = g.encode(torch.randn(1, 3, 64, 64), TAPS)
    assert [tuple(f.shape[1:]) for f in feats] == [(c, s, s) for c, s in zip([3, 8, 16, 16, 16], sizes)]
    assert not ran_after, "the encode pass went past the last tap"

    # Receptive fields with the norm off and every unit active (positive weights and input): the input pixels that
    # one feature location at the centre depends on.
    g = build_generator("resnet_5blocks", 3, 3, ngf=2, norm="none", antialias=antialias)
    with torch.no_grad():
        for p in g.parameters():
            p.copy_(torch.rand_like(p) * 0.1 if p.dim() > 1 else torch.zeros_like(p))
    x = torch.rand(1, 3, 128, 128, requires_grad=True)
    measured = []
    for feat in g.encode(x, TAPS):
        (grad,) = torch.autograd.grad(feat[0, :, feat.shape[2] // 2, feat.shape[3] // 2].sum(), x, retain_graph=True)
        rows = torch.nonzero(grad.abs().sum(dim=(0, 1, 3)))
        measured.append(int(rows.max() - rows.min() + 1))
    assert measured == fields


def test_parameter_counts_are_those_of_both_reference_layouts() -> None:
    for antialias, g_buffers, d_buffers in ((False, 0, 0), (True, 9600, 4032)):
        g = build_generator("resnet_9blocks", 3, 3, ngf=64, norm="instance", antialias=antialias)
        d = build_discriminator("basic", 3, ndf=64, norm="instance", antialias=antialias)
        assert n_params(g) == 11_378_179 and n_params(d) == 2_764_737
        assert sum(b.numel() for b in g.buffers()) == g_buffers and sum(b.numel() for b in d.buffers()) == d_buffers
        assert d(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 6, 6)
    # the authors' state-dict keys for the antialiased layout (what an importer of their latest_net_G.pth maps)
    assert sorted(k for k in g.state_dict() if k.endswith("filt")) == ["model.11.filt", "model.21.filt",
                                                                        "model.25.filt", "model.7.filt"]
    assert [g.taps[t] for t in TAPS] == [0, 4, 8, 12, 16]
    assert {"model.1.weight", "model.12.conv_block.1.weight", "model.22.weight", "model.30.weight"} <= set(
        g.state_dict())
    assert [k for k in d.state_dict() if k.endswith("weight")] == [f"model.{i}.weight" for i in (0, 3, 7, 11, 14)]
    assert d.receptive_field == 84 and build_discriminator("basic", 3).receptive_field == 70

    model = create_model(cut_options("--ngf", "64"))  # the paper's G with the default taps
    net_f = model.nets["F"]
    assert n_params(net_f) == 560_384 and len(list(net_f.parameters())) == 20
    assert [mlp[0].in_features for mlp in net_f.mlps] == [3, 128, 256, 256, 256]
    assert {id(p) for p in net_f.parameters()} <= {id(p) for g in model.optimizers["F"].param_groups
                                                   for p in g["params"]}
    assert set(model.optimizers) == {"G", "D", "F"}
    # xavier_normal_ with gain 0.02: a 3x3 256->256 conv has std 0.02 * sqrt(2 / (2 * 2304)) = 4.2e-4
    assert model.nets["G"].model[12].conv_block[1].weight.std().item() == pytest.approx(4.16e-4, rel=0.03)


def test_blur_kernels_keep_constants_and_add_no_parameters() -> None:
    down, up = BlurDownsample(2), BlurUpsample(2)
    assert torch.equal(down.filt[0, 0], torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]) / 16)
    taps = torch.tensor([1., 3., 3., 1.])
    assert torch.allclose(up.filt[1, 0], torch.outer(taps, taps) / 16) and up.filt[0, 0].sum() == 4
    assert n_params(down) == n_params(up) == 0
    constant = torch.full((1, 2, 5, 7), 0.7)
    assert down(constant).shape == (1, 2, 3, 4) and up(constant).shape == (1, 2, 10, 14)
    assert torch.allclose(down(constant), torch.full((1, 2, 3, 4), 0.7))
    assert torch.allclose(up(constant), torch.full((1, 2, 10, 14), 0.7))  # interior and border alike


def test_a_tap_that_does_not_exist_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert train_main(["--model", "cut", "--netG", "resnet_6blocks", "--nce_layers", "input,block7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: option --nce_layers: tap 'block7' does not exist in resnet_6blocks (taps: input, down1, "
                   "down2, block1 ... block6)")
    with pytest.raises(config.UserError, match="unet_64 has no antialiased layout"):
        cut_options("--netG", "unet_64")


# ---------------------------------------------------------------------------------------------------------------------
# PatchNCE and netF
# ---------------------------------------------------------------------------------------------------------------------


def test_patchnce_closed_forms() -> None:
    v = F.normalize(torch.randn(256), dim=0)
    same = v.expand(256, 256).clone()
    assert patch_nce(same, same, 256).mean().item() == pytest.approx(math.log(256), abs=1e-4)  # log 257: unmasked
    two = v.expand(512, 256).clone()
    assert patch_nce(two, two, 256, negatives_from_minibatch=True).mean().item() == pytest.approx(math.log(512),
                                                                                                  abs=1e-4)
    assert patch_nce(two, two, 256).mean().item() == pytest.approx(math.log(256), abs=1e-4)
    eye = torch.eye(256)
    assert patch_nce(eye, eye, 256).mean().item() == pytest.approx(math.log(1 + 255 * math.exp(-1 / T)), rel=0.01)
    generator = torch.Generator().manual_seed(0)  # independent random unit rows (the spec measured 5.96)
    q = F.normalize(torch.randn(256, 256, generator=generator), dim=1).requires_grad_()
    k = F.normalize(torch.randn(256, 256, generator=generator), dim=1).requires_grad_()
    loss = patch_nce(q, k, 256).mean()
    assert loss.item() == pytest.approx(math.log(256) + 1 / (2 * T**2 * 256), abs=0.15)
    loss.backward()
    assert k.grad is None and q.grad is not None and q.grad.abs().sum() > 0


def test_negatives_come_from_the_tensors_batch() -> None:
    """Three images (a batch size no option says) give each image's loss as if it were alone."""
    q, k = F.normalize(torch.randn(3 * 8, 16), dim=1), F.normalize(torch.randn(3 * 8, 16), dim=1)
    together = patch_nce(q, k, 8)
    alone = torch.cat([patch_nce(q[i * 8:(i + 1) * 8], k[i * 8:(i + 1) * 8], 8) for i in range(3)])
    assert torch.allclose(together, alone)
    with pytest.raises(ValueError, match="not a whole number of images"):
        patch_nce(q[:20], k[:20], 8)


def test_patch_ids_are_shared_reused_and_redrawn() -> None:
    net_f = PatchSampleMLP([3, 5], nc=8)
    feats = [torch.randn(2, 3, 6, 6), torch.randn(2, 5, 4, 4)]
    keys, ids = net_f(feats, num_patches=10)
    assert [len(i) for i in ids] == [10, 10] and [k.shape for k in keys] == [(20, 8), (20, 8)]
    assert all(len(set(i.tolist())) == len(i) and int(i.max()) < f.shape[2] * f.shape[3] for i, f in zip(ids, feats))
    # row p of image b is place ids[p] of image b: the same places for every image, image-major
    places = feats[1].flatten(2).transpose(1, 2)
    expected = net_f.mlps[1](torch.cat([places[0, ids[1]], places[1, ids[1]]]))
    assert torch.allclose(keys[1], F.normalize(expected, dim=1, eps=1e-7), atol=1e-6)
    queries, reused = net_f(feats, 10, ids)
    assert all(torch.equal(a, b) for a, b in zip(reused, ids))
    positives = [(q * k).sum(1) / T for q, k in zip(queries, keys)]  # q-features == k-features: logit 1/T
    assert all(torch.allclose(p, torch.full_like(p, 1 / T)) for p in positives)
    _, fresh = net_f(feats, 10)
    assert not all(torch.equal(a, b) for a, b in zip(fresh, ids))
    _, capped = net_f([torch.randn(1, 3, 2, 2), torch.randn(1, 5, 2, 2)], 10)  # fewer places than patches: all
    assert sorted(capped[0].tolist()) == [0, 1, 2, 3]


class PixelGenerator(nn.Module):
    """A per-pixel (1x1 conv) stand-in for G: exactly flip-equivariant, with the encode() of the ResNet generator."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 3, 1)
        self.tap_channels = {"input": 3, "down1": 4}

    def encode(self, x: torch.Tensor, taps: list[str]) -> list[torch.Tensor]:
        feats = {"input": x, "down1": self.a(x)}
        return [feats[t] for t in taps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.b(torch.relu(self.a(x))))


def test_flip_bookkeeping_with_an_equivariant_generator() -> None:
    model = tiny_model("--mode", "fastcut", "--nce_layers", "input,down1")
    g = model.nets["G"] = PixelGenerator()
    model.nets["F"] = PatchSampleMLP([3, 4], nc=8)
    real = torch.randn(2, 3, 8, 8)

    def loss(output: torch.Tensor, flipped: bool) -> float:
        torch.manual_seed(5)  # the same patch ids for every call
        return model.nce_loss(real, output, flipped).item()

    plain = loss(g(real), False)
    assert loss(g(real.flip(3)), True) == pytest.approx(plain, rel=1e-5)
    assert abs(loss(g(real.flip(3)), False) - plain) > 1e-3  # without the flip-back of the queries: not the same


class Recorder:
    """ctx.backward that keeps every loss it is given."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def __call__(self, loss: torch.Tensor) -> None:
        self.losses.append(loss.detach())
        loss.backward()


@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_objective_wiring(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("--mode", mode)
    o = model.opt
    assert (o.lambda_NCE, o.nce_idt, o.flip_equivariance) == ((1.0, True, False) if mode == "cut" else
                                                              (10.0, False, True))
    batch = {"A": torch.randn(2, 3, 32, 32), "B": torch.randn(2, 3, 32, 32)}
    seen: dict[str, list] = {"G": [], "nce": [], "coins": []}
    model.nets["G"].register_forward_hook(lambda m, args, out: seen["G"].append((args[0].clone(), out.detach())))

    class CheckedNCE(type(model.nce)):
        def forward(self, q: torch.Tensor, k: torch.Tensor, patches: int) -> torch.Tensor:
            assert q.requires_grad and not k.requires_grad  # netF and G learn from the queries only
            return super().forward(q, k, patches)

    model.nce = CheckedNCE(model.nce.temperature)
    nce_calls = []
    real_nce_loss = model.nce_loss
    monkeypatch.setattr(model, "nce_loss", lambda src, out, flipped=False: nce_calls.append(
        (src, out, flipped)) or real_nce_loss(src, out, flipped))
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: seen["coins"].append(a) or real_rand(*a, **k))
    d_before = {k: v.clone() for k, v in model.nets["D"].state_dict().items()}
    record = Recorder()
    logs = model.training_step(batch, StepContext(step=0, epoch=0, backward=record))

    g_in, g_out = seen["G"][0]
    flipped = nce_calls[0][2]
    expected_in = torch.cat([batch["A"], batch["B"]]) if mode == "cut" else batch["A"]
    assert torch.equal(g_in, expected_in.flip(3) if flipped else expected_in)
    assert len(seen["G"]) == 1 and seen["coins"] == ([((),)] if mode == "fastcut" else [])
    # D: 0.5 * (MSE(D(real_B), 1) + MSE(D(fake_B), 0)) with D's weights before its step
    d = build_discriminator("basic", 3, ndf=4, norm="instance", antialias=True)
    d.load_state_dict(d_before)
    fake_b = g_out[:2]
    expected_d = 0.5 * (F.mse_loss(d(batch["B"]), torch.ones(1)) + F.mse_loss(d(fake_b), torch.zeros(1)))
    assert logs["D"] == pytest.approx(expected_d.item(), rel=1e-5) and record.losses[0].item() == logs["D"]
    # G: lambda_GAN * GAN + NCE_X (FastCUT) or + 0.5 * (NCE_X + NCE_Y) (CUT, NCE_Y on [real_B, G(real_B)])
    if mode == "cut":
        assert [(torch.equal(s, batch[k]), torch.equal(out, g_out[i:i + 2])) for (s, out, _), k, i in
                zip(nce_calls, "AB", (0, 2))] == [(True, True), (True, True)]
        expected_g = logs["G_GAN"] + 0.5 * (logs["NCE"] + logs["NCE_Y"])
    else:
        assert len(nce_calls) == 1 and torch.equal(nce_calls[0][0], batch["A"]) and "NCE_Y" not in logs
        expected_g = logs["G_GAN"] + logs["NCE"]
        assert logs["NCE"] > 10  # lambda_NCE 10 times a loss near log(16)
    assert record.losses[1].item() == pytest.approx(expected_g, rel=1e-5)
    assert all(p.grad is not None for p in model.nets["F"].parameters())
    assert set(model.visuals()) == ({"real_A", "fake_B", "real_B", "idt_B"} if mode == "cut" else
                                    {"real_A", "fake_B", "real_B"})


def test_schedule_and_decay_phase_data_rule(tiny_data: Path) -> None:
    for mode, n, decay in (("cut", 200, 200), ("fastcut", 150, 50)):
        o = cut_options("--mode", mode)
        assert (o.n_epochs, o.n_epochs_decay, o.lr) == (n, decay, 2e-4)
        factor = LinearDecay(o.n_epochs, o.n_epochs_decay)  # LambdaLR's 0-based epoch = 1-based epoch E - 1
        assert factor(n - 1) == 1.0 and factor(n) == pytest.approx(1 - 1 / (decay + 1))
        assert factor(n + decay - 1) == pytest.approx(1 / (decay + 1))
    assert cut_options("--mode", "fastcut", "--lambda_NCE", "2", "--n_epochs", "7").lambda_NCE == 2.0  # user wins

    data = SimpleNamespace(**{**vars(cut_options("--n_epochs", "3", "--no_flip")), "dataroot": str(
        tiny_data / "unaligned"), "load_size": 40, "crop_size": 32})
    dataset = UnalignedDataset(data)
    straight = np.asarray(Image.open(dataset.a_paths[3]).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC))
    for epoch in (3, 4):  # the decay epochs: resized straight to 32, whatever the item's random crop
        item = dataset[(epoch, 3)]["A"]
        assert torch.allclose((item.permute(1, 2, 0) + 1) * 127.5, torch.from_numpy(straight).float(), atol=1)
    jittered = {tuple(dataset[(epoch, 3)]["A"].flatten().tolist()) for epoch in range(3)}
    assert len(jittered) == 3  # before: a random 32 px crop of the 40 px image
    data.decay_no_jitter = False
    assert len({tuple(UnalignedDataset(data)[(epoch, 3)]["A"].flatten().tolist()) for epoch in (3, 4)}) == 2


# ---------------------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------------------


def cut_run(mode: str, data: Path, checkpoints: Path, name: str, *extra: str) -> list[str]:
    return ["--model", "cut", "--mode", mode, "--dataroot", str(data / "unaligned"), "--checkpoints_dir",
            str(checkpoints), "--name", name, "--netG", "resnet_2blocks", "--ngf", "8", "--ndf", "8",
            "--nce_layers", "input,down1,down2,block1,block2", "--num_patches", "32", "--load_size", "36",
            "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--n_epochs", "1", "--n_epochs_decay",
            "2", "--print_freq", "1", "--display_freq", "3", "--save_latest_freq", "1000",
            "--num_cpu_threads", "1", *extra]  # tiny tensors: a second thread only adds synchronisation


@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_trains_into_the_decay_and_tests(mode: str, tiny_data: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """6 steps across the epoch boundary, into the decay phase (netF's learning rate decays with G's and D's); then
    test.py and load_translator on the run (resume, loading and export of every model: test_model_contract.py)."""
    assert train_main(cut_run(mode, tiny_data, tmp_path, "straight", "--max_steps", "6")) == 0
    straight = weights(find_checkpoint(tmp_path / "straight"))
    assert sorted({k.split(".")[0] for k in straight}) == ["net_D", "net_F", "net_G"]
    state = load_state(find_checkpoint(tmp_path / "straight"))
    assert state["progress"] == {"step": 6, "epoch": 1, "batch_in_epoch": 2}
    assert {k: s["last_epoch"] for k, s in state["schedulers"].items()} == {"G": 1, "D": 1, "F": 1}
    assert state["optimizers"]["F"]["param_groups"][0]["lr"] == pytest.approx(2e-4 * 2 / 3)  # decays with G and D
    assert len(list((tmp_path / "straight" / "samples").glob("*.png"))) >= 2

    monkeypatch.setenv(inception.NO_DOWNLOAD_ENV, "1")
    results = tmp_path / "results"
    assert run_test_command(["--name", "straight", "--checkpoints_dir", str(tmp_path), "--results_dir", str(results),
                             "--inception_weights", str(tiny_inception_file(tmp_path))]) == 0
    out = results / "straight" / "test_latest"
    report = json.loads((out / "metrics.json").read_text())
    assert list(report["results"]) == ["AtoB"]  # one generator, one way
    summary = report["results"]["AtoB"]
    assert summary["paired_images"] == 2 and all(isinstance(summary[m], float) for m in ("l1", "ssim", "fid", "kid"))
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:04d}_{r}.png" for i in range(2)
                                                                   for r in ("fake_B", "real_A", "real_B")]
    assert (out / "index.html").is_file()

    translator = load_translator(tmp_path / "straight")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8))
    assert translator(photo).size == (44, 36)  # the training scale: shorter side 36 (load_size), aspect kept
    assert load_translator(tmp_path / "straight", preprocess="none")(photo).size == (45, 37)


def test_two_processes_hold_identical_weights(tiny_data: Path, tmp_path: Path) -> None:
    """The README's `accelerate launch --multi_gpu --num_processes 2 train.py --model cut ...` as a user types it:
    one DDP run over G, D and netF from the first step (no first pass), 7 images in batches of 2 per process."""
    argv = accelerate_launch("--multi_gpu", "--num_processes", "2", str(REPO / "train.py"),
                             *cut_run("cut", tiny_data, tmp_path, "ddp", "--max_dataset_size", "7",
                                      "--n_epochs_decay", "1"))
    proc = subprocess.run(argv, capture_output=True, text=True, env=launcher_env(), timeout=600, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "weights identical on all 2 ranks" in out and out.count("done: 4 steps") == 1
    state = load_state(find_checkpoint(tmp_path / "ddp"))
    assert state["progress"] == {"step": 4, "epoch": 2, "batch_in_epoch": 0} and len(state["rng"]) == 2


def test_bench_knows_fastcut_as_cut_in_its_mode() -> None:
    from gan_translate.bench import BenchConfig, build_options

    for name, mode in (("cut", "cut"), ("fastcut", "fastcut")):
        options = build_options(BenchConfig(model=name, size=128))
        assert (options.model, options.mode, options.netG, options.antialias) == ("cut", mode, "resnet_9blocks", True)
    assert build_options(BenchConfig(model="fastcut", size=128)).lambda_NCE == 10.0
