"""Command-line entry points: ``train.py``, ``python -m gan_translate <command>`` and the console scripts.

Every command turns a ``UserError`` into one line on stderr and exit code 2; anything else keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from gan_translate.errors import EXIT_USER_ERROR, UserError, user_error_in_worker

COMMANDS_HELP = """usage: python -m gan_translate <command> [options]

commands:
  train    train a model:  python -m gan_translate train --model cyclegan [--dataroot DIR] [options]
           (same as train.py; `accelerate launch train.py ...` for several processes or GPUs)
  test     translate a test split or any folder with a trained run; images, index.html, metrics.json
           (same as test.py):  python -m gan_translate test --name NAME [--dataroot DIR] [options]
  fid      FID (and --kid) between two image folders:  python -m gan_translate fid DIR_A DIR_B [--kid]
  export   a trained generator to ONNX:  python -m gan_translate export --name NAME --format onnx [--output F]
  stylize  neural style transfer by optimisation (Gatys et al. and variants):
           python -m gan_translate stylize --content IMG --style IMG [IMG ...] --out OUT.png [options]
  import   weights of other projects (pix2pix/CycleGAN reference, CUT, AdaIN, TPFR) as a run folder:
           python -m gan_translate import reference latest_net_G.pth --model cyclegan --name horse2zebra
  bench    speed and memory of the training step (s/iter, FLOP/s, peak memory, inference images/s):
           python -m gan_translate bench [--models pix2pix,cyclegan] [--sizes 128,256] [--json OUT.json]
  demo     a local web page that translates uploaded images with trained runs (needs the extra "demo"):
           python -m gan_translate demo [--checkpoints_dir checkpoints | --run DIR] [--host H] [--port P]

`python -m gan_translate <command> --help` lists a command's options; --version prints the version."""


