"""Trained models for inference: a checkpoint folder -> a model, and ``load_translator`` for one image at a time.

    from gan_translate import load_translator
    t = load_translator("checkpoints/facades_pix2pix")     # the latest checkpoint, at the run's training scale
    photo = t(Image.open("labels.png"))                     # any size, grey or colour -> a PIL image
    t.scale            # 'training scale: shorter side 286 (trained: resize to 286x286, crop 256)'
    t.size_for((600, 400))                                  # (429, 286): the size t returns for a 600x400 input
    t.options          # the run's saved options (netG, load_size, direction, ...)
    full = load_translator("checkpoints/facades_pix2pix", preprocess="none")   # native resolution
    small = load_translator("checkpoints/facades_pix2pix", load_size=128)      # shorter side 128
    horse = load_translator("checkpoints/h2z")(zebra, direction="BtoA")   # CycleGAN: the second generator
    fast = load_translator("checkpoints/facades_pix2pix", mixed_precision="bf16")   # autocast, as test.py's option
    big = load_translator("checkpoints/h2z", preprocess="none", tile=512)  # a 4096x4096 photo in bounded memory
    art = load_translator("checkpoints/adain")(photo, style=painting)     # style models take a style image

The scale (``load_translator(preprocess=..., load_size=...)``, as test.py's options of the same names):
  preprocess=None   the training scale (default): each input is resized as the training preprocess resized it,
                    keeping its aspect ratio and its whole field of view (no crop, no flip), so objects have the
                    size the model learned. resize_and_crop -> shorter side load_size; scale_width(_and_crop) ->
                    width load_size; crop and none -> native resolution. For generators with a large stride the
                    trained size is rounded to the nearest multiple of the stride where padding up would cost more
                    than 1/8 of the side (unet_256 trained at 286: 256, not 286 padded to 512).
                    ``load_size`` replaces the trained size (kept as given).
  preprocess="none" native resolution (the generators pad to their stride and crop back).
  any other mode    that preprocessing (resize_and_crop, crop, scale_width, scale_width_and_crop, scale_shortside);
                    crops are seeded, never flipped.
Style models resize the content and the style image the same way. The returned image has the translated size
(``t.size_for(image.size)``), not the input's.

Checkpoints describe themselves (config.yaml beside the safetensors), so nothing about the networks is restated;
only the networks that translation needs (the model's ``inference_nets``) are built and loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import random

import torch
from PIL import Image
from torch import nn

from gan_translate.config import load_options, read_yaml
from gan_translate.data import TestScale, build_transform, get_params, resolve_test_scale, tensor_to_pil
from gan_translate.engine.checkpoint import CONFIG_FILE, STATE_FILE, find_checkpoint, load_net
from gan_translate.errors import UserError
from gan_translate.models import TranslationModel, model_class
from gan_translate.models.adain import AdaINDecoder
from gan_translate.nets import bare
from gan_translate.nets.channels_last import use_channels_last_inference
from gan_translate.nets.fast_style import FastStyleNet
from gan_translate.nets.generators import ResnetGenerator, UnetGenerator
from gan_translate.nets.vgg import VGG19
from gan_translate.tiles import tiled_generators

__all__ = ["Translator", "load_translator", "load_model", "resolve_checkpoint", "resolve_device", "uses_batch_stats",
           "is_bidirectional", "generator_stride", "direction_unknown", "PRECISIONS", "resolve_precision"]

PRECISIONS = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str | None) -> torch.dtype | None:
    """'no' / None -> None (fp32); 'bf16', 'fp16' -> the autocast dtype."""
    if name in (None, ""):
        return None
    if name not in PRECISIONS:
        raise UserError(f"option --mixed_precision: '{name}' is not one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def generator_stride(model: TranslationModel) -> int:
    """The largest stride among the model's inference networks (inputs are padded to multiples of it)."""
    return max([int(getattr(bare(model.nets[k]), "stride", 1)) for k in model.inference_nets] or [1])


def direction_unknown(ckpt: Path) -> bool:
    """True for a checkpoint imported from a lone generator file: nothing recorded which way it was trained."""
    path = Path(ckpt) / STATE_FILE
    if not path.is_file():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable state says nothing about the direction; loading the weights decides
        return False
    imported = state.get("imported") if isinstance(state, dict) else None
    return isinstance(imported, dict) and imported.get("direction") == "unknown"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """'auto' or None -> CUDA when available, else CPU; anything else as torch understands it."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"option --device: '{device}' is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"option --device: '{device}' asked for, but CUDA is not available here")
    return dev


def resolve_checkpoint(path: str | Path, epoch: str = "latest") -> Path:
    """A checkpoint folder from a run folder (checkpoints/NAME) and ``epoch``, or a checkpoint folder itself."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file() and any(path.glob("net_*.safetensors")):
        return path
    return find_checkpoint(path, epoch)


