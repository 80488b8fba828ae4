"""The benchmark command (on tiny sizes) and the speed/memory behaviour it measures: CycleGAN's early backward passes,
activation checkpointing, channels-last."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gan_translate.bench import BenchConfig, count_flops, fill_image_pools, prepare_step
from gan_translate.cli import main, train_main
from gan_translate.engine.checkpoint import find_checkpoint
from gan_translate.nets import build_generator
from gan_translate.nets.layers import configure_nets
from tests.conftest import tiny_run
from tests.test_train import events, weights

TINY = dict(ngf=8, ndf=8, iters=1, warmup=0, infer_batches=(1,), infer_iters=1)


def tiny_config(model: str, size: int, **kwargs) -> BenchConfig:
    net_g = "resnet_1blocks" if model == "cyclegan" else ""
    return BenchConfig(model=model, size=size, **{**TINY, "netG": net_g, **kwargs})


# --- the command ------------------------------------------------------------------------------------------------------


def test_bench_command_prints_the_table_and_writes_the_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--models", "cyclegan", "--sizes", "32", "--ngf", "8", "--ndf", "8", "--netG", "resnet_1blocks",
            "--iters", "2", "--warmup", "0", "--infer_batches", "1,2", "--infer_iters", "1", "--peak_size", "128",
            "--bandwidth_mb", "8", "--json", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| cyclegan | 32 | 1 |" in table and "GFLOP/s" in table and "matmul peak" in table

    report = json.loads(out.read_text())
    assert report["peak_flops"] > 0 and report["peak_matmul_size"] == 128
    assert report["copy_bandwidth"] > 1e8 and "GB/s" in table.split("copy bandwidth")[1]
    assert len(report["machine"]["load_average_1min"]) == 2
    (result,) = report["results"]
    assert (result["model"], result["size"], result["batch_size"], result["netG"]) == ("cyclegan", 32, 1,
                                                                                      "resnet_1blocks")
    assert result["norm"] == "instance" and result["gan_mode"] == "lsgan"  # the paper's settings from the YAML
    assert len(result["s_per_iter_all"]) == 2 and result["s_per_iter"] > 0
    assert result["images_per_s"] == pytest.approx(1 / result["s_per_iter"])
    assert result["flops"] > 0
    assert result["flops_per_s"] == pytest.approx(result["flops"] / result["s_per_iter"])
    assert result["peak_fraction"] == pytest.approx(result["flops_per_s"] / report["peak_flops"])
    # a fresh interpreter with torch loaded holds well over 100 MB
    assert result["memory_kind"] == "rss" and result["peak_memory_bytes"] == result["peak_rss_bytes"] > 100e6
    assert set(result["inference_images_per_s"]) == {"1", "2"}
    assert all(v > 0 for v in result["inference_images_per_s"].values())
    # ngf 8 is not the reference's setting: no speed-up claimed
    assert result["reference_s_per_iter"] is None and result["speedup_vs_reference"] is None


@pytest.mark.parametrize("argv, message", [
    (["--models", "nosuch"], "unknown model 'nosuch'"),
    (["--sizes", "big"], "option --sizes"),
    (["--set", "norm"], "option --set"),
    (["--set", "norm=layer"], "option --norm"),
    (["--device", "tpu"], "bench:"),
    (["--processes", "0"], "option --processes"),
])
def test_bench_command_user_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_image_pools_are_filled_as_in_a_long_run() -> None:
    prepared = prepare_step(tiny_config("cyclegan", 32, batch_size=2))
    prepared.step()
    pools = (prepared.model.fake_a_pool, prepared.model.fake_b_pool)
    assert [len(p) for p in pools] == [2, 2]
    fill_image_pools(prepared.model)
    assert [len(p) for p in pools] == [50, 50]
    assert all(img.shape == (3, 32, 32) for p in pools for img in p.images)
    prepared.step()  # the full pools now swap images in and out
    assert [len(p) for p in pools] == [50, 50]


def test_two_ddp_processes_are_timed_per_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--processes 2: Accelerate's launcher runs two gloo workers with one thread each; the result is per process."""
    out = tmp_path / "ddp.json"
    argv = ["bench", "--models", "pix2pix", "--sizes", "32", "--ngf", "8", "--ndf", "8", "--netG", "unet_32",
            "--iters", "2", "--warmup", "0", "--infer_batches", "1", "--infer_iters", "1", "--peak_size", "64",
            "--bandwidth_mb", "8", "--processes", "2", "--threads", "1", "--json", str(out)]
    assert main(argv) == 0
    assert "| pix2pix | 32 | 1 | 2x1 |" in capsys.readouterr().out
    (result,) = json.loads(out.read_text())["results"]
    assert (result["processes"], result["threads"]) == (2, 1)
    assert result["images_per_s"] == pytest.approx(2 / result["s_per_iter"])
    assert result["speedup_vs_reference"] is None  # the reference ran one process on two threads


