"""Speed and memory benchmark of the real training step: ``python -m gan_translate bench``.

For every (model, size, batch size) it builds the model with the reference settings (pix2pix: ``unet_<size>``;
CycleGAN: ``resnet_9blocks``; ngf = ndf = 64; the paper's norms and losses from options/<model>.yaml), feeds synthetic
batches to the model's own ``training_step`` (through Accelerate and the trainer's step guard, as in training), and
reports: the median seconds per iteration after a warm-up, images/s, the FLOPs of one iteration counted by
``torch.utils.flop_counter.FlopCounterMode`` (multiply-adds count 2), the achieved FLOP/s and its fraction of a large
fp32 matrix product's speed measured in the same run, the peak memory (RSS on CPU; ``torch.cuda.max_memory_allocated``
on GPU; image pools filled as in a long run) and the generator's inference images/s at several batch sizes.

Each configuration runs in a fresh subprocess, so that its peak RSS (``ru_maxrss``) is its own; the FLOPs are counted
after the timed steps, whose speed and memory the counter would disturb.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from gan_translate.config import CommandParser
from gan_translate.errors import UserError

# Seconds per iteration of the authors' reference implementation at batch 1, fp32, on the 2-core AMD EPYC (Zen 3)
# machine these numbers were taken on (issue 7); the speed-up column is only meaningful on that machine class.
REFERENCE_S_PER_ITER: dict[tuple[str, int], float] = {
    ("cyclegan", 256): 14.1,
    ("cyclegan", 128): 3.87,
    ("pix2pix", 256): 1.02,
    ("pix2pix", 128): 0.49,
}
REFERENCE_PEAK_RSS = {("cyclegan", 256): 4.2e9}

# The generator each model is benchmarked with at a given size (the reference's choices).
REFERENCE_NETG: dict[str, Callable[[int], str]] = {
    "pix2pix": lambda size: f"unet_{size}",  # the U-Net goes down to 1x1: unet_128 at 128 px, unet_256 at 256 px
    "cyclegan": lambda size: "resnet_9blocks",
    "cut": lambda size: "resnet_9blocks",
    "fastcut": lambda size: "resnet_9blocks",
}
# Benchmark names that are a registered model with options: FastCUT is CUT's --mode fastcut.
MODEL_ALIASES: dict[str, tuple[str, dict[str, str]]] = {"fastcut": ("cut", {"mode": "fastcut"})}

RESULT_MARKER = "BENCH_RESULT "


# ----------------------------------------------------------------------------------------------------------------------
# One configuration
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    """What one subprocess measures."""

    model: str
    size: int
    batch_size: int = 1
    iters: int = 5
    warmup: int = 2
    device: str = "cpu"
    mixed_precision: str = "no"
    channels_last: bool = False
    compile: bool = False
    checkpointing: bool = False
    ngf: int = 64
    ndf: int = 64
    netG: str = ""  # empty: the reference generator for the size
    infer_batches: tuple[int, ...] = (1, 4, 8)
    infer_iters: int = 3
    overrides: dict[str, str] = field(default_factory=dict)  # any other training option, as on the command line
    processes: int = 1  # > 1: DDP under `accelerate launch --multi_gpu` (gloo on CPU), timed per process
    threads: int = 0  # torch threads per process; 0: torch's default (one per core), 1 under the launcher

    def argv(self) -> list[str]:
        """The training options as command-line arguments (resolved over options/<model>.yaml like train.py)."""
        net_g = self.netG or REFERENCE_NETG.get(self.model, lambda size: "")(self.size)
        model, preset = MODEL_ALIASES.get(self.model, (self.model, {}))
        args = ["--model", model, "--dataroot", "synthetic", "--crop_size", str(self.size),
                "--load_size", str(self.size), "--batch_size", str(self.batch_size), "--ngf", str(self.ngf),
                "--ndf", str(self.ndf), "--mixed_precision", self.mixed_precision,
                "--channels_last", str(self.channels_last), "--compile", str(self.compile),
                "--checkpointing", str(self.checkpointing), "--num_threads", "0"]
        if net_g:
            args += ["--netG", net_g]
        for key, value in {**preset, **self.overrides}.items():
            args += [f"--{key}", value]
        return args


def build_options(config: BenchConfig) -> Any:
    """The validated options of ``config.model`` (paper defaults, then the benchmark's settings)."""
    from gan_translate import config as options_module
    from gan_translate.models import model_class

    cls = model_class(MODEL_ALIASES.get(config.model, (config.model, {}))[0])
    options = options_module.resolve(cls.Options, cls.name, config.argv(), prog="bench")
    if options.dataset_mode not in ("aligned", "unaligned"):
        raise UserError(f"option --models: {config.model} needs {options.dataset_mode} data, which the benchmark "
                        "does not synthesise (aligned/unaligned models only)")
    return options


def synthetic_batch(options: Any, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """A batch as the aligned/unaligned loaders make it: A (input_nc) and B (output_nc) in [-1, 1], plus paths."""
    n, size = options.batch_size, options.crop_size

    def images(channels: int) -> torch.Tensor:
        return (torch.rand(n, channels, size, size, generator=generator) * 2 - 1).to(device)

    return {"A": images(options.input_nc), "B": images(options.output_nc),
            "A_paths": [f"a{i}.png" for i in range(n)], "B_paths": [f"b{i}.png" for i in range(n)]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, n: int, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """FLOP/s of an n x n x n matrix product (the best of ``repeats`` after one warm-up): the machine's practical
    peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def copy_bandwidth(device: torch.device, megabytes: int, repeats: int = 5) -> float:
    """Bytes/s moved by copying a ``megabytes`` fp32 tensor (read + write, the best of ``repeats``): the memory
    bandwidth that bounds steps which do little arithmetic per byte (pix2pix's U-Net bottleneck, Adam's update)."""
    src = torch.ones(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best


def count_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call of ``step`` (forward and backward), as torch's flop counter sees them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (``ru_maxrss`` is in KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


@dataclass
class PreparedStep:
    """A model set up as the trainer sets it up, and a callable that runs one training step on synthetic data."""

    model: Any
    options: Any
    accelerator: Any
    step: Callable[[], None]


def prepare_step(config: BenchConfig) -> PreparedStep:
    """Builds the model of ``config`` as the trainer does (speed options, Accelerate, step guard) and its step."""
    from accelerate import Accelerator

    from gan_translate.engine.safety import GuardedOptimizer, StepGuard
    from gan_translate.engine.distributed import reuse_freed_memory
    from gan_translate.models import StepContext, create_model
    from gan_translate.nets.layers import configure_nets

    reuse_freed_memory()  # as the trainer does
    options = build_options(config)
    torch.manual_seed(options.seed)
    accelerator = Accelerator(cpu=config.device == "cpu", mixed_precision=options.mixed_precision)
    device = accelerator.device
    model = create_model(options).to(device)
    # compile comes later (run_config): the FLOPs are counted on the eager first step.
    configure_nets(model.nets, channels_last=options.channels_last, checkpointing=options.checkpointing)
    names, opt_names = list(model.nets), list(model.optimizers)
    prepared = accelerator.prepare(*[model.nets[n] for n in names], *[model.optimizers[n] for n in opt_names])
    for name, module in zip(names, prepared[: len(names)]):
        model.nets[name] = module
    guard = StepGuard(accelerator.backward, lambda value: value, options.max_bad_steps)
    for name, optim in zip(opt_names, prepared[len(names):]):
        model.optimizers[name] = GuardedOptimizer(optim, guard)
    model.train()

    generator = torch.Generator().manual_seed(options.seed)
    batches = [synthetic_batch(options, generator, device) for _ in range(2)]
    calls = 0

    def step() -> None:
        nonlocal calls
        guard.begin_step()
        model.training_step(batches[calls % 2], StepContext(step=calls, epoch=0, backward=guard.backward))
        calls += 1
        _sync(device)

    return PreparedStep(model, options, accelerator, step)


def fill_image_pools(model: Any) -> None:
    """Fills the model's image pools (CycleGAN's 50 past fakes per domain) with copies of what they hold, so that
    the memory measured is that of a long run, not of its first steps."""
    from gan_translate.models.image_pool import ImagePool

    for pool in vars(model).values():
        if isinstance(pool, ImagePool) and pool.images:
            pool.images += [pool.images[i % len(pool.images)].clone()
                            for i in range(pool.pool_size - len(pool.images))]


def run_config(config: BenchConfig) -> dict[str, Any]:
    """Measures one configuration in this process (``run_in_subprocess`` calls it in a fresh one)."""
    from gan_translate.nets.layers import configure_nets

    prepared = prepare_step(config)
    options, device, step = prepared.options, prepared.accelerator.device, prepared.step
    if options.compile:
        configure_nets(prepared.model.nets, compile=True)
    step()  # the first step allocates (and compiles): never timed
    fill_image_pools(prepared.model)
    for _ in range(config.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(config.iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    rss = peak_rss_bytes()  # before the inference runs, whose large batches are not the training step's
    gpu_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    median = statistics.median(times)
    # Counted last: the counter's hooks keep activations alive (twice the peak memory with checkpointing), and
    # counted eagerly: compiled kernels are invisible to it (the FLOPs are the same).
    flops = count_flops(prepare_step(replace(config, compile=False)).step if options.compile else step)
    return {
        **{k: v for k, v in asdict(config).items() if k not in ("infer_batches", "infer_iters")},
        "netG": options.netG, "norm": options.norm, "gan_mode": options.gan_mode,
        "threads": torch.get_num_threads(),
        "s_per_iter": median,  # per process: with DDP, every rank takes its steps at once
        "s_per_iter_all": times,
        "images_per_s": config.processes * options.batch_size / median,
        "flops": flops,
        "flops_per_s": flops / median,
        "peak_rss_bytes": rss,
        "peak_memory_bytes": gpu_peak if gpu_peak is not None else rss,
        "memory_kind": "cuda_max_allocated" if gpu_peak is not None else "rss",
        "inference_images_per_s": inference_rates(prepared.model, options, config, prepared.accelerator),
    }


def inference_rates(model: Any, options: Any, config: BenchConfig, accelerator: Any) -> dict[str, float]:
    """Images/s of ``model.translate`` (the inference generator) at each of ``config.infer_batches``."""
    model.eval()
    device = accelerator.device
    generator = torch.Generator().manual_seed(options.seed + 1)
    rates = {}
    with torch.inference_mode(), accelerator.autocast():
        for n in config.infer_batches:
            images = torch.rand(n, options.input_nc, options.crop_size, options.crop_size, generator=generator)
            batch = {"A": (images * 2 - 1).to(device)}
            model.translate(batch)  # warm-up (and compilation for this shape)
            _sync(device)
            times = []
            for _ in range(config.infer_iters):
                start = time.perf_counter()
                model.translate(batch)
                _sync(device)
                times.append(time.perf_counter() - start)
            rates[str(n)] = n / statistics.median(times)
    return rates


# ----------------------------------------------------------------------------------------------------------------------
# Subprocesses, table, JSON
# ----------------------------------------------------------------------------------------------------------------------


def launcher_command(config: BenchConfig) -> tuple[list[str], dict[str, str]]:
    """The command (and environment) that runs one configuration: a fresh interpreter, or with ``processes`` > 1
    Accelerate's launcher starting that many DDP workers on this machine (gloo on CPU, one GPU each with cuda)."""
    worker = ["--module", "gan_translate.bench", "--worker", json.dumps(asdict(config))]
    env = dict(os.environ)
    if config.threads:
        env["OMP_NUM_THREADS"] = str(config.threads)
    if config.processes == 1:
        return [sys.executable, "-m", "gan_translate.bench", *worker[2:]], env
    if config.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
              str(config.processes), "--num_machines", "1", "--mixed_precision", config.mixed_precision,
              "--dynamo_backend", "no"]
    return [*launch, *worker], env


def run_in_subprocess(config: BenchConfig) -> dict[str, Any]:
    """``run_config`` in a fresh interpreter (its own peak RSS), or in DDP workers; their stderr passes through."""
    command, env = launcher_command(config)
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark of {config.model} at {config.size} px failed (exit {proc.returncode})")
    return json.loads(lines[-1][len(RESULT_MARKER):])


def add_reference(result: dict[str, Any], peak: float) -> dict[str, Any]:
    """Fraction of the matmul peak, and the ratio to the reference implementation where one was measured."""
    result["peak_fraction"] = result["flops_per_s"] / peak
    key = (result["model"], result["size"])
    comparable = (result["batch_size"] == 1 and result["ngf"] == 64 and result["ndf"] == 64
                  and result["processes"] == 1 and result["threads"] == 2  # the reference's two cores
                  and result["device"] == "cpu" and result["mixed_precision"] == "no")
    ref = REFERENCE_S_PER_ITER.get(key) if comparable else None
    result["reference_s_per_iter"] = ref
    result["speedup_vs_reference"] = ref / result["s_per_iter"] if ref else None
    result["reference_peak_memory_bytes"] = REFERENCE_PEAK_RSS.get(key) if comparable else None
    return result


def format_table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (what goes into the README)."""
    infer = report["settings"]["infer_batches"]
    head = ["model", "px", "batch", "procs x threads", "s/iter", "img/s", "GFLOP/iter", "GFLOP/s", "% peak",
            "peak mem GB", "vs ref"]
    head += [f"infer img/s b{n}" for n in infer]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["results"]:
        speedup = f"{r['speedup_vs_reference']:.2f}x" if r["speedup_vs_reference"] else "-"
        cells = [r["model"], str(r["size"]), str(r["batch_size"]), f"{r['processes']}x{r['threads']}",
                 f"{r['s_per_iter']:.3f}",
                 f"{r['images_per_s']:.2f}", f"{r['flops'] / 1e9:.1f}", f"{r['flops_per_s'] / 1e9:.1f}",
                 f"{100 * r['peak_fraction']:.0f}%", f"{r['peak_memory_bytes'] / 1e9:.2f}", speedup]
        cells += [f"{r['inference_images_per_s'][str(n)]:.2f}" for n in infer]
        rows.append("| " + " | ".join(cells) + " |")
    machine = report["machine"]
    load = machine["load_average_1min"]
    memory = "torch.cuda.max_memory_allocated" if report["results"][0]["memory_kind"] != "rss" else "peak RSS"
    rows.append(f"\n{machine['device']}, {machine['threads']} threads, torch {machine['torch']}; fp32 matmul peak "
                f"{report['peak_flops'] / 1e9:.0f} GFLOP/s (n={report['peak_matmul_size']}); copy bandwidth "
                f"{report['copy_bandwidth'] / 1e9:.1f} GB/s; memory: {memory}; "
                f"load average {load[0]:.1f} before, {load[1]:.1f} after")
    return "\n".join(rows)


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def _int_list(option: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"option --{option}: expected comma-separated integers, got '{text}'") from None
    if not values or min(values) < 1:
        raise UserError(f"option --{option}: expected positive integers, got '{text}'")
    return values


def _overrides(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"option --set: expected KEY=VALUE, got '{pair}'")
        out[key.lstrip("-")] = value
    return out


def build_parser() -> CommandParser:
    p = CommandParser(prog="python -m gan_translate bench", error_prefix="bench: ",
                      description="Speed and memory benchmark of the real training step.")
    p.add_argument("--models", default="pix2pix,cyclegan", help="comma-separated model names")
    p.add_argument("--sizes", default="128,256", help="comma-separated image sizes (px)")
    p.add_argument("--batch_sizes", default="1", help="comma-separated training batch sizes")
    p.add_argument("--iters", type=int, default=5, help="timed iterations (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations after the first one")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default="no")
    p.add_argument("--channels_last", action="store_true", help="networks in channels-last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing in the generators")
    p.add_argument("--processes", type=int, default=1,
                   help="DDP processes on this machine (accelerate launch --multi_gpu; gloo on CPU); s/iter is per "
                        "process, so compare with --processes 1 at the same --threads")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: one per core; 1 under DDP)")
    p.add_argument("--infer_batches", default="1,4,8", help="batch sizes of the inference measurement")
    p.add_argument("--infer_iters", type=int, default=3, help="timed inference calls per batch size")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other training option, e.g. --set norm=batch (repeatable)")
    p.add_argument("--json", default="", help="write the results to this JSON file")
    p.add_argument("--data", action="store_true",
                   help="benchmark data loading instead (loose files vs shards, memory, start-up; see --data --help)")
    # Small networks for tests and quick looks; the reference settings are the defaults.
    p.add_argument("--ngf", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--ndf", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--netG", default="", help=argparse.SUPPRESS)
    p.add_argument("--peak_size", type=int, default=0, help=argparse.SUPPRESS)  # 0: 4096 on CPU, 8192 on GPU
    p.add_argument("--bandwidth_mb", type=int, default=256, help=argparse.SUPPRESS)
    return p


def bench_command(argv: Sequence[str]) -> int:
    """``python -m gan_translate bench ...``: runs every configuration, prints the table, writes the JSON."""
    if "--data" in argv:  # the data-loading benchmark has options of its own
        from gan_translate.bench_data import data_bench_command

        return data_bench_command([arg for arg in argv if arg != "--data"])
    args = build_parser().parse_args(list(argv))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("option --device: cuda is not available on this machine")
    if args.iters < 1 or args.warmup < 0 or args.infer_iters < 1:
        raise UserError("options --iters/--infer_iters must be >= 1 and --warmup >= 0")
    if args.processes < 1 or args.threads < 0:
        raise UserError("option --processes must be >= 1 and --threads >= 0")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise UserError(f"option --models: expected comma-separated model names, got '{args.models}'")
    configs = [BenchConfig(model=m, size=s, batch_size=b, iters=args.iters, warmup=args.warmup, device=args.device,
                           mixed_precision=args.mixed_precision, channels_last=args.channels_last,
                           compile=args.compile, checkpointing=args.checkpointing, ngf=args.ngf, ndf=args.ndf,
                           netG=args.netG, infer_batches=tuple(_int_list("infer_batches", args.infer_batches)),
                           infer_iters=args.infer_iters, overrides=_overrides(args.set),
                           processes=args.processes, threads=args.threads)
               for m in models for s in _int_list("sizes", args.sizes)
               for b in _int_list("batch_sizes", args.batch_sizes)]
    for config in configs:  # a bad option is reported before anything runs
        build_options(config)

    device = torch.device(args.device)
    load_before = os.getloadavg()[0]
    peak_size = args.peak_size or (8192 if device.type == "cuda" else 4096)
    peak = matmul_peak(device, peak_size)
    bandwidth = copy_bandwidth(device, args.bandwidth_mb)
    results = []
    for config in configs:
        print(f"bench: {config.model} {config.size} px batch {config.batch_size} ...", file=sys.stderr, flush=True)
        results.append(add_reference(run_in_subprocess(config), peak))
    report = {
        "machine": {"device": machine_description(device), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "platform": platform.platform(),
                    "load_average_1min": [load_before, os.getloadavg()[0]]},  # before, after: is it quiet?
        "peak_flops": peak,
        "peak_matmul_size": peak_size,
        "copy_bandwidth": bandwidth,  # bytes/s, read + write
        "settings": {**{k: v for k, v in vars(args).items() if k != "json"},
                     "infer_batches": _int_list("infer_batches", args.infer_batches)},
        "results": results,
    }
    print(format_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _worker(payload: str) -> None:
    data = json.loads(payload)
    data["infer_batches"] = tuple(data["infer_batches"])
    config = BenchConfig(**data)
    if config.threads:
        torch.set_num_threads(config.threads)
    result = run_config(config)
    if int(os.environ.get("RANK", "0")) == 0:  # under DDP every rank measures; the first one reports
        print(RESULT_MARKER + json.dumps(result), flush=True)
    if torch.distributed.is_initialized():
        # As at the end of training: the DDP wrappers (out of scope now) go first, then the group, while the
        # interpreter is alive; left to interpreter shutdown, gloo sometimes aborts the process.
        gc.collect()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    # This module's own entry point is the worker that ``run_in_subprocess`` starts for one configuration; the
    # command is ``python -m gan_translate bench`` (cli.py imports this module, never the other way round).
    if len(sys.argv) != 3 or sys.argv[1] != "--worker":
        sys.exit("usage: python -m gan_translate bench [options]  (gan_translate.bench runs only as its worker)")
    _worker(sys.argv[2])
