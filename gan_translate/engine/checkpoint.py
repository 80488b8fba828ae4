"""Checkpoints that survive crashes and never execute code on load.

A run folder ``checkpoints/NAME/`` holds ``config.yaml`` (the resolved options), TensorBoard logs, sample grids and
checkpoint folders ``step_00001200/`` (rotated, the last ``keep_last`` kept) and ``epoch_005/`` (kept), each with:
  net_<name>.safetensors   one file per network (a generator loads for inference from its file alone)
  training_state.pt        optimizers, schedulers, counters, RNG states, image pools; tensors and plain python
                           values only, read back with ``torch.load(weights_only=True)``
  config.yaml              the options it was trained with
A checkpoint is written into a hidden temporary folder ``.tmp-<tag>-<host>-<pid>`` and renamed into place, then the
``LATEST`` file is replaced atomically; a crash at any moment leaves the previous latest checkpoint intact and loadable.
A later save removes the temporary folders of crashed writers, never one whose writer still runs (run_lock.py).

We write these files ourselves rather than with ``Accelerator.save_state``: save_state writes in place (a crash
mid-write corrupts the latest state) and pickles RNG states and custom objects, which must then be unpickled on load.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from gan_translate.engine.run_lock import this_host, writer_alive
from gan_translate.errors import UserError, quiet_torch_load, torch_load_refusal
from gan_translate.file_modes import share_like_umask

LATEST = "LATEST"
STATE_FILE = "training_state.pt"
CONFIG_FILE = "config.yaml"
_STEP_DIR = re.compile(r"step_(\d+)$")
_EPOCH_DIR = re.compile(r"epoch_(\d+)$")
# A save's scratch folders: .tmp-<tag>-<host>-<pid> (being written), .old-<tag>-<host>-<pid> (being replaced); the
# host is absent in folders of earlier versions.
_SCRATCH_DIR = re.compile(r"\.(?:tmp|old)-(?:step|epoch)_\d+-(?:(?P<host>.+)-)?(?P<pid>\d+)$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Replaces ``path`` by ``text`` so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def net_state(net: nn.Module, buffers: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A network's tensors, unwrapped from DDP, contiguous and unshared as safetensors requires; ``buffers`` replace
    the network's own (a snapshot taken before a step that was dropped)."""
    net = getattr(net, "module", net)
    tensors = net.state_dict()
    for key, value in (buffers or {}).items():
        if key in tensors:
            tensors[key] = value
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def save_checkpoint(run_dir: Path, tag: str, *, nets: dict[str, nn.Module], state: dict[str, Any],
                    config_yaml: str, keep_last: int,
                    buffers: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Writes checkpoint ``run_dir/tag`` atomically, points LATEST at it and rotates old step checkpoints."""
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / tag
    writer = f"{this_host()}-{os.getpid()}"
    tmp = run_dir / f".tmp-{tag}-{writer}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name, net in nets.items():
            save_file(net_state(net, (buffers or {}).get(name)), str(tmp / f"net_{name}.safetensors"))
            share_like_umask(tmp / f"net_{name}.safetensors")  # safetensors writes it private
        torch.save(state, tmp / STATE_FILE)
        (tmp / CONFIG_FILE).write_text(config_yaml)
        for child in tmp.iterdir():
            with open(child, "rb") as f:
                os.fsync(f.fileno())
        _put_in_place(tmp, final, run_dir / f".old-{tag}-{writer}")  # re-saving a tag: swap, then drop the old
        write_text_atomic(run_dir / LATEST, tag + "\n")
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not write checkpoint {final}: {err.strerror or err}") from None
    _rotate(run_dir, keep_last)
    return final


def _put_in_place(tmp: Path, final: Path, old: Path) -> None:
    """Renames ``tmp`` to ``final``. An existing ``final`` is moved aside to ``old`` first and removed after (a folder
    cannot be renamed over a folder or a link, nor a link over a folder); a link over a link is replaced at once."""
    if os.path.lexists(final) and not (tmp.is_symlink() and final.is_symlink()):
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


def _remove(path: Path) -> None:
    """Deletes a checkpoint folder, or only the name when it is a link to another checkpoint."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def link_checkpoint(run_dir: Path, tag: str, target: str) -> Path:
    """Makes ``run_dir/tag`` a second name of checkpoint ``target`` (a relative symbolic link: the same step is
    written once, e.g. ``step_00000300`` -> ``epoch_005``), and points LATEST at it. Resuming and test.py read it
    as any other checkpoint; rotating ``tag`` away removes the name only."""
    final = run_dir / tag
    tmp = run_dir / f".link-{tag}-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target, target_is_directory=True)
        _put_in_place(tmp, final, run_dir / f".old-{tag}-{this_host()}-{os.getpid()}")
        write_text_atomic(run_dir / LATEST, tag + "\n")
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"could not write checkpoint {final}: {err.strerror or err}") from None
    return final


