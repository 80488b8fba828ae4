"""TPFR (Svoboda et al. 2020): parts, the peer layer's maths, the three-optimizer step, losses and training (resume,
loading and export: test_model_contract.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gan_translate.cli import train_main
from gan_translate.data.styles import ensure_builtin_styles
from gan_translate.engine.checkpoint import find_checkpoint, load_net, load_state
from gan_translate.errors import UserError
from gan_translate.losses import relativistic_average_lsgan
from gan_translate.models import create_model
from gan_translate.models.base import StepContext
from gan_translate.models.tpfr import TPFROptions, code_distance, metric_loss
from gan_translate.nets.peer import PeerRegularization, knn_indices
from gan_translate.nets.tpfr_parts import (ConditionalNoisyDiscriminator, InstanceNormAnySize, TPFRDecoder,
                                           TPFREncoder)

TINY = dict(model="tpfr", ngf=4, ndf=4, n_blocks=1, crop_size=32, load_size=36, pool_size=4, batch_size=2)
KEYS = ("A", "A2", "style", "style2")


def tiny_model(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(TPFROptions(**{**TINY, **changes}))


def random_batch(n: int = 2, size: int = 32, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {k: torch.rand(n, 3, size, size, generator=g) * 2 - 1 for k in KEYS}
    batch["style_label"] = torch.arange(n)
    return batch


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# parts
# ---------------------------------------------------------------------------------------------------------------------


def test_shapes_of_the_parts() -> None:
    enc, dec = TPFREncoder(3, ngf=4, n_blocks=1), TPFRDecoder(3, ngf=4, n_blocks=1)
    codes = enc(torch.rand(2, 3, 32, 48))
    assert {k: tuple(v.shape) for k, v in codes.items()} == {
        "content": (2, 16, 8, 12), "style": (2, 32, 8, 12), "middle": (2, 8, 16, 24)}
    # the global half of z_s is one vector per image, broadcast over the map; the local half varies
    glob, local = codes["style"].chunk(2, 1)
    assert torch.equal(glob, glob[:, :, :1, :1].expand_as(glob)) and local.std(dim=(2, 3)).max() > 0
    out = dec(torch.cat([codes["content"], codes["style"]], 1))
    assert out.shape == (2, 3, 32, 48) and out.abs().max() <= 1
    d = ConditionalNoisyDiscriminator(3, ndf=4).eval()
    assert d(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)).shape == (2, 1, 12, 12)
    new_c, new_s = PeerRegularization(16, 32, k=3).eval()(codes["content"], codes["style"], codes["content"],
                                                           codes["style"])
    assert new_c.shape == codes["content"].shape and new_s.shape == codes["style"].shape


def test_parameter_counts_at_paper_width() -> None:
    """ngf = ndf = 64, 6 blocks (built, never run): ~25.5M in the generator parts, as the paper's ~25M."""
    enc, dec = TPFREncoder(3, 64, 6), TPFRDecoder(3, 64, 6)
    peer, discriminator = PeerRegularization(256, 512), ConditionalNoisyDiscriminator(3, 64)
    assert n_params(enc) == 9_427_078
    assert n_params(enc.global_branch) == 3 * (256 * 256 * 9 + 256)
    # merge 768->256; 6 blocks of two conv3 + a PReLU; ConvT4 256->128->64; conv7 64->3
    assert n_params(dec) == (768 * 256 + 256) + 6 * (2 * (256 * 256 * 9 + 256) + 1) + (256 * 128 * 16 + 128) \
        + (128 * 64 * 16 + 64) + (64 * 3 * 49 + 3) == 7_942_793
    # stage 1: MLP 256->128->64 with BatchNorm, two scorers 64->1; stage 2: 512->256->128, scorers 128->1
    assert n_params(peer.style_attention) == (256 * 128 + 128) + 256 + (128 * 64 + 64) + 128 + 2 * 65 == 41_666
    assert n_params(peer.content_attention) == 165_250
    assert n_params(discriminator) == 2_767_809
    assert n_params(peer) == 206_916
    # the model is made of exactly these parts (checked at a small width: initialising 28M weights takes long)
    model = tiny_model()
    parts = {"E": TPFREncoder(3, 4, 1), "peer": PeerRegularization(16, 32), "G": TPFRDecoder(3, 4, 1),
             "G_aux": TPFRDecoder(3, 4, 1), "D": ConditionalNoisyDiscriminator(3, 4)}
    assert {k: n_params(v) for k, v in model.nets.items()} == {k: n_params(v) for k, v in parts.items()}


