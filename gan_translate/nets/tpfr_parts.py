"""Encoder, decoders and conditional discriminator of TPFR (Svoboda, Anoosheh, Osendorfer, Masci, "Two-Stage
Peer-Regularized Feature Recombination for Arbitrary Image Style Transfer", CVPR 2020).

Recipes follow the authors' code (nnaisense/conditional-style-transfer), with the widths expressed through ``ngf``
(the paper: 64) so that tests can build narrow copies:

- ``TPFREncoder``: ReflectPad3 Conv7 -> ngf, IN, ReLU; Conv3 s2 -> 2 ngf, IN, ReLU (the "middle" feature, H/2);
  Conv3 s2 -> 4 ngf, IN, ReLU; ``n_blocks`` residual blocks (PReLU); Conv1x1 -> 12 ngf, IN, ReLU. The latent at H/4 is
  split into content z_c (the first 4 ngf channels) and style z_s (the last 8 ngf). The first half of z_s passes the
  global branch (3x [Conv3 s2, IN, ReLU], spatial mean, broadcast back to H/4); the second half stays local.
- ``TPFRDecoder`` (the aux and the main decoder are two of these): merge Conv1x1 12 ngf -> 4 ngf, IN, ReLU;
  ``n_blocks`` residual blocks; two ConvTranspose4 s2 (4 ngf -> 2 ngf -> ngf), IN, ReLU; ReflectPad3 Conv7, tanh.
- ``ConditionalNoisyDiscriminator``: a PatchGAN on [image, conditioning style image] (6 channels) plus Gaussian input
  noise (sigma 0.1): Conv4 s2 ndf, LReLU; Conv4 s2 2 ndf, IN; Conv4 s1 4 ndf, IN; Conv4 s1 8 ndf, IN; Conv4 s1 1;
  padding 2 everywhere.

All norms are InstanceNorm without affine parameters; every conv has a bias (as the authors' code under IN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gan_translate.nets.discriminators import PatchDiscriminator, PatchLayer
from gan_translate.nets.layers import upsample_conv

__all__ = [
    "InstanceNormAnySize",
    "PReLUResnetBlock",
    "TPFREncoder",
    "TPFRDecoder",
    "ConditionalNoisyDiscriminator",
    "tpfr_discriminator_recipe",
    "STRIDE",
]

STRIDE = 4  # the latent is at 1/4 resolution: images must have sides that are multiples of 4


class InstanceNormAnySize(nn.InstanceNorm2d):
    """Non-affine InstanceNorm that also accepts a 1x1 map (torch refuses one): normalising a single value gives 0.

    The global style branch halves the 1/4-resolution latent three times, which reaches 1x1 for inputs under 64 px.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=False, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] * x.shape[-2] == 1:
            return x * 0.0  # exact zeros that keep x's graph (with zero gradient, as normalising a constant has)
        return super().forward(x)


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def _conv_in_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding), _norm(out_ch), nn.ReLU()]


