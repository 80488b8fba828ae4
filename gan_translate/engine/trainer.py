"""The one training loop, for every model, on CPU, one GPU, many GPUs or many machines (Hugging Face Accelerate).

    accelerate launch train.py --model cyclegan                  # built-in data, quick preset
    accelerate launch --multi_gpu --num_processes 2 train.py ... # DDP (gloo on a CPU machine)

The loop knows the model contract only (models/base.py): it builds the data, the model and its LR schedulers, hands
networks, optimizers and the loader to ``Accelerator.prepare``, and then per step calls ``model.training_step``; it
logs losses, learning rates and image grids to TensorBoard, saves checkpoints and resumes from them exactly (the data
stream is a function of (seed, epoch, index), and RNG states, pools and schedulers are restored).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from tqdm.auto import tqdm

from gan_translate.config import TrainOptions
from gan_translate.data import create_dataloader, create_dataset
from gan_translate.data.builtin import ensure_builtin_dataset
from gan_translate.data.styles import ensure_builtin_styles
from gan_translate.engine.checkpoint import CONFIG_FILE, find_checkpoint, load_net, load_state, save_checkpoint
from gan_translate.engine.distributed import (broadcast_buffers, choose_cpu_threads, make_accelerator,
                                              started_by_a_launcher)
from gan_translate.engine.machines import (
    LostMachine,
    check_shared_run_folder,
    describe_write_failure,
    lost_machine_message,
    process_group_kwargs,
    rank0_outcome,
)
from gan_translate.engine.run_lock import RunLock
from gan_translate.engine.safety import (GracefulStop, GuardedOptimizer, StepGuard, TrainingInterrupted,
                                        ignore_stop_signals, is_worker_failure, stop_when_the_launcher_dies)
from gan_translate.engine.schedules import build_scheduler
from gan_translate.errors import UserError
from gan_translate.models import StepContext, TranslationModel, create_model
from gan_translate.nets.layers import configure_nets

BUILTIN = ("", "builtin")


def resolve_dataroot(options: TrainOptions) -> str:
    """The folder to read: the user's, or the built-in synthetic facades in the view the dataset mode needs."""
    if options.dataroot not in BUILTIN:
        return options.dataroot
    if options.dataset_mode == "styles":  # facade renderings as photos, label maps in procedural styles
        return str(ensure_builtin_styles())
    root = ensure_builtin_dataset()
    return str(root / ("aligned" if options.dataset_mode == "aligned" else "unaligned"))


def default_run_name(options: TrainOptions) -> str:
    data = "builtin" if options.dataroot in BUILTIN else Path(options.dataroot.rstrip("/")).name or "data"
    return f"{options.model}_{data}"


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


def reuse_freed_memory() -> bool:
    """Asks glibc's malloc to keep freed blocks of up to 32 MB for reuse instead of handing them back to the system.

    By default glibc unmaps large freed blocks and trims the heap, so that the next step's tensors land on fresh pages
    that the kernel must fault in and zero: 70,000 page faults per pix2pix 256 px step on CPU, about a tenth of its
    time (README "Performance"). The peak memory stays the same. Returns whether it applied (Linux with glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (e.g. musl)
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from glibc's malloc.h
    return all(mallopt(param, value) == 1 for param, value in (
        (m_mmap_threshold, 32 << 20),  # the largest glibc accepts; a 256 px activation map is 17 MB
        (m_trim_threshold, 1 << 30),
        (m_top_pad, 64 << 20),
    ))


# ----------------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where the run is: the counters saved in every checkpoint."""

    step: int = 0  # optimisation steps done
    epoch: int = 0  # current epoch, 0-based
    batch_in_epoch: int = 0  # batches of the current epoch already consumed


