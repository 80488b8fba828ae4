"""The one training loop, for every model, on CPU, one GPU, many GPUs or many machines (Hugging Face Accelerate).

    accelerate launch train.py --model cyclegan                  # built-in data, quick preset
    accelerate launch --multi_gpu --num_processes 2 train.py ... # DDP (gloo on a CPU machine)

The loop knows the model contract only (models/base.py): it builds the data, the model and its LR schedulers, hands
networks, optimizers and the loader to ``Accelerator.prepare``, and then per step calls ``model.training_step``; it
logs losses, learning rates and image grids to TensorBoard, saves checkpoints and resumes from them exactly (the data
stream is a function of (seed, epoch, index), and RNG states, pools and schedulers are restored).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
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
from gan_translate.engine.checkpoint import (CONFIG_FILE, capture_rng, find_checkpoint, link_checkpoint, load_net,
                                            load_state, restore_rng, save_checkpoint)
from gan_translate.engine.distributed import (broadcast_buffers, choose_cpu_threads, make_accelerator,
                                              reuse_freed_memory, started_by_a_launcher, weights_digest)
from gan_translate.engine.loader_workers import a_worker_died, shut_down_workers
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
from gan_translate.engine.progress import Progress, bar_postfix
from gan_translate.engine.schedules import build_scheduler
from gan_translate.engine.stopping import Snapshot, StepAbandoned, StepWindow, StopWatcher, copy_buffers
from gan_translate.data.images import ImageReadError
from gan_translate.errors import UserError, user_error_in_worker
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
# The loop
# ----------------------------------------------------------------------------------------------------------------------


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
        self.window = StepWindow(lambda: bool(self._signal_stop and self._signal_stop.requested),
                                 single_process=acc.num_processes == 1)
        self._signal_stop: GracefulStop | None = None
        self.guard = StepGuard(acc.backward, self._all_reduce_min, options.max_bad_steps, window=self.window,
                               stop_requested=lambda: bool(self._signal_stop and self._signal_stop.requested))
        for name, optim in zip(opt_names, prepared[len(names): len(names) + len(opt_names)]):
            self.model.optimizers[name] = GuardedOptimizer(optim, self.guard)
        self.loader = prepared[-1]
        self._dropped_step: int | None = None  # a stop dropped this step in flight (stopping.py)
        self._stop_reported = False
        self._interrupted: str | None = None
        self._saved_as: tuple[tuple[int, int, int], str] | None = None  # (step, epoch, batch) of the last save, tag
        self._step_tag_at_epoch_end: str | None = None
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

    def snapshot(self) -> Snapshot:
        """What the next step changes besides weights and optimizer state (stopping.py), taken before it starts."""
        return Snapshot(progress=vars(self.progress).copy(), rng=capture_rng(), model_state=self.model.extra_state(),
                        buffers=copy_buffers(dict(self.model.nets.items())))

    def save(self, tag: str, snapshot: Snapshot | None = None) -> None:
        """Every rank contributes its RNG state; the main process writes the checkpoint. With ``snapshot`` (a stop
        that dropped the step in flight) the checkpoint is the last completed step: the snapshot's counters, RNG
        states, model state and buffers with the weights and optimizer state, which no update has changed since."""
        acc = self.accelerator
        here = (self.progress.step, self.progress.epoch, self.progress.batch_in_epoch)
        if snapshot is None and self._saved_as is not None and self._saved_as[0] == here:
            # Nothing changed since the last save (the end of training right after an epoch's): a second name
            target = self._saved_as[1]
            if target == tag:  # saved already under this name (a periodic save on the last step)
                return
            rank0_outcome(lambda: link_checkpoint(self.run_dir, tag, target), is_main=acc.is_main_process,
                          distributed=self.distributed, describe=lambda err: str(err) if isinstance(err, UserError)
                          else None)
            return
        rng = snapshot.rng if snapshot is not None else capture_rng()
        rng_states = gather_object([rng]) if acc.num_processes > 1 else [rng]
        state: dict[str, Any] = {}
        if acc.is_main_process:
            state = {
                "progress": snapshot.progress if snapshot is not None else vars(self.progress).copy(),
                "optimizers": {k: o.state_dict() for k, o in self.model.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "model": snapshot.model_state if snapshot is not None else self.model.extra_state(),
                "rng": rng_states,
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            }

        def write() -> None:
            save_checkpoint(self.run_dir, tag, nets=dict(self.model.nets.items()), state=state,
                            config_yaml=self.opt.to_yaml(), keep_last=self.opt.keep_last,
                            buffers=snapshot.buffers if snapshot is not None else None)

        # Rank 0's outcome goes to every rank (in place of a barrier): a failed write (disk full) stops them all now,
        # with its reason, instead of leaving the others to train on without checkpoints or to time out.
        def failure(err: BaseException) -> str | None:
            if is_worker_failure(err):  # a loader worker died while rank 0 wrote: the stop path names the last good one
                return None
            what = str(err) if isinstance(err, UserError) else \
                f"cannot write checkpoint {tag} in {self.run_dir}: {describe_write_failure(err)}"
            return f"{what}; the checkpoint before it is kept (free space, then resume with --continue_train)"

        rank0_outcome(write, is_main=acc.is_main_process, distributed=self.distributed, describe=failure)
        if snapshot is None:
            self._saved_as = (here, tag)

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

    def _write_loss_line(self, logs: dict[str, float]) -> None:
        """Every loss term, every --print_freq steps, to ``loss_log.txt`` in the run folder (the bar shows a few)."""
        if not self.accelerator.is_main_process:
            return
        p = self.progress
        terms = " ".join(f"{k}: {v:.4g}" for k, v in logs.items())
        with open(self.run_dir / "loss_log.txt", "a") as log:
            log.write(f"(epoch: {p.epoch + 1}, step: {p.step}) {terms}\n")

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
        self._signal_stop = signal_stop
        # One process: a stop is saved at once from a thread of its own (stopping.py); several agree in the loop.
        watcher = StopWatcher(self._save_on_signal).start() if acc.num_processes == 1 else None
        try:
            interrupted = self._loop(total, steps_per_epoch, tracker, bar, signal_stop)
            # from here on, a worker's death cannot interrupt the save
            shut_down_workers((self.loader, self._epoch_loader))
            bar.close()
            if self._dropped_step is None:
                if tracker is not None and not self.guard.bad:
                    self._log_images(tracker)
                self.save(f"step_{progress.step:08d}")
        except ImageReadError as err:  # read in this process (--num_threads 0)
            bar.close()
            raise self._bad_image_stop(str(err)) from None
        except (RuntimeError, ConnectionError, EOFError) as err:
            bad_image = user_error_in_worker(err) if "ImageReadError" in str(err) else None
            if bad_image is not None:  # a file that passed the start-up scan fails to decode (truncated data)
                bar.close()
                raise self._bad_image_stop(bad_image) from None
            # A worker killed while it handed a batch over breaks that hand-over (the socket that passes shared
            # memory) instead of raising torch's own report; both mean the same thing.
            if not (is_worker_failure(err) or a_worker_died((self.loader, self._epoch_loader))):
                raise
            bar.close()
            raise self._workers_lost(err, signal_stop.requested) from None
        finally:
            if watcher is not None:
                watcher.stop()
            bar.close()  # an error ends the bar's line, so that its message starts a line of its own
            signal_stop.restore()
            shut_down_workers((self.loader, self._epoch_loader))  # also when the run fails: no worker may outlive it
        self.check_ranks_in_sync()
        self._release_distributed_wrappers()
        acc.end_training()
        if interrupted:
            if not self._stop_reported:
                acc.print(self._stop_line(interrupted))
        else:
            acc.print(f"done: {progress.step} steps, checkpoints in {self.run_dir}")
        return self.run_dir

    def _loop(self, total: int, steps_per_epoch: int, tracker: Any, bar: tqdm, signal_stop: GracefulStop) -> str | None:
        """Trains until ``total`` steps or a stop signal; returns the signal's name, or None. A stop that dropped the
        step in flight (stopping.py) saves the last completed step here (or the watcher thread has)."""
        progress = self.progress
        self._interrupted = self._stop_requested(signal_stop)  # a signal during the set-up: stop before the first step
        try:
            self._train_steps(total, steps_per_epoch, tracker, bar, signal_stop)
        except StepAbandoned:
            self._dropped_step = progress.step + 1
            if self.window.claim_save():
                self.save(f"step_{progress.step:08d}", snapshot=self.window.snapshot)
                self.window.finish_save()
            else:  # the watcher thread saves it
                self.window.saved.wait()
                if self.window.save_error is not None:
                    raise self.window.save_error  # noqa: B904 (the watcher thread's own error, not this handler's)
            return self._stop_requested(signal_stop) or "a signal on another rank"
        return self._interrupted

    def _train_steps(self, total: int, steps_per_epoch: int, tracker: Any, bar: tqdm,
                     signal_stop: GracefulStop) -> None:
        opt, acc, model, progress = self.opt, self.accelerator, self.model, self.progress
        epoch_losses: list[float] = []
        stopped = progress.step >= total or bool(self._interrupted)
        while not stopped and progress.epoch < opt.total_epochs:
            self.loader.set_epoch(progress.epoch)
            batches = (acc.skip_first_batches(self.loader, progress.batch_in_epoch)
                       if progress.batch_in_epoch else self.loader)
            self._epoch_loader = batches
            for batch in batches:
                self.guard.begin_step()
                self.window.mark_clean(self.snapshot())  # until an optimizer updates, a stop drops this step
                if acc.num_processes == 1 and signal_stop.requested:  # came while the batch was loaded
                    self.window.abandon_if_clean()
                ctx = StepContext(step=progress.step, epoch=progress.epoch, backward=self.guard.backward)
                logs = model.training_step(batch, ctx)
                self.window.mark_dirty()
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
                    bar.set_postfix_str(bar_postfix(logs, progress.epoch + 1, len(opt.name)), refresh=False)
                    self._write_loss_line(logs)
                    acc.log({**{f"loss/{k}": v for k, v in logs.items()}, **self._learning_rates(),
                             "epoch": progress.epoch + 1}, step=progress.step)
                good = not self.guard.bad  # a skipped step shows and saves nothing: the last good checkpoint stays
                if good and tracker is not None and (progress.step % opt.display_freq == 0 or progress.step == 1):
                    self._log_images(tracker)
                if good and progress.step % opt.save_latest_freq == 0:
                    if progress.batch_in_epoch >= steps_per_epoch and (progress.epoch + 1) % opt.save_epoch_freq == 0:
                        self._step_tag_at_epoch_end = f"step_{progress.step:08d}"  # one save, two names (_end_epoch)
                    else:
                        self.save(f"step_{progress.step:08d}")
                if good and opt.val_freq and progress.step % opt.val_freq == 0 and acc.is_main_process:
                    self._validate()
                interrupted = self._interrupted = self._stop_requested(signal_stop)
                if progress.step >= total or interrupted:
                    stopped = True
                    break
            if progress.batch_in_epoch >= steps_per_epoch:  # the epoch is complete
                self._end_epoch(epoch_losses)
                epoch_losses = []

    # ---- stopping
    def _stop_line(self, signal_name: str) -> str:
        step = self.progress.step
        dropped = f" (step {self._dropped_step} was in progress and is dropped)" if self._dropped_step else ""
        return (f"stopped by {signal_name} at step {step}; checkpoint {self.run_dir / f'step_{step:08d}'} "
                f"saved, resume with --continue_train{dropped}")

    def _save_on_signal(self, signal_name: str) -> None:
        """The watcher thread's work (one process): if the step in flight has not updated any weights yet, save the
        last completed step now and say so; under a launcher, which kills the process a few seconds after its
        SIGTERM, also end the process (the step in flight is lost anyway)."""
        if not self.window.claim_save():
            return  # an optimizer has updated: the main thread finishes the step and saves at its end
        snapshot = self.window.snapshot
        assert snapshot is not None
        step = snapshot.progress["step"]
        try:
            self.save(f"step_{step:08d}", snapshot=snapshot)
        except BaseException as err:  # noqa: BLE001 -- reported by the main thread
            self.window.finish_save(err)
            return
        self._dropped_step = step + 1
        self.progress = Progress(**snapshot.progress)
        self.accelerator.print(self._stop_line(signal_name))
        self._stop_reported = True
        sys.stdout.flush()
        self.window.finish_save()
        if not started_by_a_launcher():
            return  # the main thread stops at its next optimizer update or step boundary
        for tracker in self.accelerator.trackers:
            writer = getattr(tracker, "writer", None)
            if writer is not None:
                writer.flush()
        for loader in (self.loader, self._epoch_loader):
            for worker in getattr(getattr(loader, "_iterator", None), "_workers", []):
                worker.kill()
        self.run_lock.release()
        sys.stderr.flush()
        os._exit(0)

    def _bad_image_stop(self, message: str) -> UserError:
        """An image that cannot be decoded, met mid-run: with one process the steps done so far are saved (the
        weights are those of the last completed step: the batch never arrived); one line names the file and the
        option that skips such files."""
        shut_down_workers((self.loader, self._epoch_loader))
        kept = "no checkpoint was written yet"
        if self.accelerator.num_processes == 1 and self.progress.step > 0:
            tag = f"step_{self.progress.step:08d}"
            if not (self.run_dir / tag).is_dir():
                self.save(tag)
            kept = f"checkpoint {self.run_dir / tag} saved, resume with --continue_train"
        else:
            try:
                kept = f"the last checkpoint {find_checkpoint(self.run_dir, 'latest')} is kept"
            except UserError:
                pass
        return UserError(f"{message.rstrip('.')} (remove it, or add --skip_bad_images to skip such files); {kept}")

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
        if self._step_tag_at_epoch_end:  # the periodic save of the epoch's last step: a name of the epoch's
            self.save(self._step_tag_at_epoch_end)
            self._step_tag_at_epoch_end = None

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

        Buffers such as BatchNorm's running statistics are in the digest too: each completed step ends with rank 0's
        copied to every rank (``broadcast_buffers``), and so does the run -- a stop may drop a step whose forward
        already updated each rank's statistics on its own data.
        """
        acc = self.accelerator
        if acc.num_processes == 1:
            return
        broadcast_buffers(self.model.nets[k] for k in sorted(self.model.nets))
        digests = gather_object([weights_digest(self.model.nets)])
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
