"""Small building blocks shared by every network: normalization lookup, weight init, freezing, unwrapping, padding.

The conventions follow the pix2pix/CycleGAN reference implementation (Isola et al. 2017; Zhu et al. 2017):
InstanceNorm without affine parameters or running statistics, BatchNorm with both, weights drawn from N(0, 0.02),
and convolutions that carry a bias except when a BatchNorm follows (its shift makes the bias redundant).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NORM_LAYERS",
    "PADDING_LAYERS",
    "UPSAMPLE_KINDS",
    "INIT_TYPES",
    "norm_layer",
    "conv_bias",
    "upsample_conv",
    "init_weights",
    "set_requires_grad",
    "bare",
    "pad_to_multiple",
    "run_padded",
    "keep_running_stats",
    "configure_nets",
]


# ---------------------------------------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------------------------------------


def _no_norm(num_features: int) -> nn.Module:
    """Stand-in for a norm layer; keeps the layer positions (and so the state-dict keys) the same for every norm."""
    return nn.Identity()


NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    # Per-image statistics only: the CycleGAN default, and safe at batch size 1.
    "instance": functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False),
    "batch": functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True),
    "none": _no_norm,
}


def norm_layer(name: str) -> Callable[[int], nn.Module]:
    """Return a factory ``num_features -> nn.Module`` for the normalization called ``name``.

    Raises:
        ValueError: when ``name`` is not one of ``NORM_LAYERS``.
    """
    try:
        return NORM_LAYERS[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; choose one of {sorted(NORM_LAYERS)}") from None


def conv_bias(norm: str) -> bool:
    """Whether a convolution followed by the norm ``name`` gets a bias: all but BatchNorm, whose shift replaces it."""
    norm_layer(norm)  # validate the name
    return norm != "batch"


PADDING_LAYERS: dict[str, Callable[[int], nn.Module] | None] = {
    "reflect": nn.ReflectionPad2d,
    "replicate": nn.ReplicationPad2d,
    "zero": None,  # zero padding is done by the convolution itself
}


# ---------------------------------------------------------------------------------------------------------------------
# Upsampling
# ---------------------------------------------------------------------------------------------------------------------


def _transposed_up(in_ch: int, out_ch: int, kernel: int, bias: bool) -> list[nn.Module]:
    # output_padding makes an odd kernel produce exactly twice the input size, as an even kernel does without it
    return [nn.ConvTranspose2d(in_ch, out_ch, kernel, stride=2, padding=1, output_padding=kernel % 2, bias=bias)]


def _resize_up(in_ch: int, out_ch: int, kernel: int, bias: bool) -> list[nn.Module]:
    # Resize-convolution (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts"): the uneven overlap of a
    # strided transposed conv is what paints checkerboards, so upsample first and then convolve at stride 1.
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3, bias=bias)]


UPSAMPLE_KINDS: dict[str, Callable[[int, int, int, bool], list[nn.Module]]] = {
    "transposed": _transposed_up,
    "resize": _resize_up,
}


def upsample_conv(kind: str, in_ch: int, out_ch: int, *, kernel: int, bias: bool) -> list[nn.Module]:
    """Layers that double the spatial size and map ``in_ch`` to ``out_ch`` channels.

    Args:
        kind: "transposed" (ConvTranspose2d of ``kernel``, stride 2, padding 1, as the reference) or "resize"
            (nearest x2 upsampling, then ReflectPad 1 + Conv 3x3; ``kernel`` is then unused).
        bias: whether the convolution has a bias.
    """
    try:
        build = UPSAMPLE_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown upsample {kind!r}; choose one of {sorted(UPSAMPLE_KINDS)}") from None
    return build(in_ch, out_ch, kernel, bias)


# ---------------------------------------------------------------------------------------------------------------------
# Initialization, freezing, unwrapping
# ---------------------------------------------------------------------------------------------------------------------

INIT_TYPES: dict[str, Callable[[torch.Tensor, float], object]] = {
    "normal": lambda w, gain: nn.init.normal_(w, 0.0, gain),
    "xavier": lambda w, gain: nn.init.xavier_normal_(w, gain=gain),
    # the reference ignores the gain for kaiming (fan-in, ReLU slope 0)
    "kaiming": lambda w, gain: nn.init.kaiming_normal_(w, a=0, mode="fan_in"),
    "orthogonal": lambda w, gain: nn.init.orthogonal_(w, gain=gain),
}


def init_weights(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise ``net`` in place as the pix2pix/CycleGAN reference does, and return it.

    Conv, transposed-conv and Linear weights are drawn by ``init_type`` (normal | xavier | kaiming | orthogonal) with
    ``gain``; their biases are set to 0. BatchNorm weights are drawn from N(1, gain) and their biases set to 0. Draws
    come from torch's global generator in module order, so ``torch.manual_seed`` makes the result reproducible.
    """
    try:
        init_fn = INIT_TYPES[init_type]
    except KeyError:
        raise ValueError(f"unknown init_type {init_type!r}; choose one of {sorted(INIT_TYPES)}") from None

    @torch.no_grad()
    def visit(module: nn.Module) -> None:
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            init_fn(module.weight, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)

    net.apply(visit)
    return net


