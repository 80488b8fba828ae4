"""The demo's work, free of any web framework: read an upload safely, keep one model loaded, translate, stylize.

Every mistake a visitor can make (no image, an unreadable or huge upload, a run without its checkpoint, VGG weights
that are not here) is a ``UserError`` with one line; ``app.py`` shows that line in the page.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from gan_translate.data.images import ImageReadError, load_image, pil_to_tensor, probe_image, tensor_to_pil
from gan_translate.data.transforms import resolve_test_scale
from gan_translate.errors import UserError
from gan_translate.inference import (Translator, generator_stride, is_bidirectional, load_model, resolve_checkpoint,
                                     resolve_device, resolve_precision)
from gan_translate.models import model_class
from gan_translate.stylize import HISTOGRAM_WEIGHT, LAPLACIAN_WEIGHT

# The stylize entry's choices beyond one style loss: the combinations the papers use -- Risser et al.'s histogram loss
# beside the Gram loss, Li et al.'s Laplacian term beside it -- as (style losses, Laplacian weight), at the weights
# docs/stylize.md shows.
STYLIZE_COMBINATIONS: dict[str, tuple[dict[str, float], float]] = {
    "gram+histogram": ({"gram": 1.0, "histogram": HISTOGRAM_WEIGHT}, 0.0),
    "gram+laplacian": ({"gram": 1.0}, LAPLACIAN_WEIGHT),
}
DEFAULT_MAX_MEGAPIXELS = 4.0  # what one request may hand a network: 2048 x 2048 takes seconds on a CPU, GBs of memory


@dataclass(frozen=True)
class Controls:
    """Which inputs a model needs, read from its class: a model added later gets the right ones with no change."""

    bidirectional: bool = False  # a second generator for B -> A (CycleGAN)
    needs_style: bool = False  # a style image (AdaIN, TPFR)
    alpha: bool = False  # a content-style trade-off in its options (AdaIN)
    style_mix: bool = False  # interpolation between style images (a ``stylize(content, styles, weights=...)``)


def controls_for(model_name: str) -> Controls:
    """The inputs of a registered model; an unknown name gets the plain ones (loading it then says what is wrong)."""
    try:
        cls = model_class(model_name)
    except UserError:
        return Controls()
    option_names = {f.name for f in dataclasses.fields(cls.Options)}
    return Controls(bidirectional=is_bidirectional(cls), needs_style=bool(cls.needs_style),
                    alpha=bool(cls.needs_style) and "alpha" in option_names,
                    style_mix=bool(cls.needs_style) and callable(getattr(cls, "stylize", None)))


def read_upload(path: str | Path | None, channels: int, *, what: str = "image",
                max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> Image.Image:
    """An uploaded file as an upright "L" or "RGB" image; one-line UserErrors for nothing, garbage and huge files.

    The size is read from the header first, so a decompression bomb is refused before its pixels are decoded.
    """
    if path is None or str(path) == "":
        source = "click one of the run's styles" if "style" in what else "pick an example"
        raise UserError(f"no {what}: upload one or {source}")
    name = Path(path).name
    try:
        width, height = probe_image(path)
        check_size(width, height, what=f"the {what} {name}", max_megapixels=max_megapixels, hint=False)
        return load_image(path, channels)
    except ImageReadError as err:
        raise UserError(f"cannot read the {what} {name}: {err.reason}") from None


def check_size(width: int, height: int, *, what: str, max_megapixels: float, hint: bool = True) -> None:
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        advice = "; switch off native resolution" if hint else ""
        raise UserError(f"{what} is {width}x{height} ({megapixels:.1f} MP), above this demo's limit of "
                        f"{max_megapixels:g} MP (--max_megapixels){advice}")


NATIVE = "none"  # load_translator's preprocess for native resolution (None: the run's training scale)


@dataclass
class Loaded:
    """The one model in memory (a run's, or stylize's VGG-19) and what it is."""

    key: tuple[str, ...]
    model: torch.nn.Module | None = None
    options: Any = None
    translators: dict[str | None, Translator] = dataclasses.field(default_factory=dict)
    precision: torch.dtype | None = None  # autocast dtype (--mixed_precision)
    tile: int = 0  # tiles of this many pixels (--tile; 0 = whole images)

    def translator(self, preprocess: str | None) -> Translator:
        """The model at a scale: ``preprocess`` as ``load_translator`` takes it (None = training scale, 'none' =
        native resolution). Both scales share the one model."""
        if preprocess not in self.translators:
            scale = resolve_test_scale(self.options, preprocess, stride=generator_stride(self.model))
            self.translators[preprocess] = Translator(self.model, self.options, test_scale=scale,
                                                      precision=self.precision, tile=self.tile)
        return self.translators[preprocess]


class DemoSession:
    """Holds at most one model (a run's, or stylize's VGG-19); loading another frees it first.

    Args:
        vgg_weights: VGG-19 weights for the stylize entry ('' = torchvision's cache; 'random' for tests only).
        device: 'auto', 'cpu', 'cuda', ...
        max_megapixels: the largest image handed to a network (and the largest upload decoded).
        mixed_precision: 'no', 'bf16' or 'fp16': runs translate under autocast, as test.py's option.
        tile: runs' image generators work in tiles of this many pixels (0 = whole images).
    """

    def __init__(self, *, vgg_weights: str = "", device: str | None = None,
                 max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, mixed_precision: str = "no",
                 tile: int = 0) -> None:
        self.vgg_weights = vgg_weights
        self.device = resolve_device(device)
        self.precision = resolve_precision(mixed_precision)
        self.tile = tile
        self.max_megapixels = max_megapixels
        self.loaded: Loaded | None = None
        # one request at a time touches the model (and its RNG fork); re-entrant: loading releases under it
        self._lock = threading.RLock()

    # ---- the one loaded model
    def release(self) -> None:
        """Frees the loaded model (and the GPU memory it held); waits for a translation using it to finish."""
        with self._lock:
            self.loaded = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _load_run(self, run_path: str | Path, checkpoint: str) -> tuple[Loaded, Path]:
        run_path = Path(run_path)
        try:
            ckpt = resolve_checkpoint(run_path, checkpoint or "latest")
        except UserError as err:
            if "no checkpoint" in str(err):
                raise UserError(f"run {run_path.name} has no checkpoint yet (train it, or pick another run)") from None
            raise
        key = ("run", str(ckpt.resolve()))
        if self.loaded is None or self.loaded.key != key:
            self.release()
            model, options, _ = load_model(ckpt, device=self.device)
            self.loaded = Loaded(key, model=model, options=options, precision=self.precision,
                                 tile=self.tile if not model.needs_style else 0)
        return self.loaded, ckpt

    def _load_vgg(self, last_layer: str, pool: str) -> torch.nn.Module:
        from gan_translate.nets.vgg import build_vgg19

        key = ("vgg", self.vgg_weights, last_layer, pool)
        if self.loaded is None or self.loaded.key != key:
            self.release()
            self.loaded = Loaded(key, model=build_vgg19(self.vgg_weights, last_layer=last_layer, pool=pool)
                                 .to(self.device))
        return self.loaded.model

    # ---- translation
    def translate(self, run_path: str | Path, checkpoint: str, image: str | Path | None, *, native: bool = False,
                  direction: str = "AtoB", style: str | Path | None = None, style2: str | Path | None = None,
                  mix: float = 0.0, alpha: float = 1.0) -> tuple[Image.Image, str]:
        """One image through a run's model; returns the output and a line saying what was done.

        Args:
            native: translate at the upload's own resolution instead of the training scale.
            direction: 'BtoA' for a bidirectional model's second generator.
            style, style2, mix: the style image(s) of style models; ``mix`` in [0, 1] is the weight of ``style2``
                (models with style interpolation).
            alpha: the content-style trade-off of models that have one.
        """
        with self._lock:
            start = time.perf_counter()
            loaded, ckpt = self._load_run(run_path, checkpoint)
            translator = loaded.translator(NATIVE if native else None)
            controls = controls_for(translator.model.name)
            if direction == "BtoA" and not controls.bidirectional:
                direction = "AtoB"  # a switch left over from the previous run
            o = translator.options
            content = self._checked(read_upload(image, o.output_nc if direction == "BtoA" else o.input_nc,
                                                max_megapixels=self.max_megapixels), translator, native)
            styles = []
            if controls.needs_style:
                styles.append(self._checked(read_upload(style, 3, what="style image",
                                                        max_megapixels=self.max_megapixels), translator, native))
                if controls.style_mix and style2 and mix > 0:
                    styles.append(self._checked(read_upload(style2, 3, what="second style image",
                                                            max_megapixels=self.max_megapixels), translator, native))
            if controls.style_mix:
                out = self._stylize_with(translator, content, styles, mix=mix, alpha=alpha if controls.alpha else 1.0)
            else:
                out = translator(content, direction=direction, style=styles[0] if styles else None)
            width, height = translator.size_for(content.size)
            what = f"{Path(run_path).name}/{ckpt.name}" + (f" {direction}" if controls.bidirectional else "")
            return out, (f"{what}: {width}x{height} in, {out.width}x{out.height} out ({translator.scale}), "
                         f"{time.perf_counter() - start:.2f} s")

    def _checked(self, image: Image.Image, translator: Translator, native: bool) -> Image.Image:
        """``image`` when the size the network will see is within the limit."""
        width, height = translator.size_for(image.size)
        check_size(width, height, what="the image to translate", max_megapixels=self.max_megapixels, hint=native)
        return image

    @torch.no_grad()
    def _stylize_with(self, translator: Translator, content: Image.Image, styles: list[Image.Image], *,
                      mix: float, alpha: float) -> Image.Image:
        """A style-interpolating model's ``stylize`` (AdaIN: Huang & Belongie sec. 7): the styles' targets mixed by
        weight, then the content-style trade-off ``alpha``; the images at the translator's scale."""
        tensors = [translator.input_tensor(im, 3) for im in (content, *styles)]
        weights = [1.0 - mix, mix] if len(styles) == 2 else [1.0]
        with torch.autocast(self.device.type, dtype=translator.precision, enabled=translator.precision is not None):
            out = translator.model.stylize(tensors[0], tensors[1:], weights=weights, alpha=float(alpha))
        return tensor_to_pil(out[0].float())

    # ---- optimisation (no run: the stylize command's objective)
    def stylize(self, content: str | Path | None, style: str | Path | None, *, loss: str = "gram",
                image_size: int = 256, steps: int = 100,
                on_step: Callable[[int, int], None] | None = None, content_mask: str | Path | None = None,
                style_mask: str | Path | None = None) -> tuple[Image.Image, str]:
        """Gatys-style optimisation of one image (``gan_translate.stylize``); ``on_step(step, steps)`` reports progress.

        The output has the content's size; ``image_size`` is the longer side the optimisation works at. With a
        content and a style mask (colour-coded regions, ``data.masks``), each region of the content takes the style of
        the same colour's region of the style image (the guided Gram loss).
        """
        from gan_translate.stylize import StylizeSettings, finish, prepare_images, stylize
        from gan_translate.stylize import _fit as fit_longer_side

        # mmd_gaussian compares random subsets of positions, a noisy objective that L-BFGS handles badly
        losses, laplacian = STYLIZE_COMBINATIONS.get(loss, ({loss: 1.0}, 0.0))
        settings = StylizeSettings(image_size=int(image_size), steps=int(steps), style_losses=dict(losses),
                                   laplacian_weight=laplacian, save_every=1,
                                   optimizer="adam" if loss == "mmd_gaussian" else "lbfgs")
        settings.validate()
        with self._lock:
            start = time.perf_counter()
            content_image = read_upload(content, 3, what="content image", max_megapixels=self.max_megapixels)
            style_image = read_upload(style, 3, what="style image", max_megapixels=self.max_megapixels)
            vgg = self._load_vgg(settings.layers_in_use()[-1], settings.pool)
            original = pil_to_tensor(content_image)[None]
            work = [pil_to_tensor(fit_longer_side(im, settings.image_size))[None].to(self.device)
                    for im in (content_image, style_image)]
            work_content, work_styles = prepare_images(work[0], work[1:], settings.preserve_color)
            guides, notes = self._guides(content_mask, style_mask, content_image, style_image, work)
            callback = (lambda step, _image: on_step(step, settings.steps)) if on_step else None
            result = stylize(vgg, work_content, work_styles, settings, progress=False, callback=callback,
                             guides=guides)
            out = tensor_to_pil(finish(result.image, original.to(self.device), settings.preserve_color)[0])
            return out, (f"stylize ({loss}, {settings.steps} iterations at {settings.image_size} px): loss "
                         f"{result.losses[0]:.4g} -> {result.losses[-1]:.4g}, {out.width}x{out.height} out, "
                         f"{time.perf_counter() - start:.1f} s" + "".join(f"; {n}" for n in notes))

    def _guides(self, content_mask: str | Path | None, style_mask: str | Path | None, content: Image.Image,
                style: Image.Image, work: list[torch.Tensor]) -> tuple[tuple | None, list[str]]:
        """The masks' guides at the working sizes (or None without masks), and the notes about resized masks."""
        from gan_translate.data.masks import check_regions, mask_guides

        if content_mask is None and style_mask is None:
            return None, []
        if content_mask is None or style_mask is None:
            raise UserError("masks: upload both a content mask and a style mask, or neither")
        notes: list[str] = []
        pairs = [(content_mask, content, "content mask"), (style_mask, style, "style mask")]
        guides = [mask_guides(read_upload(path, 3, what=what, max_megapixels=self.max_megapixels), image.size,
                              Path(path).name, what=what, say=notes.append) for path, image, what in pairs]
        check_regions(guides[0], Path(content_mask).name, guides[1:], [Path(style_mask).name])
        resized = [torch.nn.functional.interpolate(g[None], size=w.shape[-2:], mode="nearest")[0].to(self.device)
                   for g, w in zip(guides, work)]
        return (resized[0], resized[1:]), notes