def test_instance_norm_of_a_single_pixel_is_zero() -> None:
    x = torch.randn(2, 3, 1, 1, requires_grad=True)
    out = InstanceNormAnySize(3)(x)
    assert torch.equal(out, torch.zeros_like(out)) and out.requires_grad
    y = torch.randn(2, 3, 4, 4)
    assert torch.allclose(InstanceNormAnySize(3)(y), F.instance_norm(y))


# ---------------------------------------------------------------------------------------------------------------------
# the peer layer
# ---------------------------------------------------------------------------------------------------------------------


def _latents(n: int, c: int, s: int, seed: int, size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g), torch.randn(n, s, size, size, generator=g)


def test_knn_matches_brute_force_for_every_chunk_size() -> None:
    g = torch.Generator().manual_seed(0)
    query, peers = torch.randn(37, 6, generator=g), torch.randn(50, 6, generator=g)
    truth = torch.cdist(query, peers).argsort(1)[:, :4]
    for chunk in (1, 7, 1000):
        assert torch.equal(knn_indices(query, peers, 4, chunk), truth)


def test_attention_is_zero_outside_the_k_nearest_and_rows_sum_to_one() -> None:
    layer = PeerRegularization(8, 16, k=3, dropout=0.2)
    c, s = _latents(2, 8, 16, seed=0)
    pc, ps = _latents(2, 8, 16, seed=1)
    for train in (False, True):  # with dropout on the scores too: the weights still form a distribution
        layer.train(train)
        layer(c, s, pc, ps)
        att = layer.last_attention["style"].dense()  # (2, 16 query pixels, 16 peer pixels)
        assert att.shape == (2, 16, 16)
        assert torch.allclose(att.sum(2), torch.ones(2, 16))
        for i in range(2):
            dist = torch.cdist(c[i].flatten(1).t(), pc[i].flatten(1).t())
            nearest = torch.zeros_like(att[i], dtype=torch.bool).scatter(1, dist.topk(3, largest=False).indices, True)
            assert (att[i][~nearest] == 0).all() and (att[i][nearest] > 0).all()
        content_att = layer.last_attention["content"].dense()
        assert torch.allclose(content_att.sum(2), torch.ones(2, 16)) and ((content_att > 0).sum(2) == 3).all()


def test_sparse_layer_equals_the_dense_masked_softmax() -> None:
    """The chunked kNN layer computes exactly the authors' dense formula: softmax(softplus(e) - 1e9 outside kNN)."""
    layer = PeerRegularization(8, 16, k=3, chunk=5).eval()
    c, s = _latents(1, 8, 16, seed=2)
    pc, ps = _latents(1, 8, 16, seed=3)

    def dense_stage(att, q_keys, p_keys, p_values):
        e = att.scores(q_keys, "query")[:, None] + att.scores(p_keys, "peer")[None, :]
        dist = torch.cdist(q_keys, p_keys) ** 2
        kth = dist.topk(3, dim=1, largest=False).values[:, -1:]
        weights = torch.softmax(F.softplus(e) + (dist > kth).float() * -1e9, dim=1)
        return weights @ p_values

    pix = lambda t: t[0].flatten(1).t()  # noqa: E731
    new_s = dense_stage(layer.style_attention, pix(c), pix(pc), pix(ps))
    new_c = dense_stage(layer.content_attention, new_s, pix(ps), pix(pc))
    got_c, got_s = layer(c, s, pc, ps)
    assert torch.allclose(pix(got_s), new_s, atol=1e-5) and torch.allclose(pix(got_c), new_c, atol=1e-5)