def is_bidirectional(model: TranslationModel | type[TranslationModel]) -> bool:
    """Models with a second generator for B -> A (CycleGAN's G_B) translate a batch given under the key "B"."""
    return "G_B" in model.inference_nets


def uses_batch_stats(model: nn.Module) -> bool:
    """True when a BatchNorm layer in training mode would mix the images of a batch (batch statistics)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


# Networks that translate faster with NHWC activations on a CPU (docs/performance.md, "test.py against the reference").
CHANNELS_LAST_NETS = (ResnetGenerator, UnetGenerator, FastStyleNet, AdaINDecoder, VGG19)


def load_model(path: str | Path, *, epoch: str = "latest", device: str | torch.device | None = None,
               eval_mode: bool = False) -> tuple[TranslationModel, Any, Path]:
    """Builds the model a checkpoint was trained as, with its inference networks loaded.

    Args:
        path: a run folder (checkpoints/NAME) or one checkpoint folder inside it.
        epoch: 'latest', an epoch number or a checkpoint folder name (when ``path`` is a run folder).
        device: 'auto' (default), 'cpu', 'cuda', ...
        eval_mode: dropout off and BatchNorm on running statistics. Off by default, as in the pix2pix/CycleGAN
            reference, whose pix2pix keeps dropout at test time (Isola et al. 2017, section 3.1).

    Returns:
        (model, its options, the checkpoint folder).
    """
    ckpt = resolve_checkpoint(path, epoch)
    config = ckpt / CONFIG_FILE
    if not config.is_file():  # older layouts kept config.yaml in the run folder only
        config = ckpt.parent / CONFIG_FILE
    if not config.is_file():
        raise UserError(f"checkpoint {ckpt} has no {CONFIG_FILE}: cannot tell which model it holds")
    name = read_yaml(config).get("model")
    if not name:
        raise UserError(f"{config} does not name its model (key 'model')")
    cls = model_class(str(name))
    options = load_options(cls.Options, config)
    model = cls(options, training=False)
    for key in cls.inference_nets:
        load_net(model.nets[key], ckpt, key)
    model.to(resolve_device(device))
    model.train(not eval_mode)
    for net in model.modules():  # NHWC activations when translating on a CPU (nets/channels_last.py)
        if isinstance(net, CHANNELS_LAST_NETS):
            use_channels_last_inference(net)
    return model, options, ckpt


def _first_output(outputs: dict[str, torch.Tensor], preferred: str) -> torch.Tensor:
    if preferred in outputs:
        return outputs[preferred]
    if not outputs:
        raise RuntimeError("the model's translate() returned no image")
    return next(iter(outputs.values()))


class Translator:
    """A callable that translates one PIL image (any size, grey or colour) into a PIL image at the translated size.

    Args:
        model: a model from ``load_model``.
        options: its options (channels, direction, training sizes): kept as ``t.options``.
        seed: fixes dropout noise (pix2pix keeps dropout on at test time unless ``eval_mode``) and crops, if any;
            None leaves dropout random.
        test_scale: how inputs are resized (``resolve_test_scale``); None = the run's training scale.
        precision: translate under autocast in this dtype (``torch.bfloat16``, ``torch.float16``); None = fp32.
        tile: run the image generators in tiles of this many pixels (0 = whole images); see ``gan_translate.tiles``.
        tile_overlap: pixels neighbouring tiles share and blend over (None = an eighth of the tile).

    Attributes:
        scale: a sentence saying which scale is used, e.g. 'training scale: shorter side 256 (...)'.
    """

    def __init__(self, model: TranslationModel, options: Any, *, seed: int | None = 0,
                 test_scale: TestScale | None = None, precision: torch.dtype | None = None, tile: int = 0,
                 tile_overlap: int | None = None) -> None:
        self.model = model
        self.options = options
        self.seed = seed
        self.test_scale = test_scale if test_scale is not None else resolve_test_scale(
            options, stride=generator_stride(model))
        self.precision = precision
        self.tile, self.tile_overlap = tile, tile_overlap

    @property
    def scale(self) -> str:
        return self.test_scale.description

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def size_for(self, size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) an input of ``size`` (width, height) is translated at, and returned at."""
        return self.test_scale.size_for(size)

    def _tensor(self, image: Image.Image | str | Path, channels: int) -> torch.Tensor:
        if isinstance(image, (str, Path)):
            from gan_translate.data import load_image

            image = load_image(image, channels)
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image or a path, got {type(image).__name__}")
        scale = self.test_scale
        params = get_params(_NoFlip(scale), image.size, random.Random(self.seed or 0))
        return build_transform(_NoFlip(scale), params, grayscale=channels == 1)(image)[None].to(self.device)

    def input_tensor(self, image: Image.Image | str | Path, channels: int = 3) -> torch.Tensor:
        """``image`` as the networks see it: at this translator's scale, (1, C, H, W) in [-1, 1] on its device
        (for callers that drive a model's own methods, e.g. AdaIN's style interpolation)."""
        return self._tensor(image, channels)

    @torch.no_grad()
    def __call__(self, image: Image.Image | str | Path, *, direction: str = "AtoB",
                 style: Image.Image | str | Path | int | None = None,
                 style_weights: list[float] | None = None) -> Image.Image:
        """Translates ``image``; ``direction`` 'BtoA' uses a CycleGAN's second generator; style models need ``style``.
        Networks of fixed styles (fast_style) take ``style`` as an index or a name, or ``style_weights`` (a blend,
        one weight per style, used as given); by default the run's style.

        'AtoB' means the way the model was trained (its ``--direction`` already decided which half is the input).
        """
        o = self.options
        if direction not in ("AtoB", "BtoA"):
            raise UserError(f"direction must be AtoB or BtoA, got '{direction}'")
        if direction == "BtoA" and not is_bidirectional(self.model):
            raise UserError(f"model {self.model.name} translates one way only (direction AtoB)")
        key, channels, preferred = ("B", o.output_nc, "fake_A") if direction == "BtoA" else ("A", o.input_nc, "fake_B")
        batch: dict[str, Any] = {key: self._tensor(image, channels)}
        if hasattr(self.model, "mix_for") and (style is not None or style_weights):
            batch["style_mix"] = self.model.mix_for("" if style is None else style, style_weights)
        if self.model.needs_style:
            if style is None:
                raise UserError(f"model {self.model.name} needs a style image: t(content, style=image)")
            batch["style"] = self._tensor(style, 3)
            preferred = "stylized"
        if self.seed is not None:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                out = self._translate(batch, preferred)
        else:
            out = self._translate(batch, preferred)
        return tensor_to_pil(out[0].float())

    def _translate(self, batch: dict[str, Any], preferred: str) -> torch.Tensor:
        with tiled_generators(self.model, self.tile, self.tile_overlap), \
                torch.autocast(self.device.type, dtype=self.precision, enabled=self.precision is not None):
            return _first_output(self.model.translate(batch), preferred)


