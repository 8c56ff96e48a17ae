"""Train and evaluate one image classifier with label smoothing; checkpoint and resume exactly.

A recipe in the torchtune sense: :func:`train` reads top to bottom (data, model, optimiser,
schedule, epoch loop, evaluation, checkpoint). The loss is the library's own
:func:`labelsmooth.cross_entropy` with ``label_smoothing=eps`` and ``convention=...``.

Determinism and resume:

* one seed fixes the initialisation; each epoch's example order and augmentation come from a
  generator seeded by ``(seed, epoch)`` (:func:`labelsmooth.data.epoch_generator`);
* ``torch.use_deterministic_algorithms(True)`` and a fixed thread count during training;
* a checkpoint (model, optimiser, scheduler, torch/numpy/python RNG states, the epoch's
  generator state and position, history) is written atomically (temp file + ``os.replace``)
  after every epoch and when Ctrl-C is pressed, so ``resume=True`` ends in the bitwise same
  weights and metrics as an uninterrupted run on the same machine and thread count.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import labelsmooth
from labelsmooth.data import (
    DatasetSplits,
    ImageDataset,
    epoch_generator,
    iterate_batches,
    load_dataset,
    subset,
    with_val,
)
from labelsmooth.models import resnet

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "CheckpointError",
    "prepare_data",
    "build_model",
    "train",
    "evaluate",
    "predict",
    "save_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.pt"
RESULT_NAME = "result.json"
# Fields that may differ between an interrupted run and its resumption.
_RESUME_FREE_FIELDS = {"epochs_stop", "data_dir"}


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in checkpoints and results).

    Attributes:
        dataset: ``"fashion-mnist"``, ``"mnist"``, ``"idx:DIR"`` or ``"npz:FILE"``.
        model: Model family (only ``"resnet"``).
        depth: ResNet depth ``6n + 2``.
        width: Channels of the first stage (``(w, 2w, 4w)``).
        label_smoothing: ``eps`` in ``[0, 1)``.
        convention: ``"uniform"``, ``"others"`` or ``"unnormalized"``.
        epochs: Number of epochs.
        batch_size: Training batch size.
        lr: Peak learning rate (after warm-up), cosine-annealed to 0 over all steps.
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 weight decay.
        warmup_epochs: Linear warm-up length in epochs (may be fractional).
        seed: Seed of initialisation, data order and augmentation.
        train_size: Stratified training subset size (``None``: all).
        val_size: Held-out validation examples (carved from the training set if the source
            has no validation split); 0 for none.
        data_seed: Seed of the subset and validation choice (the same for every run).
        augment_pad: Random-crop padding in pixels (0: no crop).
        hflip: Horizontal flips (``None``: the dataset's default: Fashion-MNIST yes, MNIST no).
        eval_batch_size: Batch size for evaluation.
        num_threads: Torch intra-op threads during training (fixed for determinism).
        n_bins: ECE bins.
        data_dir: Cache root for built-in datasets.
        epochs_stop: Stop (with a checkpoint) after this many epochs; ``None``: run all.
    """

    dataset: str = "fashion-mnist"
    model: str = "resnet"
    depth: int = 14
    width: int = 8
    label_smoothing: float = 0.0
    convention: str = "uniform"
    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    seed: int = 0
    train_size: int | None = 10_000
    val_size: int = 5_000
    data_seed: int = 0
    augment_pad: int = 2
    hflip: bool | None = None
    eval_batch_size: int = 1000
    num_threads: int = 2
    n_bins: int = 15
    data_dir: str | None = None
    epochs_stop: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        config: The run's configuration.
        model: The trained model (in eval mode).
        history: One dict per finished epoch: ``epoch, loss, lr, top1, top5, nll, ece, seconds``.
        metrics: Final test metrics (``top1, top5, nll, ece, ...``, fractions).
        completed: False when stopped early (``epochs_stop``); resume to finish.
        seconds: Training wall time, summed over resumptions.
    """

    config: TrainConfig
    model: nn.Module
    history: list[dict[str, float]]
    metrics: dict[str, float]
    completed: bool
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "history": self.history,
            "metrics": self.metrics,
            "completed": self.completed,
            "seconds": self.seconds,
            **self.extra,
        }


class TrainingInterrupted(Exception):
    """Training stopped by Ctrl-C; ``checkpoint`` (if not None) resumes it exactly."""

    def __init__(self, checkpoint: Path | None, epoch: int, step: int) -> None:
        where = f"epoch {epoch + 1}, step {step}"
        msg = f"interrupted at {where}"
        if checkpoint is not None:
            msg += f"; checkpoint saved to {checkpoint}; continue with --resume"
        super().__init__(msg)
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not match the requested run."""


# --------------------------------------------------------------------------- data and model


