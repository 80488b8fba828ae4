"""What a test translates: samples (an input, maybe its true target) for one direction, read through the training
datasets (``data.datasets``), so that test.py and validation read whatever train.py reads -- folders or tar shards.

A ``Job`` is one direction of one model: which batch key the model's ``translate`` reads ("A" for the way it was
trained, "B" for a CycleGAN's second generator), the samples, and the real images of the target domain (for FID/KID).

Layouts (the names of the reference implementation; each may be a folder or a shard set of that name):
  aligned    ``dataroot/<phase>``: A|B side by side (``AlignedDataset``); the target is the other half.
  unaligned  ``dataroot/<phase>A`` and ``<phase>B``, each read as a ``SingleDataset``: a target exists where the other
             side has an image of the same name and size (e.g. CycleGAN on facades); FID/KID compare with the whole
             other side.
  single     ``dataroot`` itself, any folder of images: no targets, no reference set.
  style      content images x style images (style-transfer models): content | style | result.
Every image is resized to the test scale the caller chose (``data.resolve_test_scale``: by default the run's training
scale, aspect ratio kept; native resolution with preprocess "none"; the generators pad to their stride and crop back);
item i of a set is seeded as the training datasets seed epoch 0, item i. An unreadable file is one sample
``{"skipped": reason}`` with ``skip_bad_images`` (whether its header or its decoding failed), else an error naming it.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from gan_translate.data import AlignedDataset, ImageReadError, SingleDataset, item_rng
from gan_translate.data.datasets import ImageDataset, has_images
from gan_translate.data.shards import ShardImages
from gan_translate.errors import UserError

__all__ = ["Job", "SampleSource", "AlignedSource", "FolderSource", "StyleSource", "data_options"]

# roles of the three images of a row in the model's frame: (input, output, target)
FORWARD_ROLES = ("real_A", "fake_B", "real_B")
REVERSE_ROLES = ("real_B", "fake_A", "real_A")


def _relative(dataset: ImageDataset, paths: Any, index: int) -> Path:
    """Image ``index``'s path under its folder, or its member name inside its shard."""
    if isinstance(paths, ShardImages):
        return Path(str(paths.names[index]))
    try:
        return Path(paths[index]).relative_to(Path(dataset.root))
    except ValueError:
        return Path(Path(paths[index]).name)


def _stem(relative: Path) -> str:
    return "__".join(relative.with_suffix("").parts)


def _limited(opt: Any, count: int, **overrides: Any) -> Any:
    return dataclasses.replace(opt, max_dataset_size=count, **overrides)


class SampleSource(Dataset, abc.ABC):
    """Base: ``__getitem__`` returns a dict {name, stem, input, input_path, target?, target_path?, style?, ...}, or
    {"skipped": reason} for an unreadable file when bad images are skipped. The files the datasets' header scan
    dropped come last, one skipped sample each, so that every listed file is accounted for."""

    def __init__(self, opt: Any, skip_bad: bool) -> None:
        self.opt = opt
        self.skip_bad = skip_bad
        self.dropped: list[str] = []  # "<path>: <reason>" of files whose header could not be read

    @abc.abstractmethod
    def samples(self) -> int:
        """Number of readable samples."""

    @abc.abstractmethod
    def load(self, index: int) -> dict:
        """Sample ``index`` (raises ImageReadError for an unreadable file)."""

    def __len__(self) -> int:
        return self.samples() + len(self.dropped)

    def __getitem__(self, index: int) -> dict | None:
        if index >= self.samples():
            return {"skipped": self.dropped[index - self.samples()]}
        try:
            return self.load(index)
        except ImageReadError as err:
            if not self.skip_bad:
                raise
            return {"skipped": f"{err.path}: {err.reason}"}

    def _drop(self, dataset: ImageDataset) -> None:
        self.dropped += [f"{path}: {reason}" for path, reason in dataset.skipped]