class _NoFlip:
    """A test scale as the options the transforms read (never flipped)."""

    def __init__(self, scale: TestScale) -> None:
        self.preprocess, self.load_size, self.crop_size = scale.preprocess, scale.load_size, scale.crop_size
        self.no_flip = True


def load_translator(path: str | Path, *, epoch: str = "latest", device: str | torch.device | None = None,
                    eval_mode: bool = False, preprocess: str | None = None, load_size: int | None = None,
                    seed: int | None = 0, mixed_precision: str = "no", tile: int = 0,
                    tile_overlap: int | None = None) -> Translator:
    """``load_translator("checkpoints/NAME")(pil_image) -> pil_image`` at the run's training scale.

    Args:
        path, epoch, device, eval_mode: as ``load_model``.
        preprocess: None = the run's training scale (its resize, aspect kept, no crop); "none" = native
            resolution; or a preprocess mode (see the module docstring).
        load_size: replaces the trained resize size (with preprocess None: the shorter side, or the width for runs
            trained with scale_width).
        seed: see ``Translator``.
        mixed_precision: 'no' (fp32), 'bf16' or 'fp16': autocast around the translation, as test.py's option.
        tile, tile_overlap: translate in tiles of ``tile`` pixels (0 = whole images), neighbours blended over
            ``tile_overlap`` pixels (None = an eighth of the tile); for images too large to translate at once.
    """
    precision = resolve_precision(mixed_precision)
    if tile < 0 or (tile_overlap is not None and tile_overlap < 0):
        raise UserError("option --tile: sizes must be positive (0 = no tiles)")
    model, options, _ = load_model(path, epoch=epoch, device=device, eval_mode=eval_mode)
    scale = resolve_test_scale(options, preprocess, load_size or 0, stride=generator_stride(model))
    return Translator(model, options, seed=seed, test_scale=scale, precision=precision, tile=tile,
                      tile_overlap=tile_overlap)