def prepare_data(
    config: TrainConfig, *, log: Callable[[str], None] | None = print
) -> DatasetSplits:
    """Load the dataset, hold out the validation split, then subset the training split.

    Both choices depend only on ``config.data_seed``, so every run of a comparison sees the
    same examples.
    """
    splits = load_dataset(config.dataset, config.data_dir, hflip=config.hflip, log=log)
    if config.val_size > 0:
        splits = with_val(splits, config.val_size, config.data_seed)
    return dataclasses.replace(
        splits, train=subset(splits.train, config.train_size, config.data_seed)
    )


def build_model(config: TrainConfig, in_channels: int, num_classes: int) -> nn.Module:
    """The model named by ``config.model`` (a CIFAR-style ResNet)."""
    if config.model != "resnet":
        raise ValueError(f"unknown model {config.model!r} (available: resnet)")
    return resnet(config.depth, config.width, in_channels=in_channels, num_classes=num_classes)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from ``1/warmup`` to 1 over ``warmup`` steps, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(
    model: nn.Module, data: ImageDataset, *, mean: float, std: float, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, C)`` and penultimate features ``(N, D)`` of a split (model in eval mode)."""
    was_training = model.training
    model.eval()
    logits, feats = [], []
    for x, _ in iterate_batches(data, batch_size, mean=mean, std=std):
        f = model.forward_features(x)  # type: ignore[operator]  # (B, D)
        feats.append(f)
        logits.append(model.fc(f))  # type: ignore[operator]  # (B, C)
    model.train(was_training)
    return torch.cat(logits), torch.cat(feats)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ImageDataset,
    *,
    mean: float,
    std: float,
    num_classes: int,
    n_bins: int = 15,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Top-1/top-5 accuracy, NLL, ECE, ... of ``model`` on a split (fractions, not %)."""
    from labelsmooth.metrics import CalibrationMeter

    was_training = model.training
    model.eval()
    meter = CalibrationMeter(num_classes, n_bins=n_bins)
    for x, y in iterate_batches(data, batch_size, mean=mean, std=std):
        meter.update(model(x), y)
    model.train(was_training)
    return {k: float(v) for k, v in meter.compute().items()}


# --------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a temp file in the same directory, then ``os.replace``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only`` loading).

    Raises:
        CheckpointError: If the file is missing, truncated or not a labelsmooth checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"no checkpoint at {p} to resume from; run without --resume")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise CheckpointError(
            f"checkpoint {p} is corrupted or truncated ({type(e).__name__}: {e}); "
            "delete it and start again without --resume"
        ) from e
    if not isinstance(state, dict) or state.get("format") != "labelsmooth-train-v1":
        raise CheckpointError(f"{p} is not a labelsmooth training checkpoint")
    return state


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- Ctrl-C


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


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------- the recipe


