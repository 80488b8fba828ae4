"""Preprocessing of the pix2pix/CycleGAN reference (Isola et al. 2017; Zhu et al. 2017): resize, random crop, flip.

The random choices (crop position, flip) are drawn once per item by ``get_params`` from a ``random.Random`` the caller
owns, then applied by the transform ``build_transform`` returns. Keeping the draw separate lets a paired dataset apply
one crop and flip to both halves, and taking the generator as an argument (never the global random/numpy/torch state)
makes every item a pure function of (seed, epoch, index): resumed and multi-GPU runs see exactly the same data.

Departures from the reference: "none" keeps the image size as it is (the networks pad to their stride and crop back),
and an image smaller than ``crop_size`` is upscaled until its short side fits the crop instead of failing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from PIL import Image

from gan_translate.data.images import pil_to_tensor
from gan_translate.errors import UserError

BICUBIC = Image.Resampling.BICUBIC

Size = tuple[int, int]  # (width, height), as PIL reports it


class PreprocessOptions(Protocol):
    """The options the transforms read (a config object or a ``types.SimpleNamespace``)."""

    preprocess: str
    load_size: int
    crop_size: int
    no_flip: bool


# --- the resize stage of each mode ---------------------------------------------------------------------------------


def _keep(size: Size, load_size: int, crop_size: int) -> Size:
    return size


def _resize_square(size: Size, load_size: int, crop_size: int) -> Size:
    return load_size, load_size


def _scale_width(size: Size, load_size: int, crop_size: int) -> Size:
    """Width to ``load_size`` keeping the aspect ratio, but never lower than ``crop_size`` (as the reference does)."""
    width, height = size
    if width == load_size and height >= crop_size:
        return size
    return load_size, int(max(load_size * height / width, crop_size))


def _scale_shortside(size: Size, load_size: int, crop_size: int) -> Size:
    """Shorter side to ``load_size``, aspect ratio kept: the test-time scale of a run trained with resize_and_crop
    (which squashes to load_size x load_size), and the test scale of AdaIN's authors (load_size 512)."""
    width, height = size
    short = min(width, height)
    if short == load_size:
        return size
    return max(1, round(width * load_size / short)), max(1, round(height * load_size / short))


_RESIZE: dict[str, Callable[[Size, int, int], Size]] = {
    "resize_and_crop": _resize_square,
    "crop": _keep,
    "scale_width": _scale_width,
    "scale_width_and_crop": _scale_width,
    "none": _keep,
    "scale_shortside": _scale_shortside,
}
_CROPPING = frozenset({"resize_and_crop", "crop", "scale_width_and_crop"})
PREPROCESS_MODES: tuple[str, ...] = tuple(_RESIZE)


def _check_mode(preprocess: str) -> None:
    if preprocess not in _RESIZE:
        raise UserError(f"unknown preprocess {preprocess!r}; valid: {', '.join(PREPROCESS_MODES)}")


def _resized(preprocess: str, load_size: int, crop_size: int, size: Size) -> Size:
    width, height = _RESIZE[preprocess](size, load_size, crop_size)
    if preprocess in _CROPPING and min(width, height) < crop_size:
        # Too small to crop: scale up (aspect kept) until the short side is the crop; ceil keeps both sides >= crop.
        scale = crop_size / min(width, height)
        width = max(crop_size, math.ceil(width * scale - 1e-9))
        height = max(crop_size, math.ceil(height * scale - 1e-9))
    return width, height


def resized_size(opt: PreprocessOptions, size: Size) -> Size:
    """The size an image of ``size`` has after the resize stage (before the crop), small-image upscale included."""
    _check_mode(opt.preprocess)
    return _resized(opt.preprocess, opt.load_size, opt.crop_size, size)


def needs_upscale(opt: PreprocessOptions, size: Size) -> bool:
    """True when an image of ``size`` is too small for the crop and will be upscaled (worth a warning)."""
    _check_mode(opt.preprocess)
    if opt.preprocess not in _CROPPING:
        return False
    width, height = _RESIZE[opt.preprocess](size, opt.load_size, opt.crop_size)
    return min(width, height) < opt.crop_size


def output_size(opt: PreprocessOptions, size: Size) -> Size:
    """The (width, height) of the tensor the transform makes from an image of ``size``."""
    if opt.preprocess in _CROPPING:
        return opt.crop_size, opt.crop_size
    return resized_size(opt, size)


# --- random parameters and the transform ---------------------------------------------------------------------------


