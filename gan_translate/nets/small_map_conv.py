"""Convolutions for small feature maps, computed as one matrix product over the unfolded map.

The U-Net's deepest levels (pix2pix: 1x1 to 8x8 maps, 512-1024 channels) hold nearly all its weights and do almost no
arithmetic per weight: a 512 -> 512 4x4 convolution producing a 2x2 map is a (512 x 8192) @ (8192 x 4) product. oneDNN
runs such calls (and their backward passes) at a small fraction of its large-map speed; as one GEMM each (im2col by
``unfold``, col2im by ``fold``), forward and backward are bound by reading the weight once, as they should be
(README "Performance" has the profile).

``SmallMapConv2d`` and ``SmallMapConvTranspose2d`` are ``nn.Conv2d`` / ``nn.ConvTranspose2d`` with the same
parameters, state-dict keys and results (to float rounding; gradients tested against the built-in layers); they take
the GEMM route only where the map is small (``max_positions``) and the layer is a plain one (no groups, dilation,
non-zero padding modes), and defer to the built-in convolution otherwise. In a generator switched to channels-last
inference (``channels_last``) both routes take and give NHWC maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gan_translate.nets.channels_last import conv_transpose, inference_weight, nhwc_output

__all__ = ["SmallMapConv2d", "SmallMapConvTranspose2d", "MAX_GEMM_POSITIONS", "use_small_map_convs"]

# The largest map computed as a GEMM, in positions: the output of a convolution, the input of a transposed one.
# Measured per layer shape of unet_128, forward + backward on one CPU thread (README "Performance"): the GEMM wins for
# convolutions down to a 4x4 output (512 -> 512 from 8x8: 1.6x) but not at an 8x8 output (256 -> 512 from 16x16:
# 0.89-0.91x), and for transposed convolutions up to an 8x8 input (1024 -> 256: 1.07-1.13x; from 16x16: 0.70x).
MAX_GEMM_POSITIONS = {"conv": 16, "transposed": 64}


# The products below keep the map's positions as rows ([N*L, K] @ [K, C]): with so few positions, the other
# orientation ([C, K] @ [K, N*L], or a transposed weight on the left) runs 3-15x slower in the CPU BLAS (measured).


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[N, K, L] -> [N * L, K]: one row per position of every image (a view when N == 1)."""
    n, k, length = t.shape
    return t.transpose(1, 2).reshape(n * length, k)


def _columns(t: torch.Tensor, n: int) -> torch.Tensor:
    """[N * L, K] -> [N, K, L], the inverse of ``_rows`` (a view)."""
    return t.reshape(n, -1, t.shape[1]).transpose(1, 2)


class _UnfoldedConv(torch.autograd.Function):
    """y = W @ unfold(x) (+ b); backward: dW = dy @ cols^T, dx = fold(W^T @ dy)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):  # noqa: D102 (torch's Function API)
        n, _, height, width = x.shape
        out_ch, _, kh, kw = weight.shape
        out_h = (height + 2 * padding[0] - kh) // stride[0] + 1
        out_w = (width + 2 * padding[1] - kw) // stride[1] + 1
        cols = _rows(F.unfold(x, (kh, kw), padding=padding, stride=stride))  # [N*L, C_in*kh*kw]
        weight_2d = weight.reshape(out_ch, -1)
        out = cols @ weight_2d.t() if bias is None else torch.addmm(bias, cols, weight_2d.t())  # [N*L, C_out]
        ctx.save_for_backward(cols, weight)
        ctx.geometry = (n, (height, width), stride, padding)
        # a new tensor, not a view of `out`: the next layer may be an in-place ReLU
        return _columns(out, n).reshape(n, out_ch, out_h, out_w).clone(memory_format=torch.contiguous_format)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        cols, weight = ctx.saved_tensors
        n, size, stride, padding = ctx.geometry
        out_ch, kernel = weight.shape[0], weight.shape[2:]
        grad = _rows(grad_out.reshape(n, out_ch, -1))  # [N*L, C_out]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_cols = grad @ weight.reshape(out_ch, -1)
            grad_x = F.fold(_columns(grad_cols, n), size, kernel, padding=padding, stride=stride)
        if ctx.needs_input_grad[1]:
            grad_w = (grad.t() @ cols).reshape(weight.shape)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None, None


class _UnfoldedConvTranspose(torch.autograd.Function):
    """y = fold(W^T @ x) (+ b), the adjoint of ``_UnfoldedConv``; backward: cols = unfold(dy), dx = W @ cols,
    dW = x @ cols^T."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, out_size):  # noqa: D102
        n, in_ch = x.shape[:2]
        kernel = weight.shape[2:]
        inputs = _rows(x.reshape(n, in_ch, -1))  # [N*L, C_in]
        cols = inputs @ weight.reshape(in_ch, -1)  # [N*L, C_out*kh*kw]
        out = F.fold(_columns(cols, n), out_size, kernel, padding=padding, stride=stride)
        if bias is not None:
            out += bias[:, None, None]
        ctx.save_for_backward(inputs, weight)
        ctx.geometry = (n, x.shape[2:], stride, padding)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        inputs, weight = ctx.saved_tensors
        n, in_size, stride, padding = ctx.geometry
        in_ch, kernel = weight.shape[0], weight.shape[2:]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_cols = _rows(F.unfold(grad_out, kernel, padding=padding, stride=stride))  # [N*L, C_out*kh*kw]
            if ctx.needs_input_grad[0]:
                grad_x = _columns(grad_cols @ weight.reshape(in_ch, -1).t(), n).reshape(n, in_ch, *in_size)
            if ctx.needs_input_grad[1]:
                grad_w = (inputs.t() @ grad_cols).reshape(weight.shape)
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None


