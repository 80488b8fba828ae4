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
            if tensor.is_floating_point() and not name.endswith("filt"):  # CUT's blur kernels are fixed
                if name.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
                elif name.endswith("weight") and tensor.dim() == 1:
                    tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=gen))
                else:
                    fan_in = tensor[0].numel() if tensor.dim() > 1 else 10
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) / fan_in ** 0.5)
    return net


# ----------------------------------------------------------------------------------------------------------------------
# naoto0804/pytorch-AdaIN (net.py, function.py)
# ----------------------------------------------------------------------------------------------------------------------


def adain_decoder() -> nn.Sequential:
    def conv(i, o):
        return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(i, o, (3, 3)), nn.ReLU()]

    up = nn.Upsample(scale_factor=2, mode="nearest")
    layers = [*conv(512, 256), up, *conv(256, 256), *conv(256, 256), *conv(256, 256), *conv(256, 128),
              nn.Upsample(scale_factor=2, mode="nearest"), *conv(128, 128), *conv(128, 64),
              nn.Upsample(scale_factor=2, mode="nearest"), *conv(64, 64), nn.ReflectionPad2d((1, 1, 1, 1)),
              nn.Conv2d(64, 3, (3, 3))]
    return nn.Sequential(*layers)


def adain_vgg(upto: int = 31) -> nn.Sequential:
    """The normalised VGG of net.py (53 modules), cut at ``upto`` as test.py does (relu4_1)."""
    def conv(i, o):
        return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(i, o, (3, 3)), nn.ReLU()]

    def pool():
        return nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)

    layers = [nn.Conv2d(3, 3, (1, 1)), *conv(3, 64), *conv(64, 64), pool(), *conv(64, 128), *conv(128, 128), pool(),
              *conv(128, 256), *conv(256, 256), *conv(256, 256), *conv(256, 256), pool(), *conv(256, 512),
              *conv(512, 512), *conv(512, 512), *conv(512, 512), pool(), *conv(512, 512), *conv(512, 512),
              *conv(512, 512), *conv(512, 512)]
    assert len(layers) == 53
    return nn.Sequential(*layers[:upto])


def adain_mean_std(feat, eps=1e-5):
    n, c = feat.shape[:2]
    var = feat.view(n, c, -1).var(dim=2) + eps
    return feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def adain_style_transfer(vgg, decoder, content, style, alpha=1.0):
    """test.py's style_transfer on images in [0, 1]."""
    content_f, style_f = vgg(content), vgg(style)
    s_mean, s_std = adain_mean_std(style_f)
    c_mean, c_std = adain_mean_std(content_f)
    feat = (content_f - c_mean) / c_std * s_std + s_mean
    return decoder(feat * alpha + content_f * (1 - alpha))


# ----------------------------------------------------------------------------------------------------------------------
# nnaisense/conditional-style-transfer (models/networks.py ResnetGeneratorResidual, models/layers.py)
# ----------------------------------------------------------------------------------------------------------------------


def _inorm(c):
    return nn.InstanceNorm2d(c, affine=False, track_running_stats=False)


class TPFRBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _inorm(dim), nn.PReLU(),
                                        nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _inorm(dim))

    def forward(self, x):
        return x + self.conv_block(x)


