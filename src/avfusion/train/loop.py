"""The training loop: resumable to the exact step, distributed with DDP.

:func:`fit` runs a recipe in named steps (as torchtune's recipes are): set up, resume, then per
step the loader's batches, forward / backward per micro-batch, the optimizer step, the log row
and the checkpoint (:class:`_FitRecipe`); :class:`TrainState` is what a checkpoint records.

Exact resume. A run killed at any moment and started again with the same command and ``--out``
ends with the same weights as an uninterrupted run (on CPU; tested with a real SIGKILL):

- data order: each epoch's order is a permutation drawn from ``(seed, epoch)`` alone; the
  checkpoint stores how many batches of the epoch were consumed and the sampler skips them;
- augmentation: each sample is drawn under RNG seeds derived from ``(seed, epoch, index)``
  (:class:`SeededSamples`), so it does not depend on which worker loads it or when;
- model randomness (dropout, stochastic depth, mixup): the global RNG states are saved with the
  checkpoint and restored; the DataLoader gets its own generator so it never draws from them.

Safety (docs/training.md): the run folder is locked while a run uses it; checkpoints follow a
protocol with no window of loss (:mod:`avfusion.train.checkpoint`); a non-finite loss or gradient
norm stops the run with a RunError before it can reach the weights (or, with
``run.skip_nonfinite``, skips the step); SIGINT / SIGTERM finish the step, save a checkpoint and
raise :class:`~avfusion.train.signals.TrainingInterrupted`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from avfusion.errors import ConfigError, InputError, RunError, SampleError
from avfusion.train.checkpoint import (CHECKPOINTS_DIR, checkpoint_name, load_latest, remove_stale, rng_state,
                                       save_checkpoint, set_aside, set_rng_state, write_model_dir)
from avfusion.train.config import TrainConfig
from avfusion.utils.distributed import DistInfo, all_reduce_mean, barrier, max_over_ranks, shard_indices
from avfusion.train.optim import build_optimizer, build_scheduler
from avfusion.train.runfolder import trim_metrics
from avfusion.utils.lock import lock_run_folder
from avfusion.utils.files import atomic_write
from avfusion.train.signals import StopRequest, TrainingInterrupted, signals_blocked, worker_ignore_signals
from avfusion.utils.dataclass_config import to_plain
from avfusion.utils.device import resolve_device
from avfusion.utils.progress import progress_bar
from avfusion.utils.seeding import mix_seed, seed_all


class ShuffleSampler(Sampler[int]):
    """A permutation drawn from (seed, epoch) alone, split over ranks (padded to equal counts)."""

    def __init__(self, n: int, seed: int, info: DistInfo, shuffle: bool = True):
        self.n, self.seed, self.info, self.shuffle, self.epoch = n, seed, info, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=g).tolist() if self.shuffle else list(range(self.n))
        return iter([order[i] for i in shard_indices(self.n, self.info, pad=True)])

    def __len__(self) -> int:
        return len(shard_indices(self.n, self.info, pad=True))


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` from an epoch-seeded index sampler, skipping the first ``skip``.

    ``base`` is any rank-aware sampler with ``set_epoch`` whose order depends only on its seed and
    the epoch (:class:`ShuffleSampler`, or the balanced ``DistributedWeightedSampler``); ``skip``
    resumes mid-epoch without loading the skipped samples.
    """

    def __init__(self, base: Sampler[int]):
        self.base, self.epoch, self.skip = base, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)  # type: ignore[attr-defined]
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for k, i in enumerate(self.base):
            if k >= self.skip:
                yield self.epoch, i

    def __len__(self) -> int:
        return len(self.base) - self.skip  # type: ignore[arg-type]