def get_params(opt: PreprocessOptions, size: Size, rng: random.Random) -> dict:
    """Draw one item's crop position and flip from ``rng``.

    Three values are always drawn (x, y, flip), whatever the mode, so an item's stream of draws has the same shape for
    every option set.

    Returns:
        ``{"crop_pos": (x, y), "flip": bool}``; x and y are offsets into the resized image.
    """
    width, height = resized_size(opt, size)
    x = rng.randint(0, max(0, width - opt.crop_size))
    y = rng.randint(0, max(0, height - opt.crop_size))
    flip = rng.random() > 0.5
    return {"crop_pos": (x, y), "flip": flip and not opt.no_flip}


@dataclass(frozen=True)
class ImageTransform:
    """PIL image -> float32 CHW tensor in [-1, 1]: grayscale?, resize, crop, flip, normalise (picklable)."""

    preprocess: str
    load_size: int
    crop_size: int
    crop_pos: tuple[int, int]
    flip: bool
    grayscale: bool
    method: Image.Resampling = BICUBIC

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("L" if self.grayscale else "RGB")
        target = _resized(self.preprocess, self.load_size, self.crop_size, img.size)
        if target != img.size:
            img = img.resize(target, self.method)
        if self.preprocess in _CROPPING:
            # Clamp so parameters drawn for a slightly different size can never crop past the edge (PIL would pad).
            x = min(self.crop_pos[0], img.width - self.crop_size)
            y = min(self.crop_pos[1], img.height - self.crop_size)
            img = img.crop((x, y, x + self.crop_size, y + self.crop_size))
        if self.flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(img)


def build_transform(
    opt: PreprocessOptions, params: dict, grayscale: bool, method: Image.Resampling = BICUBIC
) -> ImageTransform:
    """The transform for one item, applying ``params`` from ``get_params`` (crop position, flip).

    Args:
        opt: reads ``preprocess``, ``load_size``, ``crop_size``, ``no_flip``.
        params: ``{"crop_pos": (x, y), "flip": bool}``; no flip happens when ``opt.no_flip`` is set.
        grayscale: make a 1-channel tensor (else 3 channels).
        method: the resampling filter for resizes.
    """
    _check_mode(opt.preprocess)
    x, y = params["crop_pos"]
    return ImageTransform(
        preprocess=opt.preprocess,
        load_size=opt.load_size,
        crop_size=opt.crop_size,
        crop_pos=(int(x), int(y)),
        flip=bool(params["flip"]) and not opt.no_flip,
        grayscale=grayscale,
        method=method,
    )


# --- the scale a trained run is tested at --------------------------------------------------------------------------

TRAIN_SCALE = "train_scale"  # test-time preprocess: the training preprocess's resize, aspect kept, no crop or flip
# The resize of each training mode without its crop. resize_and_crop squashes to load_size x load_size; at test the
# aspect ratio is kept instead, with the shorter side at load_size (identical for square images).
_TEST_RESIZE = {"resize_and_crop": "scale_shortside", "scale_width_and_crop": "scale_width",
                "scale_width": "scale_width", "scale_shortside": "scale_shortside", "crop": "none", "none": "none"}
_USES_LOAD = frozenset({"resize_and_crop", "scale_width", "scale_width_and_crop", "scale_shortside"})
_USES_CROP = frozenset({"resize_and_crop", "crop", "scale_width", "scale_width_and_crop"})  # scale_width: a floor


@dataclass(frozen=True)
class TestScale:
    """How test-time inputs are resized: a preprocess mode with its sizes, and a sentence saying so.

    ``preprocess``, ``load_size`` and ``crop_size`` replace the trained options of the data (``as_options``).
    """

    preprocess: str
    load_size: int
    crop_size: int
    description: str

    def as_options(self) -> dict:
        return {"preprocess": self.preprocess, "load_size": self.load_size, "crop_size": self.crop_size}

    def size_for(self, size: Size) -> Size:
        """The (width, height) an input of ``size`` is translated at."""
        return output_size(self, size)


TestScale.__test__ = False  # a class named Test*, not a pytest test


def _trained_text(trained: PreprocessOptions) -> str:
    mode, load, crop = trained.preprocess, trained.load_size, trained.crop_size
    return {"resize_and_crop": f"trained: resize to {load}x{load}, crop {crop}",
            "scale_width": f"trained: width {load}", "scale_width_and_crop": f"trained: width {load}, crop {crop}",
            "scale_shortside": f"trained: shorter side {load}", "crop": f"trained: crops of {crop}, no resize",
            "none": "trained at native resolution"}.get(mode, f"trained: {mode}")


