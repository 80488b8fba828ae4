"""Image-to-image generators of pix2pix and CycleGAN, and ``build_generator`` to make one by name.

- ``ResnetGenerator``: Johnson et al. 2016 ("Perceptual Losses for Real-Time Style Transfer"), as used by CycleGAN
  (Zhu et al. 2017): two stride-2 downsamplings, residual blocks, two upsamplings.
- ``UnetGenerator``: the U-Net of pix2pix (Isola et al. 2017; Ronneberger et al. 2015): an encoder down to 1x1 and a
  decoder that concatenates the mirrored encoder features.

Layers, their order and their biases match the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix), so
parameter counts are identical (pinned in tests/test_nets.py). Both generators pad inputs whose size is not a multiple
of their ``stride`` and crop the output back: any image size works.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gan_translate.nets.blur import BlurDownsample, BlurUpsample
from gan_translate.nets.layers import (
    PADDING_LAYERS,
    conv_bias,
    init_weights,
    keep_running_stats,
    norm_layer,
    pad_to_multiple,
    run_padded,
    upsample_conv,
)
from gan_translate.nets.small_map_conv import use_small_map_convs

__all__ = ["ResnetBlock", "ResnetGenerator", "UnetBlock", "UnetGenerator", "build_generator", "GENERATOR_PATTERNS"]


class PaddedGenerator(nn.Module):
    """Base for generators whose body (``self.model``) needs sides that are multiples of ``stride``.

    ``min_size`` is the smallest side the body accepts (reflection pads inside need room). With ``checkpointing``
    (set by ``configure_nets``) a forward pass that builds a graph keeps only the body's input and recomputes the rest
    during the backward pass (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"): a generator call then
    holds no activations between its forward and its backward, at the price of one more forward.
    """

    stride: int = 1
    min_size: int = 1
    model: nn.Module
    checkpointing: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body = self._checkpointed if self.checkpointing and torch.is_grad_enabled() else self.model
        return run_padded(body, x, self.stride, self.min_size)

    def checkpoint_segments(self) -> list[nn.Module]:
        """The parts recomputed one at a time in the backward pass (only their outputs are kept): the whole body."""
        return [self.model]

    def _checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        for segment in self.checkpoint_segments():
            # The RNG state is replayed (same dropout masks); BatchNorm's running statistics are restored after the
            # recomputation so that they are updated once per forward, as without checkpointing.
            x = checkpoint(segment, x, use_reentrant=False, preserve_rng_state=True,
                           context_fn=lambda segment=segment: (contextlib.nullcontext(), keep_running_stats(segment)))
        return x


# ---------------------------------------------------------------------------------------------------------------------
# ResNet generator
# ---------------------------------------------------------------------------------------------------------------------


def _padded_conv3(dim: int, padding_type: str, bias: bool) -> list[nn.Module]:
    try:
        pad_layer = PADDING_LAYERS[padding_type]
    except KeyError:
        raise ValueError(f"unknown padding_type {padding_type!r}; choose one of {sorted(PADDING_LAYERS)}") from None
    if pad_layer is None:
        return [nn.Conv2d(dim, dim, 3, padding=1, bias=bias)]
    return [pad_layer(1), nn.Conv2d(dim, dim, 3, bias=bias)]


class ResnetBlock(nn.Module):
    """Residual block: x + [pad, conv3, norm, ReLU, (dropout 0.5), pad, conv3, norm](x) (He et al. 2016)."""

    def __init__(self, dim: int, *, norm: str = "batch", use_dropout: bool = False, padding_type: str = "reflect"):
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers = [*_padded_conv3(dim, padding_type, bias), make_norm(dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [*_padded_conv3(dim, padding_type, bias), make_norm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(PaddedGenerator):
    """ResNet generator (Johnson et al. 2016), CycleGAN's G.

    ReflectPad3 Conv7 ``ngf``, norm, ReLU; two Conv3 stride-2 downsamplings doubling the channels; ``n_blocks``
    residual blocks at ``4 * ngf``; two upsamplings halving the channels (ConvTranspose3 s2, or resize-conv with
    ``upsample="resize"``), each with norm and ReLU; ReflectPad3 Conv7 to ``output_nc``; tanh.

    Args:
        input_nc / output_nc: image channels in and out.
        ngf: filters of the first layer.
        norm: "instance" | "batch" | "none".
        use_dropout: dropout 0.5 inside every residual block.
        n_blocks: number of residual blocks (>= 0).
        padding_type: padding inside the residual blocks: "reflect" | "replicate" | "zero".
        upsample: "transposed" (reference) or "resize" (nearest x2 + conv, no checkerboards).
        antialias: the layout of CUT's default generator (Park et al. 2020, after Zhang 2019): each downsampling is
            Conv3 stride 1, norm, ReLU, ``BlurDownsample``; with ``upsample="transposed"`` each upsampling is
            ``BlurUpsample``, Conv3 stride 1, norm, ReLU. Same parameters as the reference layout (the blur kernels
            are buffers), and the module order of the authors' code, so state-dict keys match theirs.

    ``encode(x, taps)`` returns the features at named positions of the encoder (``tap_positions()``): "input" (the
    reflect-padded image), "down1" / "down2" (the downsampling convolutions' raw outputs, before their norm) and
    "block<k>" (the output of residual block k, 1-based). CUT's PatchNCE loss reads them.
    """

    n_downsampling = 2
    stride = 2**n_downsampling
    # the residual blocks reflect-pad by 1 at 1/4 resolution, which needs at least 2 pixels there
    min_size = 2 * stride

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = False,
        n_blocks: int = 6,
        padding_type: str = "reflect",
        upsample: str = "transposed",
        antialias: bool = False,
    ):
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, 7, bias=bias),
            make_norm(ngf),
            nn.ReLU(True),
        ]
        self.antialias = antialias
        # Positions (indices in self.model) of the features encode() can return, with their channels.
        self.taps: dict[str, int] = {"input": 0}
        self.tap_channels: dict[str, int] = {"input": input_nc}
        # encoder: halve the resolution, double the channels
        for i in range(self.n_downsampling):
            ch = ngf * 2**i
            self.taps[f"down{i + 1}"], self.tap_channels[f"down{i + 1}"] = len(layers), 2 * ch
            if antialias:
                layers += [nn.Conv2d(ch, 2 * ch, 3, stride=1, padding=1, bias=bias), make_norm(2 * ch), nn.ReLU(True),
                           BlurDownsample(2 * ch)]
            else:
                layers += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1, bias=bias), make_norm(2 * ch), nn.ReLU(True)]

        bottleneck = ngf * 2**self.n_downsampling
        for k in range(n_blocks):
            self.taps[f"block{k + 1}"], self.tap_channels[f"block{k + 1}"] = len(layers), bottleneck
            layers.append(ResnetBlock(bottleneck, norm=norm, use_dropout=use_dropout, padding_type=padding_type))

        # decoder: double the resolution, halve the channels
        for i in range(self.n_downsampling):
            ch = bottleneck // 2**i
            if antialias and upsample == "transposed":
                up = [BlurUpsample(ch), nn.Conv2d(ch, ch // 2, 3, stride=1, padding=1, bias=bias)]
            else:
                up = upsample_conv(upsample, ch, ch // 2, kernel=3, bias=bias)
            layers += [*up, make_norm(ch // 2), nn.ReLU(True)]

        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def tap_positions(self) -> list[str]:
        """The names ``encode`` accepts, in the order the encoder reaches them."""
        return list(self.taps)

    def encode(self, x: torch.Tensor, taps: list[str] | tuple[str, ...]) -> list[torch.Tensor]:
        """The features at the named ``taps`` (see the class docstring), in the order asked; the pass stops after the
        deepest one. The input is padded to the stride as in ``forward``, so the maps are those the decoder sees."""
        unknown = [t for t in taps if t not in self.taps]
        if unknown:
            raise ValueError(f"unknown tap {unknown[0]!r}; this generator has {', '.join(self.taps)}")
        wanted = {self.taps[t] for t in taps}
        features: dict[int, torch.Tensor] = {}
        h, _ = pad_to_multiple(x, self.stride, self.min_size)
        for index, layer in enumerate(self.model):
            h = layer(h)
            if index in wanted:
                features[index] = h
                if len(features) == len(wanted):
                    break
        return [features[self.taps[t]] for t in taps]

    # With checkpointing, each call keeps its input, the encoder's output and every third block's output; the backward
    # pass recomputes one segment at a time (encoder, three blocks, ..., decoder), so that many generator calls alive
    # at once (CycleGAN has four to six) hold little more than those few tensors each.
    blocks_per_segment = 3

    def checkpoint_segments(self) -> list[nn.Module]:
        layers = list(self.model)
        blocks = [i for i, layer in enumerate(layers) if isinstance(layer, ResnetBlock)]
        if not blocks:
            return [self.model]
        first, end, step = blocks[0], blocks[-1] + 1, self.blocks_per_segment
        return [nn.Sequential(*layers[:first]),
                *(nn.Sequential(*layers[i: min(i + step, end)]) for i in range(first, end, step)),
                nn.Sequential(*layers[end:])]


# ---------------------------------------------------------------------------------------------------------------------
# U-Net generator
# ---------------------------------------------------------------------------------------------------------------------


class UnetBlock(nn.Module):
    """One level of the U-Net: downsample, the deeper levels (``submodule``), upsample; input and output concatenated.

    ``position`` decides the layers, as in the reference:
      - "outermost": Conv4 s2 | sub | ReLU, up-conv (with bias), tanh (no skip: this is the image output);
      - "innermost": LReLU 0.2, Conv4 s2 | ReLU, up-conv, norm (the 1x1 bottleneck, no norm on it);
      - "middle":    LReLU 0.2, Conv4 s2, norm | sub | ReLU, up-conv, norm, (dropout 0.5).
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        *,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        position: str = "middle",
        norm: str = "batch",
        use_dropout: bool = False,
        upsample: str = "transposed",
    ):
        super().__init__()
        if position not in ("outermost", "innermost", "middle"):
            raise ValueError(f"unknown U-Net block position {position!r}")
        if (submodule is None) != (position == "innermost"):
            raise ValueError("the innermost U-Net block has no submodule; every other block needs one")
        self.outermost = position == "outermost"
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        input_nc = outer_nc if input_nc is None else input_nc

        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=bias)
        # the decoder sees the submodule's output concatenated with its input: twice inner_nc, except at the bottom
        up_in = inner_nc if position == "innermost" else 2 * inner_nc
        # not in-place: this block's input is also the skip tensor concatenated in forward()
        downrelu = nn.LeakyReLU(0.2)

        if position == "outermost":
            down = [downconv]
            up = [nn.ReLU(True), *upsample_conv(upsample, up_in, outer_nc, kernel=4, bias=True), nn.Tanh()]
        elif position == "innermost":
            down = [downrelu, downconv]
            up = [nn.ReLU(True), *upsample_conv(upsample, up_in, outer_nc, kernel=4, bias=bias), make_norm(outer_nc)]
        else:
            down = [downrelu, downconv, make_norm(inner_nc)]
            up = [nn.ReLU(True), *upsample_conv(upsample, up_in, outer_nc, kernel=4, bias=bias), make_norm(outer_nc)]
            if use_dropout:
                up.append(nn.Dropout(0.5))

        middle = [] if submodule is None else [submodule]
        self.model = nn.Sequential(*down, *middle, *up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class UnetGenerator(PaddedGenerator):
    """U-Net generator of pix2pix (Isola et al. 2017), built from the bottleneck outwards.

    ``num_downs`` stride-2 levels take a ``2**num_downs`` image to 1x1 (unet_256: 8, unet_128: 7). Channels: ngf, 2ngf,
    4ngf, then 8ngf for every deeper level; with ``use_dropout`` the ``num_downs - 5`` intermediate 8ngf levels apply
    dropout 0.5 in the decoder (the noise source of pix2pix).
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = False,
        upsample: str = "transposed",
    ):
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5 (a 32 px U-Net), got {num_downs}")
        super().__init__()
        self.stride = self.min_size = 2**num_downs
        common = {"norm": norm, "upsample": upsample}

        block = UnetBlock(ngf * 8, ngf * 8, position="innermost", **common)
        for _ in range(num_downs - 5):
            block = UnetBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout, **common)
        # the three outer levels step the channels down 8ngf -> 4ngf -> 2ngf -> ngf
        for mult in (4, 2, 1):
            block = UnetBlock(ngf * mult, ngf * mult * 2, submodule=block, **common)
        self.model = UnetBlock(output_nc, ngf, input_nc=input_nc, submodule=block, position="outermost", **common)
        # The deep levels' convolutions on 1x1-8x8 maps run as one matrix product each (nets/small_map_conv.py).
        use_small_map_convs(self.model)


# ---------------------------------------------------------------------------------------------------------------------
# Registry by name
# ---------------------------------------------------------------------------------------------------------------------


def _resnet(match: re.Match, **kwargs) -> nn.Module:
    n_blocks = int(match["k"])
    if n_blocks < 1:
        raise ValueError(f"invalid generator {match[0]!r}: resnet_<k>blocks needs k >= 1")
    return ResnetGenerator(n_blocks=n_blocks, **kwargs)


def _unet(match: re.Match, antialias: bool = False, **kwargs) -> nn.Module:
    if antialias:
        raise ValueError(f"generator {match[0]!r} has no antialiased layout (resnet_<k>blocks has)")
    size = int(match["n"])
    if size < 32 or size & (size - 1):
        raise ValueError(f"invalid generator {match[0]!r}: unet_<N> needs N a power of two >= 32")
    return UnetGenerator(num_downs=int(math.log2(size)), **kwargs)


GENERATOR_PATTERNS: dict[str, tuple[re.Pattern, Callable[..., nn.Module]]] = {
    "resnet_<k>blocks (k >= 1, e.g. resnet_9blocks)": (re.compile(r"resnet_(?P<k>\d+)blocks"), _resnet),
    "unet_<N> (N a power of two >= 32, e.g. unet_256)": (re.compile(r"unet_(?P<n>\d+)"), _unet),
}


def build_generator(
    name: str,
    input_nc: int,
    output_nc: int,
    ngf: int = 64,
    norm: str = "batch",
    use_dropout: bool = False,
    upsample: str = "transposed",
    init_type: str = "normal",
    init_gain: float = 0.02,
    antialias: bool = False,
) -> nn.Module:
    """Build and initialise the generator called ``name``: ``resnet_<k>blocks`` or ``unet_<N>``
    (``antialias``: the blur-pooled layout of CUT, ResNet only).

    Raises:
        ValueError: for a name that fits no pattern (the message lists the valid ones) or an invalid k / N.
    """
    kwargs = dict(input_nc=input_nc, output_nc=output_nc, ngf=ngf, norm=norm, use_dropout=use_dropout,
                  upsample=upsample, antialias=antialias)
    for pattern, build in GENERATOR_PATTERNS.values():
        match = pattern.fullmatch(name)
        if match is None:
            continue
        return init_weights(build(match, **kwargs), init_type, init_gain)
    raise ValueError(f"unknown generator {name!r}; valid names: {'; '.join(GENERATOR_PATTERNS)}")