class SeededSamples(Dataset):
    """``ds[(epoch, i)]`` draws sample i under RNG seeds from (seed, epoch, i): worker-independent."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, i = key
        seed_all(mix_seed(self.seed, epoch, i))
        return self.dataset[i]


@dataclass
class FitResult:
    out: Path
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0


@dataclass
class TrainState:
    """Where a run is: what a checkpoint's ``state.pt`` records besides the weights, the
    optimizer and the scheduler (and the RNG states, the config and the loader's worker count)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of this epoch consumed, left-out empty ones included
    history: list[dict[str, Any]] = field(default_factory=list)  # the rows of metrics.jsonl
    skipped_nonfinite: int = 0  # steps skipped for a non-finite loss or gradient norm
    skipped_samples: int = 0  # samples left out (data.skip_bad_samples)
    saved: tuple[int, Path] | None = None  # the last good checkpoint: (step, folder); not in state.pt

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], path: Path) -> "TrainState":
        return cls(step=state["step"], epoch=state["epoch"], batch_in_epoch=state["batch_in_epoch"],
                   history=[dict(h) for h in state.get("history", [])],
                   skipped_nonfinite=int(state.get("skipped_nonfinite", 0)),
                   skipped_samples=int(state.get("skipped_samples", 0)), saved=(state["step"], path))


@dataclass
class _Data:
    """How the training data is cut into steps. A stream (shards from URLs) orders and splits itself:
    a fixed number of batches per rank and epoch, resumed by skipping what was delivered. A
    map-style dataset gets the epoch sampler and is read through :class:`SeededSamples`."""

    dataset: Dataset
    sampler: EpochSampler | None  # None: a stream
    batches_per_epoch: int  # per rank


@dataclass
class _Step:
    """One optimizer step's outcome, the same on every rank."""

    losses: dict[str, float]  # each loss, mean over the micro-batches and the ranks
    grad_norm: float  # before clipping
    bad: bool  # the loss or gradient norm was not finite on some rank: no update was made
    signum: int  # a stop signal some rank received, 0 if none


class _Throughput:
    """Clips per second (all ranks together) over each logging interval."""

    def __init__(self) -> None:
        self.clips, self.since, self.last = 0, time.perf_counter(), 0.0

    def rate(self) -> float:
        """The rate since the last call (or since the start), then a new interval begins."""
        now = time.perf_counter()
        self.last = self.clips / max(now - self.since, 1e-9)
        self.clips, self.since = 0, now
        return self.last


