"""Plots: each returns a Figure and writes a non-empty PNG; no pyplot state; bad input errors."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from labelsmooth.experiment import plotting  # noqa: E402
from labelsmooth.experiment.plotting import (  # noqa: E402
    metric_vs_epsilon,
    penultimate_layer_plot,
    reliability_diagram,
    training_curves,
)


def _png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_reliability_diagram(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    probs = (3 * torch.randn(500, 6, generator=g)).softmax(1)
    target = torch.randint(0, 6, (500,), generator=g)
    target[:5] = -1
    path = tmp_path / "rel.png"
    fig = reliability_diagram(probs.half(), target, n_bins=10, ignore_index=-1, path=path)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert "ECE =" in fig.axes[0].get_title() and "N = 495" in fig.axes[0].get_title()
    assert _png_ok(path)


def test_metric_vs_epsilon_two_series_on_one_axes(tmp_path: Path) -> None:
    eps = [0.0, 0.1, 0.2]
    fig = metric_vs_epsilon(eps, [[0.1, 0.12], [0.05], [0.07, 0.08, 0.09]], metric="ece", label="a")
    path = tmp_path / "eps.png"
    again = metric_vs_epsilon(
        eps, [[0.2], [0.1], [0.3]], metric="ece", label="b", ax=fig.axes[0], path=path
    )
    assert again is fig and len(fig.axes) == 1
    legend = fig.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]
    assert _png_ok(path)


def test_penultimate_layer_plot(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(5, 12, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    features = weight[labels] + 0.2 * torch.randn(300, 12, generator=g)
    path = tmp_path / "pen.png"
    fig = penultimate_layer_plot(
        features, labels, weight, [4, 0, 2], class_names=["x", "y", "z"], path=path
    )
    assert isinstance(fig, Figure)
    legend = fig.axes[0].get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert [t.split(" ")[0] for t in texts] == ["x", "y", "z", "class"]
    assert texts[3] == "class templates (★)"  # the stars have their own entry
    assert fig.axes[0].get_xlabel() == "q1: from the x template towards y"
    assert _png_ok(path)


def test_training_curves(tmp_path: Path) -> None:
    hist = {
        "ε=0": [{"epoch": e, "loss": 1 / e, "top1": 0.5 + e / 20, "ece": 0.1} for e in (1, 2, 3)],
        "ε=0.1": [{"epoch": e, "loss": 1.1 / e, "top1": 0.5 + e / 25} for e in (1, 2, 3)],
    }
    path = tmp_path / "curves.png"
    fig = training_curves(hist, path=path)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert len(fig.axes[2].get_lines()) == 1  # "ece" only logged by one run
    assert _png_ok(path)


def test_training_curves_name_units_and_show_percent() -> None:
    hist = {"a": [{"epoch": 1, "loss": 0.7, "top1": 0.8, "nll": 0.5, "ece": 0.05, "mine": 3.0}]}
    fig = training_curves(hist, keys=("loss", "top1", "nll", "ece", "mine"))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["training loss", "test top-1 accuracy", "test NLL", "test ECE", "mine"]
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[1] == "top-1 accuracy (%)" and labels[3] == "expected calibration error (%)"
    assert "nats" in labels[0] and "nats" in labels[2]
    assert list(fig.axes[1].get_lines()[0].get_ydata()) == [80.0]
    assert list(fig.axes[3].get_lines()[0].get_ydata()) == [5.0]


def test_training_curves_draw_every_seed_as_mean_and_band() -> None:
    seeds = [
        [{"epoch": 1, "top1": 0.80}, {"epoch": 2, "top1": 0.90}],
        [{"epoch": 1, "top1": 0.82}, {"epoch": 2, "top1": 0.94}],
    ]
    fig = training_curves({"LS": seeds, "one": seeds[:1]}, keys=("top1",), title="3 seeds")
    ax = fig.axes[0]
    mean = [round(float(v), 6) for v in ax.get_lines()[0].get_ydata()]
    assert mean == [81.0, 92.0]
    assert len(ax.collections) == 1  # one band: the label with two seeds
    assert fig.get_suptitle() == "3 seeds"


def _texts_inside(fig: Figure) -> None:
    """Every text of the figure (titles, axis and tick labels, legends) lies inside the canvas."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = fig.bbox
    # tick labels are drawn only for ticks inside the view interval; matplotlib keeps the
    # others' Text objects (stale, undrawn) around
    tick_labels, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            pad = 1e-9 * max(1.0, abs(hi - lo))
            for ticks, locs in (
                (axis.get_major_ticks(), axis.get_majorticklocs()),
                (axis.get_minor_ticks(), axis.get_minorticklocs()),
            ):
                for tick, loc in zip(ticks, locs):
                    if lo - pad <= loc <= hi + pad:
                        drawn += [tick.label1, tick.label2]
                for tick in ticks:
                    tick_labels |= {id(tick.label1), id(tick.label2)}
    texts = [t for t in fig.findobj(Text) if id(t) not in tick_labels] + drawn
    texts = [t for t in texts if t.get_visible() and t.get_text().strip()]
    assert texts, "no text found"
    for text in texts:
        ext = text.get_window_extent(renderer)
        assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1, (text.get_text(), ext, box)
        assert ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, (text.get_text(), ext, box)