def _user_message(err: BaseException) -> str:
    """One line, also for a UserError re-raised from a DataLoader worker (whose text embeds a traceback)."""
    text = user_error_in_worker(err) or str(err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def user_errors_exit(func: Callable[..., int | None]) -> Callable[..., int]:
    """Decorator: a UserError (also one raised inside a data-loading worker) -> 'error: ...' and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> int:
        code = EXIT_USER_ERROR
        try:
            return func(*args, **kwargs) or 0
        except UserError as err:
            message = _user_message(err)
            code = getattr(err, "exit_code", EXIT_USER_ERROR)  # a lost machine is no mistake of the user's: 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except RuntimeError as err:  # DataLoader re-raises a worker's exception with the original type's name
            if user_error_in_worker(err) is None:
                raise
            message = _user_message(err)
        report_user_error(message)
        return code

    return wrapper


def _job_key() -> str:
    """Names the launch this process belongs to on this machine: its launcher (the parent process, with its start
    time so that a later process with the same pid is another launch) and the rendezvous port."""
    parent = os.getppid()
    try:
        started = Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "0"
    return f"{parent}-{started}-{os.environ.get('MASTER_PORT', '')}-{os.environ.get('TORCHELASTIC_RUN_ID', '')}"


def report_user_error(message: str, *, rank_0_wait: float = 1.0) -> bool:
    """Prints ``error: <message>`` once per job and distinct message; returns whether this process printed it.

    Alone, a process just prints. Among several processes (a launcher's WORLD_SIZE > 1), the processes of one machine
    share a marker per message in the temporary folder: rank 0 prints its message as is; another rank waits up to
    ``rank_0_wait`` seconds for rank 0 to claim the same message, and otherwise prints it tagged with its rank (the
    first of the ranks to claim it). A failure on one rank alone is thus never silent, and one that every rank meets
    (a bad option, an unreadable folder) is shown once.
    """
    import hashlib
    import tempfile
    import time

    from gan_translate.engine.distributed import announced_world_size, process_rank

    rank = process_rank()
    if announced_world_size()[0] == 1:
        print(f"error: {message}", file=sys.stderr)
        return True
    folder = Path(tempfile.gettempdir()) / f"gan_translate-errors-{os.getuid() if hasattr(os, 'getuid') else 0}" \
        / _job_key()
    digest = hashlib.sha256(message.encode()).hexdigest()[:20]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            (folder / f"{digest}.rank0").touch()
        else:
            deadline = time.monotonic() + rank_0_wait
            while time.monotonic() < deadline and not (folder / f"{digest}.rank0").exists():
                time.sleep(0.05)
            if (folder / f"{digest}.rank0").exists():
                return False
            os.close(os.open(folder / f"{digest}.other", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:  # another rank printed this message
        return False
    except OSError:  # no shared temporary folder: rather twice than never
        pass
    # Another rank's line starts on a line of its own: rank 0's progress bar may be half-way along the current one.
    print(f"error: {message}" if rank == 0 else f"\nerror (rank {rank}): {message}", file=sys.stderr)
    return True


def parse_train_options(argv: Sequence[str], prog: str = "train.py"):
    """Resolves a model's options from options/<model>.yaml, --config, a resumed run's config and the command line."""
    from gan_translate import config
    from gan_translate.engine.trainer import default_run_name
    from gan_translate.models import MODELS, model_class

    argv = list(argv)
    if config.wants_help(argv):
        cls = model_class(config.peek(argv, "model") or "cyclegan")
        print(config.model_help(cls.Options, cls.name, argv, prog))
        print(f"models: {', '.join(sorted(MODELS))}")
        raise SystemExit(0)
    model_name = config.peek(argv, "model")
    if model_name is None and config.peek(argv, "config"):
        model_name = config.read_yaml(config.peek(argv, "config")).get("model")
    resuming = any(a == "--continue_train" or a.startswith("--continue_train=") for a in argv)
    if model_name is None and resuming and config.peek(argv, "name"):  # a resumed run knows its model
        saved_run = Path(config.peek(argv, "checkpoints_dir") or "checkpoints") / config.peek(argv, "name")
        if (saved_run / "config.yaml").is_file():
            model_name = config.read_yaml(saved_run / "config.yaml").get("model")
    cls = model_class(model_name or "cyclegan")
    options = config.resolve(cls.Options, cls.name, argv, prog=prog)
    if not options.name:
        options.name = default_run_name(options)
    saved = Path(options.checkpoints_dir) / options.name / "config.yaml"
    if options.continue_train:
        if not saved.is_file():
            raise UserError(f"option --continue_train: no run to resume at {saved.parent} (check --name)")
        options = config.resolve(cls.Options, cls.name, argv, prog=prog, run_config=saved)
        options.continue_train = True
    return options


@user_errors_exit
def train_main(argv: Sequence[str] | None = None) -> int:
    """``train.py`` / ``gan-translate-train``."""
    from gan_translate.engine.trainer import train

    options = parse_train_options(sys.argv[1:] if argv is None else argv)
    train(options)
    return 0


@user_errors_exit
def stylize_main(argv: Sequence[str] | None = None) -> int:
    """``python -m gan_translate stylize`` / ``gan-translate-stylize``."""
    from gan_translate.stylize_cli import run

    return run(sys.argv[1:] if argv is None else argv)


@user_errors_exit
def test_main(argv: Sequence[str] | None = None) -> int:
    """``test.py`` / ``python -m gan_translate test``."""
    from gan_translate.evaluate.runner import parse_test_options, run_test

    run_test(parse_test_options(sys.argv[1:] if argv is None else argv))
    return 0


@user_errors_exit
def fid_main(argv: Sequence[str] | None = None) -> int:
    """``scripts/fid.py`` / ``python -m gan_translate fid DIR_A DIR_B``."""
    from gan_translate.evaluate.fid import fid_command

    return fid_command(sys.argv[1:] if argv is None else argv)


@user_errors_exit
def export_main(argv: Sequence[str] | None = None) -> int:
    """``python -m gan_translate export --name NAME --format onnx``."""
    from gan_translate.export import export_command

    return export_command(sys.argv[1:] if argv is None else argv)


@user_errors_exit
def bench_main(argv: Sequence[str] | None = None) -> int:
    """``scripts/bench.py`` / ``python -m gan_translate bench``."""
    from gan_translate.bench import bench_command

    return bench_command(sys.argv[1:] if argv is None else argv)


@user_errors_exit
def import_main(argv: Sequence[str] | None = None) -> int:
    """``python -m gan_translate import <source> ...``."""
    from gan_translate.importers import import_command

    return import_command(sys.argv[1:] if argv is None else argv)


@user_errors_exit
def demo_main(argv: Sequence[str] | None = None) -> int:
    """``python -m gan_translate demo`` (gradio, the extra "demo", is imported only here)."""
    from gan_translate.demo import demo_command

    return demo_command(sys.argv[1:] if argv is None else argv)


@user_errors_exit
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gan_translate <command> ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands: dict[str, Callable[[Sequence[str]], int]] = {"train": train_main.__wrapped__,
                                                              "stylize": stylize_main.__wrapped__,
                                                              "test": test_main.__wrapped__,
                                                              "fid": fid_main.__wrapped__,
                                                              "export": export_main.__wrapped__,
                                                              "bench": bench_main.__wrapped__,
                                                              "import": import_main.__wrapped__,
                                                              "demo": demo_main.__wrapped__}
    if not argv or argv[0] in ("-h", "--help"):
        print(COMMANDS_HELP)
        return 0
    if argv[0] == "--version":
        from gan_translate import __version__

        print(f"gan_translate {__version__}")
        return 0
    if argv[0] not in commands:
        raise UserError(f"unknown command '{argv[0]}' (choose from {', '.join(commands)})")
    return commands[argv[0]](argv[1:])