def move_batch(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def fit(
    cfg: TrainConfig,
    task: nn.Module,
    train_set: Dataset,
    collate: Callable[[list], dict],
    info: DistInfo = DistInfo(),
    batch_transform: Callable[[dict, torch.Generator], dict] | None = None,
    sampler: Sampler[int] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    stop_at: int | None = None,
    handle_signals: bool = True,
) -> FitResult:
    """Train ``task`` (a Task: model + loss) on ``train_set`` per ``cfg``; returns where it wrote.

    ``batch_transform(batch, generator)`` runs on the device batch (mixup, GPU feature
    augmentation) with a generator seeded from (seed, step), so it is resumable too.
    ``sampler`` (default: :class:`ShuffleSampler`) must be rank-aware and epoch-seeded.
    The final model directory (model.safetensors + config.json) is written to ``cfg.run.out``.
    ``stop_at`` ends the run early at that step (after checkpointing), inside the full schedule:
    for jobs split over several allocations. ``handle_signals``: SIGINT / SIGTERM (main thread
    only) stop after the current step with a checkpoint, raising TrainingInterrupted.

    Raises RunError when the run folder is in use, no checkpoint in it is usable, or the training
    diverges (a non-finite loss or gradient norm beyond ``run.skip_nonfinite``); ConfigError when
    the folder's checkpoint was written under another config.
    """
    with lock_run_folder(cfg.run.out, info), StopRequest(enabled=handle_signals) as stop:
        recipe = _FitRecipe(cfg, task, train_set, collate, info, batch_transform, sampler, on_log, stop)
        recipe.resume()
        return recipe.train(stop_at)


class _FitRecipe:
    """One :func:`fit` call in named steps, as torchtune's recipes are: set up (device, data,
    optimizer, schedule), :meth:`resume`, then :meth:`train`, which runs each epoch's
    :meth:`batches` through :meth:`forward_backward` (per micro-batch), :meth:`optimizer_step`,
    :meth:`log` and :meth:`checkpoint`. ``self.state`` is what a checkpoint saves."""

    def __init__(self, cfg: TrainConfig, task: nn.Module, train_set: Dataset, collate: Callable[[list], dict],
                 info: DistInfo, batch_transform: Callable[[dict, torch.Generator], dict] | None,
                 sampler: Sampler[int] | None, on_log: Callable[[dict[str, Any]], None] | None,
                 stop: StopRequest) -> None:
        run = cfg.run
        self.cfg, self.task, self.collate, self.info = cfg, task, collate, info
        self.batch_transform, self.on_log, self.stop = batch_transform, on_log, stop
        self.out = Path(run.out)
        self.device = device = resolve_device(run.device, info.local_rank, "run.device")
        self.flag_device = device if info.enabled and device.type == "cuda" else None  # NCCL reduces CUDA tensors
        self.model = task.model
        task.to(device)
        self.extra: dict[str, nn.Module] = \
            {"contrastive": task.contrastive} if getattr(task, "contrastive", None) is not None else {}
        bf16 = run.precision == "bf16" or (run.precision == "auto" and device.type == "cuda")
        self.autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        if run.grad_checkpointing:
            self.model.set_grad_checkpointing(True)

        self.data = _plan_data(cfg, train_set, sampler, info)
        steps_per_epoch = max(1, self.data.batches_per_epoch // run.grad_accum)
        self.total = run.max_steps or math.ceil(cfg.schedule.epochs * steps_per_epoch)
        self.opt = build_optimizer({"model": self.model, **self.extra}, cfg.optim, device)
        self.sched = build_scheduler(self.opt, cfg.schedule, self.total, steps_per_epoch, cfg.optim.lr)
        self.state = TrainState()
        self.resumed_from = 0
        # What the step calls: the task, under DDP and compiled as configured (set by train()).
        self.module: nn.Module = task
        self.eager_module: nn.Module = task

    # -- resume --------------------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the newest usable checkpoint in ``--out``, if any: weights, optimizer,
        scheduler, position in the data, history, RNG states. Nothing is written before the
        checkpoint is verified and its config accepted, so a refused resume leaves the folder as
        it was."""
        cfg, info = self.cfg, self.info
        ckpt, damaged = load_latest(self.out)
        if ckpt is not None:
            state = ckpt.state
            _check_same_config(json.loads(state["config"]), to_plain(cfg))
            ckpt.load_into(self.model, self.extra)
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.state = TrainState.from_checkpoint(state, ckpt.path)
            if self.data.sampler is None and self.state.batch_in_epoch and info.is_main \
                    and state.get("num_workers", cfg.data.num_workers) != cfg.data.num_workers:
                print(f"resuming a streamed epoch with data.num_workers={cfg.data.num_workers} instead of "
                      f"{state['num_workers']}: the rest of epoch {self.state.epoch} reads the same shards in "
                      "another order (exact resume needs the same number of workers)", file=sys.stderr)
            set_rng_state(state["rng"])
            del ckpt, state  # loaded: do not hold a second copy of the weights and optimizer state
        self.resumed_from = step = self.state.step
        _check_same_step(step, info, self.flag_device)
        barrier(info)  # every rank has read the checkpoint before rank 0 moves or writes anything
        if info.is_main:
            _prepare_folder(self.out, cfg, step, damaged, self.state.saved)

    # -- the loop ------------------------------------------------------------------------------
    def train(self, stop_at: int | None) -> FitResult:
        """Steps until the schedule's end (or ``stop_at``, or a stop signal), then the final model."""
        run, info, st, total = self.cfg.run, self.info, self.state, self.total
        self._wrap()
        tb = _tensorboard(self.out, st.step) if (run.tensorboard and info.is_main) else None
        bar = _progress(total, st.step, enabled=run.progress and info.is_main)
        self.task.train()
        meter = _Throughput()
        accum: list[dict[str, torch.Tensor]] = []  # losses of the micro-batches of the current step

        def done() -> bool:
            return st.step >= total or (stop_at is not None and st.step >= stop_at)

        try:
            while st.step < total:
                for batch in self.batches():
                    if not self.usable(batch):  # some rank has nothing left of its batch: every rank skips it alike
                        st.batch_in_epoch += 1
                        continue
                    accum.append(self.forward_backward(batch, micro=len(accum)))
                    st.batch_in_epoch += 1
                    meter.clips += len(batch["id"]) * info.world_size
                    if len(accum) < run.grad_accum:
                        continue
                    step = self.optimizer_step(accum)
                    accum = []
                    row: dict[str, Any] = step.losses
                    if st.step % run.log_every == 0 or st.step == total or step.bad:
                        row = self.log(step, meter.rate(), tb)
                    if step.bad:
                        self.skip_or_stop(step)
                    if bar is not None:
                        bar.update(1)
                        loss = row.get("loss")
                        bar.set_postfix(loss="nan" if loss is None else f"{loss:.4f}", clips_s=f"{meter.last:.1f}",
                                        refresh=False)
                    stopping = done() or bool(step.signum)
                    if st.step % run.save_every == 0 or stopping:
                        self.checkpoint()
                    if step.signum and st.step < total:  # (at the last step: write the final model first, below)
                        barrier(info)  # the other ranks wait for rank 0's checkpoint before they exit
                        raise TrainingInterrupted(step.signum, st.step, self._saved_path())
                    if stopping:
                        break
                if done():
                    break
                st.epoch, st.batch_in_epoch = st.epoch + 1, 0
        finally:
            if bar is not None:
                bar.close()
            if tb is not None:
                tb.close()

        if info.is_main and st.step >= total:
            write_model_dir(self.model, self.out)
        # A signal during the last step or the final save: stop before what follows (the evaluation).
        signum = max_over_ranks([float(self.stop.signum)], info, self.flag_device)[0]
        if signum:
            raise TrainingInterrupted(int(signum), st.step, self._saved_path())
        return FitResult(out=self.out, steps=st.step, history=st.history, resumed_from=self.resumed_from)

    def _wrap(self) -> None:
        """DDP (after resume: it broadcasts rank 0's loaded weights), then torch.compile if asked."""
        run, info, device = self.cfg.run, self.info, self.device
        module: nn.Module = self.task
        if info.enabled:
            module = nn.parallel.DistributedDataParallel(
                self.task, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=run.find_unused_parameters)
        self.eager_module = self.module = module
        if run.compile:
            self.module = torch.compile(module)  # type: ignore[assignment]

    # -- loader --------------------------------------------------------------------------------
    def batches(self) -> Iterator[dict[str, Any]]:
        """The rest of the current epoch's batches (the part before ``batch_in_epoch`` is skipped)."""
        cfg, run, st, data = self.cfg, self.cfg.run, self.state, self.data
        workers = cfg.data.num_workers
        # The loader's own generator: it never draws from the global RNG the model's dropout uses.
        loading = dict(batch_size=cfg.data.batch_size, collate_fn=self.collate, drop_last=True,
                       num_workers=workers, pin_memory=cfg.data.pin_memory and self.device.type == "cuda",
                       prefetch_factor=cfg.data.prefetch_factor if workers else None,
                       worker_init_fn=worker_ignore_signals if workers else None,
                       generator=torch.Generator().manual_seed(mix_seed(run.seed, st.epoch, 1)))
        if data.sampler is None:
            data.dataset.set_epoch(st.epoch, skip_batches=st.batch_in_epoch)  # type: ignore[attr-defined]
            loader = DataLoader(data.dataset, **loading)
        else:
            data.sampler.set_epoch(st.epoch, skip=st.batch_in_epoch * cfg.data.batch_size)
            loader = DataLoader(data.dataset, sampler=data.sampler, **loading)
        with signals_blocked():  # workers start with SIGINT / SIGTERM blocked, then ignore them
            return iter(loader)

    def usable(self, batch: dict[str, Any]) -> bool:
        """Count and name the samples this micro-batch lost (stopping past data.skip_bad_samples);
        False when some rank has none of it left. The same answer on every rank."""
        bad_samples, empty = _bad_samples(batch, self.info, self.flag_device)
        if bad_samples:
            self.state.skipped_samples += bad_samples
            _report_bad_samples(batch, self.state.skipped_samples, self.cfg.data.skip_bad_samples, self.info)
        return not empty

    # -- step ----------------------------------------------------------------------------------
    def forward_backward(self, batch: dict[str, Any], micro: int) -> dict[str, torch.Tensor]:
        """Micro-batch ``micro`` of the step: to the device, the batch transform (its generator
        seeded from (seed, step, micro)), forward, backward of loss / grad_accum; its losses."""
        run = self.cfg.run
        batch = move_batch(batch, self.device)
        if self.batch_transform is not None:
            g = torch.Generator(device="cpu").manual_seed(mix_seed(run.seed, self.state.step, micro, 2))
            batch = self.batch_transform(batch, g)
        with self.autocast():
            try:
                losses = self.module(batch)
            except Exception as e:
                if self.module is self.eager_module:
                    raise
                # torch.compile is an optimisation: if it fails on this model / platform, say why
                # and train eagerly (compilation errors surface at the first call).
                print(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "training eagerly", file=sys.stderr)
                self.opt.zero_grad(set_to_none=True)
                self.module = self.eager_module
                losses = self.module(batch)
        (losses["loss"] / run.grad_accum).backward()
        return {k: v.detach() for k, v in losses.items()}

    def optimizer_step(self, accum: list[dict[str, torch.Tensor]]) -> _Step:
        """The step once its micro-batches are in: gradient norm (clipped if asked), losses reduced
        over ranks, then an update, or none when the loss or norm is not finite: a non-finite
        value never reaches the weights. Every rank takes the same decisions (skip, stop on a
        signal) from one all-reduce."""
        info, st = self.info, self.state
        params = [p for g in self.opt.param_groups for p in g["params"]]
        gnorm = _grad_norm(params, self.cfg.optim.clip_grad_norm)
        losses = {k: all_reduce_mean(torch.stack([a[k] for a in accum]).float().mean(), info).item() for k in accum[0]}
        finite = math.isfinite(losses["loss"]) and math.isfinite(gnorm)
        bad, signum = max_over_ranks([float(not finite), float(self.stop.signum)], info, self.flag_device)
        st.step += 1
        if bad:
            self.opt.zero_grad(set_to_none=True)  # no update, no scheduler step: the batch is spent
            st.skipped_nonfinite += 1
        else:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.sched.step()
        return _Step(losses, gnorm, bool(bad), int(signum))

    def skip_or_stop(self, step: _Step) -> None:
        """After a step with a non-finite loss or gradient norm: stop the run past
        run.skip_nonfinite such steps, else say that it was skipped."""
        run, st = self.cfg.run, self.state
        loss = step.losses["loss"]
        if st.skipped_nonfinite > run.skip_nonfinite:
            raise RunError(_diverged(st.step, loss, step.grad_norm, st.skipped_nonfinite, run.skip_nonfinite,
                                     st.saved))
        if self.info.is_main:
            print(f"step {st.step}: loss {loss}, gradient norm {step.grad_norm}: not finite, step skipped "
                  f"({st.skipped_nonfinite} of run.skip_nonfinite={run.skip_nonfinite})", file=sys.stderr)

    # -- log -----------------------------------------------------------------------------------
    def log(self, step: _Step, clips_per_s: float, tb: Any) -> dict[str, Any]:
        """The step's row: into the history, and on rank 0 metrics.jsonl, TensorBoard and on_log."""
        st = self.state
        row: dict[str, Any] = dict(step.losses)
        row.update(step=st.step, epoch=st.epoch, lr=self.sched.get_last_lr()[0], grad_norm=step.grad_norm,
                   clips_per_s=clips_per_s)
        if st.skipped_nonfinite:
            row["skipped_nonfinite"] = st.skipped_nonfinite
        if st.skipped_samples:
            row["skipped_samples"] = st.skipped_samples
        row = {k: _json_number(v) for k, v in row.items()}
        st.history.append(row)
        if self.info.is_main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row, allow_nan=False) + "\n")
            if tb is not None:
                for k, v in row.items():
                    if k not in ("step", "epoch") and v is not None:
                        tb.add_scalar(f"train/{k}", v, st.step)
            if self.on_log is not None:
                self.on_log(row)
        return row

    # -- checkpoint ----------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Save the run's state (rank 0 writes; every rank records where it went)."""
        st = self.state
        if not self.info.is_main:
            st.saved = (st.step, self.out / CHECKPOINTS_DIR / checkpoint_name(st.step))  # where rank 0 writes it
            return
        state = {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "step": st.step,
                 "epoch": st.epoch, "batch_in_epoch": st.batch_in_epoch, "rng": rng_state(),
                 "history": st.history, "config": json.dumps(to_plain(self.cfg)),
                 "skipped_nonfinite": st.skipped_nonfinite, "skipped_samples": st.skipped_samples,
                 "num_workers": self.cfg.data.num_workers}
        st.saved = (st.step, save_checkpoint(self.out, self.model, self.extra, state))

    def _saved_path(self) -> str | None:
        return str(self.state.saved[1]) if self.state.saved else None


