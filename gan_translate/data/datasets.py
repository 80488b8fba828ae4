"""Datasets of the pix2pix/CycleGAN reference (aligned, unaligned, single), a seeded epoch sampler and the DataLoader.

Determinism: the sampler's order is a function of (seed, epoch) and every item's random crop/flip/partner draw comes
from a ``random.Random`` derived from (seed, epoch, index). The data stream therefore does not depend on worker count,
process, or how many items were drawn before -- what exact resume and identical multi-GPU runs need.

Conventions: the returned "A" is always the network input (``input_nc`` channels) and "B" the target (``output_nc``);
``direction: BtoA`` swaps the sources here, so models never need to know the direction.
"""

from __future__ import annotations

import abc
import copy
import hashlib
import random
import sys
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from gan_translate.data.images import ImageReadError, list_images, load_image, probe_image
from gan_translate.data.scan_cache import Probe, ScanCache
from gan_translate.data.shards import ShardImages, ShardRoot, is_shard_spec
from gan_translate.data.transforms import build_transform, get_params, needs_upscale, resized_size
from gan_translate.errors import UserError

Size = tuple[int, int]
ImageList = list[str] | ShardImages  # image files, or images inside tar shards
_DIRECTIONS = ("AtoB", "BtoA")
_CHANNELS = (1, 3)


class DataOptions(Protocol):
    """The options the datasets read (names of the reference implementation)."""

    dataroot: str
    phase: str
    dataset_mode: str
    direction: str
    input_nc: int
    output_nc: int
    preprocess: str
    load_size: int
    crop_size: int
    no_flip: bool
    serial_batches: bool
    max_dataset_size: int | float
    seed: int
    skip_bad_images: bool


# --- seeds ---------------------------------------------------------------------------------------------------------


def stable_hash(*numbers: int) -> int:
    """A 64-bit hash of integers that is the same in every process and run (unlike Python's salted ``hash``)."""
    text = ":".join(str(int(n)) for n in numbers).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def item_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The random generator of one item: a pure function of (seed, epoch, index)."""
    return random.Random(stable_hash(seed, epoch, index))


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` pairs in an order fixed by (seed, epoch); call ``set_epoch`` before each epoch.

    Passing the epoch along with the index lets the dataset seed each item's augmentation from (seed, epoch, index).

    Args:
        dataset_len: number of items.
        shuffle: a fresh permutation each epoch (else 0, 1, 2, ...).
        seed: the run's seed.
    """

    def __init__(self, dataset_len: int, *, shuffle: bool, seed: int) -> None:
        self.dataset_len = int(dataset_len)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        """The item indices of ``epoch``, in the order they are yielded."""
        if not self.shuffle:
            return list(range(self.dataset_len))
        generator = torch.Generator()
        generator.manual_seed(stable_hash(self.seed, epoch) >> 1)  # manual_seed wants a value below 2**63
        return torch.randperm(self.dataset_len, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, index) for index in self.order(epoch)])

    def __len__(self) -> int:
        return self.dataset_len


# --- shared machinery ----------------------------------------------------------------------------------------------


def _limit(paths: ImageList, max_size: int | float | None) -> ImageList:
    """Keep the first ``max_size`` paths; 0, None or infinity mean no limit."""
    if not max_size or max_size >= len(paths):
        return paths
    return paths[: int(max_size)]


def _log(message: str) -> None:
    """A line of its own, also while the trainer's progress bar occupies the terminal's last line: in the main
    process through tqdm (which clears and redraws the bar); a loader worker cannot reach the bar, so it clears the
    line of a terminal, or starts a new line in a log file."""
    if torch.utils.data.get_worker_info() is None:
        tqdm.write(message, file=sys.stderr)
        sys.stderr.flush()
        return
    lead = "\r\033[K" if sys.stderr.isatty() else "\n"
    print(lead + message, file=sys.stderr, flush=True)