class PReLUResnetBlock(nn.Module):
    """x + [ReflectPad1, Conv3, IN, PReLU, ReflectPad1, Conv3, IN](x) -- the TPFR residual block (PReLU, not ReLU)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim), nn.PReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TPFREncoder(nn.Module):
    """Image -> ``{"content": z_c, "style": z_s, "middle": H/2 feature}`` (see the module docstring).

    Args:
        input_nc: image channels.
        ngf: base width (paper 64: z_c has 256 channels, z_s 512).
        n_blocks: residual blocks at 1/4 resolution (paper 6).
        global_style: pass half of z_s through the global branch (the paper's default); False keeps z_s local.
    """

    def __init__(self, input_nc: int = 3, ngf: int = 64, n_blocks: int = 6, global_style: bool = True) -> None:
        super().__init__()
        self.content_nc, self.style_nc = 4 * ngf, 8 * ngf
        self.pre = nn.Sequential(nn.ReflectionPad2d(3), *_conv_in_relu(input_nc, ngf, 7),
                                 *_conv_in_relu(ngf, 2 * ngf, 3, stride=2, padding=1))
        self.body = nn.Sequential(
            *_conv_in_relu(2 * ngf, 4 * ngf, 3, stride=2, padding=1),
            *[PReLUResnetBlock(4 * ngf) for _ in range(n_blocks)],
            *_conv_in_relu(4 * ngf, self.content_nc + self.style_nc, 1),
        )
        half = self.style_nc // 2
        self.global_branch: nn.Module | None = None
        if global_style:
            layers: list[nn.Module] = []
            for _ in range(3):
                layers += [nn.Conv2d(half, half, 3, stride=2, padding=1), InstanceNormAnySize(half), nn.ReLU()]
            self.global_branch = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        middle = self.pre(x)
        z = self.body(middle)
        content, style = z[:, : self.content_nc], z[:, self.content_nc:]
        if self.global_branch is not None:
            glob, local = style.chunk(2, dim=1)
            glob = self.global_branch(glob).mean(dim=(2, 3), keepdim=True).expand_as(local)
            style = torch.cat([glob, local], dim=1)
        return {"content": content, "style": style, "middle": middle}


class TPFRDecoder(nn.Module):
    """``[z_c, z_s]`` (12 ngf channels at 1/4 resolution) -> image in [-1, 1] at full resolution.

    Args:
        output_nc: image channels.
        ngf / n_blocks: as the encoder's.
        upsample: "transposed" (ConvTranspose4 s2 p1, the paper) or "resize" (nearest x2 + conv3).
    """

    def __init__(self, output_nc: int = 3, ngf: int = 64, n_blocks: int = 6, upsample: str = "transposed") -> None:
        super().__init__()
        latent, width = 12 * ngf, 4 * ngf
        self.merge = nn.Sequential(*_conv_in_relu(latent, width, 1))
        layers: list[nn.Module] = [PReLUResnetBlock(width) for _ in range(n_blocks)]
        for ch in (width, width // 2):
            layers += [*upsample_conv(upsample, ch, ch // 2, kernel=4, bias=True), _norm(ch // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.merge(z))


def tpfr_discriminator_recipe(ndf: int = 64) -> list[PatchLayer]:
    """The layers of TPFR's discriminator (two stride-2 and three stride-1 Conv4)."""
    return [
        PatchLayer(ndf, 4, 2),
        PatchLayer(2 * ndf, 4, 2, norm=True),
        PatchLayer(4 * ndf, 4, 1, norm=True),
        PatchLayer(8 * ndf, 4, 1, norm=True),
        PatchLayer(1, 4, 1),
    ]


class ConditionalNoisyDiscriminator(nn.Module):
    """PatchGAN judging an image together with the style image it should match; Gaussian noise of ``noise_std`` is
    added to its 2 x ``image_nc`` input channels in training mode (TPFR: 0.1) to keep D from overfitting early.

    Call: ``D(image, condition) -> patch scores (N, 1, h, w)``.
    """

    def __init__(self, image_nc: int = 3, ndf: int = 64, noise_std: float = 0.1) -> None:
        super().__init__()
        self.noise_std = noise_std
        self.generator: torch.Generator | None = None  # a CPU generator for the noise (None: torch's global one)
        self.net = PatchDiscriminator(2 * image_nc, tpfr_discriminator_recipe(ndf), norm="instance", padding=2)

    def forward(self, image: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        if condition.shape[-2:] != image.shape[-2:]:  # a style image of another size is resized to the image's
            condition = F.interpolate(condition, size=image.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([image, condition], dim=1)
        if self.training and self.noise_std > 0:
            device = "cpu" if self.generator is not None else x.device
            noise = torch.randn(x.shape, generator=self.generator, device=device, dtype=x.dtype).to(x.device)
            x = x + noise * self.noise_std
        return self.net(x)
