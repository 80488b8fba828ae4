"""CUT / FastCUT weights of taesungp/contrastive-unpaired-translation: a generator ``latest_net_G.pth`` (its
published models, e.g. horse2zebra_cut_pretrained) or a run folder (latest_net_G/D/F.pth + train_opt.txt).

    python -m gan_translate import cut latest_net_G.pth --name h2z_cut
    python -m gan_translate import cut checkpoints/h2z_cut --name h2z_cut        # G, D, F: fine-tunable

Their default generator and PatchGAN are antialiased (blur-pooled, ``filt`` buffers); our cut model builds the same
modules in the same order (``--antialias``), so the keys are theirs. Runs trained with both ``--no_antialias`` and
``--no_antialias_up`` have the reference layout, which the keys also tell. netF's MLPs (``mlp_<i>``) become our
``mlps.<i>``, and their ``nce_layers`` (indices into G's layers) our tap names.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Sequence

from gan_translate.errors import UserError
from gan_translate.importers.common import build_options, load_into, read_state_dict, resembles, write_run
from gan_translate.importers.reference import (
    CARRIED,
    _net_files,
    _reconcile,
    _typed,
    describe,
    infer_discriminator,
    infer_generator,
    read_train_opt,
)
from gan_translate.models import create_model

CUT_CARRIED = CARRIED + ("lambda_GAN", "lambda_NCE", "nce_idt", "nce_T", "num_patches", "flip_equivariance",
                         "netF_nc", "nce_includes_all_negatives_from_minibatch")
_NO_DISCRIMINATOR = ("it was imported from a generator alone (the published CUT models hold no D or F); train a new "
                     "run instead")


def _parser() -> argparse.ArgumentParser:
    from gan_translate.importers import ImportParser

    p = ImportParser(prog="python -m gan_translate import cut",
                     description="Import CUT/FastCUT weights: a generator (.pth) or a run folder.")
    p.add_argument("path", help="latest_net_G.pth or a CUT run folder (checkpoints/NAME)")
    p.add_argument("--epoch", default="latest", help="which {epoch}_net_*.pth of a run folder (default: latest)")
    p.add_argument("--mode", default="", choices=("", "cut", "fastcut"), help="default: train_opt.txt, else cut")
    p.add_argument("--load_size", type=int, default=0, help="training scale (default: train_opt.txt, else 286)")
    p.add_argument("--crop_size", type=int, default=0, help="training crop (default: train_opt.txt, else 256)")
    return p


def _taps(nce_layers: str, generator: Any) -> str:
    """Their nce_layers (indices into G.model) as our tap names."""
    by_index = {index: name for name, index in generator.taps.items()}
    try:
        names = [by_index[int(i)] for i in str(nce_layers).split(",") if i.strip()]
    except (KeyError, ValueError):
        raise UserError(f"train_opt.txt: nce_layers '{nce_layers}' are not tap positions of this generator "
                        f"({', '.join(f'{i}={n}' for i, n in sorted(by_index.items()))})") from None
    return ",".join(names)


def import_cut(argv: Sequence[str]) -> Path:
    args = _parser().parse_args(list(argv))
    path = Path(args.path).expanduser()
    train_opt: dict[str, str] = {}
    if path.is_dir():
        if (path / "train_opt.txt").is_file():
            train_opt = read_train_opt(path / "train_opt.txt")
        files = {k: v for k, v in _net_files(path, args.epoch).items() if k in ("G", "D", "F")}
        if "G" not in files:
            raise UserError(f"{path}: no {args.epoch}_net_G.pth")
    elif path.is_file():
        files = {"G": path}
    else:
        raise UserError(f"{path}: no such file or folder")
    states = {name: read_state_dict(p, f"{name} weights") for name, p in files.items()}
    g_state = states["G"]
    said = {k: _typed(k, v) for k, v in train_opt.items() if k in CUT_CARRIED}
    arch = infer_generator(g_state, str(files["G"]))
    if not arch.netG.startswith("resnet_"):
        raise UserError(f"{files['G']}: CUT's generator is a ResNet; this is a {arch.netG}")
    kernels = {v.shape[-1] for k, v in g_state.items() if k.endswith(".filt")}  # blur-pool 3x3, blur-upsample 4x4
    has_blur, down_blur, up_blur = bool(kernels), 3 in kernels, 4 in kernels
    if has_blur and not (down_blur and up_blur):
        raise UserError(f"{files['G']}: antialiased downsampling with transposed upsampling (--no_antialias_up) "
                        "is not supported; only both or neither")
    inferred: dict[str, Any] = {**vars(arch), "antialias": has_blur}
    said["antialias"] = not _typed("", train_opt["no_antialias"]) if "no_antialias" in train_opt else None
    if said["antialias"] is None:
        del said["antialias"]
    if "D" in states:
        disc = infer_discriminator({k: v for k, v in states["D"].items() if not k.endswith(".filt")}, str(files["D"]))
        disc.pop("input_nc")
        inferred.update(disc)
    if "F" in states:
        inferred["netF_nc"] = states["F"]["mlp_0.0.weight"].shape[0] if "mlp_0.0.weight" in states["F"] else None
    notes = _reconcile(said, inferred, dict(said), "train_opt.txt")
    values: dict[str, Any] = dict(said)
    mode = args.mode or ("fastcut" if train_opt.get("CUT_mode", "").lower() == "fastcut" else "cut")
    values.update(mode=mode, name=args.name, checkpoints_dir=args.checkpoints_dir)
    values.setdefault("load_size", 286)
    values.setdefault("crop_size", 256)
    for key in ("load_size", "crop_size"):
        if getattr(args, key):
            values[key] = getattr(args, key)
    if values.get("dataroot") and not Path(str(values["dataroot"])).expanduser().is_dir():
        values["dataroot"] = ""
    if "nce_layers" in train_opt:
        from gan_translate.nets import build_generator

        probe = build_generator(arch.netG, arch.input_nc, arch.output_nc, ngf=arch.ngf, antialias=has_blur)
        values["nce_layers"] = _taps(train_opt["nce_layers"], probe)
    else:  # the default taps that this generator has (a short one has no block5)
        from gan_translate.models.cut import CUTOptions, available_taps

        taps = available_taps(arch.netG)
        values["nce_layers"] = ",".join(t for t in CUTOptions().nce_layers.split(",") if t in taps)
    options = build_options("cut", values)
    model = create_model(options, training=True)
    layout = (f"CUT {'antialiased ' if options.antialias else ''}{options.netG} generator "
              f"({options.norm} norm)")
    nets = {"G": load_into(model.nets["G"], g_state, source=str(files["G"]), layout=layout,
                           zero_bias=options.norm == "none")}
    if "D" in states:
        nets["D"] = load_into(model.nets["D"], states["D"], source=str(files["D"]),
                              layout=f"CUT {options.netD} PatchGAN", zero_bias=options.norm == "none")
    if "F" in states:
        f_state = {re.sub(r"^mlp_(\d+)\.", r"mlps.\1.", k): v for k, v in states["F"].items()}
        nets["F"] = load_into(model.nets["F"], f_state, source=str(files["F"]),
                              layout=f"CUT netF for taps {options.nce_layers}")
    complete = set(nets) == set(model.nets)
    for line in notes:
        print(line)
    missing = ", ".join(sorted(set(model.nets) - set(nets)))
    reason = "" if complete else (_NO_DISCRIMINATOR if len(nets) == 1 else f"the source has no {missing}")
    run = write_run(options, nets, source=str(path), fine_tune=complete, reason=reason)
    print(f"imported CUT {', '.join(sorted(nets))}: {describe(options)}, "
          f"{'antialiased' if options.antialias else 'reference layout'} -> {run}"
          f"{'' if complete else ' (inference only)'}")
    return run


__all__ = ["import_cut", "resembles"]
