"""What a test translates: samples (an input, maybe its true target) for one direction, read from the data layouts.

A ``Job`` is one direction of one model: which batch key the model's ``translate`` reads ("A" for the way it was
trained, "B" for a CycleGAN's second generator), the samples, and the real images of the target domain (for FID/KID).

Layouts (the names of the reference implementation):
  aligned    ``dataroot/<phase>/*``: A|B side by side; the target is the other half.
  unaligned  ``dataroot/<phase>A`` and ``<phase>B``: a target exists where the other folder has a file of the same name
             (e.g. CycleGAN on facades); FID/KID compare with the whole other folder.
  single     ``dataroot`` itself, any folder of images: no targets, no reference set.
  style      content images x style images (style-transfer models): content | style | result.
Every image is resized to the test scale the caller chose (``data.resolve_test_scale``: by default the run's training
scale, aspect ratio kept; native resolution with preprocess "none"; the generators pad to their stride and crop back).
An aligned A|B file is split at width // 2 whatever its aspect ratio.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from gan_translate.data import (ImageReadError, build_transform, get_params, item_rng, list_images, load_image,
                                split_pair)
from gan_translate.errors import UserError

__all__ = ["Job", "SampleSource", "AlignedSource", "FolderSource", "StyleSource", "sample_stem"]

# roles of the three images of a row in the model's frame: (input, output, target)
FORWARD_ROLES = ("real_A", "fake_B", "real_B")
REVERSE_ROLES = ("real_B", "fake_A", "real_A")


def sample_stem(path: str | Path, root: str | Path) -> str:
    """A file-name-safe id of an image: its path under ``root`` without extension, separators as '__'."""
    path, root = Path(path), Path(root)
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return "__".join(rel.with_suffix("").parts)


def _limit(paths: list[str], count: int) -> list[str]:
    return paths[:count] if count else paths


class SampleSource(Dataset, abc.ABC):
    """Base: ``__getitem__`` returns a dict {name, stem, input, input_path, target?, target_path?, style?, ...}, or
    {"skipped": reason} for an unreadable file when bad images are skipped."""

    def __init__(self, opt: Any, skip_bad: bool) -> None:
        self.opt = opt
        self.skip_bad = skip_bad

    def _transform(self, image: Any, params: dict, channels: int) -> torch.Tensor:
        return build_transform(self.opt, params, grayscale=channels == 1)(image)

    @abc.abstractmethod
    def load(self, index: int) -> dict:
        """Sample ``index`` (raises ImageReadError for an unreadable file)."""

    def __getitem__(self, index: int) -> dict | None:
        try:
            return self.load(index)
        except ImageReadError as err:
            if not self.skip_bad:
                raise
            return {"skipped": f"{err.path}: {err.reason}"}


class AlignedSource(SampleSource):
    """A|B files; ``swap`` follows the trained direction, ``reverse`` feeds the target half to a second generator."""

    def __init__(self, opt: Any, folder: Path, *, count: int, reverse: bool, skip_bad: bool) -> None:
        super().__init__(opt, skip_bad)
        self.folder = folder
        self.paths = _limit(list_images(folder), count)
        if not self.paths:
            raise UserError(f"no images in {folder} (check --dataroot and --phase)")
        self.swap = opt.direction == "BtoA"
        self.reverse = reverse

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> dict:
        path = self.paths[index]
        left, right = split_pair(load_image(path, channels=3), path)  # at width // 2, any aspect ratio
        a, b = (right, left) if self.swap else (left, right)  # a: the model's input domain
        a_nc, b_nc = self.opt.input_nc, self.opt.output_nc
        if self.reverse:
            a, b, a_nc, b_nc = b, a, b_nc, a_nc
        params = get_params(self.opt, a.size, item_rng(self.opt.seed, 0, index))
        return {"name": Path(path).name, "stem": sample_stem(path, self.folder), "input_path": path,
                "target_path": path, "input": self._transform(a, params, a_nc),
                "target": self._transform(b, params, b_nc)}


class FolderSource(SampleSource):
    """Images of one folder; targets from ``target_folder`` by equal file name (without extension), if given."""

    def __init__(self, opt: Any, folder: Path, *, count: int, in_channels: int, out_channels: int,
                 target_folder: Path | None, skip_bad: bool) -> None:
        super().__init__(opt, skip_bad)
        if not folder.is_dir():
            raise UserError(f"folder not found: {folder} (check --dataroot, --phase and --dataset_mode)")
        self.folder = folder
        self.paths = _limit(list_images(folder), count)
        if not self.paths:
            raise UserError(f"no images in {folder}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.targets: dict[str, str] = {}
        if target_folder is not None and target_folder.is_dir():
            self.targets = {sample_stem(p, target_folder): p for p in list_images(target_folder)}

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> dict:
        path = self.paths[index]
        stem = sample_stem(path, self.folder)
        image = load_image(path, channels=self.in_channels)
        params = get_params(self.opt, image.size, item_rng(self.opt.seed, 0, index))
        item = {"name": str(Path(path).relative_to(self.folder)), "stem": stem, "input_path": path,
                "input": self._transform(image, params, self.in_channels)}
        target_path = self.targets.get(stem)
        if target_path is not None:
            target = load_image(target_path, channels=self.out_channels)
            if target.size == image.size:  # a same-named file of another size is no pixel-aligned target
                item["target"] = self._transform(target, params, self.out_channels)
                item["target_path"] = target_path
        return item


class StyleSource(SampleSource):
    """Every content image with every style image (``count`` contents, ``num_styles`` styles; 0 = all)."""

    def __init__(self, opt: Any, content: Path, styles: Path, *, count: int, num_styles: int,
                 skip_bad: bool) -> None:
        super().__init__(opt, skip_bad)
        for folder, what in ((content, "content"), (styles, "style")):
            if not folder.is_dir():
                raise UserError(f"{what} folder not found: {folder} (check --dataroot and --style_dir)")
        self.content_root, self.style_root = content, styles
        self.contents = _limit(list_images(content), count)
        self.styles = _limit(list_images(styles), num_styles)
        if not self.contents or not self.styles:
            raise UserError(f"no images in {content if not self.contents else styles}")

    def __len__(self) -> int:
        return len(self.contents) * len(self.styles)

    def load(self, index: int) -> dict:
        # style-major order: consecutive items share a style, so equal-size contents batch together
        style_path = self.styles[index // len(self.contents)]
        path = self.contents[index % len(self.contents)]
        image, style = load_image(path, channels=self.opt.input_nc), load_image(style_path, channels=3)
        rng = item_rng(self.opt.seed, 0, index)
        stem, style_stem = sample_stem(path, self.content_root), sample_stem(style_path, self.style_root)
        return {"name": f"{Path(path).name} + {Path(style_path).name}", "stem": f"{stem}__{style_stem}",
                "content_stem": stem, "style_stem": style_stem, "input_path": path, "style_path": style_path,
                "input": self._transform(image, get_params(self.opt, image.size, rng), self.opt.input_nc),
                "style": self._transform(style, get_params(self.opt, style.size, rng), 3)}


@dataclass
class Job:
    """One direction of one model: where its samples and its reference images come from.

    Attributes:
        label: 'AtoB' / 'BtoA' in the data's frame (the folders' names), or 'style'.
        key: the batch key the model's ``translate`` reads ("A", or "B" for a second generator).
        preferred: the output to keep when ``translate`` returns several.
        roles: names of (input, output, target) images, used for file names.
        source: the samples.
        reals: a callable returning the target-domain images for FID/KID as ``(path, CHW tensor)``; None = use each
            sample's target (aligned data), or no reference at all when samples have none.
    """

    label: str
    key: str
    preferred: str
    roles: tuple[str, str, str]
    source: SampleSource
    reals: Callable[[], list[tuple[str, torch.Tensor]]] | None = None
    notes: list[str] = field(default_factory=list)


def folder_reals(opt: Any, folder: Path, channels: int, count: int) -> Callable[[], list[tuple[str, torch.Tensor]]]:
    """The images of ``folder`` (the target domain), preprocessed as the inputs are, for FID/KID."""

    def load() -> list[tuple[str, torch.Tensor]]:
        out = []
        for index, path in enumerate(_limit(list_images(folder), count)):
            try:
                image = load_image(path, channels=channels)
            except ImageReadError:
                if getattr(opt, "skip_bad_images", False):
                    continue
                raise
            params = get_params(opt, image.size, item_rng(opt.seed, 1, index))
            out.append((path, build_transform(opt, params, grayscale=channels == 1)(image)))
        return out

    return load


def data_options(saved: Any, **overrides: Any) -> Any:
    """The trained options with test-time overrides (no flips; a crop, if any, comes from the seed)."""
    return dataclasses.replace(saved, no_flip=True, **overrides)
