"""The source projects' networks, written in the tests from the layouts in specs/IMPORT.md (module order, biases,
in-place activations), so that an imported file can be checked against the network that wrote it."""

from __future__ import annotations

import functools

import torch
from torch import nn


def reference_norm(norm: str, track_running_stats: bool = False):
    """The reference's get_norm_layer; ``track_running_stats`` = its 2018-06..10 InstanceNorm."""
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True), False
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=track_running_stats), True
    return (lambda channels: nn.Identity()), False


class RefResnetBlock(nn.Module):
    def __init__(self, dim, norm_layer, use_dropout, use_bias):
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class RefResnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, ngf=64, norm="instance", use_dropout=False, n_blocks=9,
                 track_running_stats=False):
        super().__init__()
        norm_layer, use_bias = reference_norm(norm, track_running_stats)
        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=use_bias), norm_layer(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                      norm_layer(ngf * mult * 2), nn.ReLU(True)]
        for _ in range(n_blocks):
            model.append(RefResnetBlock(ngf * 4, norm_layer, use_dropout, use_bias))
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                                         bias=use_bias), norm_layer(ngf * mult // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


class RefUnetBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm_layer=nn.BatchNorm2d, use_bias=False, use_dropout=False):
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)  # in place, as the reference: the skip below carries its output
        downnorm, uprelu, upnorm = norm_layer(inner_nc), nn.ReLU(True), norm_layer(outer_nc)
        if outermost:
            model = [downconv, submodule, uprelu, nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1), nn.Tanh()]
        elif innermost:
            model = [downrelu, downconv, uprelu, nn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=use_bias),
                     upnorm]
        else:
            model = [downrelu, downconv, downnorm, submodule, uprelu,
                     nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=use_bias), upnorm]
            if use_dropout:
                model.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class RefUnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, num_downs, ngf=64, norm="batch", use_dropout=False):
        super().__init__()
        norm_layer, use_bias = reference_norm(norm)
        kw = dict(norm_layer=norm_layer, use_bias=use_bias)
        block = RefUnetBlock(ngf * 8, ngf * 8, innermost=True, **kw)
        for _ in range(num_downs - 5):
            block = RefUnetBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout, **kw)
        for mult in (4, 2, 1):
            block = RefUnetBlock(ngf * mult, ngf * mult * 2, submodule=block, **kw)
        self.model = RefUnetBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, **kw)

    def forward(self, x):
        return self.model(x)


class RefNLayerDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf=64, n_layers=3, norm="batch"):
        super().__init__()
        norm_layer, use_bias = reference_norm(norm)
        seq = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=use_bias), norm_layer(ndf * mult),
                    nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=use_bias), norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights of a realistic scale, and random BatchNorm statistics (so eval mode is tested too)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
                elif name.endswith("weight") and tensor.dim() == 1:
                    tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=gen))
                else:
                    fan_in = tensor[0].numel() if tensor.dim() > 1 else 10
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) / fan_in ** 0.5)
    return net