def _rotate(run_dir: Path, keep_last: int) -> None:
    steps = sorted((int(m.group(1)), p) for p in run_dir.iterdir() if (m := _STEP_DIR.match(p.name)))
    latest = (run_dir / LATEST).read_text().strip() if (run_dir / LATEST).exists() else ""
    for _, path in steps[:-keep_last]:
        if path.name != latest:
            _remove(path)
    remove_stale_scratch(run_dir)


def remove_stale_scratch(run_dir: Path) -> list[Path]:
    """Deletes the scratch folders of saves whose writer is gone (crashed mid-write); returns them.

    A folder of a process that still runs -- this one, or another one on this machine -- is kept, and so is one made on
    another machine, whose writer cannot be checked from here.
    """
    removed = []
    for path in run_dir.iterdir():
        match = _SCRATCH_DIR.match(path.name)
        if not match or not path.is_dir():
            continue
        host, pid = match.group("host") or this_host(), int(match.group("pid"))
        if pid == os.getpid() and host == this_host() or writer_alive(host, pid):
            continue
        _remove(path)
        removed.append(path)
    return removed


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (by step recorded in the folder name or state)."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and (_STEP_DIR.match(p.name) or _EPOCH_DIR.match(p.name))]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def find_checkpoint(run_dir: str | Path, which: str = "latest") -> Path:
    """The checkpoint folder for ``which``: 'latest', an epoch number, or a folder name (step_00000100)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run found at {run_dir} (check --name and --checkpoints_dir)")
    if which == "latest":
        pointer = run_dir / LATEST
        if pointer.exists():
            candidate = run_dir / pointer.read_text().strip()
            if (candidate / STATE_FILE).exists():
                return candidate
        existing = list_checkpoints(run_dir)
        if not existing:
            raise UserError(f"no checkpoint in {run_dir} (train first, or check --name)")
        return existing[-1]
    candidate = run_dir / (f"epoch_{int(which):03d}" if str(which).isdigit() else str(which))
    if not candidate.is_dir():
        names = ", ".join(p.name for p in list_checkpoints(run_dir)) or "none"
        raise UserError(f"checkpoint '{which}' not found in {run_dir} (available: {names})")
    return candidate


def load_net(net: nn.Module, ckpt_dir: Path, name: str) -> None:
    """Loads ``net_<name>.safetensors`` into ``net``; a mismatch names the key and both shapes."""
    path = ckpt_dir / f"net_{name}.safetensors"
    if not path.is_file():
        raise UserError(f"checkpoint {ckpt_dir} has no network '{name}' (missing {path.name})")
    try:
        saved = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    target = getattr(net, "module", net)
    expected = target.state_dict()
    for key, tensor in expected.items():
        if key not in saved:
            raise UserError(f"{path}: key '{key}' is missing -- the checkpoint was trained with other network "
                            "options (netG, netD, ngf, ndf, norm, n_layers_D)")
        if saved[key].shape != tensor.shape:
            raise UserError(f"{path}: key '{key}' has shape {tuple(saved[key].shape)} but the network expects "
                            f"{tuple(tensor.shape)} -- the checkpoint was trained with other network options")
    extra = sorted(set(saved) - set(expected))
    if extra:
        raise UserError(f"{path}: unexpected key '{extra[0]}' -- the checkpoint was trained with other network "
                        "options (netG, netD, ngf, ndf, norm, n_layers_D)")
    target.load_state_dict(saved)


def load_state(ckpt_dir: Path) -> dict[str, Any]:
    """The training state of a checkpoint, unpickled with torch's weights-only loader (no code runs)."""
    path = ckpt_dir / STATE_FILE
    if not path.is_file():
        raise UserError(f"checkpoint {ckpt_dir} has no {STATE_FILE}")
    try:
        return quiet_torch_load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise UserError(f"refusing to load {path}: not a plain training state ({torch_load_refusal(err)})") from None


# ----------------------------------------------------------------------------------------------------------------------
# RNG state: plain tensors and python values, so that the state file loads with weights_only=True
# ----------------------------------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
