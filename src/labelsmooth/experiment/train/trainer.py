"""The training recipe: setup → train epoch → evaluate → checkpoint → cleanup, top to bottom.

:func:`train` is the whole recipe in a dozen lines; each stage is one short method of
:class:`Recipe`. What is learned (data, model, loss, metrics) comes from a
:class:`~labelsmooth.experiment.tasks.Task` (by default the one the registry builds for
``config.task``: :class:`~labelsmooth.experiment.tasks.ImageClassification` with
:func:`labelsmooth.cross_entropy`, ``label_smoothing=eps``, ``convention=...``, or the
language model), so a new task plugs in without touching the loop.

Determinism and resume:

* one seed fixes the initialisation; each epoch's example order and augmentation come from a
  generator seeded by ``(seed, epoch)`` (:func:`labelsmooth.experiment.data.epoch_generator`);
* ``torch.use_deterministic_algorithms(True)`` and a fixed thread count during training;
* a checkpoint (model, optimiser, scheduler, torch/numpy/python RNG states, the epoch's
  generator state and position, history, and the state of a task's stateful loss, e.g.
  online label smoothing's soft labels and statistics; with a SHA-256 checksum, written
  atomically; see
  :mod:`labelsmooth.experiment.train.checkpoint`) is saved after every epoch and when Ctrl-C is
  pressed,
  so ``resume=True`` ends in the bitwise same weights and metrics as an uninterrupted run on
  the same machine and thread count.

Data-parallel: started by ``torchrun --nproc-per-node W`` (``WORLD_SIZE`` > 1), the same loop
runs in W processes through the hooks of
:class:`~labelsmooth.experiment.train.distributed.DataParallel`:
each rank's slice of every global batch, DistributedDataParallel, batch norm and loss over the
global batch, metrics reduced over ranks, files and output from rank 0 only. One process runs
the same hooks of :class:`~labelsmooth.experiment.train.distributed.SingleProcess` (each the
identity), so the loop has one code path.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labelsmooth.experiment.config import TrainConfig, config_differences
from labelsmooth.experiment.data import epoch_generator
from labelsmooth.experiment.files import write_json
from labelsmooth.experiment.tasks import Task, get_task, resolve
from labelsmooth.experiment.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from labelsmooth.experiment.train.distributed import DataParallel, SingleProcess, processes_from_env
from labelsmooth.experiment.train.loss_state import restore_state, state_to_save

__all__ = ["TrainResult", "TrainingInterrupted", "Recipe", "train"]

CHECKPOINT_NAME = "checkpoint.pt"
RESULT_NAME = "result.json"
_LOOP_KEYS = ("epoch", "loss", "lr", "seconds")  # history columns the loop adds to the metrics


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        config: The run's configuration.
        model: The trained model (in eval mode).
        history: One dict per finished epoch: ``epoch, loss, lr``, the task's test metrics
            (``top1, top5, nll, ece`` as fractions for image classification), ``seconds``.
        metrics: The final test metrics (the last history row's).
        completed: False when stopped early (``epochs_stop``); resume to finish.
        seconds: Training wall time, summed over resumptions.
    """

    config: TrainConfig
    model: nn.Module
    history: list[dict[str, float]]
    metrics: dict[str, float]
    completed: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "history": self.history,
            "metrics": self.metrics,
            "completed": self.completed,
            "seconds": self.seconds,
        }


class TrainingInterrupted(Exception):
    """Training stopped by Ctrl-C; ``checkpoint`` (if not None) resumes it exactly."""

    def __init__(self, checkpoint: Path | None, epoch: int, step: int) -> None:
        msg = f"interrupted at epoch {epoch + 1}, step {step}"
        if checkpoint is not None:
            msg += f"; checkpoint saved to {checkpoint}; continue with --resume"
        super().__init__(msg)
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step


# --------------------------------------------------------------------------- the recipe


