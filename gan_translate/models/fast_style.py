"""Fast style transfer: one feed-forward network per style (Johnson, Alahi & Fei-Fei, ECCV 2016, with Ulyanov et al.'s
instance norm), or many styles in one network by conditional instance norm (Dumoulin, Shlens & Kudlur, ICLR 2017).

The network (``nets/fast_style.py``) is trained with the perceptual loss of a frozen VGG: content = MSE of the
activations at ``content_layers`` (relu2_2, the paper's choice), style = per-layer MSE of Gram matrices at
``style_layers`` (relu1_2, relu2_2, relu3_3, relu4_3) against the style image's Grams, computed once, at
``style_size``, before training. Every class of ``dataroot/style/`` (an image, or a subfolder of images whose Grams are
averaged) is one style; with several, each batch element carries its own style (the dataset's label) and the network
selects that style's (gamma, beta) in every instance norm. ``--add_styles_to RUN`` appends the styles of
``dataroot/style/`` to a trained network and trains only their (gamma, beta).

The loss is pinned to the VGG and its preprocessing, as the published weights only mean something with them
(``../shared/specs/STYLE-FAMILY-2.md`` section 0): VGG-16 when ``--vgg_weights`` gives torchvision's VGG-16, else
VGG-19 with the same layer names. Caffe weights see BGR 0..255 minus the mean and the losses are taken on its true
activations (Johnson's Lua code: Gram / (C H W), MSE, content 1, style 5 per layer); torchvision weights see
ImageNet-normalised [0, 1] inputs (pytorch/examples: content 1e5, style 1e10). ``--gram_norm hw`` is magenta's
F F^T / (H W) (style 1e-4 per layer on the Caffe scale). ``content_weight``/``style_weight`` 0 take these values;
the run's config records the VGG, the weights and the numbers used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gan_translate.config import TrainOptions, choice, opt
from gan_translate.errors import UserError
from gan_translate.models.base import StepContext, TranslationModel, register_model
from gan_translate.nets import pad_to_multiple
from gan_translate.nets.fast_style import (
    OUTPUTS,
    PADDINGS,
    STRIDE,
    ConditionalInstanceNorm,
    FastStyleNet,
    lua_total_variation,
    median_filter3,
    style_weights,
)
from gan_translate.nets.vgg import RANDOM_WEIGHTS, VGG_KINDS
from gan_translate.nets.vgg16 import build_perceptual_vgg
from gan_translate.nets.vgg_weights import CAFFE_SCALE

ARCHS = {
    # the paper's layout with reflection padding at every convolution and a tanh onto the platform's [-1, 1]
    "johnson": {"padding": "reflect", "upsample": "transposed", "output_layer": "tanh", "conv_bias": True,
                "final_norm": False},
    # the authors' Lua code: pad 40, valid residual blocks, 150 tanh in the Caffe range, TV layer, median filter
    "johnson_lua": {"padding": "reflect_start", "upsample": "transposed", "output_layer": "tanh150",
                    "conv_bias": True, "final_norm": False, "tv_weight": 1e-6, "median_filter": True},
    # pytorch/examples' TransformerNet: reflection padding, resize-convolution, no output activation (0..255)
    "examples": {"padding": "reflect", "upsample": "resize", "output_layer": "linear", "conv_bias": True,
                 "final_norm": False},
    # magenta's image_stylization: resize-convolution, no conv biases, a normalised last layer, sigmoid
    "magenta": {"padding": "reflect", "upsample": "resize", "output_layer": "sigmoid", "conv_bias": False,
                "final_norm": True},
}
# (VGG weights kind, gram_norm) -> (content weight, style weight per layer), see the module docstring
PINNED_WEIGHTS = {
    ("caffe", "chw"): (1.0, 5.0),
    ("caffe", "hw"): (1.0, 1e-4),
    ("torchvision", "chw"): (1e5, 1e10),
    ("torchvision", "hw"): (CAFFE_SCALE ** 2, 1e-4 * CAFFE_SCALE ** 4),
}


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@dataclass
class FastStyleOptions(TrainOptions):
    """Fast style networks (paper defaults in options/fast_style.yaml)."""

    dataset_mode: str = choice("styles", ("styles",), "content/ photos and style/ images, one style per class")
    arch: str = choice("johnson", tuple(ARCHS), "layout preset: johnson (reflect padding, transposed convs, tanh), "
                                                 "johnson_lua (the authors' pad-40 layout, 150 tanh, TV, median), "
                                                 "examples (pytorch/examples TransformerNet), magenta (Dumoulin)")
    padding: str = choice("reflect", PADDINGS, "reflect: before every conv; reflect_start: 40 px at the input, "
                                               "unpadded residual blocks with a 2-px centre crop")
    output_layer: str = choice("tanh", OUTPUTS, "pixel range and output activation: tanh ([-1, 1]), tanh150 (Caffe "
                                                "range, 150 tanh), linear (0..255), sigmoid ([0, 1])")
    conv_bias: bool = opt(True, "convolutions with biases (magenta has none)")
    final_norm: bool = opt(False, "a (conditional) instance norm after the last convolution (magenta)")
    n_blocks: int = opt(5, "residual blocks", minimum=0)
    vgg_weights: str = opt("", "VGG weights: torchvision's VGG-16 file, or VGG-19 (any file build_vgg19 reads); empty "
                               "= the VGG-19 search (torchvision's cache, the style extra's Caffe VGG-19)")
    vgg: str = choice("auto", ("auto", *VGG_KINDS), "VGG-19 weights kind (auto = the first found; recorded)")
    vgg_arch: str = opt("", "recorded by training: vgg16 or vgg19")
    content_layers: str = opt("relu2_2", "content layers (relu3_3 = the authors' Lua default)")
    style_layers: str = opt("relu1_2,relu2_2,relu3_3,relu4_3", "style layers")
    content_weight: float = opt(0.0, "content weight; 0 = the value pinned to the VGG (module docstring)", minimum=0.0)
    style_weight: float = opt(0.0, "style weight per layer; 0 = the value pinned to the VGG", minimum=0.0)
    gram_norm: str = choice("chw", ("chw", "hw"), "Gram matrix F F^T divided by C H W (Johnson) or H W (magenta)")
    tv_weight: float = opt(0.0, "total variation strength on the network's output range (the Lua layer; 1e-6 there)",
                           minimum=0.0)
    style_size: int = opt(256, "style images resized to this longer side for their Gram targets (0 = as stored)",
                          minimum=0)
    style_names: str = opt("", "recorded by training: the network's styles, in index order")
    add_styles_to: str = opt("", "a trained fast_style run (folder or checkpoint): add the styles of dataroot/style/ "
                                 "to it and train only their (gamma, beta)")
    style: str = opt("", "test: the style to apply, by index or name (default: the first)")
    style_weights: str = opt("", "test: a blend, one weight per style, comma-separated (used as given)")
    median_filter: bool = opt(False, "test: a 3x3 median filter on the output (the Lua default)")

    def validate(self) -> None:
        super().validate()
        if self.input_nc != 3 or self.output_nc != 3:
            raise UserError("option --input_nc/--output_nc: the VGG losses need RGB images (3 channels)")
        if self.norm == "none":
            raise UserError("option --norm: fast style networks use instance (default) or batch norm")
        if not _names(self.content_layers) or not _names(self.style_layers):
            raise UserError("option --style_layers/--content_layers: at least one layer each")

    @classmethod
    def presets(cls, chosen: dict[str, Any]) -> dict[str, Any]:
        return dict(ARCHS.get(str(chosen.get("arch", "johnson")), {}))


@register_model("fast_style")
class FastStyleModel(TranslationModel):
    """A transformation network and its frozen VGG losses (see the module docstring)."""

    Options = FastStyleOptions
    inference_nets = ("transformer",)
    grid_columns = 3

    def __init__(self, options: FastStyleOptions, *, training: bool = True) -> None:
        super().__init__(options, training=training)
        o = options
        frozen_styles, base_state = 0, None
        if training:
            classes = self._style_classes(o)
            new_names = [name for name, _ in classes]
            if o.add_styles_to:
                base_names, base_state = self._base_run(o)
                frozen_styles = len(base_names)
                o.style_names = ",".join(base_names + new_names)
            else:
                o.style_names = ",".join(new_names)
        self.style_list = _names(o.style_names) or ["style"]
        if o.norm == "batch" and len(self.style_list) > 1:
            raise UserError(f"option --norm: batch norm holds no per-style parameters; {len(self.style_list)} styles "
                            "need --norm instance")
        self.nets["transformer"] = FastStyleNet(o.ngf, len(self.style_list), norm=o.norm, padding=o.padding,
                                                upsample=o.upsample, output=o.output_layer, conv_bias=o.conv_bias,
                                                final_norm=o.final_norm, n_blocks=o.n_blocks)
        self.frozen_styles = frozen_styles
        self._test_mix = self.mix_for(o.style, _floats(o.style_weights, "option --style_weights"))
        self._last: dict[str, torch.Tensor] = {}
        if not training:
            return
        self.vgg = build_perceptual_vgg(o.vgg_weights, kind=o.vgg, last_layer=self._deepest(o), seed=o.seed)
        if o.vgg_weights != RANDOM_WEIGHTS:
            o.vgg = self.vgg.weights_kind
        o.vgg_arch = self.vgg.arch
        kind = "caffe" if self.vgg.weights_kind == "caffe" else "torchvision"
        self.feature_scale = CAFFE_SCALE if kind == "caffe" else 1.0  # the Caffe net's true 0..255 activations
        pinned = PINNED_WEIGHTS[(kind, o.gram_norm)]
        o.content_weight = o.content_weight or pinned[0]
        o.style_weight = o.style_weight or pinned[1]
        print(f"fast_style: losses on {self.vgg.arch.upper()} ({self.vgg.weights_kind} weights"
              f"{', ' + self.vgg.weights_source if self.vgg.weights_source else ''}); content {o.content_layers} x "
              f"{o.content_weight:g}, style {o.style_layers} x {o.style_weight:g}, Gram / {o.gram_norm.upper()}; "
              f"{len(self.style_list)} style(s)")
        self._content_layers, self._style_layers = _names(o.content_layers), _names(o.style_layers)
        self.register_buffer("targets", self._style_targets(classes), persistent=False)  # (n_new, layer) Grams
        if base_state is not None:
            self._load_base(base_state)
        self.optimizers = {"transformer": self._optimizer()}

    # ---- set-up
    @staticmethod
    def _style_classes(o: FastStyleOptions) -> list[tuple[str, list[str]]]:
        from gan_translate.data.styles import style_classes

        root = Path(o.dataroot)
        folder = root / "style" if (root / "style").is_dir() else root / f"{o.phase}B"
        return style_classes(folder if folder.is_dir() else root / "style")

    @staticmethod
    def _deepest(o: FastStyleOptions) -> str:
        layers = _names(o.content_layers) + _names(o.style_layers)
        for name in layers:
            if not (name[:4] in ("conv", "relu", "pool") and name[4:5].isdigit()):
                raise UserError(f"option --style_layers/--content_layers: unknown VGG layer '{name}'")
        # block, then position in block: the deepest layer is the one the network must reach
        order = {"conv": 0, "relu": 1, "pool": 2}
        return max(layers, key=lambda n: (int(n[4]), int(n[6:]) if n[5:6] == "_" else 99, order[n[:4]]))

    def _features(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        feats = self.vgg.extract(images, layers)
        return {k: v.float() * self.feature_scale for k, v in feats.items()}

    def gram(self, feat: torch.Tensor) -> torch.Tensor:
        """F F^T / (C H W) or / (H W), per image: (N, C, C)."""
        n, c, h, w = feat.shape
        flat = feat.reshape(n, c, h * w)
        divisor = c * h * w if self.opt.gram_norm == "chw" else h * w
        return flat @ flat.transpose(1, 2) / divisor

    @torch.no_grad()
    def _style_targets(self, classes: list[tuple[str, list[str]]]) -> torch.Tensor:
        """Gram targets stacked as (n_styles, sum of C^2 over layers), each style's the mean over its images, taken
        once at ``style_size`` (longer side)."""
        from gan_translate.data.images import load_image, pil_to_tensor

        rows = []
        for _name, paths in classes:
            grams = []
            for path in paths:
                image = load_image(path, 3)
                size = self.opt.style_size
                if size and max(image.size) != size:
                    scale = size / max(image.size)
                    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                         Image.BICUBIC)
                tensor = pil_to_tensor(image)[None]
                feats = self._features(tensor, self._style_layers)
                grams.append(torch.cat([self.gram(feats[k]).flatten() for k in self._style_layers]))
            rows.append(torch.stack(grams).mean(0))
        return torch.stack(rows)

    def _target(self, labels: torch.Tensor, layer_index: int, channels: int) -> torch.Tensor:
        start = sum(self.vgg_channels[k] ** 2 for k in self._style_layers[:layer_index])
        return self.targets[labels, start:start + channels * channels].view(-1, channels, channels)

    @property
    def vgg_channels(self) -> dict[str, int]:
        if not hasattr(self, "_channels"):
            probe = self.vgg.extract(torch.zeros(1, 3, 32, 32, device=self.targets.device), self._style_layers)
            self._channels = {k: v.shape[1] for k, v in probe.items()}
        return self._channels

    @staticmethod
    def _base_run(o: FastStyleOptions) -> tuple[list[str], dict[str, torch.Tensor]]:
        from safetensors.torch import load_file

        from gan_translate.config import load_options
        from gan_translate.engine.checkpoint import CONFIG_FILE
        from gan_translate.inference import resolve_checkpoint

        ckpt = resolve_checkpoint(Path(o.add_styles_to).expanduser())
        config = ckpt / CONFIG_FILE if (ckpt / CONFIG_FILE).is_file() else ckpt.parent / CONFIG_FILE
        base = load_options(FastStyleOptions, config)
        if base.model != "fast_style":
            raise UserError(f"option --add_styles_to: {ckpt} is a {base.model} run, not fast_style")
        for key in ("ngf", "norm", "padding", "upsample", "output_layer", "conv_bias", "final_norm", "n_blocks"):
            if getattr(base, key) != getattr(o, key):
                raise UserError(f"option --add_styles_to: the base run has {key} {getattr(base, key)}, this one "
                                f"{getattr(o, key)}; give the base run's network options")
        if base.norm != "instance":
            raise UserError("option --add_styles_to: styles are added to instance-norm networks only")
        return _names(base.style_names) or ["style"], load_file(str(ckpt / "net_transformer.safetensors"))

    def _load_base(self, state: dict[str, torch.Tensor]) -> None:
        """The base run's weights; the new styles' (gamma, beta) start at (1, 0); only those train."""
        net = self.nets["transformer"]
        own = net.state_dict()
        with torch.no_grad():
            for key, value in state.items():
                if key not in own:
                    raise UserError(f"option --add_styles_to: the base network has '{key}', this one does not")
                target = own[key]
                if target.shape == value.shape:
                    target.copy_(value)
                else:  # a conditional norm's (n_styles, C): the base's rows first
                    target[: value.shape[0]].copy_(value)
        net.requires_grad_(False)
        keep = self.frozen_styles
        for module in net.modules():
            if isinstance(module, ConditionalInstanceNorm):
                for param in (module.weight, module.bias):
                    param.requires_grad_(True)
                    param.register_hook(lambda grad, k=keep: torch.cat([torch.zeros_like(grad[:k]), grad[k:]]))

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.nets["transformer"].parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.opt.lr, betas=(self.opt.beta1, 0.999))

    # ---- training
    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        content = batch["A"]
        height, width = (s - s % STRIDE for s in content.shape[-2:])
        content = content[..., :height, :width]
        labels = batch["style_label"].to(content.device).long()
        mix = style_weights(labels + self.frozen_styles, len(self.style_list))
        stylized = self.nets["transformer"](content, mix, self.opt.tv_weight)
        with torch.no_grad():
            content_feats = self._features(content, self._content_layers)
        feats = self._features(stylized, self._content_layers + self._style_layers)
        loss_content = sum(F.mse_loss(feats[k], content_feats[k]) for k in self._content_layers)
        loss_style = sum(F.mse_loss(self.gram(feats[k]), self._target(labels, i, feats[k].shape[1]))
                         for i, k in enumerate(self._style_layers))
        loss_content, loss_style = loss_content * self.opt.content_weight, loss_style * self.opt.style_weight
        optimizer = self.optimizers["transformer"]
        optimizer.zero_grad(set_to_none=True)
        ctx.backward(loss_content + loss_style)
        optimizer.step()
        self._last = {"content": content.detach(), "stylized": stylized.detach().clamp(-1, 1)}
        logs = {"content": loss_content.item(), "style": loss_style.item()}
        if self.opt.tv_weight > 0:
            logs["tv"] = self.opt.tv_weight * lua_total_variation(self._network_range(stylized.detach())).item()
        return logs

    def _network_range(self, images: torch.Tensor) -> torch.Tensor:
        net = getattr(self.nets["transformer"], "module", self.nets["transformer"])
        return net.to_network(images)

    def visuals(self) -> dict[str, torch.Tensor]:
        return dict(self._last)

    # ---- inference
    def mix_for(self, style: Any = "", weights: Sequence[float] | None = None) -> torch.Tensor:
        """The mixing weights (n_styles,) for a style given by index or name, or a blend (one weight per style, used
        as given). Mistakes are one-line UserErrors."""
        n = len(self.style_list)
        if weights:
            if len(weights) != n:
                raise UserError(f"option --style_weights: {len(weights)} weights for {n} styles "
                                f"({', '.join(self.style_list)})")
            return torch.tensor([float(w) for w in weights])
        if style in ("", None):
            index = 0
        elif isinstance(style, int) or str(style).lstrip("-").isdigit():
            index = int(style)
            if not 0 <= index < n:
                raise UserError(f"option --style: index {index} is out of range (this network has {n} style"
                                f"{'s' if n > 1 else ''}: 0..{n - 1})")
        elif str(style) in self.style_list:
            index = self.style_list.index(str(style))
        else:
            raise UserError(f"option --style: no style '{style}' (choose from {', '.join(self.style_list)})")
        return F.one_hot(torch.tensor(index), n).float()

    def set_style(self, style: Any = "", weights: Sequence[float] | None = None) -> None:
        """The style (or blend) that ``translate`` applies when a batch does not say."""
        self._test_mix = self.mix_for(style, weights)

    def translate(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """{"A": (N, 3, H, W), optional "style_mix": (N or 1, n_styles)} -> {"stylized": (N, 3, H, W)} at any size."""
        content = batch["A"]
        mix = batch.get("style_mix")
        mix = (self._test_mix if mix is None else torch.as_tensor(mix)).to(content.device, torch.float32)
        mix = mix.reshape(-1, len(self.style_list)).expand(content.shape[0], -1)
        padded, (left, right, top, bottom) = pad_to_multiple(content, STRIDE)
        out = self.nets["transformer"](padded, mix)
        height, width = out.shape[-2:]
        out = out[..., top: height - bottom, left: width - right].clamp(-1, 1)
        if self.opt.median_filter:
            out = median_filter3(out)
        return {"stylized": out}

    def exportable(self, key: str = "transformer") -> nn.Module:
        """A one-input module for ONNX export: the network with the options' style (or blend) fixed, padded to its
        stride and cropped back inside the graph. The median filter is not exported."""
        return _FixedStyle(self.nets[key], self._test_mix).eval()


class _FixedStyle(nn.Module):
    """The network with fixed mixing weights; the pad to its stride is arithmetic on the traced sizes (as the export
    command's ``StridePadded``), so an exported graph keeps H and W dynamic."""

    def __init__(self, net: nn.Module, mix: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mix", mix.reshape(1, -1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        pad_h, pad_w = (STRIDE - height % STRIDE) % STRIDE, (STRIDE - width % STRIDE) % STRIDE
        top, left = pad_h // 2, pad_w // 2
        padded = F.pad(x, (left, pad_w - left, top, pad_h - top), mode="reflect")
        out = self.net(padded, self.mix.expand(x.shape[0], -1))
        return out[:, :, top:top + height, left:left + width].clamp(-1, 1)


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in _names(text)]
    except ValueError:
        raise UserError(f"{option}: '{text}' is not a comma-separated list of numbers") from None
