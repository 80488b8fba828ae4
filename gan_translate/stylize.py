"""Neural style transfer by optimising the pixels: Gatys et al. and the style losses that followed.

    python -m gan_translate stylize --content photo.jpg --style starry.jpg --out out.png   # stylize_cli.py
    python -m gan_translate stylize --content photo.jpg --style a.jpg b.jpg --style_weights 0.7 0.3 \\
        --style_loss gram:1,mrf:0.1 --preserve_color luminance --optimizer adam --steps 800 --save_every 100

Gatys, Ecker, Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016: start from the content
image (or noise, or the style image) and minimise with L-BFGS

    content_weight * sum_l w_l |F_l(x) - F_l(content)|^2 + style_weight * sum_type lambda_type sum_l w_l E_type,l(x)
    + tv_weight * TV(x)

over VGG-19 activations. The style term is any weighted mix of the losses in ``gan_translate.losses.style``: Gram
(Gatys), shifted Gram (Berger & Memisevic 2017), MMD with linear/polynomial/Gaussian kernels and BN statistics (Li et
al. 2017), MRF patches (Li & Wand 2016), histogram matching (Risser et al. 2017, ``losses/histogram.py``) and feature
reshuffle (Gu et al. 2018, ``losses/reshuffle.py``). ``laplacian_weight`` adds the Laplacian loss (Li et al. 2017,
``losses/laplacian.py``), an image-space term that keeps the content's edges. Defaults follow Gatys et al.: content on
conv4_2 and style on conv1_1 .. conv5_1 with equal layer weights, average pooling, L-BFGS. Their "conv4_2" is the blob
of that name in Caffe, where the ReLU runs in place, i.e. the activation after the ReLU -- here ``relu4_2`` (and
``relu1_1`` .. ``relu5_1``), the layers their own PyTorch code reads. The MRF loss reads relu3_1 and relu4_1, as Li &
Wand.

mmd_gaussian compares random subsets of positions (``gaussian_samples``, redrawn every step) on maps larger than that,
which makes the objective noisy: Adam copes with that better than L-BFGS.

Scale of the weights: style terms are the papers' per-layer formulas (size-independent); content, MRF and TV are means.
The defaults (content 1, style 3, TV 0; 150 L-BFGS iterations from the content at 384 px) were tuned by eye with the
Caffe VGG-19 of the style extra on photos and paintings: the photo's structure stays and the painting's colours and
strokes cover it, as in Gatys et al.'s figures; a style weight of 1000 (the earlier default) leaves the painting's
shapes with the photo barely visible. Raise --style_weight for more style, --image_size and --steps for detail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from gan_translate.data.colour import combine_luminance, luminance, match_colour, match_luminance
from gan_translate.data.images import load_image, pil_to_tensor
from gan_translate.errors import UserError
from gan_translate.losses.laplacian import LaplacianLoss
from gan_translate.losses.guided import GUIDE_MODES, GuidedGramLoss, propagate_guides
from gan_translate.losses.matting import matting_loss
from gan_translate.losses.style import STYLE_LOSSES, StyleLoss, content_loss, tv_loss
from gan_translate.nets.vgg import LAYER_NAMES, VGG19, check_layers

GATYS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
MIN_SIZE = 32  # VGG-19 pools five times: below this the deep maps vanish
# style losses that read layers of their own (the settings' field), not --style_layers
OWN_LAYERS = {"mrf": "mrf_layers", "histogram": "histogram_layers", "reshuffle": "reshuffle_layers"}
# Weights of the histogram loss beside a Gram loss of weight 1, and of the Laplacian term, that docs/stylize.md shows
# (tuned by eye with the Caffe VGG-19 at the defaults: the demo's combinations use them)
HISTOGRAM_WEIGHT = 1.0
LAPLACIAN_WEIGHT = 1e-2
SHIFT_IMAGE_PIXELS = 16  # default shifted-Gram delta: 16 image pixels at every layer (16, 8, 4, 2, 1 map cells)


@dataclass
class StylizeSettings:
    """Everything ``stylize`` needs besides the images and the network (defaults: Gatys et al. 2016)."""

    image_size: int = 384  # longer side of the working resolution; the output is resized back to the content's size
    style_scale: float = 1.0  # style images are resized to style_scale * image_size (longer side)
    init: str = "content"  # content | noise | style
    optimizer: str = "lbfgs"  # lbfgs | adam
    steps: int = 150  # from the content, L-BFGS has the look by ~100 iterations (docs/stylize.md "Defaults")
    lr: float = 0.0  # 0 = the optimizer's default (L-BFGS 1.0; Adam 0.08, i.e. jcjohnson's 10 on the 0..255 scale)
    content_weight: float = 1.0
    style_weight: float = 3.0  # with the Caffe VGG-19: the content's structure stays, as in Gatys et al.'s figures
    tv_weight: float = 0.0
    style_losses: dict[str, float] = field(default_factory=lambda: {"gram": 1.0})
    content_layers: tuple[str, ...] = ("relu4_2",)
    content_layer_weights: tuple[float, ...] = ()  # empty = equal, summing to 1
    style_layers: tuple[str, ...] = GATYS_STYLE_LAYERS
    style_layer_weights: tuple[float, ...] = ()  # empty = equal, summing to 1 (Gatys: w_l = 1/5)
    mrf_layers: tuple[str, ...] = ("relu3_1", "relu4_1")
    shift_deltas: tuple[int, ...] = ()  # one per style layer, or one for all; empty = 16 image pixels per layer
    poly_c: float = 0.0  # MMD polynomial kernel (x.y + c)^2; c = 0 is the Gram loss
    gaussian_samples: int = 1024  # MMD Gaussian kernel: positions compared per map
    mrf_patch_size: int = 3
    mrf_stride: int = 2  # synthesis patches
    mrf_style_stride: int = 2  # style patches
    preserve_color: str = "none"  # none | luminance | histogram
    pool: str = "avg"
    seed: int = 0
    save_every: int = 0
    # spatial control and photorealism (gan_translate.stylize_control): used when guides / a Laplacian are given
    guide_mode: str = "auto"  # simple | all | inside; auto = inside for one style image, simple for one per region
    guide_grow: int = 0  # widen (> 0) or erode (< 0) every layer's guides by that many cells
    matting_weight: float = 0.0  # Luan et al.'s photorealism term lambda * sum_c V_c^T L V_c (their lambda: 1e4)
    # ---- histogram, feature reshuffle and Laplacian losses (losses/histogram.py, reshuffle.py, laplacian.py)
    histogram_layers: tuple[str, ...] = ("relu1_1", "relu4_1")  # Risser et al.
    reshuffle_layers: tuple[str, ...] = ("relu4_1",)  # Gu et al.'s first level
    reshuffle_patch_size: int = 3  # Gu et al. at conv4_1
    laplacian_weight: float = 0.0  # 0 = off
    laplacian_pools: dict[int, float] = field(default_factory=lambda: {4: 1.0})  # pooling (px) -> weight; Li et al.

    def validate(self) -> None:
        """One-line UserErrors naming the option."""
        checks = [
            (self.image_size >= MIN_SIZE, f"option --image_size: {self.image_size} is below {MIN_SIZE}"),
            (self.style_scale > 0, f"option --style_scale: {self.style_scale} must be positive"),
            (self.steps >= 1, f"option --steps: {self.steps} must be at least 1"),
            (self.lr >= 0, f"option --lr: {self.lr} must be positive (0 = default)"),
            (self.init in INITS, f"option --init: '{self.init}' is not one of {', '.join(INITS)}"),
            (self.optimizer in OPTIMIZERS, f"option --optimizer: '{self.optimizer}' is not one of lbfgs, adam"),
            (self.preserve_color in PRESERVE, f"option --preserve_color: '{self.preserve_color}' is not one of "
                                              f"{', '.join(PRESERVE)}"),
            (self.pool in ("avg", "max"), f"option --pool: '{self.pool}' is not one of avg, max"),
            (min(self.content_weight, self.style_weight, self.tv_weight) >= 0,
             "options --content_weight/--style_weight/--tv_weight must not be negative"),
            (self.gaussian_samples >= 2, "option --gaussian_samples: must be at least 2"),
            (self.mrf_patch_size >= 1 and self.mrf_stride >= 1 and self.mrf_style_stride >= 1,
             "options --mrf_patch_size/--mrf_stride/--mrf_style_stride must be at least 1"),
            (self.save_every >= 0, "option --save_every: must not be negative"),
            (self.guide_mode in ("auto", *GUIDE_MODES),
             f"option --guide_mode: '{self.guide_mode}' is not one of auto, {', '.join(GUIDE_MODES)}"),
            (self.matting_weight >= 0, "option --matting_weight: must not be negative"),
            (min(self.shift_deltas, default=0) >= 0, "option --shift_deltas: deltas must not be negative"),
            (self.reshuffle_patch_size >= 1 and self.reshuffle_patch_size % 2 == 1,
             f"option --reshuffle_patch_size: {self.reshuffle_patch_size} must be odd and positive"),
            (self.laplacian_weight >= 0, "option --laplacian_weight: must not be negative"),
            (bool(self.laplacian_pools) and min(self.laplacian_pools) >= 1
             and min(self.laplacian_pools.values()) >= 0,
             "option --laplacian_pools: pooling sizes must be at least 1 and weights not negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        check_layers(self.content_layers, "content_layers")
        check_layers(self.style_layers, "style_layers")
        check_layers(self.mrf_layers, "mrf_layers")
        check_layers(self.histogram_layers, "histogram_layers")
        check_layers(self.reshuffle_layers, "reshuffle_layers")
        _layer_weights(self.content_layers, self.content_layer_weights, "content_layer_weights")
        _layer_weights(self.style_layers, self.style_layer_weights, "style_layer_weights")
        if not self.style_losses:
            raise UserError("option --style_loss: give at least one loss")
        for name, weight in self.style_losses.items():
            if name not in STYLE_LOSSES:
                raise UserError(f"option --style_loss: unknown loss '{name}' (choose from {', '.join(STYLE_LOSSES)})")
            if weight < 0:
                raise UserError(f"option --style_loss: weight of {name} is negative")
        if not self.layers_in_use():
            raise UserError("options --content_layers/--style_layers/--mrf_layers/--histogram_layers/"
                            "--reshuffle_layers: no layer left to compare")
        if len(self.shift_deltas) not in (0, 1, len(self.style_layers)):
            raise UserError(f"option --shift_deltas: give one delta or one per style layer ({len(self.style_layers)})")

    def layers_in_use(self) -> list[str]:
        """Every layer some loss reads, shallowest first."""
        used = set(self.content_layers)
        for kind in self.style_losses:
            used.update(self.loss_layers(kind))
        return sorted(used, key=LAYER_NAMES.index)

    def loss_layers(self, kind: str) -> tuple[str, ...]:
        """The layers style loss ``kind`` reads: mrf, histogram and reshuffle have their own lists."""
        return getattr(self, OWN_LAYERS[kind]) if kind in OWN_LAYERS else self.style_layers

    def deltas(self) -> list[int]:
        """The shifted-Gram delta of each style layer."""
        if len(self.shift_deltas) == 1:
            return list(self.shift_deltas) * len(self.style_layers)
        if self.shift_deltas:
            return list(self.shift_deltas)
        return [max(1, SHIFT_IMAGE_PIXELS // _stride(layer)) for layer in self.style_layers]


def _stride(layer: str) -> int:
    """How many image pixels one cell of ``layer``'s map spans (2 per pooling before it)."""
    block = int(layer[4] if layer.startswith("pool") else layer.split("_")[0][-1])
    return 2 ** (block - (0 if layer.startswith("pool") else 1))


