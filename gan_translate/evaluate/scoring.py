"""The core of testing and validation: translate a job's samples in batches, save them, score them.

Images of one size are batched together (a batch must be one tensor); rows keep the order of the source. Scores are
computed on the 8-bit values the PNG files hold (``metrics.quantize``). Models that reconstruct their input
(CycleGAN's G_B(G_A(x)), MIXGAN's G_c) are scored on that too: ``rec_l1``, with the L1 metric, whether or not a
target exists. Nothing here loads checkpoints or writes pages, so the trainer's validation hook can use it on the
model it is training. Decoding (a prefetch thread) and PNG writing (a writer thread) overlap the network.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader

from gan_translate.data import save_image
from gan_translate.evaluate.fid import SMALL_SAMPLE, FeatureSet, fid_from_features, kernel_inception_distance, \
    small_sample_note
from gan_translate.evaluate.gallery import GalleryRow
from gan_translate.evaluate.inception import InceptionFeatures
from gan_translate.evaluate.metrics import PAIRED_METRICS, l1, mean_std, quantize
from gan_translate.evaluate.sources import Job

__all__ = ["JobResult", "run_job", "COLUMNS", "STYLE_COLUMNS", "DISTRIBUTION_METRICS"]

COLUMNS = ["input", "output", "target"]
STYLE_COLUMNS = ["content", "style", "result"]
DISTRIBUTION_METRICS = ("fid", "kid")


@dataclass
class JobResult:
    """What one job produced: gallery rows, per-image scores, the summary and notes, and timings in seconds."""

    label: str
    rows: list[GalleryRow] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)  # further outputs per input (MIXGAN's rec_A)


def _keep(item: Any) -> Any:
    return item  # DataLoader collate for batch_size=None: samples come as the source made them


PREFETCH = 8  # samples decoded ahead of the network
PNG_LEVEL = 1  # results' PNGs: lossless, fast to encode


def _prefetched(source: Any) -> Iterator[Any]:
    """The samples of ``source`` in order, decoded by a background thread while the caller runs the network.

    Pillow's decoders and resamplers and torch's ops release the GIL, so one thread overlaps decoding with
    translation without the start-up and tensor pickling of worker processes. An error while loading (an unreadable
    file) is raised here, at the sample where it happened.
    """
    items: queue.Queue = queue.Queue(PREFETCH)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for index in range(len(source)):
                if not put((source[index], None)):
                    return
        except BaseException as err:  # handed to the consumer, which raises it
            put((None, err))
            return
        put((done, None))

    thread = threading.Thread(target=work, name="test-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, err = items.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _Writer:
    """Writes PNGs on a background thread (zlib releases the GIL), so encoding overlaps the next batch's network;
    ``close`` waits for every file and raises the first error."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-writer")
        self.pending: list[Future] = []

    def save(self, tensor: torch.Tensor, path: Path) -> None:
        self.pending = [f for f in self.pending if not f.done() or f.exception() is not None]
        # zlib level 1: a test writes three PNGs per image, and level 6 took longer than the network at 256 px
        self.pending.append(self.pool.submit(save_image, tensor, path, PNG_LEVEL))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for future in self.pending:
            future.result()


