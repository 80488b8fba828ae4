"""Data-loading benchmark: ``python -m gan_translate bench --data``.

Three measurements, each in fresh subprocesses on images this module draws into a scratch folder (deleted afterwards):

- throughput: images/s per DataLoader worker through the training pipeline (decode, resize to ``load_size``, random
  crop to ``size``, flip, to tensor; ``single`` mode) for loose JPEG files, loose PNG files and tar shards of the JPEGs;
- memory: peak RSS of the main process and of the largest worker, building the dataset and loading a fixed number of
  images, as the dataset grows (default 10k, 30k, 100k images; small JPEGs, hard links to a few hundred distinct files
  for the loose folders so that drawing them is cheap); it must stay flat, since nothing is cached per image;
- start-up (``--startup N,...``): seconds from a fresh process to the first batch for N tiny files: a cold header scan
  (what every rank did before the scan cache), a process that finds the first one's scan cache, and shards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
from PIL import Image

from gan_translate.config import CommandParser
from gan_translate.errors import UserError

RESULT_MARKER = "BENCH_DATA_RESULT "
_FILES_PER_DIR = 10_000  # big folders are split, as real ones are; one flat folder of 1M names is slow to list


# --- drawing the images -----------------------------------------------------------------------------------------------


def photo_like(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth colour field with texture: compresses like a photo (tens of kB as a 256 px JPEG), unlike noise."""
    low = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), dtype=np.float32)
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def draw_folder(folder: Path, count: int, *, size: int, ext: str, distinct: int, seed: int = 0,
                copies: bool = False) -> Path:
    """``count`` image files under ``folder`` (subfolders of 10,000): ``distinct`` drawn ones, the rest hard links to
    them (or, with ``copies``, files of their own with the same bytes: each is then a separate inode to read)."""
    originals = []
    rng = np.random.default_rng(seed)
    for i in range(count):
        target = folder / f"{i // _FILES_PER_DIR:04d}" / f"{i:07d}.{ext}"
        if i % _FILES_PER_DIR == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
        if i < distinct:
            photo_like(rng, size).save(target, quality=90) if ext == "jpg" else photo_like(rng, size).save(target)
            originals.append(target)
        elif copies:
            target.write_bytes(originals[i % distinct].read_bytes())
        else:
            os.link(originals[i % distinct], target)
    return folder


def make_shards(folder: Path, out: Path, per_shard: int = 10_000) -> float:
    """Shard ``folder`` (single mode) with datasets/make_shards.py; returns the seconds it took."""
    script = Path(__file__).resolve().parents[1] / "datasets" / "make_shards.py"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), str(folder), str(out), "--mode", "single",
                           "--per_shard", str(per_shard)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"make_shards failed: {done.stderr.strip()}")
    return time.perf_counter() - start


# --- one measurement, in a fresh process ------------------------------------------------------------------------------


def _options(dataroot: str, *, size: int, load_size: int) -> SimpleNamespace:
    return SimpleNamespace(dataroot=dataroot, dataset_mode="single", phase="train", direction="AtoB", input_nc=3,
                           output_nc=3, preprocess="resize_and_crop", load_size=load_size, crop_size=size,
                           no_flip=False, serial_batches=False, max_dataset_size=float("inf"), seed=0,
                           skip_bad_images=False)


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Build the dataset and load ``job["images"]`` images through a DataLoader with ``job["workers"]`` workers."""
    import torch

    from gan_translate.data import create_dataloader, create_dataset

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    dataset = create_dataset(_options(job["dataroot"], size=job["size"], load_size=job["load_size"]),
                             scan_cache=job.get("scan_cache"))
    built = time.perf_counter()
    loader = create_dataloader(dataset, batch_size=job["batch_size"], shuffle=True, seed=0,
                               num_workers=job["workers"])
    loader.sampler.set_epoch(0)
    batches = iter(loader)
    next(batches)
    first = time.perf_counter()
    loaded = 0
    for batch in batches:
        loaded += batch["A"].shape[0]
        if loaded >= job["images"]:
            break
    done = time.perf_counter()
    del batches, loader  # workers exit: their peak RSS joins RUSAGE_CHILDREN
    kib = 1024
    return {"items": len(dataset), "build_s": built - t0, "first_batch_s": first - t0,
            "images_per_s": loaded / max(done - first, 1e-9),
            "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 1e6,
            "peak_rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib / 1e6}


def run_measurement(job: dict[str, Any]) -> dict[str, Any]:
    """``measure`` in a fresh interpreter (its own peak RSS; start-up counted from process start)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gan_translate.bench_data", "--worker", json.dumps(job)],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"data benchmark worker failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return {**json.loads(lines[-1][len(RESULT_MARKER):]), "process_s": wall}


# --- the three benchmarks ---------------------------------------------------------------------------------------------


