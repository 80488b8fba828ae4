"""Channels-last inference on a CPU: the same generators, their activations laid out NHWC while they translate.

oneDNN computes convolutions in NHWC (or blocked) layouts. Given the usual NCHW tensors, every call reorders its input
and its output, and at the large maps of a 256 px image those copies cost as much as a third of a transposed
convolution (docs/performance.md has the profile). ``use_channels_last_inference(generator)`` makes a generator
(``inference.load_model`` switches the ResNet, U-Net, fast style and AdaIN networks), when it runs without gradients
on a CPU, take its input NHWC, keep every activation NHWC and hand back an ordinary NCHW output:

- convolutions use a channels-last copy of their weight, made once and kept until the weight changes (the
  parameters themselves are not touched: state dicts, saving and training see what they saw);
- instance norm (``instance_norm``, also used by the fast style network's conditional norm), whose built-in kernel
  copies an NHWC map to NCHW first, normalises each image with the NHWC batch norm kernel (one image's batch
  statistics are its instance statistics);
- the U-Net's small-map products (``small_map_conv``) give their outputs NHWC (``nhwc_output``);
- dropout (pix2pix keeps it at test time) draws its mask in NCHW order, so seeded outputs do not depend on the layout.

Results equal the NCHW forward to float rounding (tests/test_channels_last.py). With gradients (training,
fine-tuning) or on a GPU nothing changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["use_channels_last_inference", "is_channels_last", "inference_weight", "nhwc_output", "conv_transpose",
           "instance_norm"]


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor laid out NHWC (and not also NCHW, as a map with one channel or one pixel is)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _active(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.jit.is_tracing()
            and not torch.onnx.is_in_onnx_export())


def inference_weight(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer.weight``, or a channels-last copy of it when ``x`` is NHWC during inference: oneDNN would otherwise
    reorder the weight on every call. The copy is kept on the layer (outside its state dict) and remade when the
    weight is replaced or changed in place."""
    weight = layer.weight
    if not (is_channels_last(x) and _active(x)):
        return weight
    key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
    cached = layer.__dict__.get("_channels_last_weight")
    if cached is None or cached[0] != key:
        cached = (key, weight.detach().contiguous(memory_format=torch.channels_last))
        layer.__dict__["_channels_last_weight"] = cached
    return cached[1]


def nhwc_output(layer: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` laid out NHWC when ``layer`` belongs to a channels-last generator running inference (for layers whose
    result comes out NCHW, as the small-map products). The flag, not ``x``'s layout, decides: a 1x1 map is both."""
    if getattr(layer, "_nhwc_inference", False) and _active(x) and x.dim() == 4:
        return out.contiguous(memory_format=torch.channels_last)
    return out


class ChannelsLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` that uses ``inference_weight``: the same parameters and results."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, inference_weight(self, x), self.bias)


def conv_transpose(layer: nn.ConvTranspose2d, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
    """``nn.ConvTranspose2d.forward`` with ``inference_weight``."""
    output_padding = layer._output_padding(x, output_size, layer.stride, layer.padding, layer.kernel_size, 2,
                                           layer.dilation)
    return F.conv_transpose2d(x, inference_weight(layer, x), layer.bias, layer.stride, layer.padding,
                              output_padding, layer.groups, layer.dilation)


class ChannelsLastConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` that uses ``inference_weight``: the same parameters and results."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return super().forward(x, output_size)
        return conv_transpose(self, x, output_size)


def instance_norm(x: torch.Tensor, eps: float = 1e-5, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.instance_norm`` without running statistics; an NHWC map during inference is normalised image by image with
    the batch norm kernel, which reads NHWC directly (the built-in instance norm copies it to NCHW first, 4-8x slower
    here): one image's batch statistics are its instance statistics."""
    if not (is_channels_last(x) and _active(x)) or x.shape[2] * x.shape[3] < 2:
        return F.instance_norm(x, weight=weight, bias=bias, eps=eps)
    images = [F.batch_norm(x[i:i + 1], None, None, weight, bias, True, 0.0, eps) for i in range(x.shape[0])]
    return images[0] if len(images) == 1 else torch.cat(images)


class ChannelsLastInstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` through ``instance_norm``; layers that use running statistics keep the built-in path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.track_running_stats:
            return super().forward(x)
        return instance_norm(x, self.eps, self.weight, self.bias)


class ChannelsLastDropout(nn.Dropout):
    """``nn.Dropout`` that, for an NHWC map, draws its mask as the built-in does for the NCHW one (a mask tensor in
    NCHW order, then multiply): a seeded test drops the same elements in either layout, as in the reference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and 0 < self.p < 1 and not self.inplace and is_channels_last(x) and _active(x)):
            return super().forward(x)
        keep = 1 - self.p
        noise = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(keep).div_(keep)
        return (x * noise).contiguous(memory_format=torch.channels_last)


_SWAPS = {nn.Conv2d: ChannelsLastConv2d, nn.ConvTranspose2d: ChannelsLastConvTranspose2d,
          nn.InstanceNorm2d: ChannelsLastInstanceNorm2d, nn.Dropout: ChannelsLastDropout}


def _to_channels_last(module: nn.Module, args: tuple) -> tuple | None:
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4 and _active(x) and not is_channels_last(x):
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def _to_contiguous(module: nn.Module, args: tuple, output: object) -> object:
    if isinstance(output, torch.Tensor) and output.dim() == 4 and _active(output):
        return output.contiguous()  # NCHW (a no-op when it is): also a crop of a padded NHWC map
    return output


def use_channels_last_inference(net: nn.Module) -> nn.Module:
    """Switches ``net`` (a generator taking and returning one image batch) to channels-last inference on the CPU, in
    place: its plain convolutions and instance norms become the subclasses above (exact classes only: subclasses
    such as the U-Net's small-map convolutions handle NHWC themselves), and hooks lay its input out NHWC and its
    output NCHW whenever it runs without gradients on a CPU. Calling it twice is harmless."""
    for module in net.modules():
        if type(module) in _SWAPS:
            module.__class__ = _SWAPS[type(module)]
        module._nhwc_inference = True
    if not getattr(net, "_channels_last_hooks", False):
        net.register_forward_pre_hook(_to_channels_last)
        net.register_forward_hook(_to_contiguous)
        net._channels_last_hooks = True
    return net
