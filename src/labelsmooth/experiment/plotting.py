"""Calibration and label-smoothing plots; matplotlib (the ``plot`` extra) is imported lazily.

Every function builds a :class:`matplotlib.figure.Figure` directly on an Agg canvas, never
through ``pyplot``, so nothing leaks into pyplot's global state and no display is needed. Each
returns the Figure and, given ``path``, also saves it as PNG (dpi 120).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from labelsmooth.metrics import calibration_error_from_bins, reliability_bins
from labelsmooth.metrics.projection import penultimate_projection

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "reliability_diagram",
    "metric_vs_epsilon",
    "penultimate_layer_plot",
    "training_curves",
    "ece_by_regime",
    "student_accuracy_vs_temperature",
]

_DPI = 120


def _new_figure(**kwargs: Any) -> Figure:
    """A Figure attached to an Agg canvas (no pyplot, no GUI backend)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "labelsmooth.experiment.plotting needs matplotlib: pip install 'labelsmooth[plot]'"
        ) from err
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _root_figure(ax: Axes) -> Figure:
    """The top-level Figure of ``ax`` (through SubFigures)."""
    from matplotlib.figure import Figure

    fig: Any = ax.get_figure()
    while fig is not None and not isinstance(fig, Figure):
        fig = fig.get_figure()
    if fig is None:
        raise ValueError("ax must belong to a matplotlib Figure, got axes without a figure")
    return fig


def _save(fig: Figure, path: str | os.PathLike[str] | None) -> None:
    if path is not None:
        fig.savefig(os.fspath(path), dpi=_DPI, format="png")


def reliability_diagram(
    probs: Tensor,
    target: Tensor,
    n_bins: int = 15,
    *,
    title: str | None = None,
    path: str | os.PathLike[str] | None = None,
    ignore_index: int | None = None,
) -> Figure:
    """Reliability diagram (accuracy per confidence bin) above a histogram of the confidences.

    Top panel: the accuracy of each equal-width bin ((m−1)/M, m/M] as a bar, the gap to the bin's
    mean confidence hatched in red, and the diagonal of perfect calibration. Bottom panel: the
    fraction of samples per bin, with the mean accuracy and mean confidence as vertical lines.
    The title reports the ECE (same value as
    :func:`~labelsmooth.metrics.expected_calibration_error`).

    Args:
        probs: (N, C) probabilities.
        target: (N,) integer class indices.
        n_bins: number of bins M ≥ 1.
        title: first line of the title (default "Reliability diagram"); the second line gives
            the ECE in percent and N.
        path: where to save a PNG, or None.
        ignore_index: rows whose target equals it are left out.

    Returns:
        The Figure (two stacked axes).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> probs = torch.softmax(torch.randn(100, 4, generator=g), dim=1)
        >>> fig = reliability_diagram(probs, torch.zeros(100, dtype=torch.long), n_bins=10)
        >>> len(fig.axes)
        2
    """
    sums = reliability_bins(probs, target, n_bins, ignore_index=ignore_index)  # (3, M)
    ece = float(calibration_error_from_bins(sums, "l1"))  # sums: count, Σ conf, Σ correct
    count, conf_sum, hit_sum = (s.tolist() for s in sums)
    total = max(sum(count), 1.0)
    acc = [h / n if n else 0.0 for h, n in zip(hit_sum, count)]
    conf = [s / n if n else 0.0 for s, n in zip(conf_sum, count)]
    width = 1.0 / n_bins
    left = [m * width for m in range(n_bins)]
    centers = [x + width / 2 for x in left]

    fig = _new_figure(figsize=(5.0, 6.0), layout="constrained")
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    nonempty = [n > 0 for n in count]
    ax.bar(
        [c for c, ok in zip(centers, nonempty) if ok],
        [a for a, ok in zip(acc, nonempty) if ok],
        width=width,
        color="tab:blue",
        edgecolor="black",
        linewidth=0.6,
        label="accuracy",
    )
    # gap between the bin's mean confidence and its accuracy
    gap_bottom = [min(a, c) for a, c in zip(acc, conf)]
    gap_height = [abs(c - a) for a, c in zip(acc, conf)]
    ax.bar(
        [c for c, ok in zip(centers, nonempty) if ok],
        [h for h, ok in zip(gap_height, nonempty) if ok],
        bottom=[b for b, ok in zip(gap_bottom, nonempty) if ok],
        width=width,
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        linewidth=0.6,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize="small")
    # Two lines: a caller's long title and the numbers never share one (no clipping).
    ax.set_title(f"{title or 'Reliability diagram'}\nECE = {100 * ece:.2f}%, N = {int(total)}")

    hist.bar(centers, [n / total for n in count], width=width, color="tab:gray", edgecolor="black")
    n_valid = sum(count)
    if n_valid:
        hist.axvline(sum(hit_sum) / n_valid, color="tab:blue", linestyle="--", label="accuracy")
        hist.axvline(
            sum(conf_sum) / n_valid, color="tab:red", linestyle=":", label="avg. confidence"
        )
        hist.legend(loc="upper left", fontsize="small")
    hist.set_xlabel("confidence (max probability)")
    hist.set_ylabel("fraction")
    _save(fig, path)
    return fig