_LONG = "Fashion-MNIST (fitted regime): cluster tightness, 3-template projection, seed 12"


def _every_plot(title: str) -> list[Figure]:
    """Each plotting function once, with ``title`` (the report's longest titles) and names."""
    g = torch.Generator().manual_seed(0)
    probs = (3 * torch.randn(200, 10, generator=g)).softmax(1)
    target = torch.randint(0, 10, (200,), generator=g)
    weight = torch.randn(5, 12, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    features = weight[labels] + 0.2 * torch.randn(300, 12, generator=g)
    seeds = [[{"epoch": 1, "loss": 1.0, "ece": 0.1}, {"epoch": 2, "loss": 0.8, "ece": 0.2}]] * 2
    eps, vals = [0.0, 0.05, 0.1], [[7.0, 7.5], [1.5, 1.6], [5.6, 5.7]]
    return [
        reliability_diagram(probs, target, title=title),
        metric_vs_epsilon(eps, vals, metric="cluster tightness (spread / distance)", title=title),
        penultimate_layer_plot(
            features,
            labels,
            weight,
            [0, 2, 4],
            class_names=["T-shirt/top", "Pullover", "Shirt"],
            title=title + "\nLS ε=0.1, seed 0",
        ),  # fmt: skip
        training_curves(
            {"LS ε=0.1 (unnormalized)": seeds, "baseline": seeds},
            keys=("loss", "top1", "nll", "ece"),
            title=title,
        ),
        plotting.ece_by_regime(
            {
                "fitted regime: MLP 1200-1200, 20 epochs": (eps, vals, [1.0, 1.2]),
                "short regime: ResNet-14 (w8), 5 epochs": (eps, vals, [1.1, 1.3]),
            },
            title=title,
        ),  # fmt: skip
        plotting.student_accuracy_vs_temperature(
            {"teacher ε=0.1 (87.15%)": ([1, 2, 4], [86.7, 86.8, 86.7], [0.1, 0.1, 0.1])},
            alone=(86.67, 0.21),
            title=title,
        ),
    ]


def test_no_text_is_clipped_in_any_plot() -> None:
    for title in ("short", _LONG, _LONG + " " + _LONG):
        for fig in _every_plot(title):
            _texts_inside(fig)


def test_titles_are_never_clipped() -> None:
    g = torch.Generator().manual_seed(0)
    probs = (3 * torch.randn(200, 10, generator=g)).softmax(1)
    target = torch.randint(0, 10, (200,), generator=g)
    _texts_inside(
        reliability_diagram(probs, target, title="Fashion-MNIST, LS ε=0.05 (unnormalized), seed 12")
    )
    _texts_inside(
        metric_vs_epsilon(
            [0.0, 0.1],
            [[1.0, 2.0], [1.5, 1.7]],
            metric="test ECE after T (%)",
            title="Fashion-MNIST: test ECE after T (%)",
        )
    )


def _legend_texts(legend) -> list[str]:  # noqa: ANN001
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def test_reliability_diagram_names_both_gap_shadings() -> None:
    # bins below the diagonal (overconfident) and above it (underconfident)
    conf = torch.tensor([0.95] * 10 + [0.55] * 10)  # class 0 predicted everywhere
    hits = torch.tensor([1] * 5 + [0] * 5 + [1] * 10)  # 50 % at 0.95, 100 % at 0.55
    probs = torch.stack([conf, 1 - conf], 1)
    target = torch.where(hits.bool(), 0, 1)
    fig = reliability_diagram(probs, target, n_bins=10)
    top = _legend_texts(fig.axes[0].get_legend())
    assert "gap: overconfident (confidence > accuracy)" in top
    assert "gap: underconfident (accuracy > confidence)" in top
    assert _legend_texts(fig.axes[1].get_legend()) == [
        "accuracy", "avg. confidence", "samples per bin",
    ]  # fmt: skip
    # only overconfident bins: no entry for a shading that is not drawn
    only_over = reliability_diagram(torch.tensor([[0.9, 0.1]] * 10), torch.tensor([0, 1] * 5))
    assert not any("underconfident" in t for t in _legend_texts(only_over.axes[0].get_legend()))


def test_penultimate_plots_share_limits_for_side_by_side() -> None:
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(5, 12, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    tight = weight[labels] + 0.1 * torch.randn(300, 12, generator=g)
    loose = weight[labels] + 1.5 * torch.randn(300, 12, generator=g)
    runs = [(tight, labels, weight), (loose, labels, weight)]
    limits = plotting.penultimate_limits(runs, [0, 2, 4])
    figs = [penultimate_layer_plot(*run, [0, 2, 4], limits=limits) for run in runs]
    for fig in figs:
        fig.canvas.draw()
    (a, b) = (f.axes[0] for f in figs)
    assert a.get_xlim() == b.get_xlim() == limits[0]
    assert a.get_ylim() == b.get_ylim() == limits[1]
    for x, y in figs[1].axes[0].collections[0].get_offsets():  # every point of the loose run
        assert limits[0][0] <= x <= limits[0][1] and limits[1][0] <= y <= limits[1][1]
    with pytest.raises(ValueError, match=r"limits must have min < max"):
        penultimate_layer_plot(tight, labels, weight, [0, 2, 4], limits=((1, 0), (0, 1)))
    with pytest.raises(ValueError, match=r"limits must be \(\(x_min, x_max\)"):
        penultimate_layer_plot(tight, labels, weight, [0, 2, 4], limits=(1, 2))


def test_tightness_plots_say_lower_is_tighter() -> None:
    fig = metric_vs_epsilon([0.0, 0.1], [[0.5], [0.6]], metric="cluster tightness, projection")
    assert fig.axes[0].get_ylabel().endswith("(lower = tighter)")
    other = metric_vs_epsilon([0.0, 0.1], [[0.5], [0.6]], metric="ECE (%)")
    assert "lower" not in other.axes[0].get_ylabel()
    mine = metric_vs_epsilon([0.0, 0.1], [[0.5], [0.6]], metric="top-1", hint="higher = better")
    assert mine.axes[0].get_ylabel() == "top-1\n(higher = better)"


def test_shadings_have_legend_entries() -> None:
    seeds = [[{"epoch": 1, "loss": 1.0}], [{"epoch": 1, "loss": 1.2}]]
    curves = training_curves({"LS": seeds}, keys=("loss",))
    assert "± 1 std over seeds (shaded)" in _legend_texts(curves.legends[0])
    single = training_curves({"LS": seeds[:1]}, keys=("loss",))
    assert "± 1 std over seeds (shaded)" not in _legend_texts(single.legends[0])
    regimes = plotting.ece_by_regime({"fitted": ([0.0, 0.1], [[7.0, 8.0], [2.0]], [1.0, 1.2])})
    assert "its ± std over seeds" in _legend_texts(regimes.axes[0].get_legend())


def test_metric_vs_epsilon_says_what_the_error_bars_are() -> None:
    one = metric_vs_epsilon([0.0, 0.1], [[1.0], [2.0]], metric="ECE (%)", title="x")
    assert one.axes[0].get_title() == "x\none seed"
    several = metric_vs_epsilon([0.0, 0.1], [[1.0, 2.0], [2.0]], metric="ECE (%)")
    assert several.axes[0].get_title() == "ECE (%)\nmean ± std over seeds"


def test_no_pyplot_state_and_no_eager_import() -> None:
    code = (
        "import sys, labelsmooth, labelsmooth.metrics, labelsmooth.experiment.plotting\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'\n"
        "import torch\n"
        "labelsmooth.experiment.plotting.training_curves("
        "{'a': [{'epoch': 1, 'loss': 1.0}]}, keys=('loss',))\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


P = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
Y = torch.tensor([0, 1])
W = torch.eye(4, 6)
X = torch.randn(8, 6)
L = torch.arange(8) % 4


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: reliability_diagram(P, Y, n_bins=0), r"n_bins must be a positive .*=0"),
        (lambda: reliability_diagram(P[0], Y), r"probs must be 2-D"),
        (lambda: metric_vs_epsilon([0.0], [[1.0], [2.0]], metric="ece"), r"len\(values\)=2"),
        (lambda: metric_vs_epsilon([0.0], [[]], metric="ece"), r"epsilon=0\.0 .*at least one"),
        (lambda: metric_vs_epsilon([], [], metric="ece"), r"epsilons must not be empty"),
        (lambda: metric_vs_epsilon([0.0], [[1.0]], metric=""), r"metric must be a non-empty"),
        (lambda: penultimate_layer_plot(X, L, W, [0, 1]), r"classes must be 3 distinct .*\[0, 1\]"),
        (lambda: penultimate_layer_plot(X, L, W, [0, 1, 1]), r"classes must be 3 distinct"),
        (
            lambda: penultimate_layer_plot(X, L, W, [0, 1, 4]),
            r"in \[0, 4\), got classes=\[0, 1, 4\]",
        ),
        (lambda: penultimate_layer_plot(X, L, W, [0, 1, 2], class_names=["a"]), r"class_names"),
        (lambda: penultimate_layer_plot(X, L, W[:, :5], [0, 1, 2]), r"weight must be 2-D .*D=6"),
        (lambda: penultimate_layer_plot(X[0], L, W, [0, 1, 2]), r"features must be 2-D"),
        (lambda: penultimate_layer_plot(X, L[:3], W, [0, 1, 2]), r"labels must have shape \(8,\)"),
        (
            lambda: penultimate_layer_plot(X, L, torch.ones(4, 6), [0, 1, 2]),
            r"lie on one line",
        ),
        (lambda: training_curves({}), r"histories must map at least one"),
        (
            lambda: training_curves({"a": [{"loss": 1.0}]}),
            r"histories\['a'\]\[0\] must be a dict with an 'epoch'",
        ),
        (lambda: training_curves({"a": []}, keys=()), r"keys must be a non-empty"),
        (
            lambda: training_curves({"a": [[{"epoch": 1}], [{"loss": 1.0}]]}),
            r"histories\['a'\]\[1\]\[0\] must be a dict with an 'epoch'",
        ),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_docstring_examples_run() -> None:
    result = doctest.testmod(plotting)
    assert result.failed == 0 and result.attempted > 0
