"""What the demo offers, read from disk without loading a network: the runs under a folder, their checkpoints, the
styles they were trained on and the example images.

Nothing here imports gradio; ``app.py`` turns these into widgets. A run is any folder that checkpoints were (or will
be) written to: its ``config.yaml`` names the model, so a model added later (or a run imported from elsewhere) shows
up with no change here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gan_translate.config import read_yaml
from gan_translate.data.builtin import ensure_builtin_dataset
from gan_translate.data.images import is_image_file
from gan_translate.engine.checkpoint import CONFIG_FILE, LATEST, STATE_FILE, list_checkpoints
from gan_translate.errors import UserError

STYLIZE = "stylize"  # the picker's entry for Gatys-style optimisation, which has no run folder
LATEST_CHOICE = "latest"
MAX_STYLES = 24  # style images offered per run (one per class first)
BUILTIN = ("", "builtin")


@dataclass(frozen=True)
class RunInfo:
    """One run folder as the picker shows it."""

    path: Path
    model: str
    steps: int | None  # trained steps of the latest checkpoint; None when no checkpoint says
    imported: bool  # the latest checkpoint holds weights imported from another implementation, untrained here
    size: int | None  # the side the networks were trained on (crop_size)
    checkpoints: tuple[str, ...]  # checkpoint folder names, newest first
    dataroot: str
    dataset_mode: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def label(self) -> str:
        parts = [self.name, self.model]
        if not self.checkpoints:
            parts.append("no checkpoint")
        elif self.imported:
            parts.append("imported")
        elif self.steps is not None:
            parts.append(f"{self.steps} steps")
        if self.size:
            parts.append(f"{self.size} px")
        return " · ".join(parts)


def _config_of(run_dir: Path) -> dict:
    config = run_dir / CONFIG_FILE
    if config.is_file():
        return read_yaml(config)
    for ckpt in reversed(list_checkpoints(run_dir)):
        if (ckpt / CONFIG_FILE).is_file():
            return read_yaml(ckpt / CONFIG_FILE)
    return {}


def _latest(run_dir: Path, checkpoints: list[Path]) -> Path | None:
    pointer = run_dir / LATEST
    if pointer.is_file():
        candidate = run_dir / pointer.read_text().strip()
        if candidate.is_dir():
            return candidate
    return checkpoints[-1] if checkpoints else None


def trained_steps(ckpt: Path) -> tuple[int | None, bool]:
    """The step counter saved in a checkpoint, and whether its weights were imported (``gan_translate import``);
    memory-mapped, so the optimizer moments are not read."""
    state_file = ckpt / STATE_FILE
    if not state_file.is_file():
        return None, False
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an unreadable or foreign state only costs the step count in the label
        return None, False
    progress = state.get("progress") if isinstance(state, dict) else None
    steps = progress.get("step") if isinstance(progress, dict) else None
    return (int(steps) if isinstance(steps, int) else None), bool(isinstance(state, dict) and "imported" in state
                                                                  and steps is None)


def read_run(run_dir: str | Path) -> RunInfo:
    """The picker's view of one run folder; UserError when it is no run (no config.yaml anywhere)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run found at {run_dir}")
    config = _config_of(run_dir)
    if not config.get("model"):
        raise UserError(f"{run_dir} is not a run folder (no {CONFIG_FILE} naming a model)")
    checkpoints = list_checkpoints(run_dir)
    latest = _latest(run_dir, checkpoints)
    size = config.get("crop_size") or config.get("load_size")
    steps, imported = trained_steps(latest) if latest else (None, False)
    return RunInfo(path=run_dir, model=str(config["model"]), steps=steps, imported=imported,
                   size=int(size) if size else None, checkpoints=tuple(p.name for p in reversed(checkpoints)),
                   dataroot=str(config.get("dataroot") or ""), dataset_mode=str(config.get("dataset_mode") or ""))


def find_runs(checkpoints_dir: str | Path) -> list[RunInfo]:
    """Every run folder directly under ``checkpoints_dir``, newest first (a missing folder has none)."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    runs = []
    for child in root.iterdir():
        if child.is_dir() and not child.name.startswith("."):
            try:
                runs.append(read_run(child))
            except UserError:
                continue  # results folders, logs and the like
    return sorted(runs, key=lambda r: r.path.stat().st_mtime_ns, reverse=True)


def checkpoint_choices(run: RunInfo) -> list[str]:
    """'latest', then every checkpoint folder of the run, newest first."""
    return [LATEST_CHOICE, *run.checkpoints]


# ----------------------------------------------------------------------------------------------------------------------
# Images to offer
# ----------------------------------------------------------------------------------------------------------------------


def _style_folder(run: RunInfo) -> Path | None:
    if run.dataroot in BUILTIN:
        if run.dataset_mode != "styles":
            return None
        from gan_translate.data.styles import ensure_builtin_styles

        return ensure_builtin_styles() / "style"
    root = Path(run.dataroot)
    for name in ("style", "trainB", "testB"):
        if (root / name).is_dir():
            return root / name
    return None


def run_styles(run: RunInfo, limit: int = MAX_STYLES) -> list[str]:
    """Style images the run was trained on: the first image of each class, then the next ones, up to ``limit``.
    Empty when the training data is not on this machine."""
    from gan_translate.data.styles import style_classes

    folder = _style_folder(run)
    if folder is None:
        return []
    try:
        classes = [paths for _, paths in style_classes(folder)]
    except UserError:
        return []
    picked: list[str] = []
    depth = 0
    while len(picked) < limit and any(depth < len(paths) for paths in classes):
        picked += [paths[depth] for paths in classes if depth < len(paths)]
        depth += 1
    return picked[:limit]


def example_images(per_domain: int = 3) -> list[str]:
    """Test images of the built-in facades (label maps, then renderings), written on first use; the same data set
    that ``train.py`` without ``--dataroot`` trains on."""
    root = ensure_builtin_dataset() / "unaligned"
    out: list[str] = []
    for domain in ("testA", "testB"):
        files = sorted(p for p in (root / domain).iterdir() if is_image_file(p.name))
        out += [str(p) for p in files[:per_domain]]
    return out


def builtin_style_images(limit: int = 6) -> list[str]:
    """The built-in procedural styles, for the stylize entry (one image per style)."""
    from gan_translate.data.styles import ensure_builtin_styles, style_classes

    classes = style_classes(ensure_builtin_styles() / "style")
    return [paths[0] for _, paths in classes][:limit]