def train(
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    data: Any = None,
    task: Task | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train a model with the optimiser, schedule and seed of ``config`` on ``task``.

    Args:
        config: The run.
        out_dir: Where ``checkpoint.pt`` (after every epoch) and ``result.json`` go; ``None``
            keeps everything in memory (no resume possible). Created at the first checkpoint.
        resume: Continue from ``out_dir/checkpoint.pt`` (its config must match ``config``).
        data: Prepared data of ``config.task`` (the registry's ``load_data``; loaded when
            ``None``): :class:`~labelsmooth.experiment.data.DatasetSplits` for images.
        task: The task (default: the registry's task of ``config.task`` on ``data``,
            :class:`~labelsmooth.experiment.tasks.ImageClassification` or
            :class:`~labelsmooth.experiment.tasks.LanguageModel`; under torchrun, rank 0 loads
            first).
        progress: tqdm bars (default: when stderr is a terminal and tqdm is installed).
        log: Where per-epoch lines go (``None``: silent).
        on_step: Called as ``on_step(epoch, step)`` after each optimiser step (testing hook).

    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this with the same arguments and
    ``config.batch_size`` is the global batch (see :mod:`labelsmooth.experiment.train.distributed`);
    ``progress`` and ``log`` apply to rank 0 only, and only rank 0 writes to ``out_dir``.

    Returns:
        The trained model, per-epoch history and final test metrics.

    Raises:
        TrainingInterrupted: On Ctrl-C, after saving a checkpoint (when ``out_dir`` is set).
        CheckpointError: If ``resume`` and the checkpoint is missing, corrupted or differs.
        ValueError: If the task does not take ``config``'s model, dataset or options
            (:func:`labelsmooth.experiment.tasks.resolve`); under torchrun, if the world size
            does not divide ``config.batch_size``.
    """
    if task is not None and data is not None:
        raise ValueError("pass either task or data (the data of the default task), not both")
    if task is None:  # a task given by the caller checks its own config
        config = resolve(config)
    processes = processes_from_env(config.batch_size)  # SingleProcess unless torchrun, W > 1
    if not processes.is_writer:
        progress, log = False, None  # rank 0 alone logs and draws progress bars
    try:
        recipe = Recipe(
            config, out_dir, progress=progress, log=log, on_step=on_step, processes=processes
        )
        saved = recipe.load_resume_state() if resume else None  # before any data is loaded
        task = task or processes.rank0_first(lambda: _default_task(config, data, log))
        return _run_recipe(recipe, task, saved)
    finally:
        processes.close()  # also on errors


def _default_task(config: TrainConfig, data: Any, log: Callable[[str], None] | None) -> Task:
    """The registry's task of ``config.task`` on ``data`` (loaded when None)."""
    spec = get_task(config.task)
    return spec.make_task(config, spec.load_data(config, log=log) if data is None else data)


def _run_recipe(recipe: Recipe, task: Task, saved: dict[str, Any] | None) -> TrainResult:
    """setup → per epoch: train epoch → evaluate → checkpoint → cleanup."""
    with _deterministic(recipe.config.num_threads):
        recipe.setup(task, saved)
        with _sigint_flag() as stop:
            for epoch in range(recipe.start_epoch, recipe.stop_epoch):
                recipe.train_epoch(epoch, stop)
                recipe.evaluate(epoch)
                recipe.checkpoint(epoch + 1, 0)
                if recipe.stop_requested(stop) and epoch + 1 < recipe.stop_epoch:
                    raise TrainingInterrupted(recipe.checkpoint_path, epoch + 1, 0)
    return recipe.cleanup()


class Recipe:
    """The state of one training run and its stages (used by :func:`train`).

    Args:
        config: The run.
        out_dir: Checkpoint and result folder, or None.
        progress: tqdm bars (None: when stderr is a terminal).
        log: Where messages go (None: silent).
        on_step: Hook called after each optimiser step.
        processes: The data-parallel hooks under torchrun, or the single-process stand-in.
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | os.PathLike[str] | None,
        *,
        progress: bool | None,
        log: Callable[[str], None] | None,
        on_step: Callable[[int, int], None] | None,
        processes: DataParallel | SingleProcess | None = None,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME if self.out_dir else None
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.say: Callable[[str], None] = log or (lambda _msg: None)
        self.on_step = on_step
        self.stop_epoch = min(config.epochs, config.epochs_stop or config.epochs)
        # The loop's position and running totals (replaced by a checkpoint's on resume).
        self.history: list[dict[str, float]] = []
        self.start_epoch, self.start_step = 0, 0
        self.resume_generator: torch.Tensor | None = None
        self.loss_sum, self.loss_count = 0.0, 0
        self.seconds_before, self.t0 = 0.0, time.perf_counter()
        self.processes = processes if processes is not None else SingleProcess()

    def stop_requested(self, stop: _StopFlag) -> bool:
        """Ctrl-C pressed (data-parallel: on any rank; every rank then stops at this point)."""
        stop.requested = self.processes.any(stop.requested)
        return stop.requested

    def load_resume_state(self) -> dict[str, Any]:
        """The verified checkpoint of this run (:class:`CheckpointError` if none or another)."""
        if self.checkpoint_path is None:
            raise CheckpointError("resume needs an output directory holding checkpoint.pt")
        state = load_checkpoint(self.checkpoint_path)
        diff = config_differences(state["config"], self.config.to_dict())
        if diff:
            raise CheckpointError(
                f"checkpoint {self.checkpoint_path} belongs to a different run "
                f"({'; '.join(diff)}); use the same options or another --out directory"
            )
        return state

    # ----------------------------------------------------------------------- setup

    def setup(self, task: Task, saved: dict[str, Any] | None) -> None:
        """Seed, build the model, SGD (Nesterov momentum, weight decay) and the per-step
        schedule (linear warm-up, cosine to 0); then restore ``saved`` if resuming."""
        c = self.config
        self.task = task
        self.steps_per_epoch = task.num_batches()
        total = self.steps_per_epoch * c.epochs
        # before seeding: a peek at the last batch of epoch 1, refused now if ranks cannot share it
        self.processes.check_batches(task, c.seed)
        warmup = int(round(c.warmup_epochs * self.steps_per_epoch))
        torch.manual_seed(c.seed)
        random.seed(c.seed)
        np.random.seed(c.seed % 2**32)  # noqa: NPY002  (global state, saved in checkpoints)
        self.model = self.processes.prepare_model(
            task.build_model()
        )  # data-parallel: global batch norm
        # a loss with state (online label smoothing's statistics), kept in checkpoints
        build_loss = getattr(task, "build_loss", None)
        self.criterion: nn.Module | None = build_loss() if build_loss is not None else None
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=c.lr,
            momentum=c.momentum,
            nesterov=c.momentum > 0,
            weight_decay=c.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _lr_factor(s, total, warmup)
        )
        if saved is not None:
            self._restore(saved)
        # What the task's loss runs: the model, or DistributedDataParallel(model) (which
        # averages gradients over ranks); checkpoints and evaluation use the model itself.
        self.train_model = self.processes.wrap(self.model)
        self.t0 = time.perf_counter()

    def _restore(self, saved: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            set_rng_state(saved["rng"])
            if self.criterion is not None:  # data-parallel: rank 0 holds the running sums
                restore_state(self.criterion, saved["criterion"], self.processes.rank)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"checkpoint {self.checkpoint_path} does not fit this run's model or "
                f"optimiser ({first})"
            ) from e
        self.history = list(saved["history"])
        self.start_epoch, self.start_step = saved["epoch"], saved["step"]
        self.resume_generator = saved["generator"]
        self.loss_sum, self.loss_count = saved["loss_sum"], saved["loss_count"]
        self.seconds_before = saved["seconds"]
        self.say(
            f"resumed from {self.checkpoint_path} at epoch {self.start_epoch + 1}, "
            f"step {self.start_step}"
        )

    # ----------------------------------------------------------------------- train epoch

    def train_epoch(self, epoch: int, stop: _StopFlag) -> None:
        """One pass over the task's batches; on Ctrl-C, checkpoint mid-epoch and raise
        :class:`TrainingInterrupted`."""
        first = self.start_step if epoch == self.start_epoch else 0
        gen = epoch_generator(self.config.seed, epoch)  # order and augmentation: f(seed, epoch)
        batches = self.task.train_batches(gen, first, self.resume_generator if first else None)
        if first == 0:
            self.loss_sum, self.loss_count = 0.0, 0
        self.model.train()
        self.t_epoch = time.perf_counter()
        desc = f"epoch {epoch + 1}/{self.config.epochs}"
        bar = _progress(self.steps_per_epoch, desc, first) if self.progress else None
        try:
            for step, batch in enumerate(batches, start=first):
                self._step(batch, stop)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.loss_sum / self.loss_count:.4f}")
                if self.on_step is not None:
                    self.on_step(epoch, step)
                if stop.requested and step + 1 < self.steps_per_epoch:
                    self.checkpoint(epoch, step + 1, gen)
                    raise TrainingInterrupted(self.checkpoint_path, epoch, step + 1)
        finally:
            if bar is not None:
                bar.close()
        next_epoch = getattr(self.criterion, "next_epoch", None)
        if next_epoch is not None:  # the epoch's statistics become the next epoch's targets
            next_epoch()

    def _step(self, batch: Any, stop: _StopFlag) -> None:
        # this rank's slice; data-parallel: loss scaled so that DDP's average is the global
        # mean's gradient (one process: the batch and the loss as they are)
        loss, n = self.task.loss(self.train_model, self.processes.shard(self.task, batch))
        loss, loss_sum, count, stop.requested = self.processes.reduce_step(loss, n, stop.requested)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.loss_sum += loss_sum
        self.loss_count += count

    # ----------------------------------------------------------------------- evaluate

    def evaluate(self, epoch: int) -> None:
        """Test metrics after ``epoch``: one history row and one log line."""
        metrics = self._metrics()
        row = {
            "epoch": epoch + 1,
            "loss": self.loss_sum / max(1, self.loss_count),
            "lr": self.optimizer.param_groups[0]["lr"],
            **metrics,
            "seconds": time.perf_counter() - self.t_epoch,
        }
        self.history.append(row)
        self.say(
            f"epoch {epoch + 1:3d}/{self.config.epochs}  training loss {row['loss']:.4f}  "
            f"{self.task.describe(metrics)}  ({row['seconds']:.1f} s)"
        )

    def _metrics(self) -> dict[str, float]:
        return self.processes.evaluate(self.task, self.model)  # the same on every rank

    # ----------------------------------------------------------------------- checkpoint

    def checkpoint(self, epoch: int, step: int, gen: torch.Generator | None = None) -> None:
        """Save the run at (``epoch``, next ``step``) when there is an output folder (rank 0)."""
        if self.checkpoint_path is None:
            return
        loss = None  # every rank: a stateful loss's running sums, added over the ranks
        if self.criterion is not None:
            loss = state_to_save(self.criterion, self.processes.world_size)
        if not self.processes.is_writer:
            return
        state = {
            "config": self.config.to_dict(),
            "epoch": epoch,  # epoch in progress (== epochs when finished)
            "step": step,  # next step of that epoch
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "generator": gen.get_state() if gen is not None else None,
            "history": self.history,
            "loss_sum": float(self.loss_sum),
            "loss_count": int(self.loss_count),
            "seconds": self.seconds_before + (time.perf_counter() - self.t0),
        }
        if loss is not None:  # only then: a plain run's checkpoint is as before
            state["criterion"] = loss
        save_checkpoint(self.checkpoint_path, state)

    # ----------------------------------------------------------------------- cleanup

    def cleanup(self) -> TrainResult:
        """Model to eval mode; the result (written to ``result.json`` with an output folder)."""
        self.model.eval()
        seconds = self.seconds_before + (time.perf_counter() - self.t0)
        if self.history:
            final = {k: v for k, v in self.history[-1].items() if k not in _LOOP_KEYS}
        else:  # resumed from a checkpoint before its first epoch ended, and stopped at once
            final = self._metrics()
        self.model = self.processes.unwrap(self.model)  # data-parallel: plain batch norm again
        completed = len(self.history) >= self.config.epochs
        result = TrainResult(self.config, self.model, self.history, final, completed, seconds)
        if self.out_dir is not None and self.processes.is_writer:
            write_json(self.out_dir / RESULT_NAME, result.to_json())
        return result


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from ``1/warmup`` to 1 over ``warmup`` steps, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# --------------------------------------------------------------------------- process settings


class _StopFlag:
    """First Ctrl-C sets ``requested`` (training stops at the next step boundary and saves);
    a second one raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        self.requested = False

    def handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\ninterrupt received: saving a checkpoint after this step (Ctrl-C again to abort)",
            file=sys.stderr,
            flush=True,
        )


@contextmanager
def _sigint_flag() -> Iterator[_StopFlag]:
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = signal.signal(signal.SIGINT, flag.handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


@contextmanager
def _deterministic(num_threads: int) -> Iterator[None]:
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


def _progress(total: int, desc: str, done: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, desc=desc, leave=False, dynamic_ncols=True)
