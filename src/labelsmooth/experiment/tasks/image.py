"""Tasks: what is learned (data, model, loss, metrics), separate from how (the training loop).

:func:`labelsmooth.experiment.train.train` owns the optimiser, learning-rate schedule, random state,
checkpoints and Ctrl-C; it asks a :class:`Task` for everything that depends on the problem.
:class:`ImageClassification` is the task of the experiments (a small ResNet or MLP on
Fashion-MNIST, MNIST or your IDX/NPZ images, label-smoothed cross-entropy, calibration
metrics); :class:`Distillation` trains a student against a fixed teacher. A new task —
a language model, say — implements the same six methods; a data-parallel run wraps a task
(its shard of the batches, the model wrapped for gradient all-reduce, metrics all-reduced with
:meth:`~labelsmooth.metrics.CalibrationMeter.all_reduce`) without changing the loop.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

import labelsmooth
from labelsmooth.experiment.data import (
    DatasetSplits,
    ImageDataset,
    iterate_batches,
    load_dataset,
    subset,
    with_val,
)
from labelsmooth.experiment.models import mlp, resnet
from labelsmooth.experiment.train.config import TrainConfig

__all__ = [
    "Task",
    "ImageClassification",
    "Distillation",
    "prepare_data",
    "build_model",
    "predict",
    "evaluate",
]


class Task(Protocol):
    """What the training loop needs from a task."""

    def num_batches(self) -> int:
        """Optimiser steps per epoch."""
        ...

    def build_model(self) -> nn.Module:
        """A freshly initialised model (the loop seeds the global generators first)."""
        ...

    def train_batches(
        self, generator: torch.Generator, start: int, resume_state: torch.Tensor | None
    ) -> Iterator[Any]:
        """One epoch's training batches from batch ``start`` on.

        All of the epoch's randomness (order, augmentation) is drawn from ``generator``, which
        the loop seeds from ``(seed, epoch)``. When resuming mid-epoch, ``resume_state`` is the
        generator's state saved at that point: draw the epoch's order first, then restore it.
        """
        ...

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        """The batch's mean training loss (a scalar to backpropagate) and its example count."""
        ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Test metrics of ``model``, recorded in every epoch's history row.

        Data-parallel runs (:mod:`labelsmooth.experiment.train.distributed`) call
        ``evaluate(model, rank=r, world_size=w)`` when the method accepts those keywords: then
        evaluate only the r-th of w shards of the test data and sum the metric state over the
        ranks (:meth:`~labelsmooth.metrics.CalibrationMeter.all_reduce`) before computing, so
        every rank returns the metrics of the whole test set. Without them, every rank
        evaluates all of it. A batch that is not a tensor or a tuple, list or dict of tensors
        of one leading size needs a ``shard_batch(batch, rank, world_size)`` method too.
        """
        ...

    def describe(self, metrics: dict[str, float]) -> str:
        """The metrics as a short log text (names and units)."""
        ...


# --------------------------------------------------------------------------- image classification


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


def build_model(
    config: TrainConfig, in_channels: int, num_classes: int, image_size: tuple[int, int] = (28, 28)
) -> nn.Module:
    """The model named by ``config.model``: a CIFAR-style ResNet (``depth``, ``width``) or a
    fully connected net with two hidden layers of ``width`` units on the flattened
    ``in_channels × image_size`` image."""
    if config.model == "resnet":
        return resnet(config.depth, config.width, in_channels=in_channels, num_classes=num_classes)
    if config.model == "mlp":
        h, w = image_size
        return mlp(in_channels * h * w, (config.width, config.width), num_classes=num_classes)
    raise ValueError(f"unknown model {config.model!r} (available: resnet, mlp)")


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
    all_reduce: bool = False,
) -> dict[str, float]:
    """Top-1/top-5 accuracy, NLL, ECE, ... of ``model`` on a split (fractions, not %).

    With ``all_reduce=True`` the calibration state is summed over the ranks of the process
    group before computing: each rank passes its shard and gets the metrics of all shards.
    """
    from labelsmooth.metrics import CalibrationMeter

    was_training = model.training
    model.eval()
    meter = CalibrationMeter(num_classes, n_bins=n_bins)
    for x, y in iterate_batches(data, batch_size, mean=mean, std=std):
        meter.update(model(x), y)
    model.train(was_training)
    if all_reduce:
        meter.all_reduce()
    return {k: float(v) for k, v in meter.compute().items()}


@dataclass
class ImageClassification:
    """Image classification with label-smoothed cross-entropy (:class:`Task`).

    Args:
        config: The run (model, batch size, smoothing, augmentation, ECE bins).
        data: The prepared splits (:func:`prepare_data`).
    """

    config: TrainConfig
    data: DatasetSplits

    @classmethod
    def from_config(
        cls, config: TrainConfig, *, log: Callable[[str], None] | None = print
    ) -> ImageClassification:
        """Load ``config.dataset`` (:func:`prepare_data`) and build the task."""
        return cls(config, prepare_data(config, log=log))

    def num_batches(self) -> int:
        return math.ceil(len(self.data.train) / self.config.batch_size)

    def build_model(self) -> nn.Module:
        c, h, w = self.data.image_shape
        return build_model(self.config, c, self.data.num_classes, (h, w))

    def train_batches(
        self, generator: torch.Generator, start: int, resume_state: torch.Tensor | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.data.train), generator=generator)  # (N,)
        if resume_state is not None:
            generator.set_state(resume_state)
        hflip = self.data.hflip if self.config.hflip is None else self.config.hflip
        return iterate_batches(
            self.data.train,
            self.config.batch_size,
            mean=self.data.mean,
            std=self.data.std,
            generator=generator,
            order=order,
            start=start,
            augment_pad=self.config.augment_pad,
            hflip=hflip,
        )

    def loss(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        x, y = batch  # (B, C, H, W), (B,)
        logits = model(x)  # (B, classes)
        loss = labelsmooth.cross_entropy(
            logits,
            y,
            label_smoothing=self.config.label_smoothing,
            convention=self.config.convention,
        )
        assert isinstance(loss, torch.Tensor)  # one tensor without return_nll=True
        return loss, int(y.shape[0])

    def evaluate(self, model: nn.Module, *, rank: int = 0, world_size: int = 1) -> dict[str, float]:
        test = self.data.test  # data-parallel: rank's contiguous shard, state all-reduced
        if world_size > 1:
            part = torch.tensor_split(torch.arange(len(test)), world_size)[rank]
            test = ImageDataset(test.images[part], test.labels[part])
        m = evaluate(
            model,
            test,
            mean=self.data.mean,
            std=self.data.std,
            num_classes=self.data.num_classes,
            n_bins=self.config.n_bins,
            batch_size=self.config.eval_batch_size,
            all_reduce=world_size > 1,
        )
        return {
            "top1": m["top1"],
            "top5": m.get("top5", math.nan),  # fewer than 5 classes: no top-5
            "nll": m["nll"],
            "ece": m["ece"],
        }

    def describe(self, metrics: dict[str, float]) -> str:
        return (
            f"test top-1 {100 * metrics['top1']:.2f}%  top-5 {100 * metrics['top5']:.2f}%  "
            f"NLL {metrics['nll']:.4f}  ECE {100 * metrics['ece']:.2f}%"
        )


@dataclass
class Distillation:
    """Knowledge distillation of a fixed teacher into the model of ``image.config``
    (:class:`Task`).

    Batches, model, evaluation and log text are those of the image task; the loss is
    :func:`labelsmooth.distillation_loss` of the student's logits against the teacher's
    (computed on the same, possibly augmented, batch in eval mode, without gradients).

    Args:
        image: The student's image task (its config's ``label_smoothing`` is the hard term's ε).
        teacher: The trained teacher (kept in eval mode, never updated).
        temperature: Distillation temperature T > 0.
        alpha: Weight of the soft (teacher) term, in [0, 1].
    """

    image: ImageClassification
    teacher: nn.Module
    temperature: float
    alpha: float

    def __post_init__(self) -> None:
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def num_batches(self) -> int:
        return self.image.num_batches()

    def build_model(self) -> nn.Module:
        return self.image.build_model()

    def train_batches(
        self, generator: torch.Generator, start: int, resume_state: torch.Tensor | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.image.train_batches(generator, start, resume_state)

    def loss(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        x, y = batch  # (B, C, H, W), (B,)
        with torch.no_grad():
            teacher_logits = self.teacher(x)  # (B, classes)
        loss = labelsmooth.distillation_loss(
            model(x),
            teacher_logits,
            y,
            temperature=self.temperature,
            alpha=self.alpha,
            label_smoothing=self.image.config.label_smoothing,
        )
        return loss, int(y.shape[0])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return self.image.evaluate(model)

    def describe(self, metrics: dict[str, float]) -> str:
        return self.image.describe(metrics)