class Trainer:
    """Runs one training job described by ``options`` (a model's options dataclass)."""

    def __init__(self, options: TrainOptions) -> None:
        reuse_freed_memory()
        self.opt = options
        self.run_dir = Path(options.checkpoints_dir) / options.name
        self.accelerator = make_accelerator(
            mixed_precision=options.mixed_precision,
            log_with="tensorboard",
            project_config=ProjectConfiguration(project_dir=str(self.run_dir), logging_dir=str(self.run_dir / "logs")),
            kwargs_handlers=process_group_kwargs(options.ddp_timeout),
        )
        acc = self.accelerator
        acc.print(self._set_cpu_threads())
        self.distributed = acc.num_processes > 1
        set_seed(options.seed)  # the same initial weights on every rank
        with acc.main_process_first():  # the first process makes the built-in data, the others then read it
            options.dataroot = resolve_dataroot(options)
        # The main process is the run folder's one writer; a second training on the same folder stops here (on every
        # rank: rank 0's outcome is shared, so the others do not wait for it in the next collective).
        self.run_lock = RunLock(self.run_dir)
        rank0_outcome(self.run_lock.acquire, is_main=acc.is_main_process, distributed=self.distributed,
                      describe=lambda err: str(err) if isinstance(err, UserError) else None)
        try:
            if self.distributed:  # several machines need one shared run folder: checked before anything is trained
                check_shared_run_folder(self.run_dir, is_main=acc.is_main_process, rank=acc.process_index)
            self.dataset = self._build_dataset(options)
            self._build(options)
        except BaseException:
            self.run_lock.release()
            raise

    def _build_dataset(self, options: TrainOptions) -> Any:
        """The main process scans the data first and keeps its header scan in the run folder; the other ranks then
        reuse it (a million files: minutes each otherwise). A bad file stops every rank with rank 0's message."""
        acc = self.accelerator
        cache = self.run_dir / SCAN_CACHE_FILE
        dataset = rank0_outcome(lambda: create_dataset(options, scan_cache=cache), is_main=acc.is_main_process,
                                distributed=self.distributed,
                                describe=lambda err: str(err) if isinstance(err, UserError) else None)
        return dataset if acc.is_main_process else create_dataset(options, scan_cache=cache)

    def _build(self, options: TrainOptions) -> None:
        acc = self.accelerator
        loader = create_dataloader(self.dataset, batch_size=options.batch_size, shuffle=not options.serial_batches,
                                   seed=options.seed, num_workers=options.num_threads)
        self.model: TranslationModel = create_model(options).to(acc.device)
        configure_nets(self.model.nets, channels_last=options.channels_last, checkpointing=options.checkpointing,
                       compile=options.compile)
        self.schedulers = {name: build_scheduler(optim, options.lr_policy, n_epochs=options.n_epochs,
                                                 n_epochs_decay=options.n_epochs_decay,
                                                 lr_decay_iters=options.lr_decay_iters)
                           for name, optim in self.model.optimizers.items()}
        self.progress = Progress()
        if options.continue_train:
            self._resume()

        if options.num_threads > 0:
            loader.worker_init_fn = ignore_stop_signals  # a stop signal is the trainer's to handle (safety.py)
        names = list(self.model.nets.keys())
        opt_names = list(self.model.optimizers.keys())
        prepared = acc.prepare(*[self.model.nets[n] for n in names],
                               *[self.model.optimizers[n] for n in opt_names], loader)
        for name, module in zip(names, prepared[: len(names)]):
            self.model.nets[name] = module
        self.guard = StepGuard(acc.backward, self._all_reduce_min, options.max_bad_steps)
        for name, optim in zip(opt_names, prepared[len(names): len(names) + len(opt_names)]):
            self.model.optimizers[name] = GuardedOptimizer(optim, self.guard)
        self.loader = prepared[-1]
        self._epoch_loader: Any = None  # this epoch's loader (another one when a resumed epoch skips its first batches)

    def _set_cpu_threads(self) -> str:
        """Sets the torch threads on a CPU (see distributed.choose_cpu_threads); returns the line that says where and
        how the run trains."""
        acc = self.accelerator
        n = acc.num_processes
        where = f"training on {acc.device.type}: {n} process{'es' if n > 1 else ''}"
        if n > 1:
            where += f" ({torch.distributed.get_backend()})"
        if acc.device.type != "cpu":
            return where
        threads, why = choose_cpu_threads(self.opt.num_cpu_threads)
        torch.set_num_threads(threads)
        return f"{where}, {threads} torch thread{'s' if threads > 1 else ''}{' each' if n > 1 else ''} ({why})"

    def _all_reduce_min(self, value: torch.Tensor) -> torch.Tensor:
        """The minimum over ranks (so that every rank takes the same decision and DDP's collectives match)."""
        if self.accelerator.num_processes == 1:
            return value
        value = value.to(self.accelerator.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
        return value.cpu()

    def _stop_requested(self, stop: GracefulStop) -> str | None:
        """Whether any rank received SIGINT/SIGTERM (agreed on by all ranks, so they stop at the same step)."""
        if self.accelerator.num_processes == 1:
            return stop.requested
        flag = self._all_reduce_min(torch.tensor([0.0 if stop.requested else 1.0]))
        return (stop.requested or "a signal on another rank") if flag.item() < 1 else None

    # ---- state
    def _resume(self) -> None:
        ckpt = find_checkpoint(self.run_dir, "latest")
        state = load_state(ckpt)
        imported = state.get("imported")
        if imported is not None:  # weights from another project (python -m gan_translate import): no optimizer state
            self._start_from_import(ckpt, imported)
            return
        for name, net in self.model.nets.items():
            load_net(net, ckpt, name)
        for name, optim in self.model.optimizers.items():
            optim.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        self.model.load_extra_state(state["model"])
        self.progress = Progress(**state["progress"])
        rank = self.accelerator.process_index
        rng = state["rng"]
        restore_rng(rng[rank] if rank < len(rng) else rng[0])
        if state.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.accelerator.print(f"resumed from {ckpt} at step {self.progress.step}, epoch {self.progress.epoch + 1}")

    def _start_from_import(self, ckpt: Path, imported: dict[str, Any]) -> None:
        """Fine-tuning of imported weights: every network from the checkpoint, fresh optimizers and schedules."""
        if not imported.get("fine_tune"):
            raise UserError(f"option --continue_train: {self.run_dir} cannot be fine-tuned: {imported.get('reason')}")
        for name, net in self.model.nets.items():
            load_net(net, ckpt, name)
        self.accelerator.print(f"fine-tuning the weights imported from {imported.get('source')} with fresh "
                               "optimizers and learning-rate schedules (the source saved none)")

    def save(self, tag: str) -> None:
        """Every rank contributes its RNG state; the main process writes the checkpoint."""
        acc = self.accelerator
        rng_states = gather_object([capture_rng()]) if acc.num_processes > 1 else [capture_rng()]
        state: dict[str, Any] = {}
        if acc.is_main_process:
            state = {
                "progress": vars(self.progress).copy(),
                "optimizers": {k: o.state_dict() for k, o in self.model.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "model": self.model.extra_state(),
                "rng": rng_states,
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            }

        def write() -> None:
            save_checkpoint(self.run_dir, tag, nets=dict(self.model.nets.items()), state=state,
                            config_yaml=self.opt.to_yaml(), keep_last=self.opt.keep_last)

        # Rank 0's outcome goes to every rank (in place of a barrier): a failed write (disk full) stops them all now,
        # with its reason, instead of leaving the others to train on without checkpoints or to time out.
        def failure(err: BaseException) -> str | None:
            if is_worker_failure(err):  # a loader worker died while rank 0 wrote: the stop path names the last good one
                return None
            what = str(err) if isinstance(err, UserError) else \
                f"cannot write checkpoint {tag} in {self.run_dir}: {describe_write_failure(err)}"
            return f"{what}; the checkpoint before it is kept (free space, then resume with --continue_train)"

        rank0_outcome(write, is_main=acc.is_main_process, distributed=self.distributed, describe=failure)

    # ---- logging
    def _log_images(self, tracker: Any) -> None:
        visuals = self.model.visuals()
        if not visuals:
            return
        tiles = [v[0].detach().float().cpu() for v in visuals.values()]
        tiles = [t.expand(3, -1, -1) if t.shape[0] == 1 else t for t in tiles]
        columns = getattr(self.model, "grid_columns", len(tiles))
        grid = torchvision.utils.make_grid([(t + 1) / 2 for t in tiles], nrow=columns, padding=2).clamp(0, 1)
        tracker.writer.add_image("samples/" + "|".join(visuals), grid, self.progress.step)
        samples = self.run_dir / "samples"
        samples.mkdir(exist_ok=True)
        torchvision.utils.save_image(grid, samples / f"step_{self.progress.step:08d}.png")

    def _validate(self) -> None:
        """Metrics on the validation split (--val_freq), logged as val/<metric>; training state is not touched."""
        from gan_translate.evaluate.validation import validation_metrics  # only runs that validate load it

        scores = validation_metrics(self.model, self.opt)
        if scores:
            self.accelerator.log(scores, step=self.progress.step)

    def _learning_rates(self) -> dict[str, float]:
        return {f"lr/{k}": o.param_groups[0]["lr"] for k, o in self.model.optimizers.items()}

    # ---- the loop
    def fit(self, signal_stop: GracefulStop | None = None) -> Path:
        """Trains to the end, or to the step boundary after a stop signal (``signal_stop``: installed by ``train``
        before the trainer was built, so that a signal during the set-up is not lost; else installed here)."""
        opt, acc, model, progress = self.opt, self.accelerator, self.model, self.progress
        steps_per_epoch = len(self.loader)
        if steps_per_epoch == 0:
            raise UserError(f"dataroot {opt.dataroot}: fewer images than one batch (batch_size {opt.batch_size})")
        total = opt.total_epochs * steps_per_epoch
        if opt.max_steps:
            total = min(total, opt.max_steps)
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / CONFIG_FILE).write_text(opt.to_yaml())
        acc.init_trackers("tensorboard")
        tracker = acc.get_tracker("tensorboard", unwrap=False) if acc.is_main_process else None
        if tracker is not None:
            tracker.writer.add_text("config", "```\n" + opt.to_yaml() + "```", progress.step)
        bar = tqdm(total=total, initial=progress.step, disable=not acc.is_local_main_process, dynamic_ncols=True,
                   desc=opt.name)
        model.train()
        signal_stop = signal_stop or GracefulStop().install()
        try:
            interrupted = self._loop(total, steps_per_epoch, tracker, bar, signal_stop)
            self._shut_down_workers()  # from here on, a worker's death cannot interrupt the save
            bar.close()
            if tracker is not None and not self.guard.bad:
                self._log_images(tracker)
            self.save(f"step_{progress.step:08d}")
        except (RuntimeError, ConnectionError, EOFError) as err:
            # A worker killed while it handed a batch over breaks that hand-over (the socket that passes shared
            # memory) instead of raising torch's own report; both mean the same thing.
            if not (is_worker_failure(err) or self._a_worker_died()):
                raise
            bar.close()
            raise self._workers_lost(err, signal_stop.requested) from None
        finally:
            bar.close()  # an error ends the bar's line, so that its message starts a line of its own
            signal_stop.restore()
            self._shut_down_workers()  # also when the run fails: no worker may outlive it
        self.check_ranks_in_sync()
        self._release_distributed_wrappers()
        acc.end_training()
        if interrupted:
            acc.print(f"stopped by {interrupted} at step {progress.step}; checkpoint "
                      f"{self.run_dir / f'step_{progress.step:08d}'} saved, resume with --continue_train")
        else:
            acc.print(f"done: {progress.step} steps, checkpoints in {self.run_dir}")
        return self.run_dir

    def _loop(self, total: int, steps_per_epoch: int, tracker: Any, bar: tqdm, signal_stop: GracefulStop) -> str | None:
        """Trains until ``total`` steps or a stop signal; returns the signal's name, or None."""
        opt, acc, model, progress = self.opt, self.accelerator, self.model, self.progress
        epoch_losses: list[float] = []
        interrupted = self._stop_requested(signal_stop)  # a signal during the set-up: stop before the first step
        stopped = progress.step >= total or bool(interrupted)
        while not stopped and progress.epoch < opt.total_epochs:
            self.loader.set_epoch(progress.epoch)
            batches = (acc.skip_first_batches(self.loader, progress.batch_in_epoch)
                       if progress.batch_in_epoch else self.loader)
            self._epoch_loader = batches
            for batch in batches:
                self.guard.begin_step()
                ctx = StepContext(step=progress.step, epoch=progress.epoch, backward=self.guard.backward)
                logs = model.training_step(batch, ctx)
                broadcast_buffers(model.nets[k] for k in sorted(model.nets))  # every rank keeps rank 0's statistics
                progress.step += 1
                progress.batch_in_epoch += 1
                warning = self.guard.end_step(logs, progress.step)
                if warning:
                    if acc.is_local_main_process:
                        bar.write(warning)
                    acc.log({"skipped_steps": self.guard.skipped_total}, step=progress.step)
                else:
                    epoch_losses.append(sum(logs.values()))
                bar.update(1)
                if progress.step % opt.print_freq == 0 or progress.step == 1:
                    bar.set_postfix_str(f"epoch {progress.epoch + 1} " +
                                        " ".join(f"{k} {v:.3f}" for k, v in logs.items()))
                    acc.log({**{f"loss/{k}": v for k, v in logs.items()}, **self._learning_rates(),
                             "epoch": progress.epoch + 1}, step=progress.step)
                good = not self.guard.bad  # a skipped step shows and saves nothing: the last good checkpoint stays
                if good and tracker is not None and (progress.step % opt.display_freq == 0 or progress.step == 1):
                    self._log_images(tracker)
                if good and progress.step % opt.save_latest_freq == 0:
                    self.save(f"step_{progress.step:08d}")
                if good and opt.val_freq and progress.step % opt.val_freq == 0 and acc.is_main_process:
                    self._validate()
                interrupted = self._stop_requested(signal_stop)
                if progress.step >= total or interrupted:
                    stopped = True
                    break
            if progress.batch_in_epoch >= steps_per_epoch:  # the epoch is complete
                self._end_epoch(epoch_losses)
                epoch_losses = []
        return interrupted

    # ---- stopping
    def _shut_down_workers(self) -> None:
        """Ends the DataLoader workers now rather than at exit (torch's own shutdown; the loaders keep them alive
        between epochs). It also stops torch watching them, so a worker that dies later raises nothing here."""
        for loader in {id(x): x for x in (self.loader, self._epoch_loader) if x is not None}.values():
            iterator = getattr(loader, "_iterator", None)
            if iterator is None or not hasattr(iterator, "_shutdown_workers"):
                continue
            iterator._shutdown_workers()
            loader._iterator = None
            for worker in getattr(iterator, "_workers", []):
                # torch's last resort for a worker that does not exit is SIGTERM, which ours ignore (safety.py);
                # one left alive would then hang the interpreter's exit, which joins it.
                if worker.is_alive():
                    worker.kill()
                    worker.join(timeout=5)

    def _a_worker_died(self) -> bool:
        """Whether a DataLoader worker of this run has ended while torch still watches it."""
        return any(not worker.is_alive()
                   for loader in (self.loader, self._epoch_loader) if loader is not None
                   for worker in getattr(getattr(loader, "_iterator", None), "_workers", []))

    def _workers_lost(self, err: BaseException, signal_name: str | None) -> TrainingInterrupted:
        """The message for a run whose data-loading workers died: the step in progress cannot be completed, so the
        last checkpoint written stays the one to resume from."""
        detail = str(err).strip().splitlines()[0].rstrip(". ")
        if not is_worker_failure(err):
            detail = f"a DataLoader worker died while handing over a batch ({detail})"
        try:
            kept = f"the last good checkpoint {find_checkpoint(self.run_dir, 'latest')} is kept"
        except UserError:
            kept = "no checkpoint was written yet"
        step = self.progress.step
        if signal_name:
            return TrainingInterrupted(f"stopped by {signal_name} at step {step}; the data-loading workers had already "
                                       f"stopped ({detail}), so {kept}; resume with --continue_train")
        return TrainingInterrupted(f"stopped at step {step}: {detail}; {kept}; resume with --continue_train")

    def _end_epoch(self, losses: list[float]) -> None:
        progress = self.progress
        for sched in self.schedulers.values():
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(float(np.mean(losses)) if losses else 0.0)
            else:
                with warnings.catch_warnings():
                    # The schedule counts epochs of the whole run, so networks that have not trained yet (MIXGAN's
                    # phase-2 pair during phase 1) still advance it; torch warns about exactly that order.
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                    sched.step()
        progress.epoch += 1
        progress.batch_in_epoch = 0
        if progress.epoch % self.opt.save_epoch_freq == 0:
            self.save(f"epoch_{progress.epoch:03d}")

    def _release_distributed_wrappers(self) -> None:
        """Puts the bare networks back in ``model.nets`` and drops the accelerator's references, then collects, so
        that the DDP wrappers (whose reducers hold the process group) are destroyed here, before the group is, and not
        during interpreter shutdown: there, about one two-process gloo run in 20 aborted after finishing (SIGABRT,
        'terminate called without an active exception', no Python frame left on the stack)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return
        for name, net in list(self.model.nets.items()):
            self.model.nets[name] = acc.unwrap_model(net)
        acc.free_memory()  # also runs gc.collect(), which breaks the cycles that would keep a wrapper alive

    def check_ranks_in_sync(self) -> None:
        """With several processes, compares a digest of every network's weights across ranks and fails if they
        differ (they must not: DDP averages gradients and every rank steps the same optimizer).

        Buffers such as BatchNorm's running statistics are in the digest too: each step ends with rank 0's copied to
        every rank (``broadcast_buffers``), so they must be identical as well.
        """
        acc = self.accelerator
        if acc.num_processes == 1:
            return
        digest = hashlib.sha256()
        for name, net in sorted(self.model.nets.items()):
            for key, tensor in sorted(getattr(net, "module", net).state_dict().items()):
                digest.update(name.encode() + key.encode())
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
        digests = gather_object([digest.hexdigest()])
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks diverged: weight digests {digests}")
        acc.print(f"weights identical on all {acc.num_processes} ranks (sha256 {digests[0][:16]})")


SCAN_CACHE_FILE = "scan_cache.json"


def train(options: TrainOptions) -> Path:
    """Trains the model that ``options`` describes; returns the run folder."""
    if not options.name:
        options.name = default_run_name(options)
    if math.isinf(options.lr) or math.isnan(options.lr):
        raise UserError(f"option --lr: {options.lr} is not a finite number")
    if started_by_a_launcher():
        stop_when_the_launcher_dies()
    threads = torch.get_num_threads()  # the trainer sets its own on a CPU; a caller in this process keeps its own
    signal_stop = GracefulStop().install()
    trainer = None
    try:
        trainer = Trainer(options)
        return trainer.fit(signal_stop)
    except Exception as err:
        lost = lost_machine_message(err, options.ddp_timeout)
        if lost is None:
            raise
        run_dir = Path(options.checkpoints_dir) / options.name
        try:
            last = f"the last checkpoint is {find_checkpoint(run_dir, 'latest')}"
        except UserError:
            last = f"no checkpoint was written in {run_dir} yet"
        raise LostMachine(f"{lost}; {last} -- start every machine's launcher again with --continue_train to resume "
                          "from it") from None
    finally:
        if trainer is not None:
            trainer.run_lock.release()
        signal_stop.restore()
        torch.set_num_threads(threads)
