"""The image transformation network of fast style transfer: Johnson, Alahi & Fei-Fei (ECCV 2016) with Ulyanov et al.'s
instance norm, and its conditional form for many styles (Dumoulin, Shlens & Kudlur, ICLR 2017).

Layout ``c9s1-W, d2W, d4W, R4W x 5, u2W, uW, c9s1-3`` (W = ``ngf``: 32 in the paper, 16 for the authors' released
instance-norm models). Variants (``FastStyleNet`` arguments):

- ``padding="reflect"``: reflection padding of k // 2 before every convolution (pytorch/examples, magenta,
  texture_nets); residual blocks keep their size and add the identity. Any input that is a multiple of 4.
- ``padding="reflect_start"``: the authors' Lua layout: one reflection pad of 40 px at the input, zero-padded
  convolutions, residual blocks with unpadded 3x3 convolutions whose shortcut is the input centre-cropped by 2 px per
  side. 256 -> 336 -> 168 -> 84 -> (5 blocks, -4 each) 64 -> 128 -> 256: the output has the input's size.
- ``upsample="transposed"`` (3x3 stride-2 transposed convolutions, the paper) or ``"resize"`` (nearest x2 then a 3x3
  convolution, against checkerboard artefacts: pytorch/examples, magenta).
- ``norm="instance"``: instance norm (statistics of each image, at training and test time alike) whose scale and
  shift are chosen per style: (gamma, beta) of shape (n_styles, C) per layer. With one style this is the affine
  instance norm of the single-style network. ``norm="batch"``: the paper's BatchNorm (one style only).
- ``output``: the pixel range the network works in, at its input and output alike --
  ``tanh``: RGB in [-1, 1], tanh output; ``tanh150``: the authors' Caffe range (BGR 0..255 minus the mean pixel),
  output 150 tanh(y); ``linear``: RGB 0..255, no output activation (pytorch/examples; clamped when saved); ``sigmoid``:
  RGB in [0, 1], sigmoid output (magenta). ``forward`` always takes and returns platform images in [-1, 1].
- ``conv_bias`` (convolutions with biases; magenta drops them) and ``final_norm`` (a normalisation after the last
  convolution, before the sigmoid: magenta).

Parameters (``count`` in the tests): 1,679,235 at W = 32 and 424,899 at W = 16 with biases and affine IN; magenta's
layout 1,674,432 + 3,206 per style.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gan_translate.nets.channels_last import instance_norm

__all__ = [
    "CAFFE_MEAN_BGR",
    "OUTPUTS",
    "PADDINGS",
    "STRIDE",
    "ConditionalInstanceNorm",
    "FastStyleNet",
    "TotalVariationGrad",
    "lua_total_variation",
    "median_filter3",
    "style_weights",
]

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
OUTPUTS = ("tanh", "tanh150", "linear", "sigmoid")
PADDINGS = ("reflect", "reflect_start")
NORMS = ("instance", "batch")
UPSAMPLES = ("transposed", "resize")
STRIDE = 4  # two stride-2 convolutions
START_PAD = 40  # the authors' reflection pad at the input
TANH_CONSTANT = 150.0


def style_weights(labels: torch.Tensor, n_styles: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot mixing weights (B, n_styles) for per-element style indices (B,)."""
    return F.one_hot(labels.long(), n_styles).to(dtype)