def set_requires_grad(nets: nn.Module | Iterable[nn.Module | None], flag: bool) -> None:
    """Switch gradients on or off for every parameter of one module or of a list of modules (``None`` skipped).

    Freezing D while G steps saves the backward work through D's weights (the reference's trick).
    """
    if isinstance(nets, nn.Module):
        nets = [nets]
    for net in nets:
        if net is None:
            continue
        for param in net.parameters():
            param.requires_grad_(flag)


_WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def bare(module: nn.Module) -> nn.Module:
    """The network inside a (Distributed)DataParallel wrapper, or ``module`` itself when it is not wrapped.

    Running a frozen discriminator through DDP would register a gradient-sync hook for a backward that never comes;
    calling the bare module avoids it.
    """
    while isinstance(module, _WRAPPERS):
        module = module.module
    return module


# ---------------------------------------------------------------------------------------------------------------------
# Padding to the network's stride
# ---------------------------------------------------------------------------------------------------------------------


def _split(total: int) -> tuple[int, int]:
    # centre the image in the padded canvas so that both borders see the same kind of context
    return total // 2, total - total // 2


def pad_to_multiple(
    x: torch.Tensor, multiple: int, min_size: int = 1
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad the last two dims of ``x`` up to a multiple of ``multiple`` (and at least ``min_size``).

    Uses reflection padding, which does not invent edges; where the pad is wider than reflection allows (pad >= size)
    it falls back to replicate padding.

    Returns:
        The padded tensor and the (left, right, top, bottom) pad, for cropping back.
    """
    height, width = x.shape[-2:]
    target_h = max(-(-height // multiple) * multiple, -(-min_size // multiple) * multiple)
    target_w = max(-(-width // multiple) * multiple, -(-min_size // multiple) * multiple)
    top, bottom = _split(target_h - height)
    left, right = _split(target_w - width)
    pad = (left, right, top, bottom)
    if not any(pad):
        return x, pad
    reflect_ok = max(left, right) < width and max(top, bottom) < height
    return F.pad(x, pad, mode="reflect" if reflect_ok else "replicate"), pad


def run_padded(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, multiple: int, min_size: int = 1
) -> torch.Tensor:
    """Run ``fn`` on ``x`` padded to a multiple of ``multiple`` and crop the result back to ``x``'s height and width.

    ``fn`` must preserve the spatial size (as every generator does). Inputs that already fit are passed through as-is.
    """
    padded, (left, right, top, bottom) = pad_to_multiple(x, multiple, min_size)
    out = fn(padded)
    if padded is x:
        return out
    height, width = out.shape[-2:]
    return out[..., top : height - bottom, left : width - right]


# ---------------------------------------------------------------------------------------------------------------------
# Speed and memory options
# ---------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def keep_running_stats(module: nn.Module) -> Iterator[None]:
    """Restores the running statistics (and batch counters) of every BatchNorm in ``module`` on exit.

    Activation checkpointing runs a forward twice; without this, BatchNorm would count the batch twice.
    """
    saved = [(buf, buf.clone()) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for buf in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def configure_nets(
    nets: Mapping[str, nn.Module] | nn.ModuleDict,
    *,
    channels_last: bool = False,
    checkpointing: bool = False,
    compile: bool = False,
) -> None:
    """Applies the speed/memory options (``TrainOptions`` channels_last, checkpointing, compile) to every network.

    ``channels_last`` converts the weights to NHWC (convolutions then produce NHWC activations); ``checkpointing``
    switches on the ``checkpointing`` attribute of every submodule that has one (the generators); ``compile`` calls
    ``nn.Module.compile`` in place, which keeps the state-dict keys (checkpoints stay loadable without it).
    """
    for net in nets.values():
        if channels_last:
            net.to(memory_format=torch.channels_last)
        if checkpointing:
            for module in net.modules():
                if hasattr(module, "checkpointing"):
                    module.checkpointing = True
        if compile:
            net.compile()
