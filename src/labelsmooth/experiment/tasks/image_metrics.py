"""What an image run measures and records: test metrics of a model on a split, the record a
comparison keeps of a finished run (temperature fitted on the validation split, metrics before
and after it, training-subset fit, cluster tightness, arrays for the plots), and the
comparison table's metrics, columns and header (declared to the registry by
:mod:`labelsmooth.experiment.tasks.image`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labelsmooth.experiment.config import TrainConfig
from labelsmooth.experiment.data import DISPLAY_NAMES, DatasetSplits, ImageDataset, iterate_batches
from labelsmooth.experiment.files import atomic_write
from labelsmooth.experiment.report import count
from labelsmooth.experiment.tasks.headers import make_table_header
from labelsmooth.experiment.tasks.registry import Column, Metric

__all__ = [
    "predict",
    "evaluate",
    "calibrate",
    "train_metrics",
    "summarize_run",
    "METRICS",
    "COLUMNS",
    "display_name",
    "model_title",
    "run_line",
    "table_header",
    "projection_classes",
]


def model_title(config: Mapping[str, Any]) -> str:
    """The table's name of a config's model: ``"MLP 1200-1200"`` or ``"ResNet-14 (w8)"``."""
    if config.get("model") == "mlp":
        return f"MLP {config['width']}-{config['width']}"
    return f"ResNet-{config['depth']} (w{config['width']})"


def run_line(record: Mapping[str, Any]) -> str:
    """One log line for a finished run: test top-1, NLL, ECE, T and ECE after T."""
    m, a = record["metrics"], record["metrics_after_temperature"]
    return (
        f"[{record['name']}] test top-1 {100 * m['top1']:.2f}%  NLL {m['nll']:.4f}  "
        f"ECE {100 * m['ece']:.2f}%  T {record['temperature']:.3f}  "
        f"ECE after T {100 * a['ece']:.2f}%  ({record['seconds']:.0f} s)"
    )


def display_name(dataset: str) -> str:
    """``"Fashion-MNIST"`` for ``"fashion-mnist"``; other specifications as they are."""
    return DISPLAY_NAMES.get(dataset, dataset)


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


# --------------------------------------------------------------------------- a run's record


def summarize_run(task: Any, result: Any, arrays_path: Path | None) -> dict[str, Any]:
    """What a finished image run adds to its comparison record (``task`` is its
    :class:`~labelsmooth.experiment.tasks.image.ImageClassification`, ``result`` its
    :class:`~labelsmooth.experiment.train.TrainResult`); the test logits, features, labels and
    final-layer weight go to ``arrays_path`` when given."""
    model: nn.Module = result.model
    data: DatasetSplits = task.data
    config: TrainConfig = task.config
    test_logits, test_feats, temperature, before, after = calibrate(model, data, config)
    record = {
        "metrics": before,
        "temperature": temperature,
        "metrics_after_temperature": after,
        "train_metrics": train_metrics(model, data, config),
        "representation": _tightness(model, data, test_feats, _PROJECTION_CLASSES),
        "sizes": {
            "train": len(data.train),
            "val": len(data.val) if data.val is not None else 0,
            "test": len(data.test),
        },
    }
    if arrays_path is not None:  # what the plots need, for the first seed only
        _save_arrays(arrays_path, model, data, test_logits, test_feats)
    return record


#: The three classes of the penultimate-layer projection (Fashion-MNIST: T-shirt, pullover,
#: shirt, the three most confused).
_PROJECTION_CLASSES = (0, 2, 6)


def calibrate(
    model: torch.nn.Module, data: DatasetSplits, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, float, dict[str, float], dict[str, float]]:
    """Test logits and features; T fitted on the validation split; test metrics before and
    after T (the same when there is no validation split, T = 1)."""
    from labelsmooth.metrics import evaluate_calibration, fit_temperature

    kw: dict[str, Any] = {"mean": data.mean, "std": data.std, "batch_size": config.eval_batch_size}
    with torch.no_grad():
        test_logits, test_feats = predict(model, data.test, **kw)  # (N, C), (N, D)
        before = evaluate_calibration(test_logits, data.test.labels, n_bins=config.n_bins)
        temperature, after = 1.0, before
        if data.val is not None:
            val_logits, _ = predict(model, data.val, **kw)
            temperature = float(fit_temperature(val_logits, data.val.labels))
            after = evaluate_calibration(
                test_logits, data.test.labels, temperature=temperature, n_bins=config.n_bins
            )
    as_floats = lambda m: {k: float(v) for k, v in m.items()}  # noqa: E731
    return test_logits, test_feats, temperature, as_floats(before), as_floats(after)


def train_metrics(
    model: torch.nn.Module, data: DatasetSplits, config: TrainConfig
) -> dict[str, float]:
    """Top-1 and NLL on the training subset (no augmentation): how well the run fits it."""
    m = evaluate(
        model,
        data.train,
        mean=data.mean,
        std=data.std,
        num_classes=data.num_classes,
        n_bins=config.n_bins,
        batch_size=config.eval_batch_size,
    )
    return {"top1": float(m["top1"]), "nll": float(m["nll"])}


def _tightness(
    model: torch.nn.Module,
    data: DatasetSplits,
    test_feats: torch.Tensor,
    classes: tuple[int, int, int],
) -> dict[str, float]:
    """:func:`~labelsmooth.metrics.cluster_tightness` of the test split's penultimate
    activations: all classes in the full space, and three classes in their template plane."""
    from labelsmooth.metrics import cluster_tightness

    labels = data.test.labels
    out = {"tightness": cluster_tightness(test_feats, labels)}
    cls = projection_classes(classes, data.num_classes)
    try:
        out["tightness_projection"] = cluster_tightness(
            test_feats, labels, weight=_fc(model).weight.detach(), classes=cls
        )
    except ValueError:  # fewer than 3 classes, or templates on one line
        out["tightness_projection"] = math.nan
    return out


def projection_classes(classes: tuple[int, int, int], num_classes: int) -> list[int]:
    """``classes`` if they all exist, else the first three classes."""
    cls = [c for c in classes if c < num_classes]
    return cls if len(cls) == 3 else list(range(min(3, num_classes)))


def _fc(model: torch.nn.Module) -> torch.nn.Linear:
    fc = model.fc
    assert isinstance(fc, torch.nn.Linear)
    return fc


def _save_arrays(
    path: Path,
    model: torch.nn.Module,
    data: DatasetSplits,
    test_logits: torch.Tensor,
    test_feats: torch.Tensor,
) -> None:
    fc = _fc(model)
    buf = io.BytesIO()
    np.savez(
        buf,
        test_logits=test_logits.numpy(),
        test_features=test_feats.numpy(),
        test_labels=data.test.labels.numpy(),
        fc_weight=fc.weight.detach().numpy(),
    )
    atomic_write(path, buf.getvalue())


# --------------------------------------------------------------------------- the report

#: Summary metric -> (record getter, scale to the shown unit, plot axis label).
METRICS: dict[str, Metric] = {
    "top1": Metric(lambda r: r["metrics"]["top1"], 100.0, "test top-1 accuracy (%)"),
    "top5": Metric(lambda r: r["metrics"].get("top5", math.nan), 100.0, "test top-5 accuracy (%)"),
    "nll": Metric(lambda r: r["metrics"]["nll"], 1.0, "test NLL (nats)"),
    "ece": Metric(lambda r: r["metrics"]["ece"], 100.0, "test ECE (%)"),
    "ece_T": Metric(lambda r: r["metrics_after_temperature"]["ece"], 100.0, "test ECE after T (%)"),
    "nll_T": Metric(
        lambda r: r["metrics_after_temperature"]["nll"], 1.0, "test NLL after T (nats)"
    ),
    "T": Metric(lambda r: r["temperature"], 1.0, "fitted temperature T"),
    "train_top1": Metric(lambda r: _get(r, "train_metrics", "top1"), 100.0, "train top-1 (%)"),
    "train_nll": Metric(lambda r: _get(r, "train_metrics", "nll"), 1.0, "train NLL (nats)"),
    "tightness": Metric(
        lambda r: _get(r, "representation", "tightness"),
        1.0,
        "cluster tightness (spread / distance)",
    ),
    "tightness_proj": Metric(
        lambda r: _get(r, "representation", "tightness_projection"),
        1.0,
        "cluster tightness, 3-template projection",
    ),
    "seconds": Metric(lambda r: r["seconds"], 1.0, "training time (s)"),
}


def _get(record: Mapping[str, Any], part: str, key: str) -> float:
    """``record[part][key]``, NaN for records written before that part existed."""
    return float(record.get(part, {}).get(key, math.nan))


#: The table's metric columns (after Model, Epochs, dtype, Batch, LR, Setting).
COLUMNS = (
    Column("Top-1 (%)", "top1", 2),
    Column("Top-5 (%)", "top5", 2),
    Column("Δ Top-1", "top1", 2, delta=True),
    Column("NLL", "nll", 3),
    Column("ECE (%)", "ece", 2),
    Column("ECE after T (%)", "ece_T", 2),
    Column("T", "T", 2),
    Column("Train top-1 (%)", "train_top1", 2),
    Column("Train NLL", "train_nll", 3),
    Column("Tightness", "tightness", 3),
    Column("Tightness (proj.)", "tightness_proj", 3),
)


def _trained(cfg: Mapping[str, Any], sizes: Mapping[str, Any]) -> str:
    return (
        f"{count(cfg['epochs'], 'epoch')} on a {sizes['train']:,}-image stratified training "
        f"subset; temperature fitted on {sizes['val']:,} held-out images; test "
        f"{sizes['test']:,} images."
    )


#: The sentence above one table (``table_header(dataset, regime, records, model, seconds)``):
#: dataset and regime, model, budget, sizes, seeds, wall time.
table_header = make_table_header(
    lambda dataset, regime: f"{display_name(dataset)}, {regime} regime", _trained
)