def _layer_weights(layers: Sequence[str], weights: Sequence[float], option: str) -> list[float]:
    if not weights:
        return [1.0 / len(layers)] * len(layers) if layers else []
    if len(weights) != len(layers):
        raise UserError(f"option --{option}: {len(weights)} weights for {len(layers)} layers")
    return list(weights)


# ----------------------------------------------------------------------------------------------------------------------
# The objective
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _StyleTerm:
    kind: str
    layer: str
    weight: float  # type weight x layer weight
    loss: StyleLoss
    targets: list[tuple[float, Any]]


def _style_loss(kind: str, settings: StylizeSettings, delta: int) -> StyleLoss:
    builders: dict[str, Callable[[], StyleLoss]] = {
        "gram": STYLE_LOSSES["gram"],
        "shifted_gram": lambda: STYLE_LOSSES["shifted_gram"](delta),
        "mmd_linear": STYLE_LOSSES["mmd_linear"],
        "mmd_poly": lambda: STYLE_LOSSES["mmd_poly"](settings.poly_c),
        "mmd_gaussian": lambda: STYLE_LOSSES["mmd_gaussian"](settings.gaussian_samples, settings.seed),
        "bn": STYLE_LOSSES["bn"],
        "mrf": lambda: STYLE_LOSSES["mrf"](settings.mrf_patch_size, settings.mrf_stride, settings.mrf_style_stride),
        "histogram": STYLE_LOSSES["histogram"],
        "reshuffle": lambda: STYLE_LOSSES["reshuffle"](settings.reshuffle_patch_size),
    }
    return builders[kind]()