def _apply(function: type[torch.autograd.Function], x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           *geometry) -> torch.Tensor:
    """Runs ``function`` as the built-in layer would run under autocast (``--mixed_precision bf16``): input, weight and
    bias cast to the autocast dtype, the products in that dtype. The Function itself runs with autocast off, so its
    forward and backward see one dtype; the casts are ordinary autograd ops, so the fp32 weights get their
    gradients."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return function.apply(x, weight, bias, *geometry)
    dtype = torch.get_autocast_dtype(device)
    x, weight = x.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    with torch.autocast(device, enabled=False):
        return function.apply(x, weight, bias, *geometry)


def _gemm_route(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether the GEMM route covers this call: a plain layer (no groups or dilation, zero padding given as numbers)
    on a batch of maps, outside tracing and ONNX export (which should see the built-in convolution)."""
    return (x.dim() == 4 and layer.groups == 1 and all(d == 1 for d in layer.dilation)
            and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
            and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export())


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` computed as one GEMM over the unfolded input when its output map has at most ``max_positions``
    positions (see the module docstring)."""

    max_positions = MAX_GEMM_POSITIONS["conv"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _gemm_route(self, x):
            return super().forward(x)
        kh, kw = self.kernel_size
        out_h = (x.shape[2] + 2 * self.padding[0] - kh) // self.stride[0] + 1
        out_w = (x.shape[3] + 2 * self.padding[1] - kw) // self.stride[1] + 1
        if out_h * out_w > self.max_positions:
            return self._conv_forward(x, inference_weight(self, x), self.bias)
        return nhwc_output(self, x, _apply(_UnfoldedConv, x, self.weight, self.bias, self.stride, self.padding))


class SmallMapConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` computed as one GEMM and a ``fold`` when its input map has at most ``max_positions``
    positions (see the module docstring)."""

    max_positions = MAX_GEMM_POSITIONS["transposed"]

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if not _gemm_route(self, x):
            return super().forward(x, output_size)
        if output_size is not None or x.shape[2] * x.shape[3] > self.max_positions:
            return conv_transpose(self, x, output_size)
        out_size = tuple((x.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i] + self.kernel_size[i]
                         + self.output_padding[i] for i in range(2))
        return nhwc_output(self, x, _apply(_UnfoldedConvTranspose, x, self.weight, self.bias, self.stride,
                                           self.padding, out_size))


def use_small_map_convs(net: nn.Module) -> nn.Module:
    """Switches every ``nn.Conv2d`` / ``nn.ConvTranspose2d`` of ``net`` (exactly those classes) to the subclass above,
    in place: the modules, their parameters and state-dict keys stay what they are; only ``forward`` changes."""
    swap = {nn.Conv2d: SmallMapConv2d, nn.ConvTranspose2d: SmallMapConvTranspose2d}
    for module in net.modules():
        if type(module) in swap:
            module.__class__ = swap[type(module)]
    return net