def _split_key(key: int | tuple[int, int], length: int) -> tuple[int, int]:
    epoch, index = key if isinstance(key, tuple) else (0, key)
    epoch, index = int(epoch), int(index)
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} items")
    return epoch, index


def read_image(paths: ImageList, index: int, channels: int) -> Image.Image:
    """Image ``index`` of a list of files or of shard images, decoded by ``images.load_image``."""
    if isinstance(paths, ShardImages):
        return paths.load(index, channels)
    return load_image(paths[index], channels=channels)


def open_images(opt: DataOptions, folder: str | None) -> tuple[Path | str, ImageList]:
    """The images of ``dataroot/folder`` (the whole dataroot with None): a sorted file list, or, when ``dataroot``
    names tar shards, the shard set called ``folder`` (e.g. ``trainA-*.tar``). Returns (how messages name it, images).
    """
    if is_shard_spec(opt.dataroot):
        shards = ShardRoot(opt.dataroot)
        return shards.where(folder), shards.images(folder)
    root = Path(opt.dataroot) if folder is None else Path(opt.dataroot) / folder
    return root, list_images(root)


def has_images(dataroot: str | Path, folder: str | None) -> bool:
    """Whether ``dataroot/folder`` exists (the dataroot itself with None): a folder, or a shard set of that name."""
    if is_shard_spec(dataroot):
        return folder is None or ShardRoot(dataroot).has(folder)
    return (Path(dataroot) if folder is None else Path(dataroot) / folder).is_dir()


def _check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


