"""The small-map convolutions (one GEMM over the unfolded map) give the built-in layers' outputs and gradients."""

import pytest
import torch
from torch import nn

from gan_translate.nets import build_generator
from gan_translate.nets.small_map_conv import SmallMapConv2d, SmallMapConvTranspose2d


def _outputs_and_grads(layer: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = layer(x)
    weights = torch.linspace(-1, 1, y.numel()).reshape(y.shape)  # a non-uniform upstream gradient
    params = [p for p in layer.parameters()]
    return [y, *torch.autograd.grad((y * weights).sum(), [x, *params])]


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("batch, side, kernel, stride, padding, output_padding",
                         [(1, 1, 4, 2, 1, 0), (1, 2, 4, 2, 1, 0), (3, 4, 4, 2, 1, 0), (2, 5, 3, 2, 1, 1),
                          (2, 3, 3, 1, 1, 0)])
def test_matches_the_builtin_layer(transposed, bias, batch, side, kernel, stride, padding, output_padding):
    torch.manual_seed(0)
    if transposed:
        ref = nn.ConvTranspose2d(6, 5, kernel, stride, padding, output_padding=output_padding, bias=bias)
        gemm = SmallMapConvTranspose2d(6, 5, kernel, stride, padding, output_padding=output_padding, bias=bias)
    else:
        if output_padding or side + 2 * padding < kernel:
            pytest.skip("output_padding is a transposed-convolution option; the map must hold the kernel")
        ref, gemm = nn.Conv2d(6, 5, kernel, stride, padding, bias=bias), SmallMapConv2d(6, 5, kernel, stride, padding,
                                                                                       bias=bias)
    gemm.load_state_dict(ref.state_dict())
    assert list(gemm.state_dict()) == list(ref.state_dict())
    x = torch.randn(batch, 6, side, side + 1)
    got, want = _outputs_and_grads(gemm, x), _outputs_and_grads(ref, x)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_large_maps_take_the_builtin_route():
    layer = SmallMapConv2d(2, 2, 3, padding=1)
    layer.max_positions = 15  # a 4x4 output has 16 positions
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    layer(x).sum().backward()
    assert "Convolution" in type(layer(x).grad_fn).__name__ or "Mkldnn" in type(layer(x).grad_fn).__name__
    layer.max_positions = 16
    assert type(layer(x).grad_fn).__name__ == "_UnfoldedConvBackward"


@pytest.mark.parametrize("dropout", [False, True])
def test_unet_keeps_its_parameters_outputs_and_gradients(dropout):
    torch.manual_seed(0)
    net = build_generator("unet_64", 3, 3, ngf=8, norm="batch", use_dropout=dropout)
    builtin = build_generator("unet_64", 3, 3, ngf=8, norm="batch", use_dropout=dropout)
    for module in builtin.modules():  # the same network with every convolution on oneDNN
        if hasattr(module, "max_positions"):
            module.max_positions = 0
    builtin.load_state_dict(net.state_dict())
    assert list(builtin.state_dict()) == list(net.state_dict())
    assert any(isinstance(m, SmallMapConvTranspose2d) for m in net.modules())
    x = torch.randn(2, 3, 64, 64)
    results = []
    for model in (net, builtin):
        torch.manual_seed(1)  # the same dropout masks
        y = model(x)
        y.square().mean().backward()
        results.append((y, [p.grad for p in model.parameters()]))
    (y_gemm, g_gemm), (y_ref, g_ref) = results
    torch.testing.assert_close(y_gemm, y_ref, rtol=1e-4, atol=1e-5)
    for g, w in zip(g_gemm, g_ref):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("transposed", [False, True])
def test_autocast_bf16_computes_as_the_builtin_layer(transposed, input_dtype):
    """Under ``--mixed_precision bf16`` (CPU autocast around the forward pass only, as Accelerate does) the GEMM
    route gives the built-in layer's dtype and values, and the fp32 weights get fp32 gradients. The input is fp32
    for a first layer and bf16 after an autocast layer."""
    torch.manual_seed(0)
    if transposed:
        ref, gemm = nn.ConvTranspose2d(16, 8, 4, 2, 1), SmallMapConvTranspose2d(16, 8, 4, 2, 1)
    else:
        ref, gemm = nn.Conv2d(16, 8, 4, 2, 1), SmallMapConv2d(16, 8, 4, 2, 1)
    gemm.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 4, 4).to(input_dtype)
    results = []
    for layer in (gemm, ref):
        leaf = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(leaf)
        weights = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
        results.append([y, *torch.autograd.grad((y.float() * weights).sum(), [leaf, *layer.parameters()])])
    got, want = results
    assert type(got[0].grad_fn).__name__.startswith("_Unfolded")
    assert got[0].dtype == want[0].dtype == torch.bfloat16
    assert [g.dtype for g in got[1:]] == [w.dtype for w in want[1:]] == [input_dtype] + [torch.float32] * 2
    for g, w in zip(got, want):
        torch.testing.assert_close(g.float(), w.float(), rtol=2e-2, atol=3e-2)
