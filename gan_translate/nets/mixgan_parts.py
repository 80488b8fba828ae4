"""The networks of MIXGAN (Hao, Yu, Zheng, "MIXGAN: Learning Concepts from Different Domains for Mixture
Generation", IJCAI 2018), after the authors' released code (GuangyuanHao/MIXGAN).

- ``ContentEncoder``: content image -> code z (the adversarial autoencoder's encoder);
- ``LatentDiscriminator``: tells codes drawn from the prior from the encoder's codes;
- ``ContentDecoder`` (G_c): z -> content image, and its last feature map with the image appended;
- ``MixtureDecoder`` (G_m): G_c's features -> an image with the style domain's colours;
- ``style_patch_recipe``: the layer recipe of the patch style discriminator D_p (a ``PatchDiscriminator``).

Sizes: the paper works at 64x64; here any power of two from 32 to 256. The encoder's stride-2 convolutions (and G_c's
upsamplings) follow the size so that the bottleneck is always 4x4. The fully connected layers carry BatchNorm as in
the paper; the convolutions use the norm the options name (instance by default). Conv biases follow the platform's
rule (none under BatchNorm), so counts differ slightly from the TensorFlow code, which has no conv biases at all.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gan_translate.nets.discriminators import PatchLayer
from gan_translate.nets.generators import ResnetBlock
from gan_translate.nets.layers import conv_bias, norm_layer, upsample_conv

__all__ = [
    "BOTTLENECK",
    "LATENT_D_SIDE",
    "MIN_SIZE",
    "MAX_SIZE",
    "ContentDecoder",
    "ContentEncoder",
    "LatentDiscriminator",
    "MixtureDecoder",
    "check_size",
    "style_patch_recipe",
]

BOTTLENECK = 4  # side of the encoder's last feature map and of G_c's first one
LATENT_D_SIDE = 32  # the latent D lifts z to a LATENT_D_SIDE^2 x ngf map before its convolutions (as released)
MIN_SIZE, MAX_SIZE = 32, 256


def check_size(size: int) -> int:
    """The number of stride-2 stages between ``size`` and the 4x4 bottleneck; ``size`` must be a power of two in
    [32, 256]."""
    if not MIN_SIZE <= size <= MAX_SIZE or size & (size - 1):
        raise ValueError(f"MIXGAN image size must be a power of two from {MIN_SIZE} to {MAX_SIZE}, got {size}")
    return int(math.log2(size // BOTTLENECK))


def _fc(in_features: int, out_features: int) -> list[nn.Module]:
    """Linear, BatchNorm, ReLU (no bias: the norm's shift replaces it)."""
    return [nn.Linear(in_features, out_features, bias=False), nn.BatchNorm1d(out_features), nn.ReLU(True)]


def encoder_multipliers(stages: int) -> list[int]:
    """Channel multipliers (x ngf) of the encoder's stride-2 convolutions; 64 px (4 stages) gives the paper's
    2, 4, 4, 8. Other sizes keep the start (2, 4, 4, ...) and end at 8."""
    return [2, 4, 4, 8, 8, 8][: stages - 1] + [8]


def decoder_multipliers(stages: int) -> list[int]:
    """Channel multipliers of G_c's upsamplings before the residual blocks (ending at 4 ngf, the blocks' width); the
    last two upsamplings (2 ngf, ngf) come after the blocks. 64 px gives the paper's 8, 4."""
    return [8] * (stages - 3) + [4]


class ContentEncoder(nn.Module):
    """Content image (N, input_nc, S, S) -> code (N, z_dim).

    ReflectPad3 Conv7 ngf ReLU; Conv3 s2 + norm + ReLU down to 4x4 (2, 4, 4, 8 x ngf at 64 px); flatten;
    FC fc_dim, fc_dim, fc_dim/2 (BatchNorm, ReLU); FC z_dim, linear.
    """

    def __init__(self, input_nc: int, size: int, *, ngf: int = 32, z_dim: int = 2048, fc_dim: int = 2048,
                 norm: str = "instance") -> None:
        super().__init__()
        stages = check_size(size)
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7), nn.ReLU(True)]
        channels = ngf
        for mult in encoder_multipliers(stages):
            layers += [nn.Conv2d(channels, ngf * mult, 3, stride=2, padding=1, bias=bias), make_norm(ngf * mult),
                       nn.ReLU(True)]
            channels = ngf * mult
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            *_fc(channels * BOTTLENECK**2, fc_dim), *_fc(fc_dim, fc_dim), *_fc(fc_dim, fc_dim // 2),
            nn.Linear(fc_dim // 2, z_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))

    @torch.no_grad()
    def init_code_scale(self, std: float) -> None:
        """Re-initialises the output layer so that the codes start with about ``std`` per dimension: its inputs are
        ReLU(BatchNorm(.)) with a second moment of 1/2, so weights of std sqrt(2 / fan_in) give unit variance (He)."""
        last = self.fc[-1]
        last.weight.normal_(0.0, std * math.sqrt(2.0 / last.in_features))
        last.bias.zero_()


class ContentDecoder(nn.Module):
    """G_c: code (N, z_dim) -> (content image (N, output_nc, S, S), features (N, ngf + output_nc, S, S)).

    FC fc_dim/2, fc_dim, fc_dim (BatchNorm, ReLU); FC 8 ngf x 4 x 4, reshaped, norm, ReLU; upsamplings (x2, 3x3
    conv, norm, ReLU) to 4 ngf (8 ngf then 4 ngf at 64 px); ``n_blocks`` residual blocks at 4 ngf; upsamplings to
    2 ngf and ngf; ReflectPad3 Conv7 to the image, tanh. The features are the last ngf-channel map with the image
    appended (33 channels at the paper's sizes): what G_m paints.

    ``upsample="resize"`` (nearest x2 + Conv3, the default) departs from the paper's Deconv3 s2 (``"transposed"``,
    same parameter count): transposed convolutions stamp a stride-2 lattice on the features, and G_m, which only a
    patch discriminator trains, learns to paint that lattice (one window grid on every input) instead of G_c's
    content.
    """

    def __init__(self, output_nc: int, size: int, *, ngf: int = 32, z_dim: int = 2048, fc_dim: int = 2048,
                 n_blocks: int = 6, norm: str = "instance", upsample: str = "resize") -> None:
        super().__init__()
        stages = check_size(size)
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        self.base_channels = ngf * 8
        self.fc = nn.Sequential(
            *_fc(z_dim, fc_dim // 2), *_fc(fc_dim // 2, fc_dim), *_fc(fc_dim, fc_dim),
            nn.Linear(fc_dim, self.base_channels * BOTTLENECK**2),
        )
        layers: list[nn.Module] = [make_norm(self.base_channels), nn.ReLU(True)]
        channels = self.base_channels
        for mult in decoder_multipliers(stages):
            layers += [*upsample_conv(upsample, channels, ngf * mult, kernel=3, bias=bias), make_norm(ngf * mult),
                       nn.ReLU(True)]
            channels = ngf * mult
        layers += [ResnetBlock(channels, norm=norm) for _ in range(n_blocks)]
        for mult in (2, 1):
            layers += [*upsample_conv(upsample, channels, ngf * mult, kernel=3, bias=bias), make_norm(ngf * mult),
                       nn.ReLU(True)]
            channels = ngf * mult
        self.body = nn.Sequential(*layers)
        self.to_image = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh())
        self.feature_channels = ngf + output_nc

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.fc(z).view(z.shape[0], self.base_channels, BOTTLENECK, BOTTLENECK)
        features = self.body(x)
        image = self.to_image(features)
        return image, torch.cat([features, image], 1)


class MixtureDecoder(nn.Module):
    """G_m: G_c's features (N, C, S, S) -> image (N, output_nc, S, S) in the style domain.

    Deconv3 s1 2 ngf, norm, ReLU; concatenated with its input (2 ngf + C channels, 97 at the paper's sizes);
    ReflectPad3 Conv7 to the image, tanh. Shallow on purpose: it may recolour and retexture, not redraw the shapes.
    """

    def __init__(self, feature_channels: int, output_nc: int, *, ngf: int = 32, norm: str = "instance") -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        self.expand = nn.Sequential(nn.ConvTranspose2d(feature_channels, ngf * 2, 3, padding=1, bias=bias),
                                    make_norm(ngf * 2), nn.ReLU(True))
        self.to_image = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf * 2 + feature_channels, output_nc, 7),
                                      nn.Tanh())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.to_image(torch.cat([self.expand(features), features], 1))


