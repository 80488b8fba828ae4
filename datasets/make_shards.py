"""Write an image folder as webdataset tar shards of N images, which ``--dataroot`` then trains from.

    python datasets/make_shards.py datasets/facades shards/facades --mode aligned --per_shard 1000
    python datasets/make_shards.py datasets/horse2zebra shards/h2z --mode unaligned
    python datasets/make_shards.py my_styles/ shards/styles --mode styles
    python datasets/make_shards.py photos/ shards/photos --mode single
    python datasets/make_shards.py --index other_shards/*.tar        # index shards another tool wrote

Every folder the dataset mode reads becomes one set of shards named after it: ``train-000000.tar, train-000001.tar``
(aligned), ``trainA-*.tar, trainB-*.tar, testA-*.tar ...`` (unaligned), ``content-*.tar, style-*.tar`` (styles), and
for single, one set ``images-*.tar`` of every image below the folder. Each image is one member named after its path in
its folder (the sample key, with dots in the file stem made underscores, as webdataset readers expect), its bytes as
they were. A style image keeps its class subfolder in its key (``style-*.tar`` holds ``monet/0001.jpg``).

Beside each shard, ``<shard>.index.json`` records each image's byte offset, length and pixel size: training reads images
by position through it (exact resume, rank sharding) and starts without reading any image header. Every image is
checked here; an unreadable one stops the script with its name (``--skip_bad_images`` leaves it out).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

EXIT_USER_ERROR = 2
MODES = ("aligned", "unaligned", "single", "styles")
SINGLE_SET = "images"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write an image folder as webdataset tar shards.")
    parser.add_argument("source", type=Path, nargs="?", help="the image folder (a dataroot)")
    parser.add_argument("out", type=Path, nargs="?", help="the folder the shards are written to")
    parser.add_argument("--mode", choices=MODES, default="aligned", help="the dataset mode the folder is laid out for")
    parser.add_argument("--per_shard", type=int, default=10_000, help="images per shard (the last holds the rest)")
    parser.add_argument("--skip_bad_images", action="store_true", help="leave unreadable images out")
    parser.add_argument("--index", nargs="+", type=Path, metavar="TAR", help="only write index files of these shards")
    return parser.parse_args(argv)


def image_sets(source: Path, mode: str) -> dict[str, list[str]]:
    """Set name -> the image files of that set, for the folders ``mode`` reads under ``source``."""
    from gan_translate.data import list_images
    from gan_translate.errors import UserError

    if not source.is_dir():
        raise UserError(f"folder not found: {source}")
    if mode == "single":
        return {SINGLE_SET: list_images(source)}
    sets = {}
    for entry in sorted(source.iterdir()):
        if entry.is_dir():
            try:
                sets[entry.name] = list_images(entry)
            except UserError:  # a folder without images is not a set
                continue
    if not sets:
        example = {"aligned": "train/", "styles": "content/, style/"}.get(mode, "trainA/, trainB/")
        raise UserError(f"no subfolder of {source} holds images (a {mode} dataroot has e.g. {example})")
    return sets


def sample_key(folder: Path, path: str) -> tuple[str, str]:
    """(webdataset key, extension) of an image: its path in its folder without the extension, dots made underscores."""
    relative = Path(path).relative_to(folder)
    stem = relative.name[: -len(relative.suffix)].replace(".", "_")
    return (relative.parent / stem).as_posix(), relative.suffix[1:].lower()


def write_set(name: str, folder: Path, paths: list[str], out: Path, *, per_shard: int,
              skip_bad: bool) -> tuple[list[Path], int]:
    """Write one set's shards ``out/<name>-NNNNNN.tar`` and their index files; returns the shards and image count."""
    import webdataset as wds

    from gan_translate.data.images import ImageReadError, probe_image
    from gan_translate.data.shards import write_index
    from gan_translate.errors import UserError

    written: list[Path] = []
    pattern = str(out / f"{name}-%06d.tar")
    skipped = 0
    # ShardWriter names each shard as it opens it; the post hook collects them.
    with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0,
                         post=lambda fname: written.append(Path(fname))) as sink:
        for path in tqdm(paths, desc=name, unit="img", leave=False, disable=not sys.stderr.isatty()):
            try:
                probe_image(path)  # one bad file is named now, not hours into training
            except ImageReadError as err:
                if not skip_bad:
                    raise UserError(f"{err} (--skip_bad_images leaves it out)") from None
                skipped += 1
                continue
            key, ext = sample_key(folder, path)
            sink.write({"__key__": key, ext: Path(path).read_bytes()})
    if skipped:
        print(f"{name}: left out {skipped} unreadable image(s)", file=sys.stderr)
    for tar in written:
        write_index(tar)
    return written, len(paths) - skipped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from gan_translate.errors import UserError

    try:
        if args.index:
            from gan_translate.data.shards import write_index

            for tar in args.index:
                if not tar.is_file():
                    raise UserError(f"shard not found: {tar}")
                print(f"{tar}: {len(write_index(tar, skip_bad=args.skip_bad_images)['members'])} images indexed")
            return 0
        if args.source is None or args.out is None:
            raise UserError("give a source folder and an output folder (or --index TAR ...)")
        if args.per_shard < 1:
            raise UserError(f"--per_shard must be at least 1, got {args.per_shard}")
        sets = image_sets(args.source, args.mode)
        args.out.mkdir(parents=True, exist_ok=True)
        clashes = sorted(n for n in sets if any(e.name.startswith(f"{n}-") and e.name.endswith(".tar")
                                                for e in os.scandir(args.out)))
        if clashes:
            raise UserError(f"{args.out} already holds shards of set {clashes[0]}; remove them or write elsewhere")
        for name, paths in sets.items():
            folder = args.source if args.mode == "single" else args.source / name
            tars, count = write_set(name, folder, paths, args.out, per_shard=args.per_shard,
                                    skip_bad=args.skip_bad_images)
            print(f"{name}: {count} images -> {len(tars)} shard(s) {name}-*.tar in {args.out}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
