"""The "styles" dataset mode for arbitrary style transfer (TPFR, Svoboda et al. 2020; AdaIN), and built-in style data.

Layout read by ``StylesDataset``::

    DIR/content/        photos (any depth); falls back to DIR/<phase>A when content/ is missing
    DIR/style/          either images directly (each image its own style class, e.g. 14 paintings) or one subfolder
                        per class (e.g. one per painter); both may be mixed. Falls back to DIR/<phase>B.

Each item pairs a content photo with a style image drawn from the item's own generator (seeded by (seed, epoch,
index)), plus what a metric loss over style codes needs: a second image of the same style class ("style2", the same
file with a different crop when the class has one image) and a second content photo ("A2"; the photo domain is a class
of its own for TPFR's metric loss and its discriminator's (photo, photo) pairs).

``ensure_builtin_styles`` draws a tiny deterministic data set in that layout from the built-in facades
(``builtin.render_pair``): the renderings are the content photos and the label maps, repainted in a few procedural
styles (stripes, dots, warm palette, ink), are the style classes; one more style ("checker") is kept apart in
``unseen_style/`` for zero-shot tests.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image, ImageFilter

from gan_translate.data import datasets
# The private helpers are reused so that both built-in data sets share one atomic, concurrency-safe publish.
from gan_translate.data.builtin import _PALETTE, MIN_SIZE, build_once, default_data_root, render_pair
from gan_translate.data.datasets import DataOptions, ImageDataset, ImageList, _limit, read_image
from gan_translate.data.images import is_image_file, list_images
from gan_translate.data.scan_cache import ScanCache
from gan_translate.data.shards import ShardImages, ShardRoot, concat, is_shard_spec
from gan_translate.data.transforms import build_transform, get_params
from gan_translate.errors import UserError

__all__ = ["StylesDataset", "style_classes", "ensure_builtin_styles", "BUILTIN_STYLES", "UNSEEN_STYLES"]

_RESIZING = ("resize_and_crop", "scale_width", "scale_width_and_crop")  # modes whose load_size is a resize


# ---------------------------------------------------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------------------------------------------------


def _first_dir(root: Path, names: list[str], what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise UserError(f"dataroot {root}: no {what} folder (expected {' or '.join(names)})")


def _first_set(shards: ShardRoot, names: list[str], what: str) -> str:
    for name in names:
        if shards.has(name):
            return name
    raise UserError(f"dataroot {shards.spec}: no {what} shards (expected {' or '.join(f'{n}-*.tar' for n in names)})")


def style_classes(folder: str | Path) -> list[tuple[str, list[str]]]:
    """The style classes under ``folder``: ``(name, image paths)`` sorted by name.

    An image directly in ``folder`` is a class of its own (named after the file); a subfolder is one class (named after
    the folder) holding every image below it.

    Raises:
        UserError: the folder is missing or holds no image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"style folder not found: {root}")
    classes: list[tuple[str, list[str]]] = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            try:
                classes.append((entry.name, list_images(entry)))
            except UserError:  # an empty subfolder is not a class
                continue
        elif entry.is_file() and is_image_file(entry.name):
            classes.append((entry.name, [str(entry)]))
    if not classes:
        raise UserError(f"no style images in {root}")
    return classes


# ---------------------------------------------------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------------------------------------------------


