"""Pair two folders of images into the aligned A|B format of pix2pix (Isola et al., CVPR 2017).

    python datasets/combine_A_and_B.py --fold_A labels/ --fold_B photos/ --fold_AB datasets/mine/

``fold_A`` and ``fold_B`` hold the same split subfolders (train/, val/, test/, ...); in each split present in both, an
image of A is paired with the image of B of the same name (or, failing that, the same name with another extension). With
``--use_AB`` the names differ by suffix instead: ``1_A.jpg`` pairs with ``1_B.jpg`` and gives ``1.jpg``. B is resized to
A's size when they differ, and the pair is written side by side into ``fold_AB/<split>/`` under A's name.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

EXIT_USER_ERROR = 2
IMG_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp"}

Job = tuple[Path, Path, Path]  # A, B, output


class CombineError(Exception):
    """An image that cannot be read or written; one line naming the file."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Combine folders A and B into side-by-side A|B pairs.")
    parser.add_argument("--fold_A", type=Path, required=True, help="input folder of domain A (with split subfolders)")
    parser.add_argument("--fold_B", type=Path, required=True, help="input folder of domain B (with split subfolders)")
    parser.add_argument("--fold_AB", type=Path, required=True, help="output folder")
    parser.add_argument("--num_imgs", type=int, default=1_000_000, help="at most this many pairs per split")
    parser.add_argument("--use_AB", action="store_true", help="A files are named *_A.*, B files *_B.*")
    parser.add_argument("--no_multiprocessing", action="store_true", help="combine in this process only")
    return parser.parse_args(argv)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def plan_split(dir_a: Path, dir_b: Path, dir_ab: Path, *, num_imgs: int, use_ab: bool) -> tuple[list[Job], int]:
    """The (A, B, output) triples of one split, and how many A images found no partner in B."""
    b_by_name = {p.name: p for p in _images(dir_b)}
    b_by_stem = {p.stem: p for p in reversed(_images(dir_b))}  # reversed: the first name in order wins a clash
    jobs: list[Job] = []
    unpaired = 0
    for path_a in _images(dir_a):
        if use_ab:
            if not path_a.stem.endswith("_A"):
                continue
            key = path_a.stem[:-2]
            path_b = b_by_stem.get(key + "_B")
            out_name = key + path_a.suffix
        else:
            path_b = b_by_name.get(path_a.name) or b_by_stem.get(path_a.stem)
            out_name = path_a.name
        if path_b is None:
            unpaired += 1
            continue
        jobs.append((path_a, path_b, dir_ab / out_name))
        if len(jobs) >= num_imgs:
            break
    return jobs, unpaired


def combine_pair(job: Job) -> None:
    """Writes A and B (resized to A's size if needed) side by side."""
    path_a, path_b, path_ab = job
    try:
        with Image.open(path_a) as a_file, Image.open(path_b) as b_file:
            img_a, img_b = a_file.convert("RGB"), b_file.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise CombineError(f"cannot read {path_a} or {path_b}: {err}") from None
    if img_b.size != img_a.size:
        img_b = img_b.resize(img_a.size, Image.Resampling.BICUBIC)
    both = Image.new("RGB", (2 * img_a.width, img_a.height))
    both.paste(img_a, (0, 0))
    both.paste(img_b, (img_a.width, 0))
    try:
        both.save(path_ab)
    except OSError as err:
        raise CombineError(f"cannot write {path_ab}: {err}") from None


def _run_jobs(jobs: list[Job], *, parallel: bool, desc: str) -> None:
    if parallel and len(jobs) > 1:
        with multiprocessing.Pool() as pool:
            for _ in tqdm(pool.imap_unordered(combine_pair, jobs, chunksize=16), total=len(jobs), desc=desc):
                pass
    else:
        for job in tqdm(jobs, desc=desc):
            combine_pair(job)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for option, folder in (("--fold_A", args.fold_A), ("--fold_B", args.fold_B)):
        if not folder.is_dir():
            print(f"error: {option} {folder} is not a folder", file=sys.stderr)
            return EXIT_USER_ERROR
    if args.num_imgs < 1:
        print(f"error: --num_imgs must be at least 1, got {args.num_imgs}", file=sys.stderr)
        return EXIT_USER_ERROR
    splits = sorted(d.name for d in args.fold_A.iterdir() if d.is_dir() and (args.fold_B / d.name).is_dir())
    if not splits:
        print(f"error: no split folder (train/, val/, ...) in both {args.fold_A} and {args.fold_B}", file=sys.stderr)
        return EXIT_USER_ERROR
    total = 0
    try:
        for split in splits:
            out_dir = args.fold_AB / split
            jobs, unpaired = plan_split(
                args.fold_A / split, args.fold_B / split, out_dir, num_imgs=args.num_imgs, use_ab=args.use_AB
            )
            if unpaired:
                print(f"{split}: {unpaired} images of A have no partner in B; skipped", file=sys.stderr)
            if not jobs:
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            _run_jobs(jobs, parallel=not args.no_multiprocessing, desc=split)
            total += len(jobs)
    except CombineError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        print(f"error: cannot write under {args.fold_AB}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USER_ERROR
    if total == 0:
        print(f"error: no image of {args.fold_A} has a partner of the same name in {args.fold_B}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"wrote {total} pairs to {args.fold_AB}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
