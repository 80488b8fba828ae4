"""Patch discriminators (PatchGAN, Isola et al. 2017) built from a layer recipe, and ``build_discriminator``.

A PatchGAN classifies every overlapping patch of its input as real or fake and returns a map of logits; the patch size
is the receptive field of the output (70x70 for the "basic" recipe). All discriminators here are one
``PatchDiscriminator`` with a different recipe -- a list of ``PatchLayer(out_channels, kernel, stride, norm)`` -- so
later models describe theirs in one line (MIXGAN's style D, TPFR's conditional D) instead of a new class.

Layer order, biases and counts match the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gan_translate.nets.blur import BlurDownsample
from gan_translate.nets.layers import conv_bias, init_weights, norm_layer

__all__ = [
    "PatchLayer",
    "PatchDiscriminator",
    "NLayerDiscriminator",
    "PixelDiscriminator",
    "n_layer_recipe",
    "pixel_recipe",
    "build_discriminator",
    "DISCRIMINATORS",
]


@dataclass(frozen=True)
class PatchLayer:
    """One convolution of a patch discriminator.

    Args:
        out_channels: filters.
        kernel / stride: of the convolution.
        norm: whether the discriminator's norm follows the convolution.
        bias: conv bias; ``None`` applies the reference rule (a bias unless BatchNorm follows).
        padding: overrides the discriminator's padding for this layer.
    """

    out_channels: int
    kernel: int
    stride: int
    norm: bool = False
    bias: bool | None = None
    padding: int | str | None = None


LayerSpec = PatchLayer | tuple


class PatchDiscriminator(nn.Module):
    """Fully convolutional discriminator from a recipe of layers; returns patch logits (N, 1, h, w), no sigmoid.

    Every layer but the last is conv, [norm], LeakyReLU 0.2; the last is a bare conv that outputs the logits.

    Args:
        input_nc: channels of the input (6 for a conditional D on [A, B]).
        layers: ``PatchLayer``s or tuples ``(out_channels, kernel, stride, use_norm)``.
        norm: "instance" | "batch" | "none".
        padding: zero padding of every conv (an int, or "same" for stride-1 convs), unless a layer overrides it.
        negative_slope: of the LeakyReLUs.
        antialias: every stride-2 layer becomes conv stride 1, [norm], LeakyReLU, ``BlurDownsample`` (CUT's default
            PatchGAN, after Zhang 2019): same parameters, same output size at 256 px (30x30).
    """

    def __init__(
        self,
        input_nc: int,
        layers: Sequence[LayerSpec],
        *,
        norm: str = "batch",
        padding: int | str = 1,
        negative_slope: float = 0.2,
        antialias: bool = False,
    ):
        super().__init__()
        if not layers:
            raise ValueError("a patch discriminator needs at least one layer")
        specs = [spec if isinstance(spec, PatchLayer) else PatchLayer(*spec) for spec in layers]
        make_norm = norm_layer(norm)

        modules: list[nn.Module] = []
        in_ch = input_nc
        for index, spec in enumerate(specs):
            is_last = index == len(specs) - 1
            bias = spec.bias if spec.bias is not None else not spec.norm or conv_bias(norm)
            pad = padding if spec.padding is None else spec.padding
            blurred = antialias and spec.stride == 2 and not is_last
            modules.append(nn.Conv2d(in_ch, spec.out_channels, spec.kernel, stride=1 if blurred else spec.stride,
                                     padding=pad, bias=bias))
            if spec.norm:
                modules.append(make_norm(spec.out_channels))
            if not is_last:
                modules.append(nn.LeakyReLU(negative_slope, True))
            if blurred:
                modules.append(BlurDownsample(spec.out_channels))
            in_ch = spec.out_channels

        self.layers = tuple(specs)
        self.antialias = antialias
        self.model = nn.Sequential(*modules)

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the input patch that one output logit sees."""
        size = 1
        for index, spec in reversed(list(enumerate(self.layers))):
            if self.antialias and spec.stride == 2 and index < len(self.layers) - 1:
                size = (size - 1) * 2 + 3  # the blur (3 taps, stride 2) after a stride-1 conv
                size = size - 1 + spec.kernel
            else:
                size = (size - 1) * spec.stride + spec.kernel
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def n_layer_recipe(ndf: int = 64, n_layers: int = 3) -> list[PatchLayer]:
    """The reference PatchGAN: Conv4 s2 ndf; ``n_layers - 1`` Conv4 s2 with norm doubling the filters (capped at
    8 ndf); one Conv4 s1 with norm; Conv4 s1 to one channel. ``n_layers=3`` is the 70x70 PatchGAN."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    recipe = [PatchLayer(ndf, 4, 2, norm=False)]
    recipe += [PatchLayer(ndf * min(2**n, 8), 4, 2, norm=True) for n in range(1, n_layers)]
    recipe += [PatchLayer(ndf * min(2**n_layers, 8), 4, 1, norm=True), PatchLayer(1, 4, 1, norm=False)]
    return recipe


def pixel_recipe(ndf: int = 64, norm: str = "batch") -> list[PatchLayer]:
    """The 1x1 PixelGAN: Conv1 ndf; Conv1 2 ndf with norm; Conv1 to one channel.

    The reference gives the last conv the same bias rule as the normed ones (no bias under BatchNorm); kept for
    identical parameter counts.
    """
    return [
        PatchLayer(ndf, 1, 1, norm=False),
        PatchLayer(ndf * 2, 1, 1, norm=True),
        PatchLayer(1, 1, 1, norm=False, bias=conv_bias(norm)),
    ]


class NLayerDiscriminator(PatchDiscriminator):
    """PatchGAN of pix2pix/CycleGAN (Isola et al. 2017) with ``n_layers`` stride-2 convs; kernel 4, padding 1."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch", antialias: bool = False):
        super().__init__(input_nc, n_layer_recipe(ndf, n_layers), norm=norm, padding=1, antialias=antialias)


class PixelDiscriminator(PatchDiscriminator):
    """1x1 PatchGAN ("PixelGAN", Isola et al. 2017): judges each pixel's colour alone."""

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "batch"):
        super().__init__(input_nc, pixel_recipe(ndf, norm), norm=norm, padding=0)


DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {
    "basic": lambda input_nc, ndf, n_layers, norm, antialias: NLayerDiscriminator(input_nc, ndf, 3, norm, antialias),
    "n_layers": lambda input_nc, ndf, n_layers, norm, antialias: NLayerDiscriminator(input_nc, ndf, n_layers, norm,
                                                                                     antialias),
    # no stride-2 layer, so nothing to antialias
    "pixel": lambda input_nc, ndf, n_layers, norm, antialias: PixelDiscriminator(input_nc, ndf, norm),
}


def build_discriminator(
    name: str,
    input_nc: int,
    ndf: int = 64,
    n_layers_D: int = 3,
    norm: str = "batch",
    init_type: str = "normal",
    init_gain: float = 0.02,
    antialias: bool = False,
) -> nn.Module:
    """Build and initialise the discriminator called ``name``: "basic" (70x70 PatchGAN), "n_layers" (``n_layers_D``
    stride-2 convs) or "pixel" (1x1); ``antialias`` blur-pools the stride-2 layers (CUT's PatchGAN).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    try:
        build = DISCRIMINATORS[name]
    except KeyError:
        raise ValueError(f"unknown discriminator {name!r}; choose one of {sorted(DISCRIMINATORS)}") from None
    return init_weights(build(input_nc, ndf, n_layers_D, norm, antialias), init_type, init_gain)
