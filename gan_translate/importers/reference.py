"""Weights of the pix2pix/CycleGAN reference (junyanz/pytorch-CycleGAN-and-pix2pix): its published generators and
users' own run folders.

    python -m gan_translate import reference latest_net_G.pth --model cyclegan --name horse2zebra
    python -m gan_translate import reference checkpoints/myrun --name myrun        # all nets + train_opt.txt

Our ResNet and U-Net generators and the PatchGAN keep the reference's module order, so the tensors keep their names;
what a file needs is the right architecture, which is read from its keys (``infer_generator``,
``infer_discriminator``) and from train_opt.txt where there is one. Where the two disagree, the keys win and a line
says so. The variants the reference's users meet (InstanceNorm running statistics, no ``num_batches_tracked``,
``module.`` prefixes, dropout-shifted block indices) are repaired by ``common.fit_to_net`` or are simply the
architecture the keys describe.

A single generator becomes a one-way run (model ``pix2pix``: one generator G). Such a run translates, exports and is
scored like any other, but cannot be fine-tuned: the reference never published a discriminator.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from gan_translate.errors import UserError
from gan_translate.importers.common import StateDict, build_options, load_into, read_state_dict, resembles, write_run
from gan_translate.models import create_model

# The reference's `--model` names -> ours.
REFERENCE_MODELS = {"cycle_gan": "cyclegan", "pix2pix": "pix2pix", "test": "pix2pix", "cyclegan": "cyclegan"}
# train_opt.txt options that carry over as they are (the architecture ones are checked against the keys).
CARRIED = ("netG", "ngf", "ndf", "netD", "n_layers_D", "norm", "no_dropout", "input_nc", "output_nc", "direction",
           "load_size", "crop_size", "preprocess", "no_flip", "batch_size", "gan_mode", "pool_size", "lr", "beta1",
           "lr_policy", "lr_decay_iters", "n_epochs", "n_epochs_decay", "lambda_A", "lambda_B", "lambda_identity",
           "lambda_L1", "init_type", "init_gain", "dataset_mode", "serial_batches", "dataroot")
# Names of older reference versions (before 2020).
ALIASES = {"niter": "n_epochs", "niter_decay": "n_epochs_decay"}
ARCHITECTURE = ("netG", "ngf", "norm", "no_dropout", "input_nc", "output_nc", "netD", "ndf", "n_layers_D")
_NO_DISCRIMINATOR = ("it was imported from a generator alone, and the reference never published discriminators; "
                     "train a new run instead")


# ----------------------------------------------------------------------------------------------------------------------
# train_opt.txt
# ----------------------------------------------------------------------------------------------------------------------


def read_train_opt(path: Path) -> dict[str, str]:
    """The options of a reference run: one ``'{:>25}: {:<30}{}'`` line each, ``\\t[default: X]`` when changed."""
    values: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("-") or ":" not in line:
            continue
        key, _, rest = line.partition(":")
        values[key.strip()] = rest.split("\t[default:", 1)[0].strip()
    return values


def _typed(name: str, text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# ----------------------------------------------------------------------------------------------------------------------
# The architecture from the keys
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class GeneratorArch:
    """What the keys of a reference generator say; ``no_dropout`` is None where they cannot tell (a U-Net's dropout
    has no weights)."""

    netG: str
    ngf: int
    norm: str
    no_dropout: bool | None
    input_nc: int
    output_nc: int



def _norm(state: StateDict, norm_weight: str, conv_bias: str) -> str:
    if norm_weight in state:
        return "batch"
    return "instance" if conv_bias in state else "none"


def infer_generator(state: StateDict, source: str) -> GeneratorArch:
    """ResNet (``model.N.conv_block.``: distinct N = blocks) or U-Net (``model.model.``: the nesting = depth)."""
    if "model.model.0.weight" in state:
        depth, prefix = 1, "model.model."
        if any(k.startswith(prefix + "1.model.") for k in state):
            depth, prefix = 2, prefix + "1.model."
            while any(k.startswith(prefix + "3.model.") for k in state):
                depth, prefix = depth + 1, prefix + "3.model."
        first, last = state["model.model.0.weight"], state.get("model.model.3.weight")
        if last is None or depth < 5:
            raise UserError(f"{source}: a U-Net of {depth} levels without its outer layers (the reference's have >= 5)")
        return GeneratorArch(f"unet_{2 ** depth}", first.shape[0],
                             _norm(state, "model.model.1.model.2.weight", "model.model.0.bias"),
                             None, first.shape[1], last.shape[1])
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
    if blocks and "model.1.weight" in state:
        first = state["model.1.weight"]
        convs = [int(m.group(1)) for k, v in state.items() if (m := re.fullmatch(r"model\.(\d+)\.weight", k))
                 and v.dim() == 4]
        last = state[f"model.{max(convs)}.weight"]
        dropout_conv = state.get(f"model.{blocks[0]}.conv_block.6.weight")
        return GeneratorArch(f"resnet_{len(blocks)}blocks", first.shape[0], _norm(state, "model.2.weight",
                                                                                   "model.1.bias"),
                             not (dropout_conv is not None and dropout_conv.dim() == 4), first.shape[1], last.shape[0])
    raise UserError(f"{source} is not a reference generator (no 'model.model.*' U-Net or 'model.N.conv_block.*' "
                    f"ResNet keys); it looks like a {resembles(state)}")


def infer_discriminator(state: StateDict, source: str) -> dict[str, Any]:
    """PatchGAN options from the convolutions ``model.N.weight``: their count gives n_layers; 1x1 kernels: pixel D."""
    convs = sorted((int(m.group(1)), v) for k, v in state.items()
                   if (m := re.fullmatch(r"model\.(\d+)\.weight", k)) and v.dim() == 4)
    if len(convs) < 3:
        raise UserError(f"{source} is not a reference discriminator; it looks like a {resembles(state)}")
    first = convs[0][1]
    norm_index = convs[1][0] + 1
    norm = "batch" if f"model.{norm_index}.weight" in state else (
        "instance" if f"model.{convs[1][0]}.bias" in state else "none")
    if first.shape[-1] == 1:
        return {"netD": "pixel", "ndf": first.shape[0], "n_layers_D": 3, "norm": norm, "input_nc": first.shape[1]}
    n_layers = len(convs) - 2
    return {"netD": "basic" if n_layers == 3 else "n_layers", "ndf": first.shape[0], "n_layers_D": n_layers,
            "norm": norm, "input_nc": first.shape[1]}


# ----------------------------------------------------------------------------------------------------------------------
# Files of a run folder
# ----------------------------------------------------------------------------------------------------------------------


def _net_files(folder: Path, epoch: str) -> dict[str, Path]:
    found = {m.group(1): p for p in folder.glob(f"{epoch}_net_*.pth")
             if (m := re.fullmatch(rf"{re.escape(epoch)}_net_(\w+)\.pth", p.name))}
    if not found:
        epochs = sorted({p.name.split("_net_")[0] for p in folder.glob("*_net_*.pth")})
        hint = f" (epochs there: {', '.join(epochs)}; pass --epoch)" if epochs else ""
        raise UserError(f"{folder}: no {epoch}_net_*.pth files{hint}")
    return found


def _family(asked: str, train_opt: dict[str, str]) -> str:
    """cyclegan or pix2pix: the reference model a file comes from (decides the U-Net's dropout default only)."""
    return REFERENCE_MODELS.get(asked) or REFERENCE_MODELS.get(train_opt.get("model", ""), "pix2pix")


# ----------------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from gan_translate.importers import ImportParser

    p = ImportParser(prog="python -m gan_translate import reference",
                     description="Import pix2pix/CycleGAN reference weights: one generator (.pth) or a run folder.")
    p.add_argument("path", help="a generator file (latest_net_G.pth) or a reference run folder (checkpoints/NAME)")
    p.add_argument("--model", default="", choices=("", "cyclegan", "pix2pix", "cycle_gan", "test"),
                   help="the family of a single generator (its defaults); a run folder says it itself")
    p.add_argument("--epoch", default="latest", help="which {epoch}_net_*.pth of a run folder (default: latest)")
    p.add_argument("--model_suffix", default="", help="a single net of a run folder: _A for G_A, _B for G_B")
    p.add_argument("--no_dropout", default=None, choices=("true", "false"),
                   help="U-Net only (its keys cannot tell): whether it was trained without dropout")
    p.add_argument("--direction", default="", choices=("", "AtoB", "BtoA"), help="data direction recorded in the run")
    p.add_argument("--dataroot", default="", help="data recorded in the run (for test.py and fine-tuning)")
    p.add_argument("--load_size", type=int, default=0, help="training scale (default: train_opt.txt, else 286)")
    p.add_argument("--crop_size", type=int, default=0, help="training crop (default: train_opt.txt, else 256)")
    return p


def _reconcile(values: dict[str, Any], inferred: dict[str, Any], said: dict[str, Any], where: str) -> list[str]:
    """``inferred`` (from the keys) into ``values``; a line for each architecture option ``said`` gets wrong."""
    notes = []
    for key, value in inferred.items():
        if value is None:
            continue
        if key in said and said[key] != value:
            notes.append(f"note: {where} says {key}={said[key]}, but the weights hold {key}={value}: using the "
                         "weights'")
        values[key] = value
    return notes


def import_reference(argv: Sequence[str]) -> Path:
    args = _parser().parse_args(list(argv))
    path = Path(args.path).expanduser()
    train_opt: dict[str, str] = {}
    if path.is_dir():
        opt_file = path / "train_opt.txt"
        if opt_file.is_file():
            train_opt = read_train_opt(opt_file)
        files = _net_files(path, args.epoch)
        if args.model_suffix:
            key = "G" + args.model_suffix
            if key not in files:
                raise UserError(f"option --model_suffix: {path} has no {args.epoch}_net_{key}.pth")
            files = {"G": files[key]}
    elif path.is_file():
        files = {"G": path}
    else:
        raise UserError(f"{path}: no such file or folder")
    said = {ALIASES.get(k, k): _typed(k, v) for k, v in train_opt.items() if ALIASES.get(k, k) in CARRIED}
    family = _family(args.model, train_opt)
    if {"G_A", "G_B"} <= set(files):
        model = "cyclegan"
    else:  # one generator (with its conditional D for pix2pix): a one-way run
        model = "pix2pix"
        if "G" not in files:
            files = {"G": files["G_A"] if "G_A" in files else next(iter(files.values()))}
        files = {k: v for k, v in files.items() if k in ("G", "D")}
    states = {name: read_state_dict(p, f"{name} weights") for name, p in files.items()}

    values: dict[str, Any] = dict(said)
    first_g = "G_A" if model == "cyclegan" else "G"
    arch = infer_generator(states[first_g], str(files[first_g]))
    inferred = vars(arch).copy()
    if arch.no_dropout is None:
        inferred["no_dropout"] = {"true": True, "false": False}.get(args.no_dropout or "", said.get("no_dropout"))
        if inferred["no_dropout"] is None:
            inferred["no_dropout"] = family != "pix2pix"  # published pix2pix models train with dropout
    d_name = "D_A" if model == "cyclegan" else "D"
    if d_name in states:
        disc = infer_discriminator(states[d_name], str(files[d_name]))
        expect_in = arch.output_nc if model == "cyclegan" else arch.input_nc + arch.output_nc
        if disc.pop("input_nc") != expect_in or disc["norm"] != arch.norm:
            raise UserError(f"{files[d_name]}: this discriminator does not belong to {files[first_g]} (channels or "
                            "norm differ)")
        inferred.update(disc)
    notes = _reconcile(values, inferred, said, "train_opt.txt")
    values.update(name=args.name, checkpoints_dir=args.checkpoints_dir)
    values.setdefault("load_size", 286)
    values.setdefault("crop_size", 256)
    for key in ("load_size", "crop_size", "direction", "dataroot"):
        if getattr(args, key):
            values[key] = getattr(args, key)
    if values.get("dataroot") and not Path(str(values["dataroot"])).expanduser().is_dir():
        values["dataroot"] = ""  # the run folder came from another machine: test.py and fine-tuning take --dataroot
    options = build_options(model, values)
    built = create_model(options, training=True)
    nets = {}
    for name, state in states.items():
        if name in built.nets:
            nets[name] = load_into(built.nets[name], state, source=str(files[name]), layout=_layout(name, options),
                                   zero_bias=options.norm == "none")
    complete = set(nets) == set(built.nets)
    for line in notes:
        print(line)
    # one generator and no train_opt.txt: nothing says which way it was trained (never guessed)
    direction_known = model == "cyclegan" or "direction" in said or bool(args.direction)
    run_dir = write_run(options, nets, source=str(path), fine_tune=complete,
                        reason="" if complete else _missing_reason(set(built.nets) - set(nets)),
                        direction_known=direction_known)
    if not direction_known:
        print("direction: not recorded with a lone generator; test.py translates whichever way --direction asks")
    print(f"imported {', '.join(f'{k} ({files[k].name})' for k in sorted(nets))}: {describe(options)} -> "
          f"{run_dir} (model {model}{'' if complete else ', inference only'})")
    return run_dir


def describe(o: Any) -> str:
    """The generator options of a run, in words."""
    return (f"{o.netG}, ngf {o.ngf}, {o.norm} norm, {'no dropout' if o.no_dropout else 'dropout'}, "
            f"{o.input_nc} -> {o.output_nc} channels, trained at {o.load_size}/{o.crop_size} px")


def _layout(name: str, options: Any) -> str:
    if name.startswith("D"):
        return f"reference {options.netD} PatchGAN ({options.norm} norm)"
    dropout = "no dropout" if options.no_dropout else "dropout"
    return f"reference {options.netG} generator ({options.norm} norm, {dropout})"


def _missing_reason(missing: set[str]) -> str:
    if all(n.startswith("D") for n in missing):
        return _NO_DISCRIMINATOR
    return f"the source folder has no weights for {', '.join(sorted(missing))}"