def _resize_text(mode: str, load: int) -> str:
    return {"scale_shortside": f"shorter side {load}", "scale_width": f"width {load}"}.get(mode, mode)


def snap_to_stride(size: int, stride: int) -> int:
    """The training size a generator of ``stride`` is tested at: ``size`` itself when padding it up to the stride
    costs little (at most 1/8 of the side: ResNets, 286 -> 288), else the nearest multiple of the stride (unet_256
    trained at 286: 256, where padding to 512 would make three quarters of the work reflection)."""
    if stride <= 1:
        return size
    up = -(-size // stride) * stride
    if (up - size) * 8 <= size:
        return size
    return max(stride, round(size / stride) * stride)


def resolve_test_scale(trained: PreprocessOptions, preprocess: str | None = None, load_size: int = 0,
                       crop_size: int = 0, stride: int = 1) -> TestScale:
    """The scale to test a run at, from its training options and what the user asked for.

    Args:
        trained: the run's saved options (``preprocess``, ``load_size``, ``crop_size``).
        preprocess: None, "" or ``TRAIN_SCALE``: the training scale (the training resize, aspect kept, no crop);
            "none": native resolution; any other mode: that preprocessing (crop, if any, seeded; no flip).
        load_size, crop_size: sizes the user gave (0 = not given). A size the chosen mode does not use is an error,
            never silently ignored. ``crop_size`` with the training scale is the reference's test habit
            (``--load_size N --crop_size N``): resize to N x N as its test does (resize_and_crop).
        stride: the generator's stride (sides are padded to multiples of it): the training scale snaps to it where
            padding would cost more than it keeps (``snap_to_stride``); sizes the user gives are kept as given.
    """
    mode = TRAIN_SCALE if preprocess in (None, "", TRAIN_SCALE) else preprocess
    if mode != TRAIN_SCALE:
        _check_mode(mode)
    if mode == TRAIN_SCALE:
        if crop_size:  # the reference's test: resize_and_crop with load_size defaulting to crop_size
            load = load_size or crop_size
            if load < crop_size:
                raise UserError(f"option --crop_size: {crop_size} is larger than --load_size {load}")
            what = f"resize to {load}x{load}" + (f", crop {crop_size}" if load > crop_size else "")
            return TestScale("resize_and_crop", load, crop_size,
                             f"{what} as the reference test.py does (--crop_size {crop_size}; aspect ratio not "
                             f"kept; {_trained_text(trained)})")
        _check_mode(trained.preprocess)
        resize = _TEST_RESIZE[trained.preprocess]
        if load_size:  # the user's size, with the training resize's rule (shorter side where training kept none)
            resize = "scale_shortside" if resize == "none" else resize
            return TestScale(resize, load_size, trained.crop_size,
                             f"{_resize_text(resize, load_size)} (--load_size {load_size}; {_trained_text(trained)})")
        if resize == "none":
            return TestScale("none", trained.load_size, trained.crop_size,
                             f"training scale: native resolution ({_trained_text(trained)})")
        load = snap_to_stride(trained.load_size, stride)
        snapped = (f"; {trained.load_size} rounded to the nearest multiple of the generator stride {stride}; "
                   f"--load_size {trained.load_size} keeps it") if load != trained.load_size else ""
        return TestScale(resize, load, trained.crop_size,
                         f"training scale: {_resize_text(resize, load)} ({_trained_text(trained)}{snapped})")
    for given, name, used in ((load_size, "load_size", _USES_LOAD), (crop_size, "crop_size", _USES_CROP)):
        if given and mode not in used:
            raise UserError(f"option --{name}: --preprocess {mode} does not use it"
                            + (" (native resolution)" if mode == "none" else ""))
    load, crop = load_size or trained.load_size, crop_size or trained.crop_size
    if mode in _CROPPING and mode != "crop" and load < crop:
        raise UserError(f"option --crop_size: {crop} is larger than --load_size {load}")
    if mode == "none":
        return TestScale("none", load, crop, "native resolution (--preprocess none)")
    sizes = ", ".join(f"{n} {v}" for n, v, used in (("load_size", load, _USES_LOAD), ("crop_size", crop, _USES_CROP))
                      if mode in used)
    return TestScale(mode, load, crop, f"--preprocess {mode} ({sizes})")