class TPFRPeerBidir(nn.Module):
    def __init__(self, att_dim, k=5):
        super().__init__()
        self.k = k

        def mlp(d):
            return nn.Sequential(nn.Linear(d, d // 2), nn.BatchNorm1d(d // 2), nn.ReLU(), nn.Linear(d // 2, d // 4),
                                 nn.BatchNorm1d(d // 4), nn.ReLU())

        self.transf_att_cont, self.transf_att_sty = mlp(att_dim), mlp(2 * att_dim)
        self.conv_att1_cont = nn.Conv1d(1, 1, att_dim // 4)
        self.conv_att2_cont = nn.Conv1d(1, 1, att_dim // 4)
        self.conv_att1_sty = nn.Conv1d(1, 1, att_dim // 2)
        self.conv_att2_sty = nn.Conv1d(1, 1, att_dim // 2)

    @staticmethod
    def pixels(fmap):
        return fmap.transpose(1, 0).contiguous().view(fmap.shape[1], -1).transpose(1, 0)

    def recompose(self, keys, peer_keys, peer_values, mlp, att1, att2):
        dist = torch.cdist(keys, peer_keys) ** 2
        top = torch.topk(dist, self.k, largest=False, sorted=True).values
        a = att1(mlp(keys).unsqueeze(1)) + att2(mlp(peer_keys).unsqueeze(1)).transpose(1, 0)
        a = a[:, :, 0]
        mask = torch.gt(dist, top[:, self.k - 1:self.k]).float() * -1e9
        return torch.softmax(torch.nn.functional.softplus(a) + mask, dim=1) @ peer_values

    def forward(self, inp, peers):
        (c, s), (pc, ps) = inp, peers
        ic, is_, qc, qs = (self.pixels(t) for t in (c, s, pc, ps))
        new_s = self.recompose(ic, qc, qs, self.transf_att_cont, self.conv_att1_cont, self.conv_att2_cont)
        new_c = self.recompose(new_s, qs, qc, self.transf_att_sty, self.conv_att1_sty, self.conv_att2_sty)

        def fmap(p, shape):
            return p.transpose(1, 0).view(shape[1], shape[0], shape[2], shape[3]).transpose(1, 0)

        return torch.cat([fmap(new_c, c.shape), fmap(new_s, s.shape)], 1)


class TPFRGenerator(nn.Module):
    def __init__(self, ngf=64, n_blocks=6, io=3):
        super().__init__()
        self.n_cont = 4 * ngf
        self.model_enc_pre = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(io, ngf, 7), _inorm(ngf), nn.ReLU(),
                                           nn.Conv2d(ngf, 2 * ngf, 3, 2, 1), _inorm(2 * ngf), nn.ReLU())
        self.model_enc = nn.Sequential(nn.Conv2d(2 * ngf, 4 * ngf, 3, 2, 1), _inorm(4 * ngf), nn.ReLU(),
                                       *[TPFRBlock(4 * ngf) for _ in range(n_blocks)],
                                       nn.Conv2d(4 * ngf, 12 * ngf, 1), _inorm(12 * ngf), nn.ReLU())
        half = 4 * ngf
        self.model_enc_global = nn.Sequential(*[m for _ in range(3) for m in
                                                (nn.Conv2d(half, half, 3, 2, 1), _inorm(half), nn.ReLU())])
        self.model_peer_reg = nn.Sequential(TPFRPeerBidir(4 * ngf))

        def merge():
            return nn.Sequential(nn.Conv2d(12 * ngf, 4 * ngf, 1), _inorm(4 * ngf), nn.ReLU())

        def decoder():
            return nn.Sequential(*[TPFRBlock(4 * ngf) for _ in range(n_blocks)],
                                 nn.ConvTranspose2d(4 * ngf, 2 * ngf, 4, 2, 1), _inorm(2 * ngf), nn.ReLU(),
                                 nn.ConvTranspose2d(2 * ngf, ngf, 4, 2, 1), _inorm(ngf), nn.ReLU(),
                                 nn.ReflectionPad2d(3), nn.Conv2d(ngf, io, 7), nn.Tanh())

        self.model_merge, self.model_merge_aux = merge(), merge()
        self.model_dec, self.model_dec_aux = decoder(), decoder()

    def encode(self, x):
        pre = self.model_enc_pre(x)
        z = self.model_enc(pre)
        cont, style = z[:, :self.n_cont], z[:, self.n_cont:]
        glob, loc = torch.split(style, style.shape[1] // 2, dim=1)
        glob = self.model_enc_global(glob).mean(dim=2, keepdim=True).mean(dim=3, keepdim=True).expand_as(loc)
        return cont, torch.cat([glob, loc], 1)

    def stylize_image(self, content, style):
        return self.model_merge_dec(self.model_peer_reg[0](self.encode(content), self.encode(style)))

    def model_merge_dec(self, z):
        return self.model_dec(self.model_merge(z))


# ----------------------------------------------------------------------------------------------------------------------
# taesungp/contrastive-unpaired-translation (models/networks.py: antialiased ResnetGenerator, Downsample, Upsample)
# ----------------------------------------------------------------------------------------------------------------------


class CUTDownsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = a[:, None] * a[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))
        self.pad = nn.ReflectionPad2d([1, 1, 1, 1])

    def forward(self, x):
        return torch.nn.functional.conv2d(self.pad(x), self.filt, stride=2, groups=x.shape[1])


class CUTUpsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        a = torch.tensor([1.0, 3.0, 3.0, 1.0])
        filt = a[:, None] * a[None, :]
        self.register_buffer("filt", (filt / filt.sum() * 4)[None, None].repeat(channels, 1, 1, 1))
        self.pad = nn.ReplicationPad2d([1, 1, 1, 1])

    def forward(self, x):
        out = torch.nn.functional.conv_transpose2d(self.pad(x), self.filt, stride=2, padding=2, groups=x.shape[1])
        return out[:, :, 1:, 1:][:, :, :-1, :-1]


class CUTResnetGenerator(nn.Module):
    def __init__(self, input_nc=3, output_nc=3, ngf=64, n_blocks=9):
        super().__init__()
        norm_layer, use_bias = reference_norm("instance")
        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=use_bias), norm_layer(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=1, padding=1, bias=use_bias),
                      norm_layer(ngf * mult * 2), nn.ReLU(True), CUTDownsample(ngf * mult * 2)]
        model += [RefResnetBlock(ngf * 4, norm_layer, False, use_bias) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [CUTUpsample(ngf * mult), nn.Conv2d(ngf * mult, ngf * mult // 2, 3, stride=1, padding=1,
                                                         bias=use_bias), norm_layer(ngf * mult // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)