class GatysObjective:
    """The weighted sum of content, style and TV losses of an image, with the targets computed once.

    Args:
        vgg: the feature network (frozen).
        content: (1, 3, H, W) in [-1, 1].
        styles: style images (1, 3, H', W'), any sizes.
        style_weights: blending weights of the style images (normalised to sum 1).
        guides: spatial control: the content's guides (R, H, W) and each style image's (R, H', W'), in [0, 1]; the
            Gram loss becomes the guided Gram loss (``losses.guided``).
        laplacian: the content's matting Laplacian (sparse (H W, H W)): adds ``matting_weight`` x the matting loss.
    """

    def __init__(self, vgg: VGG19, content: torch.Tensor, styles: Sequence[torch.Tensor],
                 style_weights: Sequence[float], settings: StylizeSettings, *,
                 guides: tuple[torch.Tensor, Sequence[torch.Tensor]] | None = None,
                 laplacian: torch.Tensor | None = None) -> None:
        self.vgg, self.settings, self.laplacian = vgg, settings, laplacian
        total = float(sum(style_weights))
        blend = [w / total for w in style_weights]
        self.content_terms = list(zip(settings.content_layers,
                                      _layer_weights(settings.content_layers, settings.content_layer_weights, "")))
        style_layer_weights = _layer_weights(settings.style_layers, settings.style_layer_weights, "")
        self.layers = settings.layers_in_use()
        with torch.no_grad():
            content_feats = vgg.extract(content, self.layers)
            style_feats = [vgg.extract(s, self.layers) for s in styles]
        self.content_targets = {layer: content_feats[layer].detach() for layer, _ in self.content_terms}
        self.style_terms: list[_StyleTerm] = []
        deltas = dict(zip(settings.style_layers, settings.deltas()))
        guided = _layer_guides(vgg, guides, settings, len(styles)) if guides is not None else None
        for kind, type_weight in settings.style_losses.items():
            layers = settings.loss_layers(kind)
            # --style_layer_weights weigh the style layers; losses with their own layer lists weigh them equally
            layer_weights = _layer_weights(layers, (), "") if kind in OWN_LAYERS else style_layer_weights
            for layer, layer_weight in zip(layers, layer_weights):
                loss = (GuidedGramLoss(guided[0][layer], [g[layer] for g in guided[1]]) if guided and kind == "gram"
                        else _style_loss(kind, settings, deltas.get(layer, 0)))
                loss.set_content(content_feats[layer])
                targets = loss.targets([f[layer] for f in style_feats], blend)
                self.style_terms.append(_StyleTerm(kind, layer, type_weight * layer_weight, loss, targets))
        self.edge_loss = LaplacianLoss(content, settings.laplacian_pools) if settings.laplacian_weight else None

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The total loss (a scalar with a graph to ``image``) and its weighted parts as floats."""
        s = self.settings
        feats = self.vgg.extract(image, self.layers)
        parts: dict[str, torch.Tensor] = {}
        content = sum((w * content_loss(feats[layer], self.content_targets[layer]) for layer, w in self.content_terms),
                      image.new_zeros(()))
        parts["content"] = s.content_weight * content
        for term in self.style_terms:
            value = sum((w * term.loss.loss(feats[term.layer], target) for w, target in term.targets),
                        image.new_zeros(()))
            parts[term.kind] = parts.get(term.kind, image.new_zeros(())) + s.style_weight * term.weight * value
        if s.tv_weight:
            parts["tv"] = s.tv_weight * tv_loss(image)
        if self.edge_loss is not None:
            parts["laplacian"] = s.laplacian_weight * self.edge_loss(image)
        if s.matting_weight and self.laplacian is not None:
            parts["matting"] = s.matting_weight * matting_loss(image, self.laplacian)
        total = sum(parts.values(), image.new_zeros(()))
        return total, {k: float(v.detach()) for k, v in parts.items()}


def _layer_guides(vgg: VGG19, guides: tuple[torch.Tensor, Sequence[torch.Tensor]], settings: StylizeSettings,
                  n_styles: int) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The image guides carried to every style layer's map, for the content and for each style image."""
    if set(settings.style_losses) - {"gram"}:
        raise UserError("options --content_mask/--style_masks: guided regions work with the gram style loss only "
                        f"(--style_loss {','.join(settings.style_losses)})")
    mode = settings.guide_mode if settings.guide_mode != "auto" else ("inside" if n_styles == 1 else "simple")
    names = LAYER_NAMES[: len(vgg.features)]
    device = vgg.input_weight.device

    def carry(g: torch.Tensor) -> dict[str, torch.Tensor]:
        return propagate_guides(g.to(device), vgg.features, names, settings.style_layers, mode, settings.guide_grow)

    return carry(guides[0]), [carry(g) for g in guides[1]]


