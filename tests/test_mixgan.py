"""MIXGAN: network shapes and paper-size parameter counts, the two phases (which networks each one trains), the latent
and patch discriminators' LSGAN terms against hand computations, inference outputs, options, and end-to-end training
with exact resume across the phase boundary."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gan_translate.cli import parse_train_options, train_main
from gan_translate.engine.checkpoint import find_checkpoint, load_state
from gan_translate.errors import UserError
from gan_translate.models import StepContext, create_model
from gan_translate.models.mixgan import MixGANModel
from gan_translate.nets import PatchDiscriminator
from gan_translate.nets.mixgan_parts import (
    ContentDecoder,
    ContentEncoder,
    LatentDiscriminator,
    MixtureDecoder,
    style_patch_recipe,
)
from tests.conftest import tiny_run

NETS = ("E", "G_c", "G_m", "D_z", "D_p")
TINY = ["--ngf", "4", "--ndf", "4", "--z_dim", "8", "--fc_dim", "16", "--n_blocks", "1"]


def tiny_model(*extra: str, size: int = 32, seed: int = 0) -> MixGANModel:
    argv = ["--model", "mixgan", "--dataroot", "unused", *TINY, "--load_size", str(size), "--crop_size", str(size),
            "--batch_size", "4", *extra]
    torch.manual_seed(seed)
    return create_model(parse_train_options(argv))


def batch(n: int = 4, size: int = 32, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"A": torch.rand(n, 1, size, size, generator=g) * 2 - 1,
            "B": torch.rand(n, 3, size, size, generator=g) * 2 - 1}


def ctx(step: int, epoch: int = 0) -> StepContext:
    return StepContext(step=step, epoch=epoch, backward=lambda loss: loss.backward())


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


# ---- networks --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes_at_every_size(size: int) -> None:
    model = tiny_model(size=size)
    a = batch(2, size)["A"]
    codes = model.nets["E"](a)
    assert codes.shape == (2, 8)
    image, features = model.nets["G_c"](codes)
    assert image.shape == (2, 1, size, size)
    assert features.shape == (2, 4 + 1, size, size)  # ngf channels + the image
    assert torch.equal(features[:, -1:], image)
    assert image.abs().max() <= 1
    mix = model.nets["G_m"](features)
    assert mix.shape == (2, 3, size, size)
    assert model.nets["D_z"](codes).shape == (2, 1)
    assert model.nets["D_p"](mix).shape == (2, 1, size, size)  # "same" padding: one score per pixel
    # The encoder ends at 4x4 whatever the size: log2(size / 4) stride-2 convolutions.
    assert model.nets["E"].conv(a).shape[-2:] == (4, 4)
    assert sum(getattr(m, "stride", (1,))[0] == 2 for m in model.nets["E"].conv) == {32: 3, 64: 4, 128: 5, 256: 6}[size]


def test_paper_size_parameter_counts() -> None:
    """ngf 32, ndf 64, z 2048, FC 2048, 6 blocks, 64 px, 1-ch content, 3-ch style; built on the meta device (no
    memory, no run). Each count is written out layer by layer from the spec, then pinned."""
    with torch.device("meta"):
        parts = {
            "E": ContentEncoder(1, 64, ngf=32, z_dim=2048, fc_dim=2048),
            "G_c": ContentDecoder(1, 64, ngf=32, z_dim=2048, fc_dim=2048, n_blocks=6),
            "G_m": MixtureDecoder(33, 3, ngf=32),
            "D_z": LatentDiscriminator(2048, lift_channels=32, ndf=64),
            "D_p": PatchDiscriminator(3, style_patch_recipe(64), norm="instance", padding="same"),
        }
    fc_bn = lambda i, o: i * o + 2 * o  # noqa: E731  Linear without bias + BatchNorm1d scale and shift
    expected = {
        "E": conv(1, 32, 7) + conv(32, 64, 3) + conv(64, 128, 3) + conv(128, 128, 3) + conv(128, 256, 3)
        + fc_bn(256 * 16, 2048) + fc_bn(2048, 2048) + fc_bn(2048, 1024) + 1024 * 2048 + 2048,
        "G_c": fc_bn(2048, 1024) + fc_bn(1024, 2048) + fc_bn(2048, 2048) + 2048 * 4096 + 4096
        + conv(256, 256, 3) + conv(256, 128, 3) + 6 * 2 * conv(128, 128, 3) + conv(128, 64, 3) + conv(64, 32, 3)
        + conv(32, 1, 7),
        "G_m": conv(33, 64, 3) + conv(97, 3, 7),
        "D_z": 2048 * 32 * 32 * 32 + 32 * 32 * 32 + conv(32, 64, 4) + conv(64, 128, 4) + conv(128, 256, 4)
        + conv(256, 512, 4) + 512 * 2 * 2 + 1,
        "D_p": conv(3, 64, 4) + conv(64, 128, 2) + conv(128, 256, 1) + conv(256, 1, 4),
    }
    assert {k: count(v) for k, v in parts.items()} == expected
    assert expected == {"E": 17326208, "G_c": 19541505, "G_m": 33334, "D_z": 69929921, "D_p": 73153}
    assert parts["D_p"].receptive_field == 8
    assert parts["G_c"].feature_channels == 33


def test_model_builds_what_it_needs() -> None:
    assert set(tiny_model().nets) == set(NETS)
    model = tiny_model()
    assert set(model.optimizers) == {"E_G_c", "D_z", "G_m", "D_p"}
    lrs = {k: o.param_groups[0]["lr"] for k, o in model.optimizers.items()}
    assert lrs == pytest.approx({"E_G_c": 2e-4, "D_z": 2e-4 / 50, "G_m": 2e-4, "D_p": 2e-4 / 10})
    params = {k: {id(p) for p in o.param_groups[0]["params"]} for k, o in model.optimizers.items()}
    assert params["E_G_c"] == {id(p) for n in ("E", "G_c") for p in model.nets[n].parameters()}
    assert params["D_z"] == {id(p) for p in model.nets["D_z"].parameters()}
    options = parse_train_options(["--model", "mixgan", "--dataroot", "unused", *TINY, "--crop_size", "32",
                                   "--load_size", "32"])
    assert set(create_model(options, training=False).nets) == {"E", "G_c", "G_m"} == set(MixGANModel.inference_nets)


# ---- phases ----------------------------------------------------------------------------------------------------------


def test_phase_boundary_steps_win_over_epochs() -> None:
    by_epochs = tiny_model("--phase1_epochs", "2")
    assert [by_epochs.phase_of(step=99, epoch=e) for e in (0, 1, 2, 5)] == [1, 1, 2, 2]
    by_steps = tiny_model("--phase1_epochs", "2", "--phase1_steps", "3")
    assert [by_steps.phase_of(step=s, epoch=0) for s in (0, 2, 3, 10)] == [1, 1, 2, 2]
    assert by_steps.phase_of(step=1, epoch=9) == 1  # the step boundary wins
    assert tiny_model("--phase1_epochs", "0").phase_of(step=0, epoch=0) == 2


def snapshot(model: MixGANModel) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in model.nets.items()}


def changed(before: dict, after: dict, params_of: MixGANModel) -> tuple[set[str], set[str]]:
    """(nets with a changed parameter, nets with a changed buffer)."""
    param_keys = {name: {k for k, _ in net.named_parameters()} for name, net in params_of.nets.items()}
    p, b = set(), set()
    for name in before:
        for key in before[name]:
            if not torch.equal(before[name][key], after[name][key]):
                (p if key in param_keys[name] else b).add(name)
    return p, b


def test_each_phase_trains_exactly_its_networks() -> None:
    model = tiny_model("--phase1_steps", "1")
    model.train()
    s0 = snapshot(model)
    logs1 = model.training_step(batch(), ctx(step=0))
    s1 = snapshot(model)
    params, buffers = changed(s0, s1, model)
    assert params == {"E", "G_c", "D_z"}
    assert buffers == {"E", "G_c"}  # BatchNorm statistics of the fully connected layers
    assert set(logs1) == {"D_z", "E_adv", "rec_L1", "D_z_acc", "z_mean", "z_std"}

    logs2 = model.training_step(batch(seed=2), ctx(step=1))
    params, buffers = changed(s1, snapshot(model), model)
    assert params == {"G_m", "D_p"}
    assert buffers == set()  # E and G_c ran frozen in eval mode: their running statistics stayed put
    assert set(logs2) == {"D_p", "G_m", "D_p_acc"}
    assert all(m.training for m in model.modules())  # eval mode was restored after the frozen forward
    assert all(p.requires_grad for p in model.parameters())


def test_a_single_image_batch_is_skipped() -> None:
    model = tiny_model()
    before = snapshot(model)
    with pytest.warns(UserWarning, match="single image"):
        assert model.training_step(batch(1), ctx(step=0)) == {}
    assert changed(before, snapshot(model), model) == (set(), set())


# ---- losses by hand --------------------------------------------------------------------------------------------------


def test_lsgan_terms_and_accuracy_by_hand() -> None:
    model = tiny_model()
    real = torch.tensor([0.9, 0.2, 0.7, 0.6])
    fake = torch.tensor([0.1, 0.6, 0.3, 0.4])
    hand = 0.5 * (((0.1**2 + 0.8**2 + 0.3**2 + 0.4**2) / 4) + ((0.1**2 + 0.6**2 + 0.3**2 + 0.4**2) / 4))
    assert model.d_loss(real, fake).item() == pytest.approx(hand)
    assert model.gan_loss(fake, True, for_discriminator=False).item() == pytest.approx(
        (0.9**2 + 0.4**2 + 0.7**2 + 0.6**2) / 4)
    assert model.accuracy(real, fake) == pytest.approx((3 / 4 + 3 / 4) / 2)  # threshold 0.5 between targets 0 and 1
    vanilla = tiny_model("--gan_mode", "vanilla")
    assert vanilla.accuracy(torch.tensor([0.1, -0.2]), torch.tensor([-1.0, -3.0])) == pytest.approx(0.75)


def test_phase1_losses_match_a_hand_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    model.train()
    data = batch()
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(model, "sample_prior", lambda n, generator=None: z)
    enc, dec, d_z = (copy.deepcopy(model.nets[k]) for k in ("E", "G_c", "D_z"))
    logs = model.training_step(data, ctx(step=0))
    with torch.no_grad():
        codes = enc(data["A"])
        rec, _ = dec(codes)
        p_real, p_fake = d_z(z), d_z(codes)
        # the encoder's adversarial term is judged by D_z after its own update in this step
        p_after = model.nets["D_z"](codes)
    assert logs["D_z"] == pytest.approx((0.5 * ((p_real - 1).pow(2).mean() + p_fake.pow(2).mean())).item(), rel=1e-5)
    assert logs["E_adv"] == pytest.approx((p_after - 1).pow(2).mean().item(), rel=1e-5)
    assert logs["rec_L1"] == pytest.approx((rec - data["A"]).abs().mean().item(), rel=1e-5)
    acc = ((p_real > 0.5).float().mean() + (p_fake <= 0.5).float().mean()).item() / 2
    assert logs["D_z_acc"] == pytest.approx(acc)
    assert logs["z_mean"] == pytest.approx(codes.mean().item(), abs=1e-6)
    assert logs["z_std"] == pytest.approx(codes.std().item(), rel=1e-5)


@pytest.mark.parametrize("codes", ["both", "prior", "encoded"])
def test_phase2_losses_match_a_hand_computation(codes: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("--phase1_epochs", "0", "--phase2_codes", codes)
    model.train()
    data = batch()
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(6))
    monkeypatch.setattr(model, "sample_prior", lambda n, generator=None: z)
    enc, dec, g_m, d_p = (copy.deepcopy(model.nets[k]) for k in ("E", "G_c", "G_m", "D_p"))
    enc.eval()
    dec.eval()
    logs = model.training_step(data, ctx(step=0))
    with torch.no_grad():
        sources = {"prior": [z], "encoded": [enc(data["A"])], "both": [z, enc(data["A"])]}[codes]
        _, features = dec(torch.cat(sources))
        mix = g_m(features)
        assert mix.shape[0] == 4 * len(sources)
        p_real, p_fake = d_p(data["B"]), d_p(mix)
        p_after = model.nets["D_p"](mix)
    assert logs["D_p"] == pytest.approx((0.5 * ((p_real - 1).pow(2).mean() + p_fake.pow(2).mean())).item(), rel=1e-5)
    assert logs["G_m"] == pytest.approx((p_after - 1).pow(2).mean().item(), rel=1e-5)


# ---- inference -------------------------------------------------------------------------------------------------------


def test_priors() -> None:
    gaussian = tiny_model("--z_dim", "64").sample_prior(2000, torch.Generator().manual_seed(0))
    assert gaussian.mean().item() == pytest.approx(0, abs=0.01) and gaussian.std().item() == pytest.approx(1, abs=0.01)
    uniform = tiny_model("--z_dim", "64", "--prior", "uniform").sample_prior(2000, torch.Generator().manual_seed(0))
    assert uniform.min() >= -1 and uniform.max() <= 1
    assert uniform.std().item() == pytest.approx(3**-0.5, abs=0.01)


@pytest.mark.parametrize("prior", ["gaussian", "uniform"])
def test_codes_start_at_the_prior_scale(prior: str) -> None:
    model = tiny_model("--z_dim", "64", "--prior", prior)
    model.train()
    torch.manual_seed(0)
    codes = model.nets["E"](torch.rand(16, 1, 32, 32) * 2 - 1)
    target = {"gaussian": 1.0, "uniform": 3**-0.5}[prior]
    assert codes.std(0).mean().item() == pytest.approx(target, rel=0.3)
    assert codes.mean().abs().item() < 0.2 * target
    last = model.nets["E"].fc[-1]
    assert last.weight.std().item() == pytest.approx(target * (2 / last.in_features) ** 0.5, rel=0.1)


def test_translate_and_sample() -> None:
    model = tiny_model()
    model.train()
    before = snapshot(model)
    with torch.no_grad():
        out = model.translate({"A": batch(1)["A"], "A_paths": ["x.png"]})
        assert list(out) == ["mix", "rec_A"]  # test.py and load_translator take the first output: the mixture
        assert out["rec_A"].shape == (1, 1, 32, 32) and out["mix"].shape == (1, 3, 32, 32)
        other_size = model.translate({"A": batch(2, 48)["A"]})  # resized to the networks' 32 px
        assert other_size["mix"].shape == (2, 3, 32, 32)
        first = model.sample(3, torch.Generator().manual_seed(1))
        again = model.sample(3, torch.Generator().manual_seed(1))
    assert set(first) == {"sample_A", "sample_mix"}
    assert first["sample_A"].shape == (3, 1, 32, 32) and first["sample_mix"].shape == (3, 3, 32, 32)
    assert torch.equal(first["sample_mix"], again["sample_mix"])
    assert changed(before, snapshot(model), model) == (set(), set())  # running statistics untouched
    assert all(m.training for m in model.modules())


def test_visuals_draw_no_random_numbers() -> None:
    model = tiny_model()
    model.training_step(batch(), ctx(step=0))
    state = torch.get_rng_state()
    visuals = model.visuals()
    assert torch.equal(state, torch.get_rng_state())
    assert list(visuals) == ["real_A", "rec_A", "mix", "sample_A", "sample_mix", "real_B"]
    assert [v.shape[1] for v in visuals.values()] == [1, 1, 3, 1, 3, 3]


# ---- options ---------------------------------------------------------------------------------------------------------


def test_resize_upsampling_leaves_no_lattice_for_g_m_to_read() -> None:
    """Why MIXGAN defaults to resize upsampling in G_c: from a spatially constant 4x4 map, transposed convolutions
    (stride 2, kernel 3) give features whose values repeat with the upsampling's period, a position code that G_m,
    trained by a patch D alone, used to paint the same window grid on every input; nearest + Conv3 gives constant
    features, so G_m can only paint what G_c drew. The two have the same parameter count."""
    torch.manual_seed(0)
    decoders = {kind: ContentDecoder(1, 32, ngf=4, z_dim=8, fc_dim=16, n_blocks=1, upsample=kind)
                for kind in ("resize", "transposed")}
    assert count(decoders["resize"]) == count(decoders["transposed"])
    flat = torch.randn(1, 32, 1, 1).expand(1, 32, 4, 4)  # base channels 8 ngf = 32, the same value everywhere
    spread = {}
    for kind, dec in decoders.items():
        with torch.no_grad():
            features = dec.body(flat)[..., 4:-4, 4:-4]  # away from the borders, where padding differs anyway
        spread[kind] = float((features - features.mean((2, 3), keepdim=True)).abs().max())
    assert spread["resize"] < 1e-4
    assert spread["transposed"] > 0.1
    paper = parse_train_options(["--model", "mixgan", "--dataroot", "somewhere", "--z_dim", "8", "--fc_dim", "16",
                                 "--ngf", "4", "--ndf", "4"])
    assert paper.upsample == "resize"
    kinds = {type(m) for m in MixGANModel(paper).nets["G_c"].modules()}
    assert torch.nn.Upsample in kinds and torch.nn.ConvTranspose2d not in kinds


def test_paper_defaults_and_quick_preset() -> None:
    paper = parse_train_options(["--model", "mixgan", "--dataroot", "somewhere"])
    assert (paper.ngf, paper.ndf, paper.z_dim, paper.fc_dim, paper.n_blocks) == (32, 64, 2048, 2048, 6)
    assert (paper.input_nc, paper.output_nc, paper.crop_size, paper.batch_size) == (1, 3, 64, 64)
    assert (paper.prior, paper.gan_mode, paper.lambda_rec, paper.phase1_epochs) == ("gaussian", "lsgan", 10.0, 100)
    assert (paper.lr_D_z_scale, paper.lr_D_p_scale, paper.n_epochs, paper.n_epochs_decay) == (0.02, 0.1, 300, 0)
    quick = parse_train_options(["--model", "mixgan"])
    assert quick.crop_size == 64 and quick.z_dim < paper.z_dim and quick.phase1_epochs < quick.n_epochs
    assert (quick.lr_D_z_scale, quick.lr_D_p_scale) == (0.05, 1.0)  # short runs: the discriminators must keep up


@pytest.mark.parametrize("argv, option", [
    (["--crop_size", "48", "--load_size", "48"], "--crop_size"),
    (["--crop_size", "512", "--load_size", "512"], "--crop_size"),
    (["--preprocess", "none"], "--preprocess"),
    (["--batch_size", "1"], "--batch_size"),
    (["--gan_mode", "wgangp"], "--gan_mode"),
    (["--prior", "laplace"], "--prior"),
])
def test_bad_options_name_the_option(argv: list[str], option: str) -> None:
    with pytest.raises(UserError, match=option) as err:
        parse_train_options(["--model", "mixgan", "--dataroot", "d", *argv])
    assert "\n" not in str(err.value)


# ---- end to end ------------------------------------------------------------------------------------------------------


def run_argv(data: Path, checkpoints: Path, name: str, *extra: str) -> list[str]:
    return tiny_run("mixgan", data, checkpoints, name, *TINY, "--n_epochs", "2", "--n_epochs_decay", "0", *extra)


def test_trains_both_phases_end_to_end(tiny_data: Path, tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    # 8 images, 2 per batch: epoch 1 (steps 1-4) is phase 1, epoch 2 (steps 5-6) phase 2.
    assert train_main(run_argv(tiny_data, tmp_path, "run", "--phase1_epochs", "1", "--max_steps", "6")) == 0
    # The phase-2 schedulers advance at the end of epoch 1 before their optimizers ever stepped: no warning for it.
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]
    ckpt = find_checkpoint(tmp_path / "run")
    assert sorted(p.stem for p in ckpt.glob("net_*.safetensors")) == sorted(f"net_{n}" for n in NETS)
    assert load_state(ckpt)["progress"] == {"step": 6, "epoch": 1, "batch_in_epoch": 2}
    files = list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    tb = EventAccumulator(str(files[0].parent), size_guidance={"scalars": 0, "images": 0})
    tb.Reload()
    steps = lambda tag: [e.step for e in tb.Scalars(tag)]  # noqa: E731
    for tag in ("loss/D_z", "loss/E_adv", "loss/rec_L1", "loss/D_z_acc", "loss/z_mean", "loss/z_std"):
        assert steps(tag) == [1, 2, 3, 4], tag
    for tag in ("loss/D_p", "loss/G_m", "loss/D_p_acc"):
        assert steps(tag) == [5, 6], tag
    assert tb.Scalars("lr/D_z")[0].value == pytest.approx(2e-4 / 50)
    assert tb.Scalars("lr/D_p")[0].value == pytest.approx(2e-4 / 10)
    assert any(t.startswith("samples/real_A|rec_A|mix|sample_A|sample_mix|real_B") for t in tb.Tags()["images"])


def test_resume_across_the_phase_boundary_is_exact(tiny_data: Path, tmp_path: Path, trained_steps: list[int]) -> None:
    """6 steps straight == 3 steps (phase 1), stop, --continue_train to 6 (phase 2 from step 5): the resumed process
    runs steps 4-6 only."""
    def weights(run: str) -> dict[str, torch.Tensor]:
        ckpt = find_checkpoint(tmp_path / run)
        return {f"{f.stem}.{k}": v for f in ckpt.glob("net_*.safetensors") for k, v in load_file(str(f)).items()}

    common = ("--phase1_steps", "4")
    assert train_main(run_argv(tiny_data, tmp_path, "straight", *common, "--max_steps", "6")) == 0
    assert train_main(run_argv(tiny_data, tmp_path, "resumed", *common, "--max_steps", "3")) == 0
    halfway = weights("resumed")
    trained_steps.clear()
    assert train_main(run_argv(tiny_data, tmp_path, "resumed", *common, "--max_steps", "6", "--continue_train")) == 0
    assert trained_steps == [3, 4, 5], "the resumed run did not start at its checkpoint"
    straight, resumed = weights("straight"), weights("resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), f"{key} differs after resume"
    moved = {key.split(".")[0] for key in halfway if not torch.equal(halfway[key], resumed[key])}
    assert {"net_E", "net_G_c", "net_D_z", "net_G_m", "net_D_p"} <= moved  # phase 1 went on, then phase 2 ran


# ---- the report's figures --------------------------------------------------------------------------------------------


def load_report_script():
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("mixgan_report", REPO / "scripts" / "mixgan_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_metrics_by_hand() -> None:
    report = load_report_script()
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(2, 3, 8, 8)
    blue = torch.tensor([-1.0, -1.0, 1.0]).view(1, 3, 1, 1).expand(2, 3, 8, 8)
    assert report.histogram_distance(red, red) == 0
    assert report.histogram_distance(red, blue) == pytest.approx(1)
    assert report.histogram_distance(torch.cat([red, blue]), blue) == pytest.approx(0.5)
    gray = torch.zeros(1, 1, 4, 4)  # gray counts as R = G = B: one bin of the joint histogram
    assert report.colour_histogram(gray).nonzero().flatten().tolist() == [4 * 64 + 4 * 8 + 4]
    ramp = torch.linspace(-1, 1, 16).expand(1, 1, 16, 16).clone()
    ramp[..., 8:, :] *= -1
    noise = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert report.edge_correlation(ramp, ramp) == pytest.approx(1)
    assert report.edge_correlation(ramp.expand(1, 3, 16, 16), ramp) == pytest.approx(1)  # luminance of gray = gray
    assert abs(report.edge_correlation(ramp, noise)) < 0.5


def test_fresh_classifier_tells_a_wrong_spread_from_the_prior() -> None:
    report = load_report_script()
    g = torch.Generator().manual_seed(0)
    prior = torch.randn(400, 16, generator=g)
    same = torch.randn(400, 16, generator=g)
    assert abs(report.fresh_classifier_accuracy(same, prior) - 0.5) < 0.1
    assert report.fresh_classifier_accuracy(same * 0.5, prior) > 0.9  # half the prior's spread
    assert report.fresh_classifier_accuracy(same + 0.5, prior) > 0.8  # shifted mean


def test_report_script_on_a_trained_run(tiny_data: Path, tmp_path: Path) -> None:
    assert train_main(run_argv(tiny_data, tmp_path, "run", "--phase1_steps", "2", "--max_steps", "3")) == 0
    report = load_report_script()
    out = tmp_path / "report"
    assert report.main(["--run", str(tmp_path / "run"), "--out", str(out), "--max_images", "4"]) == 0
    import json

    figures = json.loads((out / "report.json").read_text())
    assert figures["n_content"] == 4 and figures["step"] == 3 and figures["phase_at_checkpoint"] == 2
    for key in ("codes_mean", "codes_std", "latent_D_accuracy", "rec_L1", "hist_TV_mix_vs_B",
                "hist_TV_content_vs_B", "edge_corr_mix_vs_Gc"):
        assert isinstance(figures[key], float), key
    assert 0 <= figures["latent_D_accuracy"] <= 1 and figures["rec_L1"] > 0
    options = report.load_options(report.MixGANOptions, tmp_path / "run" / report.CONFIG_FILE)
    content, _ = report.load_images(options, "train", 4)
    assert figures["rec_L1_mean_image"] == pytest.approx(float((content - content.mean(0)).abs().mean()))
    assert (out / "examples.png").is_file()
    files = list((tmp_path / "run" / "logs" / "report").rglob("events.out.tfevents.*"))
    tb = EventAccumulator(str(files[0].parent), size_guidance={"scalars": 0})
    tb.Reload()
    assert tb.Scalars("report_train/rec_L1")[0].value == pytest.approx(figures["rec_L1"])
    assert tb.Scalars("report_train/rec_L1")[0].step == 3


def test_report_kurtosis_and_blurred_edges() -> None:
    report = load_report_script()
    g = torch.Generator().manual_seed(0)
    assert report.excess_kurtosis(torch.randn(200000, generator=g, dtype=torch.float64)) == pytest.approx(0, abs=0.05)
    assert report.excess_kurtosis(torch.rand(200000, generator=g, dtype=torch.float64)) == pytest.approx(-1.2, abs=0.05)
    flat = torch.full((1, 1, 9, 9), 0.3)
    assert torch.allclose(report.blur(flat, 1.0), flat)  # a blur keeps constants
    step = -torch.ones(1, 1, 16, 16)
    step[..., 8:] = 1
    texture = step + 0.3 * torch.rand(1, 1, 16, 16, generator=g)
    assert report.edge_correlation(texture, step, sigma=1.0) > report.edge_correlation(texture, step)


def test_test_script_writes_mixtures_and_prior_samples(tiny_data: Path, tmp_path: Path) -> None:
    from gan_translate.cli import test_main

    assert train_main(run_argv(tiny_data, tmp_path, "run", "--phase1_steps", "2", "--max_steps", "3")) == 0
    argv = ["--name", "run", "--checkpoints_dir", str(tmp_path), "--results_dir", str(tmp_path / "results"),
            "--metrics", "none", "--num_samples", "3", "--device", "cpu"]
    assert test_main(argv) == 0
    images = tmp_path / "results" / "run" / "test_latest" / "images"
    names = sorted(p.name for p in images.glob("sample_*.png"))
    assert names == [f"sample_{i:04d}_{k}.png" for i in range(3) for k in ("sample_A", "sample_mix")]
    outputs = sorted(images.glob("*_fake_B.png"))  # the mixture: translate()'s first output
    assert len(outputs) == 2  # the two test content images
    # G_c's reconstruction is written beside each mixture, in gray, and gets its own gallery column.
    reconstructions = sorted(images.glob("*_rec_A.png"))
    assert [p.name.replace("_rec_A", "_fake_B") for p in reconstructions] == [p.name for p in outputs]
    page = (images.parent / "index.html").read_text()
    assert "<th>rec_A</th>" in page and page.index("<th>output</th>") < page.index("<th>rec_A</th>")
    assert all(f"images/{p.name}" in page for p in reconstructions)
    from PIL import Image

    assert Image.open(outputs[0]).mode == "RGB" and Image.open(images / "sample_0000_sample_A.png").mode == "L"
    assert Image.open(reconstructions[0]).mode == "L"