def train(
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    data: DatasetSplits | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` with label-smoothed cross-entropy.

    Args:
        config: The run.
        out_dir: Where ``checkpoint.pt`` (after every epoch) and ``result.json`` go; ``None``
            keeps everything in memory (no resume possible).
        resume: Continue from ``out_dir/checkpoint.pt`` (its config must match ``config``).
        data: Prepared splits (from :func:`prepare_data`); loaded when ``None``.
        progress: tqdm bars (default: when stderr is a terminal and tqdm is installed).
        log: Where per-epoch lines go (``None``: silent).
        on_step: Called as ``on_step(epoch, step)`` after each optimiser step (testing hook).

    Returns:
        The trained model, per-epoch history and final test metrics.

    Raises:
        TrainingInterrupted: On Ctrl-C, after saving a checkpoint (when ``out_dir`` is set).
        CheckpointError: If ``resume`` and the checkpoint is missing, corrupted or differs.
    """
    say = log or (lambda _msg: None)
    if progress is None:
        progress = sys.stderr.isatty()
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    state: dict[str, Any] | None = None
    if resume:
        if ckpt_path is None:
            raise CheckpointError("resume needs an output directory holding checkpoint.pt")
        state = load_checkpoint(ckpt_path)
        _check_same_run(state["config"], config.to_dict(), ckpt_path)

    # Data: the same examples for every run; normalisation from the training split.
    if data is None:
        data = prepare_data(config, log=log)
    hflip = data.hflip if config.hflip is None else config.hflip
    c, _, _ = data.image_shape
    n_train = len(data.train)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_epochs * steps_per_epoch))

    with _deterministic(config.num_threads):
        # Model, optimiser (SGD + Nesterov momentum + weight decay), per-step schedule.
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)  # noqa: NPY002  (global state, saved in checkpoints)
        model = build_model(config, c, data.num_classes)
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: _lr_factor(s, total_steps, warmup)
        )
        history: list[dict[str, float]] = []
        start_epoch, start_step, seconds = 0, 0, 0.0
        loss_sum, loss_count = 0.0, 0
        gen_state: torch.Tensor | None = None
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"])
            history = list(state["history"])
            start_epoch, start_step = int(state["epoch"]), int(state["step"])
            seconds = float(state["seconds"])
            loss_sum, loss_count = float(state["loss_sum"]), int(state["loss_count"])
            gen_state = state["generator"]
            say(f"resumed from {ckpt_path} at epoch {start_epoch + 1}, step {start_step}")

        def snapshot(epoch: int, step: int, gen: torch.Generator | None) -> dict[str, Any]:
            return {
                "format": "labelsmooth-train-v1",
                "config": config.to_dict(),
                "epoch": epoch,  # epoch in progress (== epochs when finished)
                "step": step,  # next step of that epoch
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "generator": gen.get_state() if gen is not None else None,
                "history": history,
                "loss_sum": loss_sum,
                "loss_count": loss_count,
                "seconds": seconds + (time.perf_counter() - t0),
            }

        stop_epoch = config.epochs if config.epochs_stop is None else config.epochs_stop
        stop_epoch = min(stop_epoch, config.epochs)
        t0 = time.perf_counter()
        with _sigint_flag() as flag:
            for epoch in range(start_epoch, stop_epoch):
                # Example order and augmentation: a function of (seed, epoch) only.
                gen = epoch_generator(config.seed, epoch)
                order = torch.randperm(n_train, generator=gen)
                if gen_state is not None and epoch == start_epoch and start_step > 0:
                    gen.set_state(gen_state)
                first = start_step if epoch == start_epoch else 0
                if first == 0:
                    loss_sum, loss_count = 0.0, 0
                model.train()
                bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", progress)
                if bar is not None:
                    bar.update(first)
                t_epoch = time.perf_counter()
                batches = iterate_batches(
                    data.train,
                    config.batch_size,
                    mean=data.mean,
                    std=data.std,
                    generator=gen,
                    order=order,
                    start=first,
                    augment_pad=config.augment_pad,
                    hflip=hflip,
                )
                for step, (x, y) in enumerate(batches, start=first):
                    logits = model(x)  # (B, C)
                    loss = labelsmooth.cross_entropy(
                        logits,
                        y,
                        label_smoothing=config.label_smoothing,
                        convention=config.convention,
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    loss_sum += float(loss.detach()) * y.shape[0]
                    loss_count += y.shape[0]
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss_sum / loss_count:.4f}")
                    if on_step is not None:
                        on_step(epoch, step)
                    if flag.requested and step + 1 < steps_per_epoch:
                        if bar is not None:
                            bar.close()
                        if ckpt_path is not None:
                            save_checkpoint(ckpt_path, snapshot(epoch, step + 1, gen))
                        raise TrainingInterrupted(ckpt_path, epoch, step + 1)
                if bar is not None:
                    bar.close()
                metrics = evaluate(
                    model,
                    data.test,
                    mean=data.mean,
                    std=data.std,
                    num_classes=data.num_classes,
                    n_bins=config.n_bins,
                    batch_size=config.eval_batch_size,
                )
                row = {
                    "epoch": epoch + 1,
                    "loss": loss_sum / max(1, loss_count),
                    "lr": optimizer.param_groups[0]["lr"],
                    "top1": metrics["top1"],
                    "top5": metrics.get("top5", float("nan")),
                    "nll": metrics["nll"],
                    "ece": metrics["ece"],
                    "seconds": time.perf_counter() - t_epoch,
                }
                history.append(row)
                say(
                    f"epoch {epoch + 1:3d}/{config.epochs}  loss {row['loss']:.4f}  "
                    f"top1 {100 * row['top1']:.2f}%  top5 {100 * row['top5']:.2f}%  "
                    f"nll {row['nll']:.4f}  ece {100 * row['ece']:.2f}%  "
                    f"({row['seconds']:.1f}s)"
                )
                if ckpt_path is not None:
                    save_checkpoint(ckpt_path, snapshot(epoch + 1, 0, None))
                if flag.requested and epoch + 1 < stop_epoch:
                    raise TrainingInterrupted(ckpt_path, epoch + 1, 0)
        seconds += time.perf_counter() - t0

    model.eval()
    completed = len(history) >= config.epochs
    if history:
        final = {k: history[-1][k] for k in ("top1", "top5", "nll", "ece")}
    else:  # epochs_stop=0 or nothing trained
        final = evaluate(
            model, data.test, mean=data.mean, std=data.std, num_classes=data.num_classes
        )
    result = TrainResult(config, model, history, final, completed, seconds)
    if out_dir is not None:
        _write_json(Path(out_dir) / RESULT_NAME, result.to_json())
    return result


def _check_same_run(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    diff = [
        f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}"
        for k in sorted(set(saved) | set(now))
        if k not in _RESUME_FREE_FIELDS and saved.get(k) != now.get(k)
    ]
    if diff:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run ({'; '.join(diff)}); "
            "use the same options or another --out directory"
        )