class ImageDataset(Dataset, abc.ABC):
    """Base of the image datasets: header scan of bad files, item seeding and skipping of undecodable images.

    Subclasses fill their file lists with ``_scan`` in ``__init__`` and implement ``__len__`` and ``_load_item``.

    Attributes:
        skipped: ``(path, reason)`` of every file dropped because it could not be read (``skip_bad_images``). Files
            dropped while loading inside DataLoader worker processes are recorded in those processes only.
    """

    def __init__(self, opt: DataOptions, scan_cache: ScanCache | None = None) -> None:
        _check_choice("direction", opt.direction, _DIRECTIONS)
        _check_choice("input_nc", opt.input_nc, _CHANNELS)
        _check_choice("output_nc", opt.output_nc, _CHANNELS)
        resized_size(opt, (1, 1))  # validates preprocess before any file is read
        self.opt = self._train_opt = opt
        # CUT's rule (``decay_no_jitter``): in the decay epochs (0-based epoch >= n_epochs) images are resized straight
        # to crop_size, so the random crop no longer moves them (flips stay).
        self._decay_opt = None
        if getattr(opt, "decay_no_jitter", False):
            self._decay_opt = copy.copy(opt)
            self._decay_opt.load_size = opt.crop_size
        self.seed = int(opt.seed)
        self.skip_bad = bool(getattr(opt, "skip_bad_images", False))
        self.swap = opt.direction == "BtoA"
        self.skipped: list[tuple[str, str]] = []
        self._upscale_warned = False
        self.scan_cache = scan_cache

    def _probe_all(self, paths: ImageList, cache_key: str) -> list[Probe]:
        """Each image's size, or the reason it cannot be read; from the shard index, the scan cache or the headers."""
        if isinstance(paths, ShardImages):
            return [paths.size(i) for i in range(len(paths))]  # measured when the shard was indexed
        cached = self.scan_cache.lookup(cache_key, paths) if self.scan_cache is not None else None
        if cached is not None:
            return cached
        probes: list[Probe] = []
        for path in paths:
            try:
                probes.append(probe_image(path))
            except ImageReadError as err:
                if not self.skip_bad:
                    raise
                probes.append(err.reason)
        if self.scan_cache is not None:
            self.scan_cache.store(cache_key, paths, probes)
        return probes

    # Scanning happens once, at construction, so a non-image is reported before hours of training, not during them.
    def _scan(
        self, folder: Path | str, paths: ImageList, check: Callable[[str, Size], Size] | None = None,
        cache_key: str | None = None,
    ) -> tuple[ImageList, list[Size]]:
        """Read every file's header; keep the readable ones with their size (as ``check`` maps it, if given).

        ``cache_key`` names the list in the scan cache (default: the folder).
        """
        kept: list[int] = []
        sizes: list[Size] = []
        skipped_here = 0
        for position, probe in enumerate(self._probe_all(paths, str(cache_key or folder))):
            path = paths[position]
            try:
                if isinstance(probe, str):
                    raise ImageReadError(path, probe)
                size = check(path, probe) if check else probe
            except ImageReadError as err:
                if not self.skip_bad:
                    raise
                self.skipped.append((err.path, err.reason))
                skipped_here += 1
                continue
            kept.append(position)
            sizes.append(size)
        good = paths.select(kept) if isinstance(paths, ShardImages) else [paths[i] for i in kept]
        if skipped_here:
            path, reason = self.skipped[-skipped_here]
            _log(f"skipped {skipped_here} unreadable image(s) in {folder}; first: {path}: {reason}")
        if not good:
            raise UserError(f"no readable images in {folder} ({skipped_here} skipped as unreadable)")
        self._warn_small(folder, good, sizes)
        return good, sizes

    def _warn_small(self, folder: Path | str, paths: ImageList, sizes: list[Size]) -> None:
        """One warning per dataset, naming one image too small for the crop (it will be upscaled, not refused)."""
        small = [i for i, size in enumerate(sizes) if needs_upscale(self.opt, size)]
        if not small or self._upscale_warned:
            return
        self._upscale_warned = True
        path, (width, height) = paths[small[0]], sizes[small[0]]
        _log(
            f"warning: {len(small)} image(s) in {folder} are too small for crop_size {self.opt.crop_size} and will be "
            f"upscaled, e.g. {path} ({width}x{height})"
        )

    def _transform(self, img: Image.Image, params: dict, channels: int) -> torch.Tensor:
        return build_transform(self.opt, params, grayscale=channels == 1)(img)

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of items."""

    @abc.abstractmethod
    def _load_item(self, index: int, rng: random.Random) -> dict:
        """Item ``index`` with every random choice drawn from ``rng``."""

    def item(self, index: int, epoch: int = 0, rng: random.Random | None = None) -> dict:
        """Item ``index`` as epoch ``epoch`` draws it, without ``skip_bad_images``'s substitution: an image that fails
        to decode raises ``ImageReadError`` (test.py reports such a sample as skipped instead of repeating another).
        ``rng`` replaces the item's own generator (test.py crops a target exactly as its input)."""
        epoch, index = _split_key((epoch, index), len(self))
        decay = self._decay_opt is not None and epoch >= self._train_opt.n_epochs
        self.opt = self._decay_opt if decay else self._train_opt
        return self._load_item(index, rng if rng is not None else item_rng(self.seed, epoch, index))

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """An item by index (epoch 0) or by ``(epoch, index)`` as ``EpochSampler`` yields them.

        With ``skip_bad_images``, an image that fails to decode is recorded in ``skipped`` and the next index is used
        instead (deterministically: the substitute is the item (epoch, index + 1), and so on).
        """
        length = len(self)
        epoch, index = _split_key(key, length)
        decay = self._decay_opt is not None and epoch >= self._train_opt.n_epochs
        self.opt = self._decay_opt if decay else self._train_opt
        for offset in range(length):
            current = (index + offset) % length
            try:
                return self._load_item(current, item_rng(self.seed, epoch, current))
            except ImageReadError as err:
                if not self.skip_bad:
                    raise
                if all(path != err.path for path, _ in self.skipped):
                    self.skipped.append((err.path, err.reason))
                    _log(f"skipping unreadable image {err.path}: {err.reason}")
        raise UserError(f"every image of the dataset failed to decode (first: {self.skipped[0][0]})")


# --- the three layouts of the reference ----------------------------------------------------------------------------


