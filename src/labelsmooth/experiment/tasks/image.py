"""The image-classification task (``task="image"``): a small ResNet or MLP on Fashion-MNIST,
MNIST or your IDX/NPZ images, label-smoothed cross-entropy, calibration metrics.

What is learned, read top to bottom: the data (:func:`prepare_data`), the models
(:func:`build_model`), one run (:class:`ImageClassification`: batches, loss, test metrics), and
the declaration that registers it (:data:`SPEC`: models, regimes, report columns). The
regimes are the experiments' two presets: ``"fitted"`` (an MLP fitted to its training subset,
an overconfident baseline) and ``"short"`` (a 5-epoch ResNet, already calibrated). What a
finished run records and the plots live in :mod:`labelsmooth.experiment.tasks.image_report`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

import labelsmooth
from labelsmooth.experiment.config import TrainConfig
from labelsmooth.experiment.data import (
    BUILTIN_DATASETS,
    DatasetSplits,
    ImageDataset,
    iterate_batches,
    load_dataset,
    subset,
    with_val,
)
from labelsmooth.experiment.models import mlp, resnet
from labelsmooth.experiment.tasks import image_metrics
from labelsmooth.experiment.tasks.image_metrics import evaluate
from labelsmooth.experiment.tasks.registry import (
    Grid,
    LoadedTask,
    ModelSpec,
    TaskSpec,
    register_task,
)

__all__ = [
    "ImageClassification",
    "prepare_data",
    "build_model",
    "SHORT_TRAIN",
    "FITTED_TRAIN",
    "REGIMES",
    "accepts_dataset",
    "MODEL_SPECS",
    "SPEC",
]


# --------------------------------------------------------------------------- image classification


def prepare_data(
    config: TrainConfig, *, log: Callable[[str], None] | None = print
) -> DatasetSplits:
    """Load the dataset, hold out the validation split, then subset the training split (and
    the test split when ``config.test_size`` is set, for quick runs).

    Both choices depend only on ``config.data_seed``, so every run of a comparison sees the
    same examples.
    """
    splits = load_dataset(config.dataset, config.data_dir, hflip=config.hflip, log=log)
    if config.val_size > 0:
        splits = with_val(splits, config.val_size, config.data_seed)
    return dataclasses.replace(
        splits,
        train=subset(splits.train, config.train_size, config.data_seed),
        test=subset(splits.test, config.test_size, config.data_seed),
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
    raise ValueError(f"model={config.model!r} does not fit task='image' (available: resnet, mlp)")


@dataclass
class ImageClassification(LoadedTask[DatasetSplits]):
    """Image classification with label-smoothed cross-entropy (:class:`Task`), or with online
    label smoothing (``config.loss == "ols"``: :class:`labelsmooth.OnlineLabelSmoothing`,
    built by :meth:`build_loss`, whose soft labels the loop updates after every epoch).
    ``ImageClassification.from_config(config)`` loads the data and builds it.

    Args:
        config: The run (model, batch size, smoothing, augmentation, ECE bins).
        data: The prepared splits (:func:`prepare_data`).
    """

    criterion: labelsmooth.OnlineLabelSmoothing | None = field(default=None, init=False, repr=False)

    load_data = staticmethod(prepare_data)

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

    def build_loss(self) -> labelsmooth.OnlineLabelSmoothing | None:
        """A fresh online-label-smoothing loss (uniform S) with ``loss="ols"``, else None (the
        stateless :func:`labelsmooth.cross_entropy`)."""
        self.criterion = None
        if self.config.loss == "ols":
            self.criterion = labelsmooth.OnlineLabelSmoothing(
                self.data.num_classes, self.config.ols_alpha, convention=self.config.convention
            )
        return self.criterion

    def loss(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        x, y = batch  # (B, C, H, W), (B,)
        logits = model(x)  # (B, classes)
        if self.config.loss == "ols":
            if self.criterion is None:
                self.build_loss()
            assert self.criterion is not None
            return self.criterion(logits, y), int(y.shape[0])  # accumulates the correct rows
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


# --------------------------------------------------------------------------- the declaration

#: The short regime: ResNet-14, width 8, 10k training images, 5 epochs, weight decay and
#: augmentation (a baseline that is already calibrated; smoothing makes it underconfident).
SHORT_TRAIN = TrainConfig()
#: The fitted regime: a fully connected 784-1200-1200-10 net (Hinton et al.'s distillation
#: teacher) on the same 10k images for 20 epochs, no weight decay, no augmentation, no
#: dropout: it fits its training subset (train top-1 about 99 %) and is overconfident.
FITTED_TRAIN = TrainConfig(
    model="mlp",
    width=1200,
    epochs=20,
    lr=0.05,
    weight_decay=0.0,
    warmup_epochs=0.0,
    augment_pad=0,
    hflip=False,
)
#: Regime name -> per-run settings; the first (fitted) is every command's default.
REGIMES: dict[str, TrainConfig] = {"fitted": FITTED_TRAIN, "short": SHORT_TRAIN}


def accepts_dataset(dataset: str) -> bool:
    """A built-in image dataset, ``idx:DIR`` or ``npz:FILE``."""
    kind, sep, path = dataset.partition(":")
    return dataset in BUILTIN_DATASETS or (bool(sep) and kind in ("idx", "npz") and bool(path))


def _fallbacks(dataset: str) -> list[str]:
    """Another built-in dataset when a built-in one cannot be fetched."""
    return [d for d in BUILTIN_DATASETS if d != dataset] if dataset in BUILTIN_DATASETS else []


def _load(config: TrainConfig, log: Callable[[str], None] | None = print) -> DatasetSplits:
    return prepare_data(config, log=log)


def _write_plots(*args: object, **kwargs: object) -> None:
    from labelsmooth.experiment.tasks.image_plots import write_plots  # matplotlib, when asked

    write_plots(*args, **kwargs)  # type: ignore[arg-type]


#: The image task's models: their fields and their own defaults (the MLP's width is the
#: fitted regime's, not the ResNet's 8).
MODEL_SPECS = (
    ModelSpec("resnet", ("depth", "width"), {"depth": 14, "width": 8}, image_metrics.model_title),
    ModelSpec("mlp", ("width",), {"width": 1200}, image_metrics.model_title),
)

#: The declaration of ``task="image"``.
SPEC = register_task(
    TaskSpec(
        name="image",
        help="image classification (a ResNet or an MLP)",
        models=MODEL_SPECS,
        datasets=(*BUILTIN_DATASETS, "idx:DIR", "npz:FILE"),
        accepts=accepts_dataset,
        regimes=REGIMES,
        load_data=_load,
        make_task=lambda config, data: ImageClassification(config, data),
        summarize_run=image_metrics.summarize_run,
        metrics=image_metrics.METRICS,
        columns=image_metrics.COLUMNS,
        table_header=image_metrics.table_header,
        grid=Grid("fashion-mnist", (0.0, 0.05, 0.1), ("uniform",), (0, 1, 2)),
        losses=("ce", "ols"),
        fallbacks=_fallbacks,
        data_fields=("data_dir", "hflip", "val_size", "data_seed", "train_size", "test_size"),
        write_plots=_write_plots,
        display_name=image_metrics.display_name,
        run_line=image_metrics.run_line,
        regimes_help="fitted (an MLP 1200-1200 trained 20 epochs without weight decay or "
        "augmentation, fitting its 10k training images: an overconfident baseline) or short "
        "(ResNet-14 (w8), 5 epochs: an already calibrated baseline)",
    )
)
