"""What every importer shares: reading another project's weight file safely, naming the layout a file resembles,
matching its tensors to one of our networks, and writing an ordinary run folder.

Files are read with ``torch.load(weights_only=True)``: plain state dicts (the only thing the reference, AdaIN, CUT and
TPFR ever saved) load; a file that needs code to unpickle (a pickled module, an ``argparse.Namespace``, numpy scalars)
is refused with one line, and nothing in it runs.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from gan_translate import config
from gan_translate.engine.checkpoint import CONFIG_FILE, save_checkpoint
from gan_translate.errors import UserError, quiet_torch_load
from gan_translate.models import model_class

StateDict = dict[str, torch.Tensor]

IMPORT_TAG = "epoch_000"  # the imported weights stay addressable as `--epoch 0` after fine-tuning steps
_PREFIX = re.compile(r"^(?:(?:module|_orig_mod)\.)+")  # DataParallel/DDP wrappers and torch.compile
_WRAPPER_KEYS = ("state_dict", "model", "net", "generator")
SHOWN = 3  # keys listed in a mismatch message


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def read_state_dict(path: str | Path, what: str = "weights") -> StateDict:
    """The tensors of a weight file, without running any code from it.

    Accepts a plain ``torch.save(state_dict)`` (zip or legacy container), a dict wrapping one under ``state_dict`` /
    ``model``, and a ``.safetensors`` file. Strips ``module.`` and ``_orig_mod.`` prefixes.

    Raises:
        UserError: one line naming the file: missing, a TorchScript archive, a pickle that needs code, not a state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{what}: file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return strip_prefixes(load_file(str(path)))
        except Exception as err:  # noqa: BLE001  (a broken file is the user's, not our bug)
            raise UserError(f"cannot read {path}: {_first_line(err)}") from None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist()):
                raise UserError(f"refusing {path}: a TorchScript archive (compiled code), not a state dict; "
                                "save `net.state_dict()` with torch.save instead")
    try:
        obj = quiet_torch_load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        needs = f" ({found.group(1)})" if found else ""
        raise UserError(f"refusing {path}: unpickling it would need code{needs}; only plain state dicts are read "
                        "(nothing from the file was run)") from None
    except Exception as err:  # noqa: BLE001  (legacy tar container, truncated file, not a torch file)
        raise UserError(f"cannot read {path} as PyTorch weights: {_first_line(err)}") from None
    return strip_prefixes(_unwrap(obj, path))


def _unwrap(obj: Any, path: Path) -> StateDict:
    if isinstance(obj, Mapping) and not _all_tensors(obj):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping) and _all_tensors(obj[key]):
                return dict(obj[key])
    if not isinstance(obj, Mapping) or not obj or not _all_tensors(obj):
        kind = type(obj).__name__
        raise UserError(f"{path} holds a {kind}, not a state dict of tensors")
    return dict(obj)  # drops the OrderedDict's _metadata (PyTorch versions of the layers): we build our own