def _plan_data(cfg: TrainConfig, train_set: Dataset, sampler: Sampler[int] | None, info: DistInfo) -> _Data:
    """The data's epochs (see :class:`_Data`); a set too small for one batch per process is refused."""
    if isinstance(train_set, IterableDataset):
        batches = train_set.batches_per_rank()  # type: ignore[attr-defined]
        if batches < 1:
            raise ConfigError(f"data.epoch_samples={train_set.epoch_samples} is less than one batch of "  # type: ignore[attr-defined]
                              f"{cfg.data.batch_size} per process: lower data.batch_size")
        return _Data(train_set, None, batches)
    n = len(train_set)  # type: ignore[arg-type]
    if n == 0:
        raise InputError("the training set is empty")
    epochs = EpochSampler(sampler if sampler is not None else ShuffleSampler(n, cfg.run.seed, info))
    per_rank = len(epochs)
    if per_rank < cfg.data.batch_size:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is more than the {per_rank} training samples "
                          "per process: lower data.batch_size")
    # drop_last: every step sees a full batch
    return _Data(SeededSamples(train_set, cfg.run.seed), epochs, max(1, per_rank // cfg.data.batch_size))


def _prepare_folder(out: Path, cfg: TrainConfig, step: int, damaged: list[tuple[Path, str]],
                    saved: tuple[int, Path] | None) -> None:
    """Rank 0, once the resume is accepted: set damaged checkpoints aside, drop unfinished saves,
    cut metrics.jsonl back to the checkpoint's step and record the resolved config."""
    for path, why in damaged:
        moved = set_aside(path)
        fallback = saved[1].name if saved else "none"  # (load_latest raised if none was usable)
        print(f"damaged checkpoint: {why}; set aside as {moved}; falling back to {fallback}", file=sys.stderr)
    remove_stale(out / CHECKPOINTS_DIR)
    trim_metrics(out / "metrics.jsonl", step)  # the steps after the checkpoint are logged again
    atomic_write(out / "train_config.json", (json.dumps(to_plain(cfg), indent=2) + "\n").encode())
    if saved is not None:
        print(f"resumed from {saved[1]} at step {step}", file=sys.stderr)


def _grad_norm(params: list[torch.Tensor], clip: float | None) -> float:
    """The total gradient norm before clipping (computed whether or not clipping is on)."""
    if clip:
        return float(torch.nn.utils.clip_grad_norm_(params, clip))
    return float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))


