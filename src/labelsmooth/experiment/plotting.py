"""Calibration and label-smoothing plots; matplotlib (the ``plot`` extra) is imported lazily.

Long file: one function per figure the experiment draws, sharing the layout helpers here.

Every function builds a :class:`matplotlib.figure.Figure` directly on an Agg canvas, never
through ``pyplot``, so nothing leaks into pyplot's global state and no display is needed. Each
returns the Figure and, given ``path``, also saves it as PNG (dpi 120).

Titles and axis labels are wrapped to the width they have, so no text is cut off at the edge
of the image whatever the caller's title; every mark and every shaded area has a legend entry.
"""

from __future__ import annotations

import math
import os
import textwrap
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
    "penultimate_limits",
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


def _wrap(text: str, width_in: float, fontsize: float = 12.0) -> str:
    """``text`` with each line wrapped to fit ``width_in`` inches at ``fontsize`` points.

    A character of the default sans-serif font is at most about 0.6 em wide on average, so a
    line holds ``width_in · 72 / (0.6 · fontsize)`` characters; lines already shorter are kept.
    """
    chars = max(12, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(
        textwrap.fill(line, chars, break_on_hyphens=False) if line else line
        for line in text.split("\n")
    )


def _fontsize(key: str) -> float:
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    return float(FontProperties(size=rcParams[key]).get_size_in_points())  # type: ignore[index]


def _title(ax: Axes, text: str, width_in: float) -> None:
    """Set ``ax``'s title, wrapped to ``width_in`` inches (the axes' share of the figure)."""
    ax.set_title(_wrap(text, width_in, _fontsize("axes.titlesize")))


def _labels(ax: Axes, x: str | None, y: str | None, width_in: float, height_in: float) -> None:
    """Axis labels, wrapped to the axes' width (x) and height (y) in inches."""
    size = _fontsize("axes.labelsize")
    if x is not None:
        ax.set_xlabel(_wrap(x, width_in, size))
    if y is not None:
        ax.set_ylabel(_wrap(y, height_in, size))


def _save(fig: Figure, path: str | os.PathLike[str] | None) -> None:
    if path is not None:
        fig.savefig(os.fspath(path), dpi=_DPI, format="png")


# long function: bars, gap shading, legend and the count panel of one figure
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
    mean confidence hatched in red where the bin is overconfident (confidence above accuracy)
    and in green where it is underconfident, and the diagonal of perfect calibration. Bottom
    panel: the fraction of samples per bin, with the mean accuracy and mean confidence as
    vertical lines. Every mark has a legend entry (a gap colour only when such a bin exists).
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
    # gap between the bin's mean confidence and its accuracy: red where the model is
    # overconfident (confidence above accuracy), green where it is underconfident
    for name, color, hatch, side in (
        ("gap: overconfident (confidence > accuracy)", "tab:red", "//", 1),
        ("gap: underconfident (accuracy > confidence)", "tab:green", "\\\\", -1),
    ):
        pick = [ok and (c - a) * side > 0 for ok, a, c in zip(nonempty, acc, conf)]
        if not any(pick):
            continue  # no such bin: no mark, no legend entry
        ax.bar(
            [x for x, p in zip(centers, pick) if p],
            [abs(c - a) for a, c, p in zip(acc, conf, pick) if p],
            bottom=[min(a, c) for a, c, p in zip(acc, conf, pick) if p],
            width=width,
            color=color,
            alpha=0.3,
            edgecolor=color,
            hatch=hatch,
            linewidth=0.6,
            label=name,
        )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize="small")
    # Two lines: a caller's long title and the numbers never share one, each wrapped.
    _title(ax, f"{title or 'Reliability diagram'}\nECE = {100 * ece:.2f}%, N = {int(total)}", 4.4)

    hist.bar(
        centers,
        [n / total for n in count],
        width=width,
        color="tab:gray",
        edgecolor="black",
        label="samples per bin",
    )
    n_valid = sum(count)
    if n_valid:
        hist.axvline(sum(hit_sum) / n_valid, color="tab:blue", linestyle="--", label="accuracy")
        hist.axvline(
            sum(conf_sum) / n_valid, color="tab:red", linestyle=":", label="avg. confidence"
        )
    hist.legend(loc="upper left", fontsize="x-small")
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
    hint: str | None = None,
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
        hint: how to read the axis, added to the y label in parentheses (e.g. "lower =
            tighter"); default: "lower = tighter" for a metric whose name mentions tightness
            (:func:`~labelsmooth.metrics.cluster_tightness`), none otherwise.

    Returns:
        The Figure holding the axes.

    Example:
        >>> fig = metric_vs_epsilon([0.0, 0.1], [[0.05, 0.07], [0.02, 0.03]], metric="ece")
        >>> fig.axes[0].get_ylabel()
        'ece'
        >>> fig = metric_vs_epsilon([0.0, 0.1], [[0.6], [0.5]], metric="cluster tightness")
        >>> fig.axes[0].get_ylabel()
        'cluster tightness\\n(lower = tighter)'
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

    if hint is None and "tightness" in metric.lower():
        hint = "lower = tighter"
    if ax is None:
        fig = _new_figure(figsize=(5.5, 4.0), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = _root_figure(ax)
    ax.errorbar(eps, means, yerr=stds, marker="o", capsize=3, label=label)
    # the axes' share of the figure: its columns side by side (ece_by_regime has several)
    fig_w, fig_h = fig.get_size_inches()
    spec = ax.get_subplotspec()
    cols = spec.get_gridspec().ncols if spec is not None else 1
    ylabel = metric if hint is None else f"{metric}\n({hint})"
    _labels(ax, "label smoothing ε", ylabel, 0.85 * fig_w / cols, 0.8 * fig_h)
    one_seed = all(len(v) == 1 for v in values)
    spread = "one seed" if one_seed else "mean ± std over seeds"
    _title(ax, f"{title or metric}\n{spread}", 0.85 * fig_w / cols)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # at least one labelled series
        ax.legend(fontsize="small")
    _save(fig, path)
    return fig


Limits = tuple[tuple[float, float], tuple[float, float]]


def penultimate_layer_plot(
    features: Tensor,
    labels: Tensor,
    weight: Tensor,
    classes: Sequence[int],
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | os.PathLike[str] | None = None,
    limits: Limits | None = None,
) -> Figure:
    """Scatter of penultimate activations projected on the plane of three class templates.

    The projection is :func:`~labelsmooth.metrics.penultimate_projection` (Müller et al. 2019,
    Fig. 1): label smoothing makes each class a tight cluster equidistant from the others. The
    templates w_a, w_b, w_c (the final layer's weight rows) are marked with black-edged stars
    in their class colour, with their own legend entry. The axes are the plane's orthonormal
    basis: q1 along w_b − w_a, q2 orthogonal to it in the plane, both in the units of the
    activations.

    Two plots meant to be compared side by side (a baseline and a smoothed run) should share
    ``limits``: :func:`penultimate_limits` computes limits that hold both.

    Args:
        features: (N, D) penultimate-layer activations.
        labels: (N,) integer classes.
        weight: (C, D) final linear layer weight.
        classes: three distinct class indices.
        class_names: optional names of the three classes (legend), in the order of ``classes``.
        title: the title (default "Penultimate layer, classes a, b, c").
        path: where to save a PNG, or None.
        limits: ``((x_min, x_max), (y_min, y_max))`` to fix the axes (equal scale on both), or
            None to fit this plot's points.

    Returns:
        The Figure.

    Example:
        >>> import torch
        >>> x = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
        >>> fig = penultimate_layer_plot(x, torch.arange(60) % 4, torch.eye(4, 8), [0, 1, 2])
        >>> fig.axes[0].get_xlabel()
        'q1: from the class 0 template towards class 1'
        >>> fig = penultimate_layer_plot(
        ...     x, torch.arange(60) % 4, torch.eye(4, 8), [0, 1, 2], limits=((-3, 3), (-2, 2))
        ... )
        >>> [float(v) for v in fig.axes[0].get_xlim() + fig.axes[0].get_ylim()]
        [-3.0, 3.0, -2.0, 2.0]
    """
    coords, lab = penultimate_projection(features, labels, weight, classes)
    cls = [int(c) for c in classes]
    if class_names is not None and len(class_names) != 3:
        raise ValueError(
            f"class_names must name the 3 classes, got class_names={list(class_names)!r}"
        )
    if limits is not None:
        limits = _check_limits(limits)
    names = (
        [str(n) for n in class_names] if class_names is not None else [f"class {c}" for c in cls]
    )
    templates = _templates(weight, cls)

    fig = _new_figure(figsize=(5.0, 5.4), layout="constrained")
    ax = fig.add_subplot()
    colors = ["tab:blue", "tab:orange", "tab:green"]
    for c, name, color, t in zip(cls, names, colors, templates.tolist()):
        pts = coords[lab == c]
        ax.scatter(
            pts[:, 0], pts[:, 1], s=8, alpha=0.6, color=color, label=f"{name} (n={len(pts)})"
        )
        ax.scatter([t[0]], [t[1]], s=180, marker="*", color=color, edgecolor="black", zorder=3)
    # one legend entry for the three stars (each in its class colour)
    ax.scatter(
        [], [], s=180, marker="*", color="white", edgecolor="black", label="class templates (★)"
    )
    _labels(
        ax,
        f"q1: from the {names[0]} template towards {names[1]}",
        f"q2: orthogonal to q1, towards {names[2]}",
        4.5,
        4.5,
    )
    if limits is not None:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        ax.set_aspect("equal", adjustable="box")
    else:
        ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize="small", markerscale=1.5)
    _title(ax, title or f"Penultimate layer, classes {cls[0]}, {cls[1]}, {cls[2]}", 4.5)
    _save(fig, path)
    return fig


def _templates(weight: Tensor, cls: Sequence[int]) -> Tensor:
    """(3, 2): the three template points in the plane's coordinates."""
    templates, _ = penultimate_projection(
        weight.detach()[list(cls)], torch.tensor(cls), weight, cls
    )
    return templates


def _check_limits(limits: Any) -> Limits:
    try:
        (x0, x1), (y0, y1) = limits
        box = ((float(x0), float(x1)), (float(y0), float(y1)))
    except (TypeError, ValueError):
        box = None
    if box is None or not all(math.isfinite(v) for pair in box for v in pair):
        raise ValueError(
            f"limits must be ((x_min, x_max), (y_min, y_max)) of finite numbers, got "
            f"limits={limits!r}"
        )
    if not (box[0][0] < box[0][1] and box[1][0] < box[1][1]):
        raise ValueError(f"limits must have min < max on both axes, got limits={limits!r}")
    return box


def penultimate_limits(
    runs: Sequence[tuple[Tensor, Tensor, Tensor]], classes: Sequence[int], margin: float = 0.05
) -> Limits:
    """Axis limits that hold every run's projected points and templates (for shared axes).

    Args:
        runs: ``(features, labels, weight)`` of each plot to compare, as passed to
            :func:`penultimate_layer_plot`.
        classes: the three classes, the same for every run.
        margin: extra room on each side, as a fraction of the larger span.

    Returns:
        ``((x_min, x_max), (y_min, y_max))`` with equal spans on both axes (the plots keep an
        equal scale), for :func:`penultimate_layer_plot`'s ``limits``.

    Example:
        >>> import torch
        >>> w = torch.eye(3, 4)  # templates (0, 0), (1.414, 0), (0.707, 1.225) in the plane
        >>> (x0, x1), (y0, y1) = penultimate_limits([(w, torch.arange(3), w)], [0, 1, 2], 0.0)
        >>> round(x0, 3), round(x1, 3), round(y1 - y0, 3)  # a square holding all three
        (0.0, 1.414, 1.414)
    """
    if not runs:
        raise ValueError("runs must hold at least one (features, labels, weight), got none")
    xs: list[float] = []
    ys: list[float] = []
    for features, labels, weight in runs:
        coords, _ = penultimate_projection(features, labels, weight, classes)
        points = torch.cat([coords, _templates(weight, [int(c) for c in classes])])
        xs += points[:, 0].tolist()
        ys += points[:, 1].tolist()
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-12) * (1 + 2 * margin)
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    return ((cx - span / 2, cx + span / 2), (cy - span / 2, cy + span / 2))


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
        title: the figure's title: say which regime and seeds the lines show.
        path: where to save a PNG, or None.

    Returns:
        The Figure (``len(keys)`` axes side by side; with several seeds per label a legend
        entry names the shaded band).

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
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator  # after _new_figure: its message if missing

    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    banded = False
    panel_w = 3.4
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
                banded = True
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _labels(ax, "epoch", unit, 0.8 * panel_w, 2.6)
        _title(ax, name, 0.9 * panel_w)
        ax.grid(True, alpha=0.3)
    # One legend for all panels (every panel draws the runs in the same colours).
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if banded:  # the shading has an entry too
        handles["± 1 std over seeds (shaded)"] = Patch(color="gray", alpha=0.2, linewidth=0)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize="small")
    if title is not None:
        fig.suptitle(_wrap(title, 0.9 * 3.6 * len(keys), _fontsize("figure.titlesize")))
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
            if std > 0:
                ax.axhspan(
                    mean - std, mean + std, color="black", alpha=0.08, label="its ± std over seeds"
                )
            ax.legend(fontsize="small")
        ax.set_ylim(bottom=0)
    if title:
        fig.suptitle(_wrap(title, 0.9 * 5.0 * len(panels), _fontsize("figure.titlesize")))
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
    _title(ax, f"{title or 'Student accuracy against T'}\nmean ± std over seeds", 4.8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, path)
    return fig