def _all_tensors(obj: Mapping) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Keys without the ``module.`` / ``_orig_mod.`` prefixes that DataParallel, DDP and torch.compile add."""
    return {_PREFIX.sub("", k).replace("._orig_mod.", "."): v for k, v in state.items()}


# ----------------------------------------------------------------------------------------------------------------------
# Matching a file to a network
# ----------------------------------------------------------------------------------------------------------------------


def _listing(keys: list[str]) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:SHOWN])
    return shown + (f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def fit_to_net(state: StateDict, net: nn.Module, *, source: str, layout: str, zero_bias: bool = False) -> StateDict:
    """``state`` made loadable into ``net``: the variants the source projects wrote are repaired, anything else is a
    one-line UserError naming ``layout`` and the first missing/unexpected keys.

    Repairs: running statistics of InstanceNorm layers (files of PyTorch 0.4 with ``track_running_stats=True``: the
    module has no weight in the file and none in ``net``) are dropped; a missing ``num_batches_tracked`` (files older
    than PyTorch 0.4.1) is filled with 0; with ``zero_bias`` a missing conv bias (the reference's ``norm none`` convs
    have none, ours have one) is filled with zeros, which computes the same.
    """
    expected = net.state_dict()
    state = dict(state)
    for key in [k for k in state if k not in expected]:
        module, _, leaf = key.rpartition(".")
        if leaf in ("running_mean", "running_var", "num_batches_tracked") and f"{module}.weight" not in state:
            del state[key]
    for key, tensor in expected.items():
        if key in state:
            continue
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
        elif zero_bias and key.endswith(".bias") and key[:-5] + ".weight" in state:
            state[key] = torch.zeros_like(tensor)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {_listing(missing)}"] if missing else []) + (
            [f"unexpected {_listing(unexpected)}"] if unexpected else [])
        raise UserError(f"{source} does not fit the {layout}: {'; '.join(parts)}; the file looks like a "
                        f"{resembles(state)}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(f"{source}: '{key}' has shape {tuple(state[key].shape)} but the {layout} inferred from "
                            f"its keys needs {tuple(tensor.shape)}")
    return {k: state[k].to(expected[k].dtype) for k in expected}


def load_into(net: nn.Module, state: StateDict, **kwargs: Any) -> nn.Module:
    """``fit_to_net`` then a strict load; returns ``net``."""
    net.load_state_dict(fit_to_net(state, net, **kwargs))
    return net


def resembles(state: Mapping[str, torch.Tensor]) -> str:
    """The name of the layout that a state dict looks like, for messages."""
    have = set(state)
    first = state.get("0.weight")
    probes = [
        (any(k.endswith(".filt") for k in have), "CUT antialiased ResNet generator (import cut)"),
        (any(k.startswith("model.model.") for k in have), "reference U-Net generator (import reference)"),
        (any(k.startswith("model.") and ".conv_block." in k for k in have),
         "reference ResNet generator (import reference)"),
        (any(k.startswith("model_enc") for k in have), "TPFR generator (import tpfr)"),
        (any(k.startswith("model_pred.") for k in have), "TPFR discriminator (import tpfr)"),
        (any(k.startswith("mlp_") for k in have), "CUT feature MLP net_F (not needed to translate)"),
        (any(k.startswith(("down1.", "up1.")) or ".block." in k for k in have),
         "huggan (eriklindernoren) generator, not the reference's architecture"),
        (any(k.startswith("features.") for k in have), "torchvision VGG-19"),
        (first is not None and tuple(first.shape) == (3, 3, 1, 1), "AdaIN normalised VGG (import adain --vgg)"),
        ("1.weight" in have and "0.weight" not in have, "AdaIN decoder (import adain --decoder)"),
        (any(k.startswith("model.") for k in have), "reference PatchGAN discriminator"),
    ]
    for hit, name in probes:
        if hit:
            return name
    return "no known layout (first keys: " + ", ".join(list(state)[:SHOWN]) + ")"


# ----------------------------------------------------------------------------------------------------------------------
# Options and the run folder
# ----------------------------------------------------------------------------------------------------------------------


def build_options(model: str, values: Mapping[str, Any]) -> Any:
    """Validated options of ``model``: its paper defaults (options/<model>.yaml) overlaid with ``values`` (unknown
    names are ignored: other projects' options such as gpu_ids or display_port)."""
    cls = model_class(model)
    names = {f.name for f in fields(cls.Options)}
    merged: dict[str, Any] = {}
    for path in config.model_yaml_files(model, quick=False):
        merged.update(config.read_yaml(path))
    chosen = {k: v for k, v in values.items() if k in names}
    merged.update(cls.Options.presets({**merged, **chosen}))  # e.g. CUT's --mode fastcut, as the command line does
    merged.update(chosen)
    merged["model"] = model
    return config.validate(cls.Options, merged)


def write_run(options: Any, nets: Mapping[str, nn.Module], *, source: str, fine_tune: bool, reason: str = "",
              direction_known: bool = True) -> Path:
    """Writes ``checkpoints_dir/name/`` as training would: config.yaml, ``epoch_000/`` with one safetensors per
    network, LATEST. The training state records where the weights came from instead of optimizer states (the sources
    saved none): ``--continue_train`` then fine-tunes with fresh optimizers, or refuses with ``reason``.
    ``direction_known`` False (a lone generator file, nothing said which way it was trained) is recorded as
    direction "unknown": test.py then translates whichever way it is asked."""
    run_dir = Path(options.checkpoints_dir) / options.name
    if (run_dir / CONFIG_FILE).exists() and any(run_dir.glob("*/net_*.safetensors")):
        raise UserError(f"option --name: {run_dir} already holds a run; choose another --name or remove it")
    state = {"imported": {"source": source, "nets": sorted(nets), "fine_tune": fine_tune, "reason": reason,
                          "direction": options.direction if direction_known else "unknown"}}
    yaml_text = options.to_yaml()
    save_checkpoint(run_dir, IMPORT_TAG, nets=dict(nets), state=state, config_yaml=yaml_text, keep_last=1)
    (run_dir / CONFIG_FILE).write_text(yaml_text)
    return run_dir