def _json_number(v: Any) -> Any:
    """metrics.jsonl is strict JSON: a non-finite number is written as null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _diverged(step: int, loss: float, gnorm: float, skipped: int, allowed: int,
              saved: tuple[int, Path] | None) -> str:
    what = f"loss {loss}, gradient norm {gnorm}"
    more = f" ({skipped} such steps, more than run.skip_nonfinite={allowed})" if allowed else ""
    kept = (f"the last good checkpoint (step {saved[0]}) is kept in {saved[1]}" if saved
            else "no checkpoint was saved before it")
    return (f"training diverged at step {step}: {what}{more}; nothing non-finite was written and {kept}; "
            "lower optim.lr (in a new --out) or allow skipping such steps with run.skip_nonfinite=N "
            "(the same --out then resumes)")


def _check_same_step(step: int, info: DistInfo, device: torch.device | None) -> None:
    if info.enabled:
        hi, neg_lo = max_over_ranks([float(step), float(-step)], info, device)
        if hi != -neg_lo:
            raise RunError(f"the ranks found checkpoints of different steps ({int(-neg_lo)} to {int(hi)}): "
                           "--out must be on a filesystem that every node shares")


def _bad_samples(batch: dict[str, Any], info: DistInfo, flag_device: torch.device | None) -> tuple[int, bool]:
    """(samples left out of this micro-batch on all ranks together, whether some rank has none left),
    the same on every rank: one small all-reduce in DDP, so the ranks decide alike."""
    mine = [float(len(batch.get("errors", ()))), float(not batch["id"])]
    if not info.enabled:
        return int(mine[0]), bool(mine[1])
    total = all_reduce_mean(torch.tensor(mine[0], dtype=torch.float64, device=flag_device), info).item()
    _, empty = max_over_ranks(mine, info, flag_device)
    return int(round(total * info.world_size)), bool(empty)


def _report_bad_samples(batch: dict[str, Any], total: int, budget: int, info: DistInfo) -> None:
    """Name each bad sample this rank saw; stop with the first one once ``total`` passes ``budget``."""
    errors = batch.get("errors", [])
    if total > budget:
        first = errors[0][1] if errors else "a sample on another rank could not be used"
        hint = ("`avfusion validate` finds such rows before training; data.skip_bad_samples=N leaves up to N out"
                if budget == 0 else f"more than data.skip_bad_samples={budget} samples could not be used")
        raise SampleError(f"{first}; {hint}")
    for _, msg in errors:
        print(f"skipped sample ({total} of data.skip_bad_samples={budget}): {msg}", file=sys.stderr)


# Keys that may differ between a run and its resumption (where it runs, how it reports, how many
# non-finite steps it may skip).
_RESUME_FREE = {"run.out", "run.device", "run.progress", "run.tensorboard", "run.log_every", "run.save_every",
                "data.num_workers", "data.pin_memory", "data.prefetch_factor", "run.skip_nonfinite",
                "data.skip_bad_samples",
                "data.train", "data.val", "data.labels", "run.compile", "run.grad_checkpointing"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "model_overrides":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_same_config(saved: dict, current: dict) -> None:
    """Resuming under another config would silently train a different run: refuse, naming the keys.
    A key the saved config lacks (a field added since) counts as its default."""
    defaults = _flat(to_plain(TrainConfig()))
    a, b = _flat(saved), _flat(current)
    diff = sorted(k for k in set(a) | set(b)
                  if k not in _RESUME_FREE and a.get(k, defaults.get(k)) != b.get(k, defaults.get(k)))
    if diff:
        details = ", ".join(f"{k}: {a.get(k, defaults.get(k))!r} -> {b.get(k)!r}" for k in diff)
        raise ConfigError(f"the checkpoint in this --out was written with another config ({details}); "
                          "use a new --out, or the same settings to resume")


def _progress(total: int, initial: int, enabled: bool):
    return progress_bar(total, "train", "step", enabled, initial)


def _tensorboard(out: Path, resumed_from: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional: metrics.jsonl always has the numbers
        return None
    # purge_step: a resumed run drops the events logged after its checkpoint (they come again).
    return SummaryWriter(str(out / "tensorboard"), purge_step=resumed_from + 1 if resumed_from else None)