# --- FLOPs ------------------------------------------------------------------------------------------------------------


# The PatchGAN's last two (stride-1) layers lose a border pixel each, which 32 px images feel; pix2pix's D (6 input
# channels, one more conv than CycleGAN's per step) feels it most, so it is measured from 64 px.
@pytest.mark.parametrize("model, size", [("pix2pix", 64), ("cyclegan", 32)])
def test_flops_are_positive_and_scale_with_pixels(model: str, size: int) -> None:
    small, large, pair = (count_flops(prepare_step(tiny_config(model, side, batch_size=batch)).step)
                          for side, batch in ((size, 1), (2 * size, 1), (size, 2)))
    assert small > 0
    assert large / small == pytest.approx(4, rel=0.1)  # convolutions dominate: FLOPs follow the pixel count
    assert pair / small == pytest.approx(2, rel=0.01)


def test_count_flops_counts_a_convolution_forward_and_backward() -> None:
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    forward = 2 * 2 * 16 * 16 * 8 * 3 * 3 * 3  # 2 per multiply-add: batch x out pixels x out ch x in ch x k x k
    assert count_flops(lambda: conv(x)) == forward
    # backward: the gradient of the input and of the weights cost one forward each
    assert count_flops(lambda: conv(x).sum().backward()) == 3 * forward


# --- CycleGAN's backward per part of the objective --------------------------------------------------------------------