class StylesDataset(ImageDataset):
    """Content photos paired with style images by class (the "styles" dataset mode).

    Items: ``{"A", "A_paths", "A2", "A2_paths", "style", "style_paths", "style_label", "style2", "style2_paths"}``.
    "A" is content photo ``index % len(content)``; "A2" another photo (a different one when there are several);
    "style" a random style image (``index % len(style)`` with ``serial_batches``), "style_label" its class index
    (0 .. num_classes - 1, classes sorted by name), "style2" another image of that class (itself when the class has
    one). Every image gets its own crop and flip; with option ``scale_jitter`` s > 0 the resize before the crop is
    scaled by U(1 - s, 1 + s) (TPFR: 0.1).

    Length: option ``epoch_size`` when > 0 (TPFR's epochs are 6144 samples), else the larger of the photo and style
    image counts.

    Attributes:
        content_paths: the photos; style_paths, style_labels: every style image and its class index.
        classes: the class names, in label order.
    """

    def __init__(self, opt: DataOptions, scan_cache: ScanCache | None = None) -> None:
        super().__init__(opt, scan_cache)
        if is_shard_spec(opt.dataroot):
            shards = ShardRoot(opt.dataroot)
            content_set = _first_set(shards, ["content", f"{opt.phase}A"], "content")
            style_set = _first_set(shards, ["style", f"{opt.phase}B"], "style")
            content_dir, style_dir = shards.where(content_set), shards.where(style_set)
            contents: ImageList = shards.images(content_set)
            groups: list[tuple[str, ImageList]] = list(shards.style_classes(style_set))
        else:
            root = Path(opt.dataroot)
            content_dir = _first_dir(root, ["content", f"{opt.phase}A"], "content")
            style_dir = _first_dir(root, ["style", f"{opt.phase}B"], "style")
            contents, groups = list_images(content_dir), list(style_classes(style_dir))
        self.content_dir, self.style_dir = content_dir, style_dir
        self.content_paths, _ = self._scan(content_dir, _limit(contents, opt.max_dataset_size))

        self.classes: list[str] = []
        kept: list[ImageList] = []
        self.style_labels: list[int] = []
        for name, paths in groups:
            good, _ = self._scan(style_dir, paths, cache_key=f"{style_dir}{os.sep}{name}")
            self.style_labels += [len(self.classes)] * len(good)
            kept.append(good)
            self.classes.append(name)
        joined = concat(kept) if kept and isinstance(kept[0], ShardImages) else [p for good in kept for p in good]
        self.style_paths = _limit(joined, opt.max_dataset_size)
        self.style_labels = self.style_labels[: len(self.style_paths)]
        self.classes = self.classes[: max(self.style_labels) + 1]
        self.by_class: list[list[int]] = [[] for _ in self.classes]
        for i, label in enumerate(self.style_labels):
            self.by_class[label].append(i)

        self.serial = bool(opt.serial_batches)
        self.scale_jitter = float(getattr(opt, "scale_jitter", 0.0) or 0.0)
        self.epoch_size = int(getattr(opt, "epoch_size", 0) or 0)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.epoch_size or max(len(self.content_paths), len(self.style_paths))

    @staticmethod
    def _other(rng: random.Random, choices: Sequence[int], position: int) -> int:
        """A random element of ``choices`` other than the one at ``position`` (that one when it is alone)."""
        if len(choices) == 1:
            return choices[0]
        pick = rng.randrange(len(choices) - 1)
        return choices[pick if pick < position else pick + 1]

    def _load(self, paths: ImageList, index: int, rng: random.Random, channels: int) -> torch.Tensor:
        img = read_image(paths, index, channels)
        opt = self.opt
        if self.scale_jitter > 0 and opt.preprocess in _RESIZING:
            # Scale jitter of the resize before the crop; the load size never drops below the crop.
            scale = rng.uniform(1.0 - self.scale_jitter, 1.0 + self.scale_jitter)
            opt = SimpleNamespace(preprocess=opt.preprocess, crop_size=opt.crop_size, no_flip=opt.no_flip,
                                  load_size=max(opt.crop_size, round(opt.load_size * scale)))
        return build_transform(opt, get_params(opt, img.size, rng), grayscale=channels == 1)(img)

    def _load_item(self, index: int, rng: random.Random) -> dict:
        # The pairing is drawn before any image is read, so it does not depend on image sizes.
        n_content, n_style = len(self.content_paths), len(self.style_paths)
        a_index = index % n_content
        a2_index = self._other(rng, range(n_content), a_index)
        s_index = index % n_style if self.serial else rng.randrange(n_style)
        label = self.style_labels[s_index]
        members = self.by_class[label]
        s2_index = self._other(rng, members, members.index(s_index))
        a_path, a2_path = self.content_paths[a_index], self.content_paths[a2_index]
        s_path, s2_path = self.style_paths[s_index], self.style_paths[s2_index]
        return {
            "A": self._load(self.content_paths, a_index, rng, self.opt.input_nc),
            "A_paths": a_path,
            "A2": self._load(self.content_paths, a2_index, rng, self.opt.input_nc),
            "A2_paths": a2_path,
            "style": self._load(self.style_paths, s_index, rng, self.opt.output_nc),
            "style_paths": s_path,
            "style_label": label,
            "style2": self._load(self.style_paths, s2_index, rng, self.opt.output_nc),
            "style2_paths": s2_path,
        }


# Registered here rather than in datasets.py so that datasets.py need not import this module (no import cycle).
datasets.DATASET_MODES["styles"] = StylesDataset


# ---------------------------------------------------------------------------------------------------------------------
# built-in style data: procedural styles painted over the facade label maps
# ---------------------------------------------------------------------------------------------------------------------

STYLES_VERSION = 1  # bump when the drawing changes, so stale caches are rebuilt
_N_LABELS = len(_PALETTE)


def _label_index(label_map: Image.Image) -> np.ndarray:
    """Per-pixel class index of a built-in label map (its colours are exactly the palette's)."""
    pixels = np.asarray(label_map.convert("RGB"), dtype=np.int32)
    distance = ((pixels[:, :, None, :] - _PALETTE[None, None].astype(np.int32)) ** 2).sum(-1)
    return distance.argmin(-1)


def _palette(rng: np.random.Generator, hue_lo: float, hue_hi: float, sat: float,
             val: tuple[float, float]) -> np.ndarray:
    """One RGB colour per label class, hues drawn in [hue_lo, hue_hi) (0..1), for a palette family."""
    hues = rng.uniform(hue_lo, hue_hi, _N_LABELS)
    values = rng.uniform(*val, _N_LABELS)
    hsv = np.stack([hues * 255, np.full(_N_LABELS, sat * 255), values * 255], -1).astype(np.uint8)
    return np.asarray(Image.fromarray(hsv[None], "HSV").convert("RGB"), dtype=np.float32)[0]