# ----------------------------------------------------------------------------------------------------------------------
# The optimisation
# ----------------------------------------------------------------------------------------------------------------------


def _lbfgs(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    # One iteration per step() keeps the progress bar, --save_every and --steps in iterations; the curvature history
    # lives in the optimizer state across calls. No line search, as in jcjohnson's neural-style.
    return torch.optim.LBFGS(params, lr=lr or 1.0, max_iter=1, history_size=100)


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr or 0.08)


OPTIMIZERS: dict[str, Callable[[list[torch.Tensor], float], torch.optim.Optimizer]] = {"lbfgs": _lbfgs, "adam": _adam}
INITS = ("content", "noise", "style")
PRESERVE = ("none", "luminance", "histogram")


@dataclass
class StylizeResult:
    """The optimised image (1, 3, H, W) at the working size (luminance mode: grey) and the total loss before each
    step plus after the last one (``steps + 1`` values)."""

    image: torch.Tensor
    losses: list[float]
    parts: dict[str, float]


def _initial_image(kind: str, content: torch.Tensor, style: torch.Tensor, seed: int) -> torch.Tensor:
    if kind == "noise":  # white noise, as Gatys et al.
        generator = torch.Generator().manual_seed(seed)
        return (torch.rand(tuple(content.shape), generator=generator) * 2 - 1).to(content.device)
    if kind == "style":
        return F.interpolate(style, size=content.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
    return content.clone(memory_format=torch.contiguous_format)


def stylize(vgg: VGG19, content: torch.Tensor, styles: Sequence[torch.Tensor], settings: StylizeSettings, *,
            style_weights: Sequence[float] | None = None, progress: bool = True,
            callback: Callable[[int, torch.Tensor], None] | None = None,
            guides: tuple[torch.Tensor, Sequence[torch.Tensor]] | None = None, laplacian: torch.Tensor | None = None,
            init_image: torch.Tensor | None = None,
            on_step: Callable[[int, torch.Tensor], None] | None = None) -> StylizeResult:
    """Optimises an image that has ``content``'s content and the style of ``styles`` (all (1, 3, h, w), [-1, 1], at
    the working size; ``preserve_color`` must already have been applied to them -- see ``prepare_images``).

    ``callback(step, image)`` runs after every ``settings.save_every``-th step; ``on_step(step, image)`` after every
    step (and with step 0 before the first), e.g. to keep the image a stop should write. ``guides`` and
    ``laplacian``: see ``GatysObjective``; ``init_image`` (content's size) replaces ``settings.init`` (the
    coarse-to-fine schedule).

    Raises:
        UserError: bad settings, or the loss became NaN/inf (the message suggests a lower learning rate).
    """
    settings.validate()
    weights = list(style_weights) if style_weights else [1.0] * len(styles)
    if len(weights) != len(styles) or min(weights) < 0 or sum(weights) <= 0:
        raise UserError(f"option --style_weights: need {len(styles)} non-negative weights with a positive sum")
    objective = GatysObjective(vgg, content, styles, weights, settings, guides=guides, laplacian=laplacian)
    image = (init_image.detach().clone(memory_format=torch.contiguous_format) if init_image is not None
             else _initial_image(settings.init, content, styles[0], settings.seed)).requires_grad_(True)
    optimizer = OPTIMIZERS[settings.optimizer]([image], settings.lr)
    parts: dict[str, float] = {}

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        total, values = objective(image)
        total.backward()
        parts.clear()
        parts.update(values)
        return total

    losses: list[float] = []
    if on_step is not None:
        on_step(0, image.detach())
    bar = tqdm(range(1, settings.steps + 1), disable=not progress, desc="stylize", dynamic_ncols=True)
    for step in bar:
        loss = float(optimizer.step(closure).detach())
        if not math.isfinite(loss):
            raise UserError(f"the optimisation diverged at step {step} (loss {loss}): lower --lr or the loss weights")
        losses.append(loss)
        bar.set_postfix_str(" ".join(f"{k} {v:.3g}" for k, v in parts.items()))
        if on_step is not None:
            on_step(step, image.detach())
        if callback is not None and settings.save_every and step % settings.save_every == 0:
            callback(step, image.detach())
    with torch.no_grad():
        total, parts = objective(image)
    losses.append(float(total))
    return StylizeResult(image=image.detach(), losses=losses, parts=parts)


# ----------------------------------------------------------------------------------------------------------------------
# Images in and out
# ----------------------------------------------------------------------------------------------------------------------


def _fit(img: Image.Image, longer: int) -> Image.Image:
    scale = longer / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)