class _LiveSaved:
    """Counts the bytes autograd holds for backward passes, now and at most (a saved tensor is released with its
    graph, which drops our holder)."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    def pack(self, tensor: torch.Tensor) -> "_Held":
        return _Held(tensor, self)

    @staticmethod
    def unpack(held: "_Held") -> torch.Tensor:
        return held.tensor


class _Held:
    def __init__(self, tensor: torch.Tensor, live: _LiveSaved) -> None:
        self.tensor, self.live, self.size = tensor, live, tensor.numel() * tensor.element_size()
        live.now += self.size
        live.peak = max(live.peak, live.now)

    def __del__(self) -> None:
        self.live.now -= self.size


def _paper_objective_gradients(prepared, batch: dict) -> tuple[dict, int]:
    """The generators' gradients of CycleGAN's summed objective in one backward pass (as the reference computes it),
    and the peak bytes autograd saved for it."""
    model, o = prepared.model, prepared.model.opt
    g_a, g_b, d_a, d_b = (model.nets[k] for k in ("G_A", "G_B", "D_A", "D_B"))
    real_a, real_b = batch["A"], batch["B"]
    l1, gan = torch.nn.functional.l1_loss, lambda d, fake: model.gan_loss(d(fake), True, for_discriminator=False)
    live = _LiveSaved()
    with torch.autograd.graph.saved_tensors_hooks(live.pack, live.unpack):
        fake_b, fake_a = g_a(real_a), g_b(real_b)
        loss = (gan(d_a, fake_b) + gan(d_b, fake_a)
                + l1(g_b(fake_b), real_a) * o.lambda_A + l1(g_a(fake_a), real_b) * o.lambda_B
                + (l1(g_a(real_b), real_b) * o.lambda_B + l1(g_b(real_a), real_a) * o.lambda_A) * o.lambda_identity)
        loss.backward()
    return {k: v.grad.clone() for k, v in model.nets.named_parameters() if k.startswith("G_")}, live.peak


def test_the_step_back_propagates_the_papers_objective_two_generator_passes_at_a_time() -> None:
    config = tiny_config("cyclegan", 32)
    prepared = prepare_step(config)
    reference = _paper_objective_gradients(prepare_step(config), _first_batch(prepared))  # the same initial weights
    calls: list[tuple[str, int]] = []
    for name in ("G_A", "G_B"):
        prepared.model.nets[name].register_forward_hook(
            lambda module, args, out, name=name: calls.append((name, len(args[0]))))
    live = _LiveSaved()
    with torch.autograd.graph.saved_tensors_hooks(live.pack, live.unpack):
        prepared.step()
    assert sorted(calls) == [("G_A", 1)] * 3 + [("G_B", 1)] * 3  # translation, cycle and identity per generator
    # Gradients, not updated weights: Adam's first step moves every weight by about lr * sign(grad), which turns
    # rounding noise on the zero gradients of conv biases before InstanceNorm into lr-sized differences.
    grads = {k: v.grad for k, v in prepared.model.nets.named_parameters() if k.startswith("G_")}
    grads_ref = reference[0]
    assert grads.keys() == grads_ref.keys() and len(grads_ref) > 20
    # Equal up to float rounding (sums taken in another order). Measured against all gradients together: the biases
    # of convolutions before an InstanceNorm have a true gradient of 0, so theirs are pure rounding noise.
    flat, flat_ref = (torch.cat([g[k].flatten() for k in sorted(grads_ref)]) for g in (grads, grads_ref))
    assert flat_ref.norm() > 0 and (flat - flat_ref).norm() / flat_ref.norm() < 1e-5
    # Back-propagating each part at once keeps two of the six generator passes alive.
    assert live.peak < 0.4 * reference[1]


def _first_batch(prepared) -> dict:
    """The synthetic batch that ``prepared.step`` feeds first (the same generator seed)."""
    from gan_translate.bench import synthetic_batch

    return synthetic_batch(prepared.options, torch.Generator().manual_seed(prepared.options.seed),
                           prepared.accelerator.device)


# --- activation checkpointing and channels-last -----------------------------------------------------------------------


def _saved_bytes(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The output and the bytes autograd keeps for the backward pass of one forward."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
    return out, total


@pytest.mark.parametrize("name, norm, dropout", [("resnet_2blocks", "instance", False), ("unet_32", "batch", True)])
def test_checkpointing_keeps_gradients_and_saves_memory(name: str, norm: str, dropout: bool) -> None:
    torch.manual_seed(0)
    plain = build_generator(name, 3, 3, ngf=8, norm=norm, use_dropout=dropout)
    torch.manual_seed(0)
    ckpt = build_generator(name, 3, 3, ngf=8, norm=norm, use_dropout=dropout)
    configure_nets({"G": ckpt}, checkpointing=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    results = []
    for net in (plain, ckpt):
        torch.manual_seed(1)  # the same dropout masks (checkpointing replays the RNG in the recomputation)
        out, saved = _saved_bytes(net, x)
        out.square().mean().backward()
        results.append((out.detach(), saved, [p.grad for p in net.parameters()], net.state_dict()))
    (out_p, saved_p, grads_p, state_p), (out_c, saved_c, grads_c, state_c) = results
    assert saved_c < saved_p / 10  # only the input is kept, not every activation
    torch.testing.assert_close(out_c, out_p)
    for grad_c, grad_p in zip(grads_c, grads_p):
        torch.testing.assert_close(grad_c, grad_p)
    for key in state_p:  # BatchNorm's running statistics counted the batch once, not twice
        torch.testing.assert_close(state_c[key], state_p[key])
    with torch.no_grad():  # no graph: nothing to recompute, the plain path
        torch.testing.assert_close(ckpt(x), plain(x))


def test_channels_last_converts_the_weights() -> None:
    net = build_generator("resnet_1blocks", 3, 3, ngf=8, norm="instance")
    configure_nets({"G": net}, channels_last=True)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_training_with_checkpointing_and_channels_last_matches_plain(tiny_data: Path, tmp_path: Path) -> None:
    assert train_main(tiny_run("cyclegan", tiny_data, tmp_path, "plain", "--max_steps", "2")) == 0
    assert train_main(tiny_run("cyclegan", tiny_data, tmp_path, "fast", "--max_steps", "2", "--checkpointing",
                               "--channels_last")) == 0
    plain, fast = weights(find_checkpoint(tmp_path / "plain")), weights(find_checkpoint(tmp_path / "fast"))
    assert plain.keys() == fast.keys()  # the checkpoints stay interchangeable
    # The same losses at every step: same forward values, same updates (up to float rounding).
    tb_plain, tb_fast = events(tmp_path / "plain"), events(tmp_path / "fast")
    tags = [t for t in tb_plain.Tags()["scalars"] if t.startswith("loss/")]
    assert len(tags) == 8
    for tag in tags:
        values_plain, values_fast = ([e.value for e in tb.Scalars(tag)] for tb in (tb_plain, tb_fast))
        assert len(values_plain) == 2 and values_fast == pytest.approx(values_plain, rel=1e-4, abs=1e-6), tag


def test_bench_does_not_import_the_cli() -> None:
    """cli -> bench, never back: the command is `python -m gan_translate bench`, this module only its worker."""
    import ast

    import gan_translate.bench as bench

    tree = ast.parse(Path(bench.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "gan_translate.models" in imported and not any(name.startswith("gan_translate.cli") for name in imported)