def test_stage_one_keeps_content_and_mixes_peer_styles() -> None:
    layer = PeerRegularization(8, 16, k=2).eval()
    c, s = _latents(2, 8, 16, seed=4)
    pc, ps = _latents(2, 8, 16, seed=5)
    kept, new_s = layer.recombine_style(c, s, pc, ps)
    assert kept is c
    # each new style vector is a convex combination of the own peer's style vectors: inside their per-channel range
    for i in range(2):
        lo, hi = ps[i].flatten(1).min(1).values, ps[i].flatten(1).max(1).values
        assert (new_s[i].flatten(1) >= lo[:, None] - 1e-6).all() and (new_s[i].flatten(1) <= hi[:, None] + 1e-6).all()
    assert not torch.allclose(new_s, s)


def test_chunk_size_does_not_change_the_result() -> None:
    c, s = _latents(2, 8, 16, seed=6, size=6)
    pc, ps = _latents(2, 8, 16, seed=7, size=6)
    torch.manual_seed(0)
    layer = PeerRegularization(8, 16, k=4, chunk=1).eval()
    one = layer(c, s, pc, ps)
    layer.chunk = 1000
    many = layer(c, s, pc, ps)
    assert all(torch.equal(a, b) for a, b in zip(one, many))


@pytest.mark.parametrize("peers, independent", [("sample", True), ("batch", False)])
def test_peers_per_sample_keep_samples_independent(peers: str, independent: bool) -> None:
    """Eval mode (dropout off, BatchNorm on running stats): with per-sample peers, changing sample 1's style image
    leaves sample 0's result alone; with batch-wide peers sample 0 draws on it."""
    model = tiny_model(peers=peers, n_blocks=0).eval()
    batch = random_batch()
    other = dict(batch, style=batch["style"].clone())
    other["style"][1] = torch.rand(3, 32, 32) * 2 - 1
    with torch.no_grad():
        first, second = model.translate(batch)["stylized"], model.translate(other)["stylized"]
    assert not torch.allclose(first[1], second[1])
    assert torch.equal(first[0], second[0]) is independent


def test_per_sample_peers_need_one_style_per_content() -> None:
    layer = PeerRegularization(8, 16)
    c, s = _latents(2, 8, 16, seed=0)
    pc, ps = _latents(3, 8, 16, seed=1)
    with pytest.raises(ValueError, match="one style image per content image"):
        layer(c, s, pc, ps)


# ---------------------------------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------------------------------


def _smooth_l1(a: float, b: float) -> float:
    diff = abs(a - b)
    return 0.5 * diff * diff if diff < 1 else diff - 0.5


