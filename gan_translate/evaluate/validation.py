"""Metrics during training (``--val_freq N``): PSNR, SSIM and L1 on a validation split, logged as val/<metric>.

The split is ``<dataroot>/val`` (aligned) or ``valA``/``valB`` (unaligned), else the test split; at most
``VAL_IMAGES`` images, at the training scale as test.py translates them (``resolve_test_scale``). The networks are
copied into a fresh inference model first, so validation touches none of the training state (BatchNorm statistics, DDP
wrappers), and the random streams are forked, so a run with validation trains exactly as one without. Models that
reconstruct (CycleGAN) also log val/rec_l1, the cycle L1.
"""

from __future__ import annotations

from typing import Any

import torch

from gan_translate.data import resolve_test_scale
from gan_translate.data.datasets import has_images
from gan_translate.evaluate.scoring import run_job
from gan_translate.evaluate.sources import FORWARD_ROLES, AlignedSource, FolderSource, Job, data_options
from gan_translate.inference import generator_stride
from gan_translate.models import TranslationModel, model_class
from gan_translate.nets import bare

__all__ = ["VAL_IMAGES", "validation_job", "validation_metrics"]

VAL_IMAGES = 32
VAL_METRICS = {"psnr", "ssim", "l1"}


def _split(root: str, mode: str) -> str | None:
    for phase in ("val", "test"):
        if mode == "aligned" and has_images(root, phase):
            return phase
        if mode == "unaligned" and has_images(root, f"{phase}A") and has_images(root, f"{phase}B"):
            return phase
    return None


def validation_job(options: Any, stride: int = 1) -> Job | None:
    """The forward direction on the validation split, or None where there is none (or no targets to score); at the
    training scale as test.py uses it for a generator of ``stride``."""
    root, mode = str(options.dataroot), options.dataset_mode
    phase = _split(root, mode)
    if phase is None:
        return None
    scale = resolve_test_scale(options, stride=stride)
    data = data_options(options, phase=phase, skip_bad_images=True, **scale.as_options())
    if mode == "aligned":
        source = AlignedSource(data, count=VAL_IMAGES, reverse=False, skip_bad=True)
    else:
        first, second = (("B", "A") if options.direction == "BtoA" else ("A", "B"))
        source = FolderSource(data, f"{phase}{first}", count=VAL_IMAGES, in_channels=options.input_nc,
                              out_channels=options.output_nc, target_folder=f"{phase}{second}", skip_bad=True)
        if not source.targets:
            return None
    return Job("val", "A", "fake_B", FORWARD_ROLES, source)


def validation_metrics(model: TranslationModel, options: Any) -> dict[str, float]:
    """{'val/psnr': ..., 'val/ssim': ..., 'val/l1': ...} of ``model``'s current weights, and 'val/rec_l1' for models
    that reconstruct (CycleGAN's cycle); {} when nothing to score."""
    if model.needs_style:
        return {}
    fresh = model_class(options.model)(options, training=False)
    job = validation_job(options, generator_stride(fresh))
    if job is None:
        return {}
    device = next(bare(model.nets[model.inference_nets[0]]).parameters()).device
    for key in fresh.inference_nets:
        fresh.nets[key].load_state_dict(bare(model.nets[key]).state_dict())
    fresh.to(device).train()  # the mode test.py uses by default (the reference keeps dropout at test time)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(options.seed)
        result = run_job(fresh, job, metrics=VAL_METRICS, batch_size=1, device=device)
    return {f"val/{k}": float(v) for k, v in result.summary.items() if k in VAL_METRICS or k == "rec_l1"}