def metric_vs_epsilon(
    epsilons: Sequence[float],
    values: Sequence[Sequence[float]],
    *,
    metric: str,
    label: str | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """A metric against the smoothing ε, mean ± standard deviation over seeds as error bars.

    Several series (e.g. two smoothing conventions) go on one plot by passing the ``ax`` of the
    first call's figure to the next calls::

        fig = metric_vs_epsilon(eps, uniform_runs, metric="ece", label="uniform")
        metric_vs_epsilon(eps, other_runs, metric="ece", label="others", ax=fig.axes[0])

    The error bar is the sample standard deviation (ddof = 1) over the seeds at that ε, 0 with a
    single seed; seeds may differ in number between ε values.

    Args:
        epsilons: the K smoothing values (x axis).
        values: K sequences; ``values[i]`` holds the per-seed values of the metric at
            ``epsilons[i]`` (at least one each).
        metric: the metric's name with its unit (``"ECE (%)"``), used as the y label.
        label: legend label of this series.
        title: the axes' title (default: the metric); a second line says what the error
            bars are ("mean ± std over seeds", or "one seed" when every ε has one value).
        ax: draw into these axes (must belong to a Figure) instead of a new figure.
        path: where to save a PNG of the (whole) figure, or None.

    Returns:
        The Figure holding the axes.

    Example:
        >>> fig = metric_vs_epsilon([0.0, 0.1], [[0.05, 0.07], [0.02, 0.03]], metric="ece")
        >>> fig.axes[0].get_ylabel()
        'ece'
    """
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"metric must be a non-empty string, got metric={metric!r}")
    eps = [float(e) for e in epsilons]
    if len(eps) == 0:
        raise ValueError("epsilons must not be empty, got epsilons=[]")
    if len(values) != len(eps):
        raise ValueError(
            f"values must have one sequence per epsilon (len(epsilons)={len(eps)}), got "
            f"len(values)={len(values)}"
        )
    means, stds = [], []
    for e, seeds in zip(eps, values):
        v = [float(x) for x in seeds]
        if not v:
            raise ValueError(f"values at epsilon={e} must hold at least one seed, got []")
        mean = sum(v) / len(v)
        var = sum((x - mean) ** 2 for x in v) / (len(v) - 1) if len(v) > 1 else 0.0
        means.append(mean)
        stds.append(math.sqrt(var))

    if ax is None:
        fig = _new_figure(figsize=(5.5, 4.0), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = _root_figure(ax)
    ax.errorbar(eps, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.set_xlabel("label smoothing ε")
    ax.set_ylabel(metric)
    one_seed = all(len(v) == 1 for v in values)
    spread = "one seed" if one_seed else "mean ± std over seeds"
    ax.set_title(f"{title or metric}\n{spread}")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # at least one labelled series
        ax.legend(fontsize="small")
    _save(fig, path)
    return fig


def penultimate_layer_plot(
    features: Tensor,
    labels: Tensor,
    weight: Tensor,
    classes: Sequence[int],
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Scatter of penultimate activations projected on the plane of three class templates.

    The projection is :func:`~labelsmooth.metrics.penultimate_projection` (Müller et al. 2019,
    Fig. 1): label smoothing makes each class a tight cluster equidistant from the others. The
    templates w_a, w_b, w_c are marked with black-edged stars in their class colour.

    Args:
        features: (N, D) penultimate-layer activations.
        labels: (N,) integer classes.
        weight: (C, D) final linear layer weight.
        classes: three distinct class indices.
        class_names: optional names of the three classes (legend), in the order of ``classes``.
        title: the title (default "Penultimate layer, classes a, b, c").
        path: where to save a PNG, or None.

    Returns:
        The Figure.

    Example:
        >>> import torch
        >>> x = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
        >>> fig = penultimate_layer_plot(x, torch.arange(60) % 4, torch.eye(4, 8), [0, 1, 2])
        >>> fig.axes[0].get_xlabel()
        'q1'
    """
    coords, lab = penultimate_projection(features, labels, weight, classes)
    cls = [int(c) for c in classes]
    if class_names is not None and len(class_names) != 3:
        raise ValueError(
            f"class_names must name the 3 classes, got class_names={list(class_names)!r}"
        )
    names = (
        [str(n) for n in class_names] if class_names is not None else [f"class {c}" for c in cls]
    )
    templates, _ = penultimate_projection(
        weight.detach()[cls], torch.tensor(cls), weight, cls
    )  # (3, 2): the template points themselves

    fig = _new_figure(figsize=(5.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    colors = ["tab:blue", "tab:orange", "tab:green"]
    for c, name, color, t in zip(cls, names, colors, templates.tolist()):
        pts = coords[lab == c]
        ax.scatter(
            pts[:, 0], pts[:, 1], s=8, alpha=0.6, color=color, label=f"{name} (n={len(pts)})"
        )
        ax.scatter([t[0]], [t[1]], s=180, marker="*", color=color, edgecolor="black", zorder=3)
    ax.set_xlabel("q1")
    ax.set_ylabel("q2")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize="small", markerscale=2)
    ax.set_title(title or f"Penultimate layer, classes {cls[0]}, {cls[1]}, {cls[2]}")
    _save(fig, path)
    return fig


#: History keys the trainer writes -> (panel title, scale, axis label with unit). Fractions
#: are shown in percent.
_CURVES = {
    "loss": ("training loss", 1.0, "smoothed cross-entropy (nats)"),
    "lr": ("learning rate", 1.0, "learning rate"),
    "top1": ("test top-1 accuracy", 100.0, "top-1 accuracy (%)"),
    "top5": ("test top-5 accuracy", 100.0, "top-5 accuracy (%)"),
    "nll": ("test NLL", 1.0, "negative log-likelihood (nats)"),
    "ece": ("test ECE", 100.0, "expected calibration error (%)"),
    "seconds": ("epoch time", 1.0, "seconds"),
}


def training_curves(
    histories: Mapping[
        str, Sequence[Mapping[str, float]] | Sequence[Sequence[Mapping[str, float]]]
    ],
    keys: Sequence[str] = ("loss", "top1", "ece"),
    *,
    title: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """One panel per metric key, one line per run label, against the epoch.

    A label maps to one run's history or to several (one per seed): several are drawn as their
    mean with a shaded ± 1 standard deviation (ddof = 1) band, so every seed counts. The keys
    the trainer writes get a panel title and an axis label with the unit, and fractions
    (``top1``, ``top5``, ``ece``) are shown in percent: "loss" (training loss, nats), "lr",
    "top1", "top5", "nll" (nats), "ece", "seconds"; other keys are drawn as they are, named
    by the key.

    Args:
        histories: run label -> a list of per-epoch dicts (each with "epoch" and metric keys;
            a key missing from an epoch's dict is skipped there), or a list of such lists.
        keys: the metric keys to plot, one panel each.
        title: the figure's title (say which seeds the lines show).
        path: where to save a PNG, or None.

    Returns:
        The Figure (``len(keys)`` axes side by side).

    Example:
        >>> h = {"ε=0": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]}
        >>> fig = training_curves(h, keys=("loss", "ece"))
        >>> fig.axes[1].get_ylabel()
        'expected calibration error (%)'
        >>> seeds = [[{"epoch": 1, "ece": 0.1}], [{"epoch": 1, "ece": 0.3}]]
        >>> fig = training_curves({"ε=0.1": seeds}, keys=("ece",))
        >>> [round(float(y), 6) for y in fig.axes[0].get_lines()[0].get_ydata()]
        [20.0]
    """
    runs = _check_histories(histories)
    keys = list(keys)
    if not keys or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"keys must be a non-empty sequence of strings, got keys={keys!r}")

    fig = _new_figure(
        figsize=(3.6 * len(keys) + 1.8, 3.4 + 0.3 * (title is not None)), layout="constrained"
    )
    from matplotlib.ticker import MaxNLocator  # after _new_figure: its message if missing

    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        name, scale, unit = _CURVES.get(key, (key, 1.0, key))
        for run, seeds in runs.items():
            epochs, mean, std = _mean_curve(seeds, key, scale)
            if not epochs:
                continue
            (line,) = ax.plot(epochs, mean, marker=".", label=run)
            if len(seeds) > 1:
                lo = [m - s for m, s in zip(mean, std)]
                hi = [m + s for m, s in zip(mean, std)]
                ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(unit)
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
    # One legend for all panels (every panel draws the runs in the same colours).
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize="small")
    if title is not None:
        fig.suptitle(title)
    _save(fig, path)
    return fig


def _check_histories(
    histories: Mapping[str, Any],
) -> dict[str, list[Sequence[Mapping[str, float]]]]:
    """Every label as a list of histories (one per seed), each epoch row with an "epoch"."""
    if not histories:
        raise ValueError("histories must map at least one run label to its epochs, got {}")
    runs: dict[str, list[Sequence[Mapping[str, float]]]] = {}
    for run, value in histories.items():
        several = len(value) > 0 and not isinstance(value[0], Mapping)
        runs[run] = list(value) if several else [value]
        for s, epochs in enumerate(runs[run]):
            for i, row in enumerate(epochs):
                where = f"histories[{run!r}]" + (f"[{s}]" if several else "") + f"[{i}]"
                if not isinstance(row, Mapping) or "epoch" not in row:
                    raise ValueError(f"{where} must be a dict with an 'epoch' key, got {row!r}")
    return runs


def _mean_curve(
    seeds: Sequence[Sequence[Mapping[str, float]]], key: str, scale: float
) -> tuple[list[float], list[float], list[float]]:
    """Per epoch: the mean and sample std (0 for one value) of ``scale * row[key]``."""
    by_epoch: dict[float, list[float]] = {}
    for history in seeds:
        for row in history:
            if key in row:
                by_epoch.setdefault(float(row["epoch"]), []).append(scale * float(row[key]))
    epochs = sorted(by_epoch)
    mean = [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
    std = [
        math.sqrt(sum((v - m) ** 2 for v in by_epoch[e]) / (len(by_epoch[e]) - 1))
        if len(by_epoch[e]) > 1
        else 0.0
        for e, m in zip(epochs, mean)
    ]
    return epochs, mean, std


def ece_by_regime(
    panels: Mapping[str, tuple[Sequence[float], Sequence[Sequence[float]], Sequence[float]]],
    *,
    title: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """ECE against ε, one panel per training regime, with temperature scaling as reference.

    Each panel is :func:`metric_vs_epsilon` (mean ± std over seeds) plus a dashed horizontal
    line at the mean ECE of the baseline after temperature scaling (the fix smoothing is
    compared with) and a shaded ± std band around it. Where the curve dips to the line,
    smoothing calibrates as well as temperature scaling.

    Args:
        panels: panel title -> ``(epsilons, per-seed ECE values at each ε (K sequences),
            per-seed ECE of the baseline after temperature scaling)``, all in percent.
        title: the figure's title.
        path: where to save a PNG, or None.

    Returns:
        The Figure (one Axes per panel, side by side).

    Example:
        >>> fig = ece_by_regime({"fitted": ([0.0, 0.1], [[7.0, 8.0], [2.0, 2.5]], [1.0, 1.2])})
        >>> len(fig.axes)
        1
    """
    if not panels:
        raise ValueError("panels must hold at least one regime, got none")
    fig = _new_figure(figsize=(5.0 * len(panels), 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, (eps, values, ts)) in zip(axes, panels.items()):
        metric_vs_epsilon(
            eps, values, metric="test ECE (%)", label="label smoothing", title=name, ax=ax
        )
        t = [float(v) for v in ts]
        if t:
            mean = sum(t) / len(t)
            std = math.sqrt(sum((v - mean) ** 2 for v in t) / (len(t) - 1)) if len(t) > 1 else 0.0
            ax.axhline(mean, color="black", linestyle="--", label="baseline + temperature scaling")
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.08)
            ax.legend(fontsize="small")
        ax.set_ylim(bottom=0)
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return fig


def student_accuracy_vs_temperature(
    series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    *,
    alone: tuple[float, float] | None = None,
    title: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Distillation: student accuracy against the temperature T, one line per teacher.

    Args:
        series: legend label (e.g. the teacher's ε and accuracy) -> ``(temperatures, mean
            accuracy, std)``, accuracies in percent.
        alone: ``(mean, std)`` of the student trained without a teacher, drawn as a dotted
            reference line, or None.
        title: the axes' title.
        path: where to save a PNG, or None.

    Returns:
        The Figure (T on a log-2 axis).

    Example:
        >>> fig = student_accuracy_vs_temperature({"eps 0": ([1, 2], [85.0, 86.0], [0.2, 0.1])})
        >>> fig.axes[0].get_xlabel()
        'distillation temperature T'
    """
    fig = _new_figure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for name, (ts, means, stds) in series.items():
        ax.errorbar(list(ts), list(means), yerr=list(stds), marker="o", capsize=3, label=name)
    if alone is not None:
        ax.axhline(alone[0], color="gray", linestyle=":", label=f"student alone ({alone[0]:.2f}%)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("distillation temperature T")
    ax.set_ylabel("student test top-1 (%)")
    ax.set_title(f"{title or 'Student accuracy against T'}\nmean ± std over seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, path)
    return fig