class ConditionalInstanceNorm(nn.Module):
    """Instance norm with a (gamma, beta) per style: y = (sum_s w_s gamma_s) (x - mu) / sigma + (sum_s w_s beta_s).

    ``weight`` and ``bias`` are (n_styles, C); ``mix`` (B, n_styles) gives each batch element its own weights, used
    as given (one-hot = one style; magenta does not normalise blends either). Statistics are always the image's own
    (no running statistics), in training and in eval mode.
    """

    def __init__(self, channels: int, n_styles: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_styles, channels))
        self.bias = nn.Parameter(torch.zeros(n_styles, channels))

    @property
    def n_styles(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        normed = instance_norm(x, self.eps)  # F.instance_norm, with a fast path for NHWC inference (channels_last)
        mix = mix.to(self.weight.dtype)
        gamma, beta = mix @ self.weight, mix @ self.bias  # (B, C)
        return normed * gamma[:, :, None, None].to(x.dtype) + beta[:, :, None, None].to(x.dtype)


class _Norm(nn.Module):
    """BatchNorm behind the conditional norm's call signature (the mixing weights are ignored)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


def _norm(kind: str, channels: int, n_styles: int) -> nn.Module:
    return ConditionalInstanceNorm(channels, n_styles) if kind == "instance" else _Norm(channels)


class ConvLayer(nn.Module):
    """Convolution with the layout's padding: a reflection pad of k // 2 before a valid convolution, or zero padding
    inside it (``reflect_start``), or none (``valid``: the residual blocks of ``reflect_start``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, *, padding: str, bias: bool,
                 upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d(kernel // 2) if padding == "reflect" else nn.Identity()
        zero = kernel // 2 if padding == "reflect_start" else 0
        self.conv2d = nn.Conv2d(c_in, c_out, kernel, stride, padding=zero, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv2d(self.pad(x))


class ResidualBlock(nn.Module):
    """[conv3x3, norm, ReLU, conv3x3, norm] + shortcut, no ReLU after the sum. Unpadded in ``reflect_start``, where
    the shortcut is the input centre-cropped by 2 px per side."""

    def __init__(self, channels: int, n_styles: int, *, norm: str, padding: str, bias: bool) -> None:
        super().__init__()
        inner = "valid" if padding == "reflect_start" else padding
        self.crop = 2 if padding == "reflect_start" else 0
        self.conv1 = ConvLayer(channels, channels, 3, padding=inner, bias=bias)
        self.in1 = _norm(norm, channels, n_styles)
        self.conv2 = ConvLayer(channels, channels, 3, padding=inner, bias=bias)
        self.in2 = _norm(norm, channels, n_styles)

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        y = self.in2(self.conv2(F.relu(self.in1(self.conv1(x), mix))), mix)
        c = self.crop
        shortcut = x[..., c:x.shape[-2] - c, c:x.shape[-1] - c] if c else x
        return shortcut + y


class FastStyleNet(nn.Module):
    """The transformation network (see the module docstring). ``forward(x, mix)``: platform images (B, 3, H, W) in
    [-1, 1] with H, W multiples of ``STRIDE`` and mixing weights (B, n_styles) -> stylised images in [-1, 1] (not
    clamped for the ``linear`` output)."""

    stride = STRIDE  # test scales snap to it (inference.generator_stride)

    def __init__(self, ngf: int = 32, n_styles: int = 1, *, norm: str = "instance", padding: str = "reflect",
                 upsample: str = "transposed", output: str = "tanh", conv_bias: bool = True,
                 final_norm: bool = False, n_blocks: int = 5) -> None:
        super().__init__()
        for value, valid, what in ((norm, NORMS, "norm"), (padding, PADDINGS, "padding"),
                                   (upsample, UPSAMPLES, "upsample"), (output, OUTPUTS, "output")):
            if value not in valid:
                raise ValueError(f"{what} must be one of {valid}, got {value!r}")
        if norm == "batch" and n_styles != 1:
            raise ValueError("BatchNorm has no per-style parameters: one style only")
        self.output, self.padding, self.n_styles_built = output, padding, n_styles
        w = ngf
        kw = {"padding": padding, "bias": conv_bias}
        self.conv1 = ConvLayer(3, w, 9, **kw)
        self.in1 = _norm(norm, w, n_styles)
        self.conv2 = ConvLayer(w, 2 * w, 3, 2, **kw)
        self.in2 = _norm(norm, 2 * w, n_styles)
        self.conv3 = ConvLayer(2 * w, 4 * w, 3, 2, **kw)
        self.in3 = _norm(norm, 4 * w, n_styles)
        self.res = nn.ModuleList(ResidualBlock(4 * w, n_styles, norm=norm, padding=padding, bias=conv_bias)
                                 for _ in range(n_blocks))
        if upsample == "transposed":
            self.up1: nn.Module = nn.ConvTranspose2d(4 * w, 2 * w, 3, 2, padding=1, output_padding=1, bias=conv_bias)
            self.up2: nn.Module = nn.ConvTranspose2d(2 * w, w, 3, 2, padding=1, output_padding=1, bias=conv_bias)
        else:
            self.up1 = ConvLayer(4 * w, 2 * w, 3, upsample=True, **kw)
            self.up2 = ConvLayer(2 * w, w, 3, upsample=True, **kw)
        self.in4 = _norm(norm, 2 * w, n_styles)
        self.in5 = _norm(norm, w, n_styles)
        self.conv_out = ConvLayer(w, 3, 9, **kw)
        self.in_out = _norm(norm, 3, n_styles) if final_norm else None
        in_w, in_b, out_w, out_b = _pixel_maps(output)
        self.register_buffer("in_weight", in_w, persistent=False)
        self.register_buffer("in_bias", in_b, persistent=False)
        self.register_buffer("out_weight", out_w, persistent=False)
        self.register_buffer("out_bias", out_b, persistent=False)

    def norms(self) -> list[nn.Module]:
        """Every normalisation layer, in order."""
        return [m for m in self.modules() if isinstance(m, (ConditionalInstanceNorm, _Norm))]

    @property
    def n_styles(self) -> int:
        norms = [m for m in self.norms() if isinstance(m, ConditionalInstanceNorm)]
        return norms[0].n_styles if norms else 1

    def to_network(self, x: torch.Tensor) -> torch.Tensor:
        """Platform images -> the network's pixel range (a per-pixel affine map, with the RGB->BGR flip for Caffe)."""
        return F.conv2d(x, self.in_weight.to(x.dtype), self.in_bias.to(x.dtype))

    def from_network(self, y: torch.Tensor) -> torch.Tensor:
        """The network's pixel range -> platform images (the inverse of ``to_network``)."""
        return F.conv2d(y, self.out_weight.to(y.dtype), self.out_bias.to(y.dtype))

    def raw(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """The network in its own pixel range, after its output activation."""
        h = self.to_network(x)
        if self.padding == "reflect_start":
            small = min(h.shape[-2:]) <= START_PAD  # reflection needs a pad below the size; replicate then
            h = F.pad(h, (START_PAD,) * 4, mode="replicate" if small else "reflect")
        h = F.relu(self.in1(self.conv1(h), mix))
        h = F.relu(self.in2(self.conv2(h), mix))
        h = F.relu(self.in3(self.conv3(h), mix))
        for block in self.res:
            h = block(h, mix)
        h = F.relu(self.in4(self.up1(h), mix))
        h = F.relu(self.in5(self.up2(h), mix))
        h = self.conv_out(h)
        if self.in_out is not None:
            h = self.in_out(h, mix)
        if self.output == "tanh":
            return torch.tanh(h)
        if self.output == "tanh150":
            return TANH_CONSTANT * torch.tanh(h)
        if self.output == "sigmoid":
            return torch.sigmoid(h)
        return h

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None, tv_strength: float = 0.0) -> torch.Tensor:
        if mix is None:
            if self.n_styles != 1:
                raise ValueError("a network of several styles needs the mixing weights (B, n_styles)")
            mix = x.new_ones(x.shape[0], 1)
        raw = self.raw(x, mix)
        if tv_strength > 0:
            raw = TotalVariationGrad.apply(raw, tv_strength)
        return self.from_network(raw)


def _pixel_maps(output: str) -> tuple[torch.Tensor, ...]:
    """(in weight 3x3x1x1, in bias, out weight, out bias) between platform RGB in [-1, 1] and the network's range."""
    eye = torch.eye(3)
    if output == "tanh":
        a, b = eye, torch.zeros(3)
    elif output == "sigmoid":
        a, b = 0.5 * eye, torch.full((3,), 0.5)
    elif output == "linear":
        a, b = 127.5 * eye, torch.full((3,), 127.5)
    else:  # Caffe: BGR 0..255 minus the mean pixel; channel c of BGR is channel 2 - c of RGB
        a = 127.5 * eye.flip(0)
        b = 127.5 - torch.tensor(CAFFE_MEAN_BGR)
    inverse = torch.linalg.inv(a)
    return a.view(3, 3, 1, 1), b, inverse.view(3, 3, 1, 1), -(inverse @ b)


# ----------------------------------------------------------------------------------------------------------------------
# Total variation (the authors' layer) and the test-time median filter
# ----------------------------------------------------------------------------------------------------------------------


def lua_total_variation(x: torch.Tensor) -> torch.Tensor:
    """0.5 * sum over the (H-1) x (W-1) interior of the squared horizontal and vertical differences (summed over the
    batch), whose gradient the authors' TotalVariation layer adds."""
    core = x[..., :-1, :-1]
    return 0.5 * ((core - x[..., :-1, 1:]) ** 2 + (core - x[..., 1:, :-1]) ** 2).sum()


class TotalVariationGrad(torch.autograd.Function):
    """Identity forward; backward adds ``strength`` x the gradient of ``lua_total_variation`` (written out, as the
    authors' layer does, so that no second graph is built)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        core = x[..., :-1, :-1]
        dx = core - x[..., :-1, 1:]
        dy = core - x[..., 1:, :-1]
        tv = torch.zeros_like(x)
        tv[..., :-1, :-1] += dx + dy
        tv[..., :-1, 1:] -= dx
        tv[..., 1:, :-1] -= dy
        return grad + ctx.strength * tv, None


def median_filter3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median per channel with replicated borders (the authors' test-time ``-median_filter 3``)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    windows = F.unfold(padded.reshape(n * c, 1, h + 2, w + 2), 3)  # (N*C, 9, H*W)
    return windows.median(dim=1).values.view(n, c, h, w)