class _Scorer:
    """Accumulates one job's rows, scores and features."""

    def __init__(self, model: Any, job: Job, *, metrics: set[str], device: torch.device,
                 extractor: InceptionFeatures | None, image_dir: Path | None, reconstruct: bool = True,
                 precision: torch.dtype | None = None) -> None:
        self.model, self.job, self.metrics, self.device = model, job, metrics, device
        self.precision = precision
        self.extractor, self.image_dir = extractor, image_dir
        self.reconstruct = reconstruct
        self.writer = _Writer()
        self.rows: dict[int, GalleryRow] = {}
        self.records: dict[int, dict[str, Any]] = {}
        self.fakes, self.reals = FeatureSet(), FeatureSet()
        self.saved: set[str] = set()
        self.extra_columns: list[str] = []
        self.small_for_ssim = 0
        self.inception_seconds = 0.0

    def _save(self, tensor: torch.Tensor, name: str) -> str:
        rel = f"images/{name}.png"
        if self.image_dir is not None and rel not in self.saved:
            self.writer.save(tensor, self.image_dir / f"{name}.png")
            self.saved.add(rel)
        return rel

    def _features(self, images: torch.Tensor, into: FeatureSet) -> None:
        start = time.perf_counter()
        into.add(self.extractor(quantize(images).to(self.device)))
        self.inception_seconds += time.perf_counter() - start

    @torch.inference_mode()
    def flush(self, batch: list[tuple[int, dict]]) -> None:
        job = self.job
        inputs = torch.stack([s["input"] for _, s in batch]).to(self.device)
        request: dict[str, Any] = {job.key: inputs, f"{job.key}_paths": [s["input_path"] for _, s in batch],
                                   "reconstruct": self.reconstruct}
        if "style" in batch[0][1]:
            request["style"] = torch.stack([s["style"] for _, s in batch]).to(self.device)
            request["style_paths"] = [s["style_path"] for _, s in batch]
        with torch.autocast(self.device.type, dtype=self.precision, enabled=self.precision is not None):
            outputs = self.model.translate(request)
        chosen = job.preferred if job.preferred in outputs else next(iter(outputs))
        out = outputs[chosen].detach().float()
        # A model may give more than one image per input (MIXGAN: the mixture and G_c's reconstruction): the first is
        # the one scored, the others are saved beside it and get their own gallery columns.
        extras = {k: v.detach().float().cpu() for k, v in outputs.items() if k != chosen}
        self.extra_columns += [k for k in extras if k not in self.extra_columns]
        for position, ((index, sample), image) in enumerate(zip(batch, out)):
            self._row(index, sample, image.cpu(), {k: v[position] for k, v in extras.items()})
        if self.extractor is not None:
            self._features(out, self.fakes)
            targets = [s["target"] for _, s in batch if "target" in s]
            if job.reals is None and targets and all(t.shape == targets[0].shape for t in targets):
                self._features(torch.stack(targets), self.reals)

    def _row(self, index: int, sample: dict, output: torch.Tensor, extras: dict[str, torch.Tensor]) -> None:
        stem, (r_in, r_out, r_target) = sample["stem"], self.job.roles
        record: dict[str, Any] = {"file": sample["name"]}
        if "style" in sample:
            images = {"content": self._save(sample["input"], f"{sample['content_stem']}_content"),
                      "style": self._save(sample["style"], f"style_{sample['style_stem']}"),
                      "result": self._save(output, f"{stem}_stylized")}
        else:
            images = {"input": self._save(sample["input"], f"{stem}_{r_in}"),
                      "output": self._save(output, f"{stem}_{r_out}")}
            images.update({key: self._save(image, f"{stem}_{key}") for key, image in extras.items()})
            reconstruction = next((image for key, image in extras.items() if key.startswith("rec_")), None)
            if "l1" in self.metrics and reconstruction is not None and reconstruction.shape == sample["input"].shape:
                record["rec_l1"] = float(l1(quantize(reconstruction)[None], quantize(sample["input"])[None])[0])
            target = sample.get("target")
            if target is not None:
                images["target"] = self._save(target, f"{stem}_{r_target}")
                if target.shape == output.shape and self.metrics & set(PAIRED_METRICS):
                    a, b = quantize(output)[None], quantize(target)[None]
                    for name in (n for n in PAIRED_METRICS if n in self.metrics):  # a fixed order in the json
                        record[name] = float(PAIRED_METRICS[name](a, b)[0])
                    if "ssim" in record and math.isnan(record["ssim"]):
                        self.small_for_ssim += 1
        self.rows[index] = GalleryRow(sample["name"], images, {k: v for k, v in record.items() if k != "file"})
        self.records[index] = record

    def finish(self, result: JobResult) -> None:
        order = sorted(self.rows)
        result.rows = [self.rows[i] for i in order]
        result.per_image = [self.records[i] for i in order]
        result.extra_columns = list(self.extra_columns)
        summary: dict[str, Any] = {"images": len(order)}
        paired = [r for r in result.per_image if any(n in r for n in PAIRED_METRICS)]
        for name in (n for n in PAIRED_METRICS if n in self.metrics):
            values = [r[name] for r in paired if name in r]
            if values:
                summary[name], summary[f"{name}_std"] = mean_std(values)
        if paired:
            summary["paired_images"] = len(paired)
        elif self.metrics & set(PAIRED_METRICS) and "style" not in self.job.roles:
            result.notes.append(f"{result.label}: no input has a true target, so PSNR/SSIM/L1 are not computed")
        reconstructed = [r["rec_l1"] for r in result.per_image if "rec_l1" in r]
        if reconstructed:
            summary["rec_l1"], summary["rec_l1_std"] = mean_std(reconstructed)
        if self.small_for_ssim:
            result.notes.append(f"{result.label}: SSIM left out for {self.small_for_ssim} image(s) smaller than the "
                                "11x11 window")
        self._distribution(summary, result)
        result.summary = summary
        result.seconds["inception"] = round(self.inception_seconds, 3)

    def _distribution(self, summary: dict[str, Any], result: JobResult) -> None:
        wanted = self.metrics & set(DISTRIBUTION_METRICS)
        if not wanted or self.extractor is None:
            return
        if self.job.reals is not None:
            start = time.perf_counter()
            reals = self.job.reals()
            self.inception_seconds += time.perf_counter() - start
            for _, image in reals:  # reference images may differ in size: resize each, then batch the 299x299s
                self._features(image[None], self.reals)
        n_fake, n_real = len(self.fakes), len(self.reals)
        if min(n_fake, n_real) < 2:
            why = "no reference images of the target domain" if n_real == 0 else "fewer than two images"
            result.notes.append(f"{result.label}: FID/KID not computed ({why})")
            return
        start = time.perf_counter()
        summary["fid_images"] = [n_fake, n_real]
        if "fid" in wanted:
            summary["fid"] = fid_from_features(self.fakes.array(), self.reals.array())
            if min(n_fake, n_real) < SMALL_SAMPLE:
                result.notes.append(f"{result.label}: {small_sample_note(min(n_fake, n_real))}")
        if "kid" in wanted:
            summary["kid"], summary["kid_std"] = kernel_inception_distance(self.fakes.array(), self.reals.array())
        self.inception_seconds += time.perf_counter() - start