def throughput(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    load = round(args.size * 286 / 256)  # the reference's 286 -> 256 crop
    jpg = draw_folder(work / "tp_jpg", args.images, size=load, ext="jpg", distinct=args.images)
    png = draw_folder(work / "tp_png", args.images, size=load, ext="png", distinct=args.images)
    make_shards(jpg, work / "tp_shards", per_shard=max(1, args.images // 4))
    for name, root in (("loose jpg", jpg), ("loose png", png), ("shards (jpg)", work / "tp_shards")):
        job = {"dataroot": str(root), "size": args.size, "load_size": load, "batch_size": 1,
               "workers": args.workers, "images": args.images - 1}
        result = run_measurement(job)
        rows.append({"data": name, "workers": args.workers,
                     "images_per_s_per_worker": result["images_per_s"] / max(args.workers, 1),
                     "mean_file_kb": _mean_kb(root)})
    return rows


def _mean_kb(root: Path) -> float:
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".json")]
    if files and files[0].suffix == ".tar":
        return sum(p.stat().st_size for p in files) / 1e3 / sum(len(json.loads(Path(f"{p}.index.json").read_text())
                                                                   ["members"]) for p in files)
    return sum(p.stat().st_size for p in files) / 1e3 / max(len(files), 1)


def memory(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for count in args.data_sizes:
        folder = draw_folder(work / f"mem_{count}", count, size=64, ext="jpg", distinct=min(count, 500))
        shards = work / f"mem_{count}_shards"
        make_shards(folder, shards)
        for name, root in (("loose jpg", folder), ("shards (jpg)", shards)):
            job = {"dataroot": str(root), "size": 64, "load_size": 72, "batch_size": 8, "workers": args.workers,
                   "images": args.memory_images, "scan_cache": None}
            result = run_measurement(job)
            rows.append({"data": name, "dataset_images": count, "peak_rss_main_mb": result["peak_rss_main_mb"],
                         "peak_rss_worker_mb": result["peak_rss_worker_mb"]})
        shutil.rmtree(folder)
        shutil.rmtree(shards)
    return rows


def startup(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for count in args.startup:
        folder = draw_folder(work / f"start_{count}", count, size=16, ext="png", distinct=min(count, 1000),
                             copies=True)
        shards = work / f"start_{count}_shards"
        shard_s = make_shards(folder, shards)
        cache = work / f"start_{count}_scan.json"
        base = {"size": 16, "load_size": 16, "batch_size": 1, "workers": 0, "images": 0}
        first = run_measurement({**base, "dataroot": str(folder), "scan_cache": str(cache)})
        again = run_measurement({**base, "dataroot": str(folder), "scan_cache": str(cache)})
        sharded = run_measurement({**base, "dataroot": str(shards)})
        rows.append({"files": count, "first_process_scan_s": first["process_s"],
                     "later_process_cached_s": again["process_s"], "shards_s": sharded["process_s"],
                     "make_shards_s": shard_s, "dataset_build_s": [first["build_s"], again["build_s"],
                                                                   sharded["build_s"]]})
        shutil.rmtree(folder)
        shutil.rmtree(shards)
        cache.unlink(missing_ok=True)
    return rows


# --- the command ------------------------------------------------------------------------------------------------------


def _ints(option: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"bench --data: {option} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"bench --data: {option} takes positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m gan_translate bench --data", error_prefix="bench --data: ",
                      description="Data-loading benchmark: throughput, memory and start-up of loose files vs shards.")
    p.add_argument("--size", type=int, default=256, help="crop size of the throughput measurement (px)")
    p.add_argument("--images", type=int, default=400, help="images of the throughput measurement (per format)")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    p.add_argument("--data_sizes", default="10000,30000,100000", help="dataset sizes of the memory measurement")
    p.add_argument("--memory_images", type=int, default=400, help="images loaded at each dataset size")
    p.add_argument("--startup", default="", help="file counts of the start-up measurement, e.g. 100000,1000000")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: throughput, memory")
    p.add_argument("--workdir", default="", help="scratch folder (default: a temporary folder); emptied afterwards")
    p.add_argument("--json", default="", help="write the results to this JSON file")
    return p


def data_bench_command(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    args.data_sizes = _ints("--data_sizes", args.data_sizes)
    args.startup = _ints("--startup", args.startup) if args.startup else []
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.images < 2 or args.workers < 0:
        raise UserError("bench --data: --images must be at least 2 and --workers at least 0")
    work = Path(tempfile.mkdtemp(prefix="gt_bench_data_", dir=args.workdir or None))
    report: dict[str, Any] = {"load_average": os.getloadavg()}
    try:
        if "throughput" not in skip:
            report["throughput"] = throughput(work, args)
            for row in report["throughput"]:
                print(f"throughput  {row['data']:<13} {row['images_per_s_per_worker']:7.1f} images/s per worker "
                      f"({row['workers']} worker(s), {args.size} px, {row['mean_file_kb']:.0f} kB per image)")
        if "memory" not in skip:
            report["memory"] = memory(work, args)
            for row in report["memory"]:
                print(f"memory      {row['data']:<13} {row['dataset_images']:>8} images: peak RSS main "
                      f"{row['peak_rss_main_mb']:6.0f} MB, worker {row['peak_rss_worker_mb']:6.0f} MB")
        for row in startup(work, args) if args.startup else []:
            report.setdefault("startup", []).append(row)
            print(f"start-up    {row['files']:>8} files: first batch after {row['first_process_scan_s']:.1f} s "
                  f"(header scan), {row['later_process_cached_s']:.1f} s (scan cache), {row['shards_s']:.1f} s "
                  f"(shards; make_shards {row['make_shards_s']:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_average_after"] = os.getloadavg()
    print(f"load average before {report['load_average'][0]:.2f}, after {report['load_average_after'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        job = json.loads(sys.argv[2])
        result = measure(job)
        print(RESULT_MARKER + json.dumps(result), flush=True)
        sys.exit(0)
    sys.exit(data_bench_command(sys.argv[1:]))