class AlignedSource(SampleSource):
    """A|B files of ``dataroot/<phase>`` (``AlignedDataset``: ``direction`` decides which half is the input);
    ``reverse`` feeds the target half to a second generator."""

    def __init__(self, opt: Any, *, count: int, reverse: bool, skip_bad: bool) -> None:
        super().__init__(opt, skip_bad)
        self.dataset = AlignedDataset(_limited(opt, count))
        self._drop(self.dataset)
        self.reverse = reverse

    def samples(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> dict:
        item = self.dataset.item(index)
        path, relative = item["A_paths"], _relative(self.dataset, self.dataset.paths, index)
        source, target = (item["B"], item["A"]) if self.reverse else (item["A"], item["B"])
        return {"name": relative.name, "stem": _stem(relative), "input_path": path, "target_path": path,
                "input": source, "target": target}


class FolderSource(SampleSource):
    """The images of ``dataroot/folder`` (a shard set of that name; the dataroot itself with None); targets from
    ``target_folder`` by equal name (without extension) and equal size, if given."""

    def __init__(self, opt: Any, folder: str | None, *, count: int, in_channels: int, out_channels: int,
                 target_folder: str | None, skip_bad: bool) -> None:
        super().__init__(opt, skip_bad)
        if not has_images(opt.dataroot, folder):
            where = Path(opt.dataroot) / folder if folder else Path(opt.dataroot)
            raise UserError(f"folder not found: {where} (check --dataroot, --phase and --dataset_mode)")
        self.dataset = SingleDataset(_limited(opt, count), folder=folder, channels=in_channels)
        self._drop(self.dataset)
        self.target_set: SingleDataset | None = None
        self.targets: dict[str, int] = {}
        if target_folder is not None and has_images(opt.dataroot, target_folder):
            self.target_set = SingleDataset(_limited(opt, 0), folder=target_folder, channels=out_channels)
            self.targets = {_stem(_relative(self.target_set, self.target_set.paths, i)): i
                            for i in range(len(self.target_set))}

    def samples(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> dict:
        item = self.dataset.item(index)
        relative = _relative(self.dataset, self.dataset.paths, index)
        sample = {"name": str(relative), "stem": _stem(relative), "input_path": item["A_paths"], "input": item["A"]}
        position = self.targets.get(sample["stem"])
        # a same-named image of another size is no pixel-aligned target
        if position is not None and self.target_set.sizes[position] == self.dataset.sizes[index]:
            target = self.target_set.item(position, rng=item_rng(self.dataset.seed, 0, index))  # the input's crop
            sample["target"], sample["target_path"] = target["A"], target["A_paths"]
        return sample

    def reals(self, count: int) -> Callable[[], list[tuple[str, torch.Tensor]]] | None:
        """The target side's images (the first ``count``; 0 = all), preprocessed as the inputs are, for FID/KID."""
        target_set = self.target_set
        if target_set is None:
            return None

        def load() -> list[tuple[str, torch.Tensor]]:
            out = []
            for index in range(min(count, len(target_set)) if count else len(target_set)):
                try:
                    item = target_set.item(index, epoch=1)
                except ImageReadError:
                    if self.skip_bad:
                        continue
                    raise
                out.append((item["A_paths"], item["A"]))
            return out

        return load


class StyleSource(SampleSource):
    """Every content image with every style image (``count`` contents, ``num_styles`` styles; 0 = all). Each side is
    ``(dataroot, folder)`` as ``FolderSource`` reads it."""

    def __init__(self, opt: Any, content: tuple[str, str | None], styles: tuple[str, str | None], *, count: int,
                 num_styles: int, skip_bad: bool) -> None:
        super().__init__(opt, skip_bad)
        for (root, folder), what in ((content, "content"), (styles, "style")):
            if not has_images(root, folder):
                where = Path(root) / folder if folder else Path(root)
                raise UserError(f"{what} folder not found: {where} (check --dataroot and --style_dir)")
        self.contents = SingleDataset(_limited(opt, count, dataroot=content[0]), folder=content[1],
                                      channels=opt.input_nc)
        self.styles = SingleDataset(_limited(opt, num_styles, dataroot=styles[0]), folder=styles[1], channels=3)
        self._drop(self.contents)
        self._drop(self.styles)

    def samples(self) -> int:
        return len(self.contents) * len(self.styles)

    def load(self, index: int) -> dict:
        # style-major order: consecutive items share a style, so equal-size contents batch together
        style_index, content_index = divmod(index, len(self.contents))
        rng = item_rng(self.opt.seed, 0, index)
        content, style = self.contents.item(content_index, rng=rng), self.styles.item(style_index, rng=rng)
        c_rel = _relative(self.contents, self.contents.paths, content_index)
        s_rel = _relative(self.styles, self.styles.paths, style_index)
        stem, style_stem = _stem(c_rel), _stem(s_rel)
        return {"name": f"{c_rel.name} + {s_rel.name}", "stem": f"{stem}__{style_stem}",
                "content_stem": stem, "style_stem": style_stem, "input_path": content["A_paths"],
                "style_path": style["A_paths"], "input": content["A"], "style": style["A"]}


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


def data_options(saved: Any, **overrides: Any) -> Any:
    """The trained options with test-time overrides: no flips, whole images (a crop, if any, comes from the seed),
    none of the training schedule's data rules (CUT's un-jittered decay epochs)."""
    if hasattr(saved, "decay_no_jitter"):
        overrides.setdefault("decay_no_jitter", False)
    return dataclasses.replace(saved, no_flip=True, **overrides)