def _coords(s: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:s, 0:s].astype(np.float32)


def _stripes(index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cool palette, dark diagonal stripes."""
    s = index.shape[0]
    img = _palette(rng, 0.5, 0.75, 0.55, (0.55, 0.95))[index]
    yy, xx = _coords(s)
    period = rng.uniform(5.0, 8.0) * max(1.0, s / 64)
    band = ((xx + yy + rng.uniform(0, period)) % period) < period * 0.35
    return img * np.where(band, 0.35, 1.0)[..., None]


def _dots(index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pastel palette with white polka dots on a grid."""
    s = index.shape[0]
    img = _palette(rng, 0.8, 1.0, 0.35, (0.75, 1.0))[index]
    yy, xx = _coords(s)
    pitch = rng.uniform(6.0, 9.0) * max(1.0, s / 64)
    dy, dx = (yy + rng.uniform(0, pitch)) % pitch - pitch / 2, (xx + rng.uniform(0, pitch)) % pitch - pitch / 2
    dot = dx**2 + dy**2 < (pitch * 0.28) ** 2
    return np.where(dot[..., None], 250.0, img)


def _warm(index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Saturated reds and oranges, blurred like wet paint, with coarse grain."""
    img = _palette(rng, 0.0, 0.12, 0.85, (0.5, 1.0))[index]
    img = np.asarray(Image.fromarray(img.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    return img + rng.normal(0, 14.0, img.shape)


def _ink(index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark ink outlines of the regions on warm paper."""
    edge = np.zeros(index.shape, bool)
    edge[1:, :] |= index[1:, :] != index[:-1, :]
    edge[:, 1:] |= index[:, 1:] != index[:, :-1]
    paper = np.array([236, 226, 200], np.float32) + rng.normal(0, 5.0, index.shape + (3,))
    ink = np.array([30, 28, 60], np.float32)
    return np.where(edge[..., None], ink, paper)


def _checker(index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Green palette under a checkerboard of light and dark squares (the style kept out of training)."""
    s = index.shape[0]
    img = _palette(rng, 0.22, 0.4, 0.7, (0.45, 0.9))[index]
    yy, xx = _coords(s)
    cell = rng.uniform(4.0, 7.0) * max(1.0, s / 64)
    check = ((xx // cell + yy // cell) % 2).astype(np.float32)
    return img * (0.6 + 0.6 * check)[..., None]


BUILTIN_STYLES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "dots": _dots,
    "ink": _ink,
    "stripes": _stripes,
    "warm": _warm,
}
UNSEEN_STYLES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {"checker": _checker}


def _write_styles(folder: Path, *, seed: int, size: int, n_content: int, per_class: int) -> None:
    (folder / "content").mkdir(parents=True)
    for i in range(n_content):
        # stream 0 of the seed: content photos (the renderings); each image has its own generator
        _, photo = render_pair(np.random.default_rng([seed, 0, i]), size)
        photo.save(folder / "content" / f"{i:04d}.png")
    groups = (("style", BUILTIN_STYLES, per_class), ("unseen_style", UNSEEN_STYLES, max(1, per_class // 2)))
    for code, (sub, painters, count) in enumerate(groups, start=1):
        for c, (name, paint) in enumerate(painters.items()):
            out = folder / sub / name
            out.mkdir(parents=True)
            for j in range(count):
                rng = np.random.default_rng([seed, code, c, j])
                labels, _ = render_pair(rng, size)
                pixels = np.clip(paint(_label_index(labels), rng) + 0.5, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(out / f"{j:04d}.png")


def ensure_builtin_styles(
    root: str | Path | None = None, *, seed: int = 0, size: int = 72, n_content: int = 24, per_class: int = 6
) -> Path:
    """Writes the built-in style data set unless a complete copy exists, and returns its folder.

    ``content/`` holds ``n_content`` facade renderings; ``style/<name>/`` ``per_class`` label maps painted in each of
    ``BUILTIN_STYLES``; ``unseen_style/checker/`` a style kept out of training. Deterministic (one generator per image)
    and safe when several processes call it at once (built aside, then renamed into place).

    Args:
        root: parent folder; default ``$GAN_TRANSLATE_DATA`` or ``~/.cache/gan_translate``.
        seed: seed of every drawing (>= 0); size: image side in pixels.
    """
    if seed < 0 or size < MIN_SIZE or n_content < 1 or per_class < 1:
        raise UserError(f"built-in styles need seed >= 0, size >= {MIN_SIZE}, n_content >= 1 and per_class >= 1 "
                        f"(got {seed}, {size}, {n_content}, {per_class})")
    params = {"seed": seed, "size": size, "n_content": n_content, "per_class": per_class}
    root = default_data_root() if root is None else Path(root).expanduser()
    final = root / f"builtin_styles_s{seed}_{size}px_{n_content}_{per_class}"
    marker = json.dumps({"styles_version": STYLES_VERSION, **params}, sort_keys=True)
    return build_once(final, marker, lambda tmp: _write_styles(tmp, **params), what="the built-in style data")
