"""Options: one typed dataclass per model, filled from YAML files and the command line, validated in one place.

Resolution order, later wins:
  1. the dataclass defaults (``TrainOptions`` and the model's subclass),
  2. ``options/<model>.yaml`` -- the paper's defaults,
  3. ``options/<model>_quick.yaml`` when no ``--dataroot`` is given (the built-in data and a run of a few minutes),
  4. the saved ``config.yaml`` of the run when ``--continue_train`` finds one,
  5. ``--config FILE``,
  6. command-line options.
Option names follow the pix2pix/CycleGAN reference implementation so its users feel at home. Every mistake is a
``UserError`` with one line that names the option (and the closest valid name for a typo).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import yaml

from gan_translate.errors import UserError

# options/ at the top of a source checkout; a regular (non-editable) install carries a copy as gan_translate/options.
_SOURCE_OPTIONS = Path(__file__).resolve().parent.parent / "options"
OPTIONS_DIR = _SOURCE_OPTIONS if _SOURCE_OPTIONS.is_dir() else Path(__file__).resolve().parent / "options"


def choice(default: Any, choices: Sequence[Any], help: str) -> Any:
    """A field whose value must be one of ``choices``."""
    return field(default=default, metadata={"choices": tuple(choices), "help": help})


def opt(default: Any, help: str, *, minimum: float | None = None) -> Any:
    """A field with help text and an optional lower bound."""
    return field(default=default, metadata={"help": help, "minimum": minimum})


@dataclass
class TrainOptions:
    """Options every trained model shares (reference names; defaults as in the reference unless said)."""

    # --- run
    model: str = opt("cyclegan", "model name (see --help for the list)")
    name: str = opt("", "run name; checkpoints go to checkpoints_dir/name (default: <model>_<dataset>)")
    dataroot: str = opt("", "data folder; empty or 'builtin' = the built-in synthetic facades")
    checkpoints_dir: str = opt("checkpoints", "where runs are saved")
    config: str = opt("", "a YAML file of options (overridden by the command line)")
    seed: int = opt(0, "random seed: weights, data order and augmentation are a function of it")
    # --- networks
    input_nc: int = choice(3, (1, 3), "channels of the input images (1 = grayscale)")
    output_nc: int = choice(3, (1, 3), "channels of the output images (1 = grayscale)")
    ngf: int = opt(64, "generator filters in the last conv layer", minimum=1)
    ndf: int = opt(64, "discriminator filters in the first conv layer", minimum=1)
    netG: str = opt("resnet_9blocks", "generator: resnet_<k>blocks or unet_<N> (N a power of two >= 32)")
    netD: str = choice("basic", ("basic", "n_layers", "pixel"), "discriminator: basic = 70x70 PatchGAN")
    n_layers_D: int = opt(3, "discriminator depth when netD is n_layers", minimum=1)
    norm: str = choice("instance", ("instance", "batch", "none"), "normalisation layers")
    init_type: str = choice("normal", ("normal", "xavier", "kaiming", "orthogonal"), "weight initialisation")
    init_gain: float = opt(0.02, "scale of the initialisation", minimum=0.0)
    no_dropout: bool = opt(False, "no dropout in the generator")
    upsample: str = choice("transposed", ("transposed", "resize"),
                           "generator upsampling; resize = nearest + conv, against checkerboard artifacts")
    antialias: bool = opt(False, "antialiased resampling in ResNet generators and PatchGANs: stride-1 conv + blur-pool "
                                 "instead of stride 2, blur-upsample + conv instead of transposed convs (Zhang 2019; "
                                 "CUT's default); same parameter count")
    # --- data
    dataset_mode: str = choice("unaligned", ("aligned", "unaligned", "single"), "how the data folder is organised")
    direction: str = choice("AtoB", ("AtoB", "BtoA"), "translation direction")
    phase: str = opt("train", "data split to train on (a subfolder of dataroot)")
    serial_batches: bool = opt(False, "take images in order (and pair unaligned B in order) instead of shuffling")
    num_threads: int = opt(2, "data loading worker processes (0 = load in the main process)", minimum=0)
    batch_size: int = opt(1, "images per batch per process", minimum=1)
    load_size: int = opt(286, "scale images to this size before cropping", minimum=1)
    crop_size: int = opt(256, "then crop to this size", minimum=1)
    max_dataset_size: int = opt(0, "use at most this many images per domain (0 = all)", minimum=0)
    preprocess: str = choice("resize_and_crop",
                             ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"),
                             "image preprocessing at load time")
    no_flip: bool = opt(False, "no random horizontal flips")
    skip_bad_images: bool = opt(False, "skip unreadable images (counted and reported) instead of stopping")
    # --- schedule and optimisation
    n_epochs: int = opt(100, "epochs at the initial learning rate", minimum=0)
    n_epochs_decay: int = opt(100, "epochs to decay the learning rate to zero", minimum=0)
    max_steps: int = opt(0, "stop after this many steps in total (0 = run all epochs)", minimum=0)
    lr: float = opt(0.0002, "initial Adam learning rate", minimum=0.0)
    beta1: float = opt(0.5, "Adam beta1", minimum=0.0)
    gan_mode: str = choice("lsgan", ("vanilla", "lsgan", "wgangp", "hinge"), "adversarial loss")
    pool_size: int = opt(50, "past fakes kept for the discriminator (0 = no pool)", minimum=0)
    lr_policy: str = choice("linear", ("linear", "step", "plateau", "cosine"), "learning-rate schedule (per epoch)")
    lr_decay_iters: int = opt(50, "step policy: multiply by 0.1 every this many epochs", minimum=1)
    mixed_precision: str = choice("no", ("no", "fp16", "bf16"), "mixed precision, handed to Accelerate")
    # --- speed and memory (python -m gan_translate bench measures them; README "Performance")
    channels_last: bool = opt(False, "networks in channels-last memory format (faster convolutions on GPUs)")
    compile: bool = opt(False, "torch.compile the networks (slow first steps, faster after)")
    checkpointing: bool = opt(False, "activation checkpointing in the generators: recompute activations in the "
                                     "backward pass (less memory for high resolutions, about a third more G work)")
    num_cpu_threads: int = opt(0, "torch threads per process when training on the CPU (0 = this machine's cores "
                                  "divided among the job's processes on it, unless OMP_NUM_THREADS or accelerate's "
                                  "--num_cpu_threads_per_process sets a number)", minimum=0)
    adam_impl: str = choice("fused", ("fused", "foreach", "for_loop"),
                            "Adam's implementation: fused = one pass over each weight tensor (the fastest)")
    # --- logging and checkpoints
    print_freq: int = opt(100, "log losses every this many steps", minimum=1)
    display_freq: int = opt(400, "log an image grid every this many steps", minimum=1)
    save_latest_freq: int = opt(5000, "save a checkpoint every this many steps", minimum=1)
    save_epoch_freq: int = opt(5, "keep a checkpoint every this many epochs", minimum=1)
    keep_last: int = opt(3, "step checkpoints kept (epoch checkpoints are all kept)", minimum=1)
    val_freq: int = opt(0, "every this many steps, PSNR/SSIM/L1 on the val (else test) split, logged as val/<metric> "
                           "(0 = off)", minimum=0)
    continue_train: bool = opt(False, "resume the run from its latest checkpoint, with its full state")
    max_bad_steps: int = opt(5, "stop after this many consecutive steps with a NaN/Inf loss (each is skipped)",
                             minimum=1)
    # --- several processes and machines (README "Many machines")
    ddp_timeout: int = opt(300, "seconds a process waits for the others in a collective before it stops (a machine "
                                "that hung or was lost); longer than any pause of one rank alone", minimum=1)

    def validate(self) -> None:
        """Checks that involve several options; models extend it."""
        if not re.fullmatch(r"resnet_[1-9]\d*blocks|unet_\d+", self.netG):
            raise UserError(f"option --netG: '{self.netG}' is not resnet_<k>blocks or unet_<N>")
        if self.netG.startswith("unet_"):
            size = int(self.netG[5:])
            if size < 32 or size & (size - 1):
                raise UserError(f"option --netG: unet size {size} must be a power of two >= 32")
        if self.antialias and self.netG.startswith("unet_"):
            raise UserError(f"option --antialias: {self.netG} has no antialiased layout (resnet_<k>blocks has)")
        if "crop" in self.preprocess and self.load_size < self.crop_size and self.preprocess != "crop":
            raise UserError(f"option --crop_size: {self.crop_size} is larger than --load_size {self.load_size}")

    @classmethod
    def presets(cls, chosen: dict[str, Any]) -> dict[str, Any]:
        """Defaults that follow from other options (e.g. CUT's ``--mode fastcut``), layered over options/<model>.yaml
        and under the quick preset and the user's own values. ``chosen`` holds the options set so far, raw."""
        return {}

    @property
    def total_epochs(self) -> int:
        return self.n_epochs + self.n_epochs_decay

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------------------------------------
# Reading values
# ----------------------------------------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, value: Any, kind: type) -> Any:
    """Turns a YAML or command-line value into the field's type, or says which option is wrong."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value)) if not isinstance(value, (int, float)) else int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return "" if value is None else str(value)
    except (TypeError, ValueError):
        expected = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "a string")
        raise UserError(f"option --{name}: expected {expected}, got '{value}'") from None


def _unknown(name: str, known: Sequence[str], where: str) -> UserError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean --{close[0]}?)" if close else ""
    return UserError(f"unknown option --{name}{where}{hint}")


def _apply(values: dict[str, Any], layer: dict[str, Any], types: dict[str, type], where: str) -> None:
    for key, value in layer.items():
        if key not in types:
            raise _unknown(key, list(types), where)
        values[key] = _coerce(key, value, types[key])


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of options; a syntax error or a missing file is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a mapping of option: value")
    return data


# ----------------------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------------------


class CommandParser(argparse.ArgumentParser):
    """argparse that raises UserError (one line, exit 2 at the entry point) instead of printing the usage; every
    command of the package parses with it. ``error_prefix`` starts the message (e.g. the command's name)."""

    def __init__(self, *args: Any, error_prefix: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.error_prefix = error_prefix

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UserError(f"{self.error_prefix}{message}")


def field_types(options_cls: type) -> dict[str, type]:
    """Each option's Python type (bool, int, float or str), by name."""
    kinds = {"bool": bool, "int": int, "float": float, "str": str}
    return {f.name: kinds[f.type if isinstance(f.type, str) else f.type.__name__] for f in fields(options_cls)}


def build_parser(options_cls: type, prog: str, *, defaults: dict[str, Any] | None = None,
                 notes: dict[str, str] | None = None, epilog: str | None = None) -> CommandParser:
    """The argparse parser of an options dataclass. ``defaults`` replaces the dataclass defaults shown in the help
    (the values a run would use), ``notes`` adds a remark to an option's default (e.g. the quick preset's value)."""
    defaults = defaults or {}
    parser = CommandParser(prog=prog, argument_default=argparse.SUPPRESS, epilog=epilog,
                           description=(options_cls.__doc__ or "").strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    types = field_types(options_cls)
    for f in fields(options_cls):
        kind = types[f.name]
        help_text = f.metadata.get("help", "")
        if "choices" in f.metadata:
            help_text += f" {{{'|'.join(map(str, f.metadata['choices']))}}}"
        default = defaults.get(f.name, f.default)
        # A help text that explains its own default (e.g. "default: the trained one") keeps only that explanation.
        if "(default:" not in help_text and not (default == "" and f.name not in defaults):
            help_text += f" (default: {default}"
            help_text += f"; {notes[f.name]})" if notes and f.name in notes else ")"
        if kind is bool:  # `--no_flip` alone means true; `--no_flip false` undoes a YAML value
            parser.add_argument(f"--{f.name}", nargs="?", const="true", metavar="BOOL", help=help_text)
        else:
            parser.add_argument(f"--{f.name}", metavar=kind.__name__.upper(), help=help_text)
    return parser


def parse_cli(options_cls: type, argv: Sequence[str], prog: str = "train.py") -> dict[str, Any]:
    """The options given on the command line, as raw strings keyed by name."""
    parser = build_parser(options_cls, prog)
    known, rest = parser.parse_known_args(list(argv))
    if rest:
        bad = next((a for a in rest if a.startswith("-")), rest[0])
        if bad.startswith("-"):
            raise _unknown(bad.lstrip("-").split("=")[0], [f.name for f in fields(options_cls)], "")
        raise UserError(f"unexpected argument '{bad}' (options are written --name value)")
    return vars(known)


def parse_options(options_cls: type, argv: Sequence[str], prog: str) -> Any:
    """Validated options of a command whose options come from its command line alone (test.py, export)."""
    values: dict[str, Any] = {}
    _apply(values, parse_cli(options_cls, argv, prog), field_types(options_cls), "")
    return validate(options_cls, values)


def wants_help(argv: Sequence[str]) -> bool:
    return "-h" in argv or "--help" in argv


def peek(argv: Sequence[str], name: str) -> str | None:
    """The value of one option before the full parse (used to pick the model's schema)."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Putting it together
# ----------------------------------------------------------------------------------------------------------------------


def validate(options_cls: type, values: dict[str, Any]) -> Any:
    """Builds the dataclass from resolved values and runs every check."""
    for f in fields(options_cls):
        value = values.get(f.name, f.default)
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            # an empty choice means "not given" (the run's saved value is used): not something to type
            valid = ", ".join(str(c) for c in f.metadata["choices"] if c != "")
            raise UserError(f"option --{f.name}: '{value}' is not one of {valid}")
        minimum = f.metadata.get("minimum")
        if minimum is not None and value < minimum:
            raise UserError(f"option --{f.name}: {value} is below the minimum {minimum}")
    options = options_cls(**values)
    options.validate()
    return options


def model_defaults(options_cls: type, model: str, chosen: dict[str, Any], *, quick: bool) -> dict[str, Any]:
    """The values a model starts from before the user's own: options/<model>.yaml, the presets that follow from
    ``chosen`` (the user's options, raw), then options/<model>_quick.yaml when ``quick``."""
    types = field_types(options_cls)
    values: dict[str, Any] = {}
    paper, *quick_files = model_yaml_files(model, quick=quick, missing=True)
    for path in (paper, None, *quick_files):
        if path is None:  # after the paper's defaults, before the quick preset
            _apply(values, options_cls.presets({**values, **chosen}), types, " (preset)")
        elif path.is_file():
            _apply(values, read_yaml(path), types, f" in {path}")
    return values


def resolve(options_cls: type, model: str, argv: Sequence[str], *, prog: str = "train.py",
            run_config: Path | None = None) -> Any:
    """Resolved, validated options for ``model`` from its YAML files, a saved run and the command line.

    ``run_config`` is the saved config.yaml of a run being resumed; it replaces the model's YAML files.
    """
    types = field_types(options_cls)
    cli = parse_cli(options_cls, argv, prog)
    values: dict[str, Any] = {}
    if run_config is not None:
        _apply(values, read_yaml(run_config), types, f" in {run_config}")
    else:
        user = {**(read_yaml(cli["config"]) if cli.get("config") else {}), **cli}
        values = model_defaults(options_cls, model, user,
                                quick=not cli.get("dataroot") and not _config_dataroot(cli))
    if cli.get("config"):
        _apply(values, read_yaml(cli["config"]), types, f" in {cli['config']}")
    _apply(values, cli, types, "")
    values["model"] = model
    return validate(options_cls, values)


MODEL_HELP_EPILOG = """Defaults shown are the model's: options/{model}.yaml (the paper's) over the shared ones. Without
--dataroot the run uses the built-in data and the quick preset options/{model}_quick.yaml, whose values are noted as
"quick preset". Later wins: those files, --config FILE, then the command line; --continue_train reads the run's
saved config.yaml instead of the files."""


def model_help_parser(options_cls: type, model: str, argv: Sequence[str], prog: str = "train.py") -> CommandParser:
    """The parser whose --help shows a model's options with the defaults its run will use: its YAML's over the
    dataclass's (and the presets that follow from ``argv``, e.g. CUT's --mode), the quick preset's noted."""
    cli = parse_cli(options_cls, [a for a in argv if a not in ("-h", "--help")], prog)
    paper = model_defaults(options_cls, model, cli, quick=False)
    quick = model_defaults(options_cls, model, cli, quick=True)
    paper["model"] = model
    notes = {k: f"quick preset: {v}" for k, v in quick.items() if paper.get(k, _default_of(options_cls, k)) != v}
    return build_parser(options_cls, prog, defaults=paper, notes=notes, epilog=MODEL_HELP_EPILOG.format(model=model))


def model_help(options_cls: type, model: str, argv: Sequence[str], prog: str = "train.py") -> str:
    """The --help text of a model (``model_help_parser``)."""
    return model_help_parser(options_cls, model, argv, prog).format_help()


def _default_of(options_cls: type, name: str) -> Any:
    return next(f.default for f in fields(options_cls) if f.name == name)


def _config_dataroot(cli: dict[str, Any]) -> str:
    return str(read_yaml(cli["config"]).get("dataroot") or "") if cli.get("config") else ""


def model_yaml_files(model: str, *, quick: bool, missing: bool = False) -> list[Path]:
    """options/<model>.yaml, then options/<model>_quick.yaml when the built-in data is used (``missing``: also the
    files that do not exist)."""
    names = [f"{model}.yaml"] + ([f"{model}_quick.yaml"] if quick else [])
    return [OPTIONS_DIR / n for n in names if missing or (OPTIONS_DIR / n).is_file()]


def load_options(options_cls: type, path: str | Path) -> Any:
    """Options saved beside a checkpoint (config.yaml), validated against the model's schema."""
    values: dict[str, Any] = {}
    _apply(values, read_yaml(path), field_types(options_cls), f" in {path}")
    return validate(options_cls, values)


def comma_list(kind: type, option: str) -> Callable[[str], tuple]:
    """An argparse ``type`` for comma-separated values of ``kind`` ('relu1_1,relu2_1', '512,1024'); a value that does
    not convert is one line naming ``--option``."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(item) for item in text.split(",") if item.strip())
        except ValueError:
            raise UserError(f"option --{option}: expected comma-separated {kind.__name__}s, got '{text}'") from None
    return parse