class LatentDiscriminator(nn.Module):
    """Prior sample or encoder code (N, z_dim) -> score (N, 1).

    FC to a 32x32 x ``lift_channels`` map; Conv4 s2 ndf, 2, 4, 8 ndf (norm from the second), LeakyReLU 0.2 each,
    down to 2x2; FC to one score.
    """

    def __init__(self, z_dim: int, *, lift_channels: int = 32, ndf: int = 64, norm: str = "instance") -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        self.lift_channels = lift_channels
        self.lift = nn.Linear(z_dim, lift_channels * LATENT_D_SIDE**2)
        layers: list[nn.Module] = []
        channels = lift_channels
        for index, mult in enumerate((1, 2, 4, 8)):
            use_norm = index > 0
            layers.append(nn.Conv2d(channels, ndf * mult, 4, stride=2, padding=1, bias=bias or not use_norm))
            if use_norm:
                layers.append(make_norm(ndf * mult))
            layers.append(nn.LeakyReLU(0.2, True))
            channels = ndf * mult
        self.conv = nn.Sequential(*layers)
        side = LATENT_D_SIDE // 2**4
        self.score = nn.Linear(channels * side * side, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.lift(z).view(z.shape[0], self.lift_channels, LATENT_D_SIDE, LATENT_D_SIDE)
        return self.score(self.conv(x).flatten(1))


def style_patch_recipe(ndf: int = 64) -> list[PatchLayer]:
    """D_p's layers (use with ``padding="same"``): Conv4 ndf; Conv2 2 ndf + norm; Conv1 4 ndf + norm; Conv4 -> 1, all
    stride 1. The 8x8 receptive field sees local colour and texture, not shapes."""
    return [
        PatchLayer(ndf, 4, 1),
        PatchLayer(ndf * 2, 2, 1, norm=True),
        PatchLayer(ndf * 4, 1, 1, norm=True),
        PatchLayer(1, 4, 1),
    ]
