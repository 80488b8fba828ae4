"""Channels-last inference (nets/channels_last.py): the same outputs as the NCHW forward (ResNet, U-Net and fast style
networks), NHWC activations inside, nothing changed with gradients, and a weight changed in place is seen."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gan_translate.nets.channels_last import is_channels_last, use_channels_last_inference
from gan_translate.losses.style import mean_std
from gan_translate.models.adain import AdaINDecoder, adaptive_instance_norm
from gan_translate.nets.fast_style import FastStyleNet
from gan_translate.nets.vgg import VGG19
from gan_translate.nets.generators import build_generator

NETS = [  # (name, norm, dropout)
    ("resnet_3blocks", "instance", False),
    ("resnet_3blocks", "batch", False),
    ("unet_64", "batch", True),
    ("unet_128", "instance", False),
]


def pair(name: str, norm: str, dropout: bool) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = build_generator(name, 3, 3, ngf=8, norm=norm, use_dropout=dropout).eval()
    for module in plain.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return plain, use_channels_last_inference(copy.deepcopy(plain))


@pytest.mark.parametrize("name, norm, dropout", NETS)
@pytest.mark.parametrize("batch, size", [(1, (64, 64)), (3, (45, 70))])
def test_outputs_equal_the_nchw_forward(name: str, norm: str, dropout: bool, batch: int, size: tuple) -> None:
    plain, fast = pair(name, norm, dropout)
    x = torch.randn(batch, 3, *size)
    with torch.inference_mode():
        expected, got = plain(x), fast(x)
    assert got.shape == expected.shape == x.shape
    assert got.is_contiguous()  # handed back NCHW
    assert torch.allclose(got, expected, atol=2e-5, rtol=0), (got - expected).abs().max()


@pytest.mark.parametrize("name, norm, dropout", NETS)
def test_seeded_dropout_and_batch_statistics_match_the_nchw_forward(name: str, norm: str, dropout: bool) -> None:
    plain, fast = pair(name.replace("resnet_3blocks", "resnet_2blocks"), norm, True)
    plain.train()
    fast.train()  # pix2pix's test without --eval: dropout on, BatchNorm on the batch's statistics
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(5)
        expected = plain(x)
        torch.manual_seed(5)
        got = fast(x)
    assert torch.allclose(got, expected, atol=2e-5, rtol=0), (got - expected).abs().max()


@pytest.mark.parametrize("name, norm, dropout", NETS[:1] + NETS[2:3])
def test_activations_are_nhwc_inside(name: str, norm: str, dropout: bool) -> None:
    _, fast = pair(name, norm, dropout)
    outputs: list[torch.Tensor] = []
    for module in fast.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.register_forward_hook(lambda m, args, out: outputs.append(out))
    with torch.no_grad():
        fast(torch.randn(2, 3, 64, 64))
    # every convolution's output NHWC (a 1x1 map or a single channel is laid out both ways)
    assert outputs and all(is_channels_last(o) or o.shape[2] * o.shape[3] == 1 or o.shape[1] == 1 for o in outputs)
    outputs.clear()
    fast(torch.randn(2, 3, 64, 64))  # with gradients: the ordinary NCHW path
    assert outputs and not any(is_channels_last(o) for o in outputs)


def test_training_is_untouched_and_parameters_keep_their_layout() -> None:
    plain, fast = pair("resnet_3blocks", "instance", False)
    x = torch.randn(2, 3, 32, 32)
    plain(x).square().mean().backward()
    fast(x).square().mean().backward()
    for (key, a), (_, b) in zip(plain.named_parameters(), fast.named_parameters()):
        assert torch.equal(a.grad, b.grad), key
    with torch.no_grad():
        fast(x)
    assert all(p.is_contiguous() for p in fast.parameters())
    assert fast.state_dict().keys() == plain.state_dict().keys()


def test_a_weight_changed_in_place_is_used() -> None:
    plain, fast = pair("unet_64", "batch", False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fast(x)  # the channels-last copies are made here
        for net in (plain, fast):
            for module in net.modules():
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                    module.weight.mul_(-1.5)
        assert torch.allclose(fast(x), plain(x), atol=2e-5, rtol=0)


@pytest.mark.parametrize("options", [{}, {"norm": "batch", "upsample": "resize"}, {"padding": "reflect_start"}])
def test_fast_style_network_equals_its_nchw_forward(options: dict) -> None:
    torch.manual_seed(0)
    styles = 1 if options.get("norm") == "batch" else 3
    plain = FastStyleNet(ngf=8, n_styles=styles, **options).eval()
    for norm in plain.norms():  # per-style (gamma, beta) away from 1 and 0
        for p in norm.parameters():
            p.data.normal_(0.5, 0.3)
    fast = use_channels_last_inference(copy.deepcopy(plain))
    x = torch.rand(2, 3, 48, 40) * 2 - 1
    mix = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])[:, :styles]
    convs: list[torch.Tensor] = []
    for module in fast.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1):
            module.register_forward_hook(lambda m, args, out: convs.append(out))
    with torch.inference_mode():
        expected, got = plain(x, mix), fast(x, mix)
    assert got.is_contiguous() and torch.allclose(got, expected, atol=2e-5, rtol=0), (got - expected).abs().max()
    assert convs and all(is_channels_last(o) or o.shape[1] == 1 for o in convs)


def test_adain_encoder_and_decoder_equal_their_nchw_forward() -> None:
    torch.manual_seed(0)
    plain = [VGG19(last_layer="relu4_1", padding="reflect").eval(), AdaINDecoder().eval()]
    fast = [use_channels_last_inference(copy.deepcopy(net)) for net in plain]
    content, style = torch.rand(2, 3, 40, 56) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1

    def stylize(encoder: nn.Module, decoder: nn.Module) -> torch.Tensor:
        return decoder(adaptive_instance_norm(encoder(content), *mean_std(encoder(style))))

    with torch.inference_mode():
        expected, got = stylize(*plain), stylize(*fast)
        features = fast[0](content)
    assert features.is_contiguous() and got.is_contiguous()
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (got - expected).abs().max()