def pair_half_size(path: str, size: Size) -> Size:
    """The size of each half of an A|B image: split at width // 2, whatever the aspect ratio, as the reference does
    (an odd last column is dropped); only an image too narrow to split is an error naming it."""
    width, height = size
    if width < 2:
        raise ImageReadError(
            path,
            f"is {width}x{height}, too narrow to split into A|B",
            f"{path} is {width}x{height}: aligned images hold A and B side by side, so they need a width of at least 2",
        )
    return width // 2, height


def split_pair(pair: Image.Image, path: str) -> tuple[Image.Image, Image.Image]:
    """The left and right halves of an A|B image (each ``width // 2`` wide; an odd last column is dropped)."""
    half, height = pair_half_size(path, pair.size)
    return pair.crop((0, 0, half, height)), pair.crop((half, 0, 2 * half, height))


class AlignedDataset(ImageDataset):
    """Paired images in the pix2pix format: ``dataroot/<phase>/`` holds A|B side by side in one file.

    Any aspect ratio: each file is split at ``width // 2`` (e.g. 520x264 -> two 260x264 halves, 640x240 -> two
    320x240 photos); non-square halves then follow ``preprocess`` (resize_and_crop makes them square, none keeps them).
    Both halves get the same crop and flip. Items: ``{"A", "B", "A_paths", "B_paths"}`` (both paths name the file).
    """

    def __init__(self, opt: DataOptions, scan_cache: ScanCache | None = None) -> None:
        super().__init__(opt, scan_cache)
        self.root, paths = open_images(opt, opt.phase)
        self.paths, self.sizes = self._scan(self.root, _limit(paths, opt.max_dataset_size), check=pair_half_size)

    def __len__(self) -> int:
        return len(self.paths)

    def _load_item(self, index: int, rng: random.Random) -> dict:
        path = self.paths[index]
        left, right = split_pair(read_image(self.paths, index, 3), path)
        source, target = (right, left) if self.swap else (left, right)
        params = get_params(self.opt, source.size, rng)
        return {
            "A": self._transform(source, params, self.opt.input_nc),
            "B": self._transform(target, params, self.opt.output_nc),
            "A_paths": path,
            "B_paths": path,
        }


class UnalignedDataset(ImageDataset):
    """Unpaired images in the CycleGAN format: ``dataroot/<phase>A`` and ``dataroot/<phase>B``.

    The length is the larger folder's; item i takes A image ``i % len(A)`` and B image ``i % len(B)`` with
    ``serial_batches``, else a B image drawn from the item's generator. A and B are cropped and flipped independently.
    Items: ``{"A", "B", "A_paths", "B_paths"}``.
    """

    def __init__(self, opt: DataOptions, scan_cache: ScanCache | None = None) -> None:
        super().__init__(opt, scan_cache)
        names = (f"{opt.phase}B", f"{opt.phase}A") if self.swap else (f"{opt.phase}A", f"{opt.phase}B")
        (self.dir_a, a_paths), (self.dir_b, b_paths) = (open_images(opt, name) for name in names)
        self.a_paths, self.a_sizes = self._scan(self.dir_a, _limit(a_paths, opt.max_dataset_size))
        self.b_paths, self.b_sizes = self._scan(self.dir_b, _limit(b_paths, opt.max_dataset_size))
        self.serial = bool(opt.serial_batches)

    def __len__(self) -> int:
        return max(len(self.a_paths), len(self.b_paths))

    def _load_item(self, index: int, rng: random.Random) -> dict:
        # Draw the partner first so an item's draws do not depend on image sizes; a random partner per item keeps
        # fixed A/B pairings from forming when the folders' lengths share a factor.
        b_index = index % len(self.b_paths) if self.serial else rng.randrange(len(self.b_paths))
        a_index = index % len(self.a_paths)
        a_path, b_path = self.a_paths[a_index], self.b_paths[b_index]
        a_img = read_image(self.a_paths, a_index, self.opt.input_nc)
        b_img = read_image(self.b_paths, b_index, self.opt.output_nc)
        a_params = get_params(self.opt, a_img.size, rng)
        b_params = get_params(self.opt, b_img.size, rng)
        return {
            "A": self._transform(a_img, a_params, self.opt.input_nc),
            "B": self._transform(b_img, b_params, self.opt.output_nc),
            "A_paths": a_path,
            "B_paths": b_path,
        }