def load_resized(path: str | Path, longer: int) -> torch.Tensor:
    """An RGB image file as (1, 3, h, w) in [-1, 1] with its longer side ``longer``."""
    return pil_to_tensor(_fit(load_image(path, channels=3), longer)).unsqueeze(0).contiguous()


def prepare_images(content: torch.Tensor, styles: Sequence[torch.Tensor], mode: str
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The content and style images the network sees under colour preservation ``mode``.

    "luminance": both as grey luminance images, the styles' luminance matched to the content's mean/std;
    "histogram": the styles' RGB mean/covariance matched to the content's; "none": unchanged.
    """
    if mode == "luminance":
        return luminance(content), [match_luminance(s, content) for s in styles]
    if mode == "histogram":
        return content, [match_colour(s, content) for s in styles]
    return content, list(styles)


def finish(image: torch.Tensor, original: torch.Tensor, mode: str) -> torch.Tensor:
    """The optimised image at the size of ``original`` (the full-size content, (1, 3, H, W)), with the content's
    colours put back in luminance mode, clipped to [-1, 1]."""
    if image.shape[-2:] != original.shape[-2:]:
        down = image.shape[-1] > original.shape[-1]
        image = F.interpolate(image, size=original.shape[-2:], mode="bicubic", align_corners=False, antialias=down)
    if mode == "luminance":
        return combine_luminance(image, original.to(image.device))
    return image.clamp(-1, 1)
