"""The image task's plots of a comparison: training curves (every seed: mean line and ± std
band), each metric against ε, reliability diagrams and penultimate-layer projections (first
seed, named in the title; the two projections share their axis limits), and, when a comparison
has two regimes or more, ECE against ε for every regime side by side. Every title names the
regime.

Drawn by :mod:`labelsmooth.experiment.plotting` (matplotlib, imported only here and only when
plots are asked for).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from labelsmooth.experiment.report import count, prefix, setting_name, slug
from labelsmooth.experiment.tasks.image_metrics import (
    METRICS,
    display_name,
    model_title,
    projection_classes,
)

if TYPE_CHECKING:
    from labelsmooth.experiment.data import DatasetSplits

__all__ = ["write_plots", "redraw_from_table"]


def _regime(record: dict[str, Any]) -> str:
    return str(record.get("regime", "short"))


def write_plots(
    resolved: Sequence[tuple[Any, DatasetSplits]],
    records: Sequence[dict[str, Any]],
    plot_dir: Path,
    classes: tuple[int, int, int],
) -> None:
    """Every plot of every section into ``plot_dir`` (ImportError without matplotlib).

    ``resolved`` pairs each :class:`~labelsmooth.experiment.train.compare.Section` with its
    loaded data."""
    import matplotlib  # noqa: F401  (ImportError -> the caller skips the plots)

    plot_dir.mkdir(parents=True, exist_ok=True)
    for section, data in resolved:
        rs = [r for r in records if (_regime(r), r["dataset"]) == (section.regime, section.dataset)]
        if not rs:
            continue
        name = prefix(section.dataset, section.regime)
        _curves_plot(section.dataset, rs, plot_dir, name)
        _epsilon_plots(section.dataset, rs, plot_dir, name)
        first = [r for r in rs if r["seed"] == section.seeds[0]]
        _first_seed_plots(section.dataset, first, data, plot_dir, classes, name)
    for dataset in dict.fromkeys(s.dataset for s, _ in resolved):
        _regimes_plot(dataset, [r for r in records if r["dataset"] == dataset], plot_dir)


def redraw_from_table(results_csv: Path, plot_dir: Path) -> None:
    """Redraw, from a finished comparison's ``results.csv`` alone, the plots it holds: every
    metric against ε of each dataset and regime, and ECE against ε by regime. Nothing is
    trained or read besides the table.

    The other plots need what a run keeps in its own folder and the table does not: the
    per-epoch history (training curves) and the test arrays (reliability diagrams,
    penultimate-layer projections); they are left as they are. The distillation plot is
    redrawn from ``distill.json`` by
    :func:`labelsmooth.experiment.tasks.distillation.write_distill_plot`.
    """
    with open(results_csv, newline="") as f:
        records = [_record_from_row(row) for row in csv.DictReader(f)]
    plot_dir.mkdir(parents=True, exist_ok=True)
    for dataset, regime in dict.fromkeys((r["dataset"], _regime(r)) for r in records):
        rs = [r for r in records if (r["dataset"], _regime(r)) == (dataset, regime)]
        _epsilon_plots(dataset, rs, plot_dir, prefix(dataset, regime))
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        _regimes_plot(dataset, [r for r in records if r["dataset"] == dataset], plot_dir)


def _record_from_row(row: dict[str, str]) -> dict[str, Any]:
    """The parts of a run's record that a row of ``results.csv`` holds (see
    :data:`~labelsmooth.experiment.tasks.image_metrics.METRICS`)."""

    def num(key: str) -> float:
        return float(row[key]) if row.get(key) not in (None, "") else math.nan

    config: dict[str, Any] = {k: row[k] for k in ("model", "batch_size", "lr", "train_size")}
    config.update({k: int(row[k]) for k in ("depth", "width", "epochs")})
    return {
        "name": row["name"],
        "regime": row["regime"],
        "dataset": row["dataset"],
        "label_smoothing": float(row["label_smoothing"]),
        "convention": row["convention"],
        "seed": int(row["seed"]),
        "config": config,
        "metrics": {k: num(k) for k in ("top1", "top5", "nll", "ece")},
        "metrics_after_temperature": {"ece": num("ece_T"), "nll": num("nll_T")},
        "temperature": num("T"),
        "train_metrics": {"top1": num("train_top1"), "nll": num("train_nll")},
        "representation": {
            "tightness": num("tightness"),
            "tightness_projection": num("tightness_proj"),
        },
        "seconds": num("seconds"),
    }


def _regimes_plot(dataset: str, rs: Sequence[dict[str, Any]], plot_dir: Path) -> None:
    """ECE against ε (uniform convention) for every regime side by side, with the baseline's
    ECE after temperature scaling as the reference line; drawn only for two regimes or more
    (one regime's ECE against ε is its own ``*-ece-vs-eps.png``)."""
    from labelsmooth.experiment import plotting

    panels: dict[str, Any] = {}
    for regime in dict.fromkeys(_regime(r) for r in rs):
        sel = [r for r in rs if _regime(r) == regime and r["convention"] in ("uniform", "-")]
        eps = sorted({r["label_smoothing"] for r in sel})
        if len(eps) < 2:
            continue
        model = model_title(sel[0]["config"])
        epochs = count(int(sel[0]["config"]["epochs"]), "epoch")
        panels[f"{regime} regime: {model}, {epochs}"] = (
            eps,
            [[100 * r["metrics"]["ece"] for r in sel if r["label_smoothing"] == e] for e in eps],
            [100 * r["metrics_after_temperature"]["ece"] for r in sel if r["label_smoothing"] == 0],
        )
    if len(panels) >= 2:  # a comparison of regimes; one regime alone would be a lone panel
        plotting.ece_by_regime(
            panels,
            title=f"{display_name(dataset)}: test ECE against label smoothing ε",
            path=plot_dir / f"{slug(dataset)}-ece-vs-eps-by-regime.png",
        )


def _curves_plot(dataset: str, rs: Sequence[dict[str, Any]], plot_dir: Path, name: str) -> None:
    from labelsmooth.experiment import plotting

    runs: dict[str, list[list[dict[str, float]]]] = {}
    for r in rs:
        runs.setdefault(setting_name(r["label_smoothing"], r["convention"]), []).append(
            r["history"]
        )
    seeds = sorted({r["seed"] for r in rs})
    listed = ", ".join(map(str, seeds))
    who = f"mean ± std over {len(seeds)} seeds ({listed})" if len(seeds) > 1 else f"seed {listed}"
    plotting.training_curves(
        runs,
        keys=("loss", "top1", "nll", "ece"),
        title=f"{display_name(dataset)} ({_regime(rs[0])} regime): {who}",
        path=plot_dir / f"{name}-training-curves.png",
    )


def _epsilon_plots(dataset: str, rs: Sequence[dict[str, Any]], plot_dir: Path, name: str) -> None:
    """Metric vs ε, one series per convention (the baseline is each series' ε = 0 point)."""
    from labelsmooth.experiment import plotting

    conventions = list(dict.fromkeys(r["convention"] for r in rs if r["convention"] != "-"))
    for key, metric in METRICS.items():
        get, scale, label = metric.get, metric.scale, metric.label
        if key in ("seconds", "nll_T") or any(math.isnan(float(get(r))) for r in rs):
            continue
        fig = None
        for i, conv in enumerate(conventions or ["-"]):
            sel = [r for r in rs if r["convention"] in (conv, "-")]
            eps = sorted({r["label_smoothing"] for r in sel})
            vals = [[scale * float(get(r)) for r in sel if r["label_smoothing"] == e] for e in eps]
            last = i == len(conventions or ["-"]) - 1
            fig = plotting.metric_vs_epsilon(
                eps,
                vals,
                metric=label,
                label=conv if conv != "-" else None,
                title=f"{display_name(dataset)} ({_regime(rs[0])} regime): {label}",
                ax=fig.axes[0] if fig is not None else None,
                path=plot_dir / f"{name}-{key}-vs-eps.png" if last else None,
            )


def _first_seed_plots(
    dataset: str,
    first: Sequence[dict[str, Any]],
    data: DatasetSplits,
    plot_dir: Path,
    classes: tuple[int, int, int],
    stem: str,
) -> None:
    """Reliability diagrams and penultimate-layer projections: baseline vs one smoothed run.

    The projections of the runs drawn share one set of axis limits
    (:func:`~labelsmooth.experiment.plotting.penultimate_limits` of all of them), so the
    baseline's and the smoothed run's clusters can be compared side by side."""
    from labelsmooth.experiment import plotting

    smoothed = [r for r in first if r["label_smoothing"] > 0]
    if not smoothed:
        return
    pick = min(
        smoothed, key=lambda r: (abs(r["label_smoothing"] - 0.1), r["convention"] != "uniform")
    )
    cls = projection_classes(classes, data.num_classes)
    runs = [x for x in first if x["label_smoothing"] == 0] + [pick]
    arrays = {r["name"]: a for r in runs if (a := _run_arrays(plot_dir, r)) is not None}
    limits = (
        plotting.penultimate_limits([(f, y, w) for _, f, y, w in arrays.values()], cls)
        if arrays and len(cls) == 3
        else None
    )
    for r in runs:
        if r["name"] not in arrays:
            continue
        logits, feats, labels, weight = arrays[r["name"]]
        tag = "baseline" if r["label_smoothing"] == 0 else f"ls{r['label_smoothing']:g}"
        name = f"{setting_name(r['label_smoothing'], r['convention'])}, seed {r['seed']}"
        plotting.reliability_diagram(
            torch.softmax(logits.double(), dim=1),
            labels,
            n_bins=int(r["config"]["n_bins"]),
            title=f"{display_name(dataset)} ({_regime(r)} regime), {name}",
            path=plot_dir / f"{stem}-reliability-{tag}.png",
        )
        if limits is not None:
            plotting.penultimate_layer_plot(
                feats,
                labels,
                weight,
                cls,
                class_names=[data.class_names[c] for c in cls],
                title=f"{display_name(dataset)} ({_regime(r)} regime): penultimate layer\n{name}",
                path=plot_dir / f"{stem}-penultimate-{tag}.png",
                limits=limits,
            )


def _run_arrays(
    plot_dir: Path, record: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """A run's saved test logits, features, labels and final-layer weight (``runs/NAME.npz``
    beside the plot folder), or None where the run saved none."""
    path = plot_dir.parent / "runs" / f"{record['name']}.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        logits, feats, labels, weight = (
            torch.from_numpy(z[k])
            for k in ("test_logits", "test_features", "test_labels", "fc_weight")
        )
    return logits, feats, labels, weight