class SingleDataset(ImageDataset):
    """One folder of images (``dataroot`` itself, recursively), e.g. for translating a test set one way.

    Items: ``{"A", "A_paths"}``, with ``input_nc`` channels (A is the network input whatever the direction).

    Args:
        folder: read ``dataroot/folder`` (or the shard set ``folder``) instead of the whole dataroot; test.py reads
            one side of an unaligned split (e.g. testB) this way.
        channels: channels of the images (default ``input_nc``).
    """

    def __init__(self, opt: DataOptions, scan_cache: ScanCache | None = None, *, folder: str | None = None,
                 channels: int | None = None) -> None:
        super().__init__(opt, scan_cache)
        self.channels = opt.input_nc if channels is None else channels
        _check_choice("channels", self.channels, _CHANNELS)
        self.root, paths = open_images(opt, folder)
        self.paths, self.sizes = self._scan(self.root, _limit(paths, opt.max_dataset_size))

    def __len__(self) -> int:
        return len(self.paths)

    def _load_item(self, index: int, rng: random.Random) -> dict:
        path = self.paths[index]
        img = read_image(self.paths, index, self.channels)
        params = get_params(self.opt, img.size, rng)
        return {"A": self._transform(img, params, self.channels), "A_paths": path}


DATASET_MODES: dict[str, type[ImageDataset]] = {
    "aligned": AlignedDataset,
    "unaligned": UnalignedDataset,
    "single": SingleDataset,
}


def create_dataset(opt: DataOptions, scan_cache: str | Path | None = None) -> Dataset:
    """The dataset ``opt.dataset_mode`` names, over ``opt.dataroot`` (image folders, or tar shards: a folder of
    ``.tar`` files, one ``.tar`` or a brace pattern such as ``shards/train-{000000..000009}.tar``).

    Args:
        scan_cache: a file keeping the image-header scan of loose folders: read when it holds the same listing,
            written otherwise, so that the other processes of a run reuse the first one's scan.

    Raises:
        UserError: unknown mode, missing dataroot, missing/empty folders, unreadable images (see ``skip_bad_images``).
    """
    if opt.dataset_mode not in DATASET_MODES:
        raise UserError(f"unknown dataset_mode {opt.dataset_mode!r}; valid: {', '.join(sorted(DATASET_MODES))}")
    root = Path(opt.dataroot)
    if not is_shard_spec(root) and not root.is_dir():
        raise UserError(f"dataroot not found: {root}")
    cache = ScanCache(scan_cache) if scan_cache is not None else None
    dataset = DATASET_MODES[opt.dataset_mode](opt, scan_cache=cache)
    if cache is not None:
        cache.save()
    return dataset


def create_dataloader(
    dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int, num_workers: int, drop_last: bool = False
) -> DataLoader:
    """A DataLoader driven by an ``EpochSampler`` (reach it as ``loader.sampler`` to call ``set_epoch``).

    Workers persist between epochs (their start-up is the slow part); memory is pinned only when CUDA can use it.

    Raises:
        UserError: ``drop_last`` with fewer items than one batch, which would make every epoch empty.
    """
    if drop_last and len(dataset) < batch_size:
        raise UserError(
            f"the dataset has {len(dataset)} images, fewer than one batch of {batch_size} (lower batch_size)"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), shuffle=shuffle, seed=seed),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        # Its own generator: starting an epoch's iterator (also when a resumed run restarts mid-epoch) must not
        # draw from torch's global RNG, or dropout and noise after a resume would differ from a straight run.
        generator=torch.Generator().manual_seed(seed),
    )
