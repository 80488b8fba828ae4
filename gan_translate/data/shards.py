"""Image sets stored as webdataset tar shards, read by position through an index of member offsets.

``datasets/make_shards.py`` turns an image folder into shards ``<set>-000000.tar, <set>-000001.tar, ...`` (one set per
folder a dataset mode reads: ``train``, ``trainA``, ``content``, ``style`` ...) in the webdataset format: each image is
one tar member named after its path inside the folder (``0001.png``, ``monet/0001.jpg``), its bytes unchanged. Beside
every shard it writes ``<shard>.index.json``: the byte offset, length and pixel size of each image member.

Why an index instead of webdataset's streaming pipeline: training draws items by (seed, epoch, index) from the
``EpochSampler`` (exact resume, identical ranks, rank sharding by Accelerate). A stream yields items in file order and
can only be shuffled by a buffer, so it cannot return item i of epoch e on demand. With offsets, item i is one
``pread`` from its shard: map-style, any order, any worker. (webdataset's own indexed reader, ``wids``, left the
package with webdataset 1.0; it also copies shards into a cache folder and decodes with its own handlers, where this
reader decodes through ``images.load_image`` so a bad image inside a shard gives the same one-line error as a file.)

A shard without an index file (written by another tool) is indexed when opened: its tar headers are walked and every
image's header read, which costs about what a folder scan costs; ``make_shards.py --index`` writes the index files.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from gan_translate.data.images import ImageReadError, is_image_file, load_image, probe_image
from gan_translate.errors import UserError

SHARD_SUFFIX = ".tar"
INDEX_SUFFIX = ".index.json"
INDEX_FORMAT = "gan_translate-shard-index"
INDEX_VERSION = 1
_SHARD_NUMBER = re.compile(r"-\d+$")
_MAX_OPEN = 64  # open shard files kept per process; more are closed oldest first

Size = tuple[int, int]


# --- naming ----------------------------------------------------------------------------------------------------------


def set_name(tar_path: str | os.PathLike) -> str:
    """The set a shard belongs to: its file name less ``.tar`` and the trailing ``-NNNNNN`` shard number."""
    return _SHARD_NUMBER.sub("", Path(tar_path).name[: -len(SHARD_SUFFIX)])


def index_path(tar_path: str | os.PathLike) -> Path:
    return Path(f"{tar_path}{INDEX_SUFFIX}")


def is_shard_spec(dataroot: str | os.PathLike) -> bool:
    """True when ``dataroot`` names shards: a ``.tar`` file, a brace pattern, or a folder holding ``.tar`` files."""
    text = str(dataroot)
    if "{" in text or text.endswith(SHARD_SUFFIX):
        return True
    root = Path(text)
    return root.is_dir() and any(entry.name.endswith(SHARD_SUFFIX) and entry.is_file() for entry in os.scandir(root))


def expand_spec(spec: str | os.PathLike) -> list[Path]:
    """The shard files ``spec`` names (a folder's ``.tar`` files sorted, or a brace pattern expanded in order).

    Raises:
        UserError: a named shard is missing, or the spec names none.
    """
    text = str(spec)
    if "{" in text:
        from braceexpand import braceexpand  # installed with webdataset (the "shards" extra)

        tars = [Path(name) for name in braceexpand(text)]
    elif text.endswith(SHARD_SUFFIX):
        tars = [Path(text)]
    else:
        root = Path(text)
        if not root.is_dir():
            raise UserError(f"dataroot not found: {root}")
        tars = sorted(root / entry.name for entry in os.scandir(root)
                      if entry.name.endswith(SHARD_SUFFIX) and entry.is_file())
    missing = [tar for tar in tars if not tar.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"shard not found: {missing[0]}{more}")
    if not tars:
        raise UserError(f"no shards in {text} (looked for *{SHARD_SUFFIX})")
    return tars


# --- the per-shard index ----------------------------------------------------------------------------------------------


def scan_tar(tar_path: str | os.PathLike) -> list[tuple[str, int, int]]:
    """``(member name, data offset, length)`` of every image member of a tar, in file order (headers only)."""
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            return [(m.name, m.offset_data, m.size) for m in tar if m.isfile() and is_image_file(m.name)]
    except (tarfile.TarError, OSError) as err:
        raise UserError(f"cannot read shard {tar_path}: {err}") from None


def write_index(tar_path: str | os.PathLike, *, skip_bad: bool = False) -> dict:
    """Index a shard (offsets and pixel sizes of its images) into ``<shard>.index.json``; returns the index.

    Raises:
        ImageReadError: an image member cannot be read (unless ``skip_bad``, which leaves it out of the index).
    """
    index = _build_index(Path(tar_path), skip_bad=skip_bad)
    target = index_path(tar_path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(index, separators=(",", ":")))
    os.replace(temp, target)
    return index


def _build_index(tar_path: Path, *, skip_bad: bool) -> dict:
    members = []
    with open(tar_path, "rb") as stream:
        for name, offset, length in scan_tar(tar_path):
            stream.seek(offset)
            try:
                width, height = probe_image(f"{tar_path}/{name}", stream.read(length))
            except ImageReadError:
                if not skip_bad:
                    raise
                continue
            members.append([name, offset, length, width, height])
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "tar_bytes": tar_path.stat().st_size,
            "members": members}


def read_index(tar_path: str | os.PathLike) -> dict:
    """A shard's index: its ``.index.json`` when that matches the shard, else built now (slower: reads headers)."""
    tar_path = Path(tar_path)
    sidecar = index_path(tar_path)
    if sidecar.is_file():
        try:
            index = json.loads(sidecar.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read shard index {sidecar}: {err}") from None
        if (index.get("format") == INDEX_FORMAT and index.get("version") == INDEX_VERSION
                and index.get("tar_bytes") == tar_path.stat().st_size and _headers_agree(tar_path, index)):
            return index
    return _build_index(tar_path, skip_bad=False)


def _headers_agree(tar_path: Path, index: dict) -> bool:
    """Whether the tar headers of a few indexed members (first, middle, last) give the indexed sizes: a shard
    rewritten after indexing is noticed (tar sizes come in 10 KiB records, so the total size alone often agrees)."""
    members = index["members"]
    if not members:
        return True
    with open(tar_path, "rb") as stream:
        for name, offset, length, *_ in (members[0], members[len(members) // 2], members[-1]):
            stream.seek(offset - tarfile.BLOCKSIZE)  # the member's own header block sits right before its data
            try:
                info = tarfile.TarInfo.frombuf(stream.read(tarfile.BLOCKSIZE), "utf-8", "surrogateescape")
            except tarfile.TarError:
                return False
            if info.size != length or not name.startswith(info.name):
                return False
    return True


# --- a sequence of images inside shards -------------------------------------------------------------------------------


class ShardImages(Sequence[str]):
    """Images inside tar shards, addressed by position; item i reads as the path ``<shard>/<member>``.

    Everything per image lives in numpy arrays (no Python object per image), so the index of a million images costs
    tens of megabytes and DataLoader workers forked from the main process share it without copying it page by page.

    Args:
        tars: shard files; tar_ids, offsets, lengths, names, sizes: per image, its shard's position in ``tars``, its
            data's byte offset and length in that shard, its member name and its (width, height).
    """

    def __init__(self, tars: Sequence[str], tar_ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 names: np.ndarray, sizes: np.ndarray) -> None:
        self.tars = [str(tar) for tar in tars]
        self.tar_ids, self.offsets, self.lengths = tar_ids, offsets, lengths
        self.names, self.sizes = names, sizes
        self._files: dict[int, int] = {}  # shard position -> file descriptor, in this process
        self._pid = os.getpid()

    @classmethod
    def from_indexes(cls, tars: Sequence[Path], indexes: Sequence[dict]) -> "ShardImages":
        rows = [(t, *member) for t, index in enumerate(indexes) for member in index["members"]]
        if not rows:
            return cls(tars, *(np.zeros(0, np.int64) for _ in range(3)), np.array([], dtype=str),
                       np.zeros((0, 2), np.int64))
        tar_ids, names, offsets, lengths, widths, heights = zip(*rows)
        return cls(tars, np.asarray(tar_ids, np.int32), np.asarray(offsets, np.int64), np.asarray(lengths, np.int64),
                   np.asarray(names, dtype=str), np.stack([widths, heights], 1).astype(np.int64))

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, slice):
            return self.select(np.arange(len(self))[key])
        return f"{self.tars[self.tar_ids[key]]}/{self.names[key]}"

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def select(self, positions: Sequence[int] | np.ndarray) -> "ShardImages":
        """The images at ``positions``, in that order."""
        p = np.asarray(positions, dtype=np.int64)
        return ShardImages(self.tars, self.tar_ids[p], self.offsets[p], self.lengths[p], self.names[p], self.sizes[p])

    def size(self, i: int) -> Size:
        width, height = self.sizes[i]
        return int(width), int(height)

    def read(self, i: int) -> bytes:
        """The bytes of image i (one positioned read; safe in forked workers, no shared file position)."""
        if os.getpid() != self._pid:  # a forked worker opens its own descriptors
            self._files, self._pid = {}, os.getpid()
        t = int(self.tar_ids[i])
        fd = self._files.get(t)
        if fd is None:
            if len(self._files) >= _MAX_OPEN:
                os.close(self._files.pop(next(iter(self._files))))
            try:
                fd = self._files[t] = os.open(self.tars[t], os.O_RDONLY)
            except OSError as err:
                raise ImageReadError(self[i], f"cannot open its shard ({err.strerror})") from None
        return os.pread(fd, int(self.lengths[i]), int(self.offsets[i]))

    def load(self, i: int, channels: int) -> Image.Image:
        """Image i decoded as ``images.load_image`` decodes a file (errors name ``<shard>/<member>``)."""
        return load_image(self[i], channels, data=self.read(i))

    def __getstate__(self) -> dict:  # descriptors do not travel to spawned workers
        return {**self.__dict__, "_files": {}}

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in self._files.values():
                os.close(fd)


def concat(parts: Sequence[ShardImages]) -> ShardImages:
    """Several ``ShardImages`` as one, in order (shards they share are listed once)."""
    position: dict[str, int] = {}  # shard -> its place in the joined list (insertion order)
    tar_ids = []
    for part in parts:
        remap = np.asarray([position.setdefault(tar, len(position)) for tar in part.tars], np.int32)
        tar_ids.append(remap[part.tar_ids] if len(part) else np.zeros(0, np.int32))
    return ShardImages(list(position), np.concatenate(tar_ids).astype(np.int32),
                       np.concatenate([p.offsets for p in parts]),
                       np.concatenate([p.lengths for p in parts]), np.concatenate([p.names for p in parts]),
                       np.concatenate([p.sizes for p in parts]))


# --- a dataroot of shards ---------------------------------------------------------------------------------------------


class ShardRoot:
    """The shards a ``--dataroot`` names, grouped into sets by file name (``trainA-000003.tar`` is in set trainA)."""

    def __init__(self, spec: str | os.PathLike) -> None:
        self.spec = str(spec)
        self.sets: dict[str, list[Path]] = {}
        for tar in expand_spec(spec):
            self.sets.setdefault(set_name(tar), []).append(tar)
        self._cache: dict[str, ShardImages] = {}

    def has(self, name: str) -> bool:
        return name in self.sets

    def where(self, name: str | None) -> str:
        """How messages name a set of this root."""
        return self.spec if name is None else f"{self.spec} (shards {name}-*{SHARD_SUFFIX})"

    def images(self, name: str | None) -> ShardImages:
        """Every image of set ``name`` (of every set with None); a root holding one set gives it for any name.

        Raises:
            UserError: no such set (the message lists the sets there are), or the set holds no image.
        """
        if name is not None and name not in self.sets and len(self.sets) != 1:
            raise UserError(f"{self.spec}: no shards of set {name!r} ({name}-*{SHARD_SUFFIX}); "
                            f"sets found: {', '.join(sorted(self.sets))}")
        names = sorted(self.sets) if name is None or name not in self.sets else [name]
        parts = []
        for set_ in names:
            if set_ not in self._cache:
                tars = self.sets[set_]
                self._cache[set_] = ShardImages.from_indexes(tars, [read_index(tar) for tar in tars])
            parts.append(self._cache[set_])
        images = parts[0] if len(parts) == 1 else concat(parts)
        if not len(images):
            raise UserError(f"no images in {self.where(name)}")
        return images

    def style_classes(self, name: str) -> list[tuple[str, ShardImages]]:
        """Set ``name`` split into style classes as ``styles.style_classes`` splits a folder: a member in a subfolder
        belongs to the class named after that subfolder, a member at the top is a class of its own."""
        images = self.images(name)
        labels = [member.split("/", 1)[0] for member in images.names.tolist()]
        groups: dict[str, list[int]] = {}
        for position, label in enumerate(labels):
            groups.setdefault(label, []).append(position)
        return [(label, images.select(groups[label])) for label in sorted(groups)]
