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
    assert [t.split(" ")[0] for t in texts] == ["x", "y", "z"]
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
    """Titles, axis labels and legend texts lie inside the saved canvas."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = fig.bbox
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        legend = ax.get_legend()
        texts += list(legend.get_texts()) if legend is not None else []
    for text in texts:
        if not text.get_text():
            continue
        ext = text.get_window_extent(renderer)
        assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1, (text.get_text(), ext, box)
        assert ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, (text.get_text(), ext, box)


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
    seeds = [[{"epoch": 1, "loss": 1.0, "ece": 0.1}]] * 2
    _texts_inside(
        training_curves(
            {"LS ε=0.1 (unnormalized)": seeds},
            keys=("loss", "ece"),
            title="Fashion-MNIST: mean ± std over 3 seeds (0, 1, 2)",
        )
    )


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