def _hand_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Sum over channels, mean over pixels, by loops."""
    c, h, w = a.shape
    total = sum(_smooth_l1(a[k, y, x].item(), b[k, y, x].item()) for k in range(c) for y in range(h) for x in range(w))
    return total / (h * w)


def test_metric_loss_against_a_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    style, style2, photo, photo2 = (torch.randn(3, 2, 2, 2, generator=g) * 1.5 for _ in range(4))
    labels = torch.tensor([0, 1, 0])
    loss, parts = metric_loss(style, style2, photo, photo2, labels, margin=100.0)
    pos = [_hand_distance(style[i], style2[i]) for i in range(3)] + [_hand_distance(photo2[i], photo[i])
                                                                    for i in range(3)]
    neg = [_hand_distance(photo2[i], style2[i]) for i in range(3)] + [_hand_distance(style[i], photo[i])
                                                                     for i in range(3)]
    cross = [(i, j) for i, j in itertools.product(range(3), repeat=2) if labels[i] != labels[j]]
    assert cross == [(0, 1), (1, 0), (1, 2), (2, 1)]
    neg += [_hand_distance(style[i], style2[j]) for i, j in cross]
    expected = sum(pos) / len(pos) + max(0.0, 100.0 - sum(neg) / len(neg))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts["style_neg"].tolist() == pytest.approx([_hand_distance(style[i], style2[j]) for i, j in cross],
                                                        rel=1e-5)
    # a margin below every negative switches the hinge off
    assert metric_loss(style, style2, photo, photo2, labels, margin=0.0)[0].item() == pytest.approx(
        sum(pos) / len(pos), rel=1e-5)
    # one class in the batch: no style-style negatives
    assert "style_neg" not in metric_loss(style, style2, photo, photo2, torch.zeros(3), 1.0)[1]


def test_code_distance_detaches_the_target() -> None:
    a, b = torch.randn(1, 2, 3, 3, requires_grad=True), torch.randn(1, 2, 3, 3, requires_grad=True)
    code_distance(a, b).sum().backward()
    assert a.grad is not None and b.grad is None


def test_ralsgan_against_a_hand_computation() -> None:
    real, fake = torch.tensor([[0.5, 2.0], [1.0, -1.0]]), torch.tensor([[0.0, -0.5], [1.5, 0.2]])
    mr, mf = real.mean().item(), fake.mean().item()  # 0.625, 0.3
    d_loss = 0.5 * (sum((r - mf - 1) ** 2 for r in real.flatten().tolist()) / 4
                    + sum((f - mr + 1) ** 2 for f in fake.flatten().tolist()) / 4)
    g_loss = 0.5 * (sum((r - mf + 1) ** 2 for r in real.flatten().tolist()) / 4
                    + sum((f - mr - 1) ** 2 for f in fake.flatten().tolist()) / 4)
    assert relativistic_average_lsgan(real, fake, True).item() == pytest.approx(d_loss)
    assert relativistic_average_lsgan(real, fake, False).item() == pytest.approx(g_loss)


# ---------------------------------------------------------------------------------------------------------------------
# the training step
# ---------------------------------------------------------------------------------------------------------------------


def test_each_optimizer_step_reaches_exactly_the_parts_it_trains() -> None:
    """Backward 1 (aux) -> every parameter of E and G_aux; backward 2 (main) -> peer and G; backward 3 -> D. No
    backward touches another part. (64 px so that the global branch does not shrink to one pixel.)"""
    model = tiny_model(crop_size=64)
    params = {(net, name): p for net, module in model.nets.items() for name, p in module.named_parameters()}
    reached: list[set[str]] = []

    def backward(loss: torch.Tensor) -> None:
        before = {k: None if p.grad is None else p.grad.clone() for k, p in params.items()}
        loss.backward()
        changed = {k for k, p in params.items()
                   if p.grad is not None and (before[k] is None or not torch.equal(before[k], p.grad))}
        nets = {net for net, _ in changed}
        for net in nets:  # every parameter of a reached part gets a gradient, none is left out
            missing = [k for k in params if k[0] == net and k not in changed]
            assert not missing, f"backward {len(reached) + 1}: no gradient for {missing[:3]}"
        reached.append(nets)

    logs = model.training_step(random_batch(size=64), StepContext(step=0, epoch=0, backward=backward))
    assert reached == [{"E", "G_aux"}, {"peer", "G"}, {"D"}]
    assert {"cont", "metric", "cycle_aux", "idt_aux", "gen", "idt", "transf", "D", "dist_style_pos",
            "dist_photo_pos", "dist_photo_style_neg", "dist_style_neg"} <= set(logs)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert list(model.visuals()) == ["real_A", "style", "stylized", "rec_A", "rec_A_aux", "rec_style"]


def test_steps_lower_the_reconstruction_losses_and_update_the_pools() -> None:
    model = tiny_model(lr=0.001)
    batch = random_batch()
    ctx = StepContext(step=0, epoch=0, backward=lambda loss: loss.backward())
    first = model.training_step(batch, ctx)
    for _ in range(7):
        last = model.training_step(batch, ctx)
    assert last["idt_aux"] < first["idt_aux"] and last["idt"] < first["idt"]
    assert len(model.photo_pool) == len(model.style_pool) == 4
    assert model.photo_pool.images[0].shape == (9, 32, 32)  # (real, fake, condition) triples


def test_options_are_checked() -> None:
    with pytest.raises(UserError, match="--output_nc"):
        TPFROptions(model="tpfr", input_nc=1, output_nc=3).validate()
    with pytest.raises(UserError, match="--gan_mode"):
        TPFROptions(model="tpfr", gan_mode="vanilla").validate()


# ---------------------------------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def style_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_builtin_styles(tmp_path_factory.mktemp("styles"), size=32, n_content=4, per_class=2)


def tiny_tpfr_run(data: Path, checkpoints: Path, name: str, *extra: str) -> list[str]:
    return ["--model", "tpfr", "--dataroot", str(data), "--checkpoints_dir", str(checkpoints), "--name", name,
            "--ngf", "4", "--ndf", "4", "--n_blocks", "1", "--load_size", "36", "--crop_size", "32",
            "--batch_size", "2", "--epoch_size", "6", "--num_threads", "0", "--n_epochs", "1",
            "--n_epochs_decay", "2", "--pool_size", "4", "--print_freq", "1", "--display_freq", "2",
            "--save_latest_freq", "1000", *extra]


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(ckpt.glob("net_*.safetensors")):
        out.update({f"{f.stem}.{k}": v for k, v in load_file(str(f)).items()})
    return out


def test_trains_end_to_end_and_logs_every_term(style_data: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert train_main(tiny_tpfr_run(style_data, tmp_path, "run", "--max_steps", "4")) == 0
    ckpt = find_checkpoint(tmp_path / "run")
    assert sorted(p.stem for p in ckpt.glob("net_*.safetensors")) == [
        "net_D", "net_E", "net_G", "net_G_aux", "net_peer"]
    state = load_state(ckpt)
    assert state["progress"] == {"step": 4, "epoch": 1, "batch_in_epoch": 1}  # 6 items = 3 batches per epoch
    assert set(state["optimizers"]) == set(state["schedulers"]) == {"aux", "main", "D"}
    assert state["model"]["photo_pool"]["images"].shape == (4, 9, 32, 32)
    events = list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events[0].parent), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    for tag in ("loss/idt_aux", "loss/metric", "loss/cont", "loss/cycle_aux", "loss/gen", "loss/idt", "loss/transf",
                "loss/D", "loss/dist_style_pos", "loss/dist_photo_style_neg", "lr/aux", "lr/main", "lr/D"):
        assert tag in acc.Tags()["scalars"], tag
    assert any(t.startswith("samples/real_A|style|stylized") for t in acc.Tags()["images"])


def test_translate_with_a_style_never_seen_in_training(style_data: Path, tmp_path: Path) -> None:
    from gan_translate.config import load_options
    from gan_translate.data import load_image, pil_to_tensor

    assert train_main(tiny_tpfr_run(style_data, tmp_path, "zs", "--max_steps", "2")) == 0
    ckpt = find_checkpoint(tmp_path / "zs")
    options = load_options(TPFROptions, ckpt / "config.yaml")
    model = create_model(options, training=False).eval()
    assert set(model.nets) == {"E", "peer", "G"}
    for name in model.inference_nets:
        load_net(model.nets[name], ckpt, name)
    unseen = sorted((style_data / "unseen_style" / "checker").glob("*.png"))
    content = pil_to_tensor(load_image(sorted((style_data / "content").glob("*.png"))[0], 3))[None]
    with torch.no_grad():
        outs = [model.translate({"A": content, "style": pil_to_tensor(load_image(p, 3))[None]})["stylized"]
                for p in unseen]
        odd = model.translate({"A": content[..., :30, :27], "style": torch.rand(1, 3, 41, 23) * 2 - 1})["stylized"]
    assert outs[0].shape == content.shape and odd.shape == (1, 3, 30, 27)
    assert torch.isfinite(outs[0]).all() and outs[0].abs().max() <= 1


def test_test_py_gallery_with_unseen_styles(style_data: Path, tmp_path: Path) -> None:
    from gan_translate.cli import test_main

    assert train_main(tiny_tpfr_run(style_data, tmp_path, "gal", "--max_steps", "1")) == 0
    argv = ["--name", "gal", "--checkpoints_dir", str(tmp_path), "--results_dir", str(tmp_path / "results"),
            "--dataroot", str(style_data), "--style_dir", str(style_data / "unseen_style"), "--num_test", "2",
            "--eval", "--metrics", "none", "--device", "cpu"]
    assert test_main(argv) == 0
    out = next((tmp_path / "results" / "gal").iterdir())
    assert (out / "index.html").is_file()
    assert len(list((out / "images").rglob("*stylized*.png"))) == 2  # 2 contents x 1 unseen style