def run_job(model: Any, job: Job, *, metrics: set[str], batch_size: int, device: torch.device,
            extractor: InceptionFeatures | None = None, image_dir: Path | None = None, num_workers: int = 0,
            progress: Callable[[int], None] | None = None, reconstruct: bool = True,
            precision: torch.dtype | None = None) -> JobResult:
    """Translates every sample of ``job``, batching samples of equal size, and scores the results.

    Args:
        model: a ``TranslationModel`` (its ``translate`` reads ``job.key``), already on ``device`` in its mode.
        metrics: names among psnr, ssim, l1, fid, kid.
        extractor: Inception features for FID/KID (None: those are not computed).
        image_dir: where PNGs go (None: nothing is written, as during validation).
        progress: called with 1 per sample (a tqdm bar's update).
        reconstruct: ask the model for its reconstructions (CycleGAN's rec_A/rec_B), saved and scored as rec_l1.
        precision: translate under autocast in this dtype (bf16, fp16); None = the networks' own fp32.
    """
    result = JobResult(job.label, notes=list(job.notes))
    scorer = _Scorer(model, job, metrics=metrics, device=device, extractor=extractor, image_dir=image_dir,
                     reconstruct=reconstruct, precision=precision)
    start = time.perf_counter()
    if num_workers:
        loader: Any = DataLoader(job.source, batch_size=None, shuffle=False, num_workers=num_workers,
                                 collate_fn=_keep)
    else:
        loader = _prefetched(job.source)
    pending: dict[tuple, list[tuple[int, dict]]] = {}
    skipped: list[str] = []
    try:
        for index, sample in enumerate(loader):
            if progress is not None:
                progress(1)
            if "skipped" in sample:
                skipped.append(sample["skipped"])
                continue
            key = (tuple(sample["input"].shape), tuple(sample["style"].shape) if "style" in sample else ())
            group = pending.setdefault(key, [])
            group.append((index, sample))
            if len(group) >= batch_size:
                scorer.flush(pending.pop(key))
        for group in pending.values():
            scorer.flush(group)
    finally:
        if hasattr(loader, "close"):
            loader.close()  # stops the prefetch thread, also after an error
        scorer.writer.close()  # every PNG written (or the first write error raised)
    if skipped:
        result.notes.append(f"{job.label}: skipped {len(skipped)} unreadable image(s); first: {skipped[0]}")
    scorer.finish(result)
    result.seconds["total"] = round(time.perf_counter() - start, 3)
    result.seconds["translate"] = round(result.seconds["total"] - result.seconds["inception"], 3)
    return result
