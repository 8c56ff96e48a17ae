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

from labelsmooth import plotting  # noqa: E402
from labelsmooth.plotting import (  # noqa: E402
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


def test_no_pyplot_state_and_no_eager_import() -> None:
    code = (
        "import sys, labelsmooth, labelsmooth.metrics, labelsmooth.plotting\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'\n"
        "import torch\n"
        "labelsmooth.plotting.training_curves({'a': [{'epoch': 1, 'loss': 1.0}]}, keys=('loss',))\n"
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
            r"histories\['a'\]\[0\] must have an 'epoch'",
        ),
        (lambda: training_curves({"a": []}, keys=()), r"keys must be a non-empty"),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_docstring_examples_run() -> None:
    result = doctest.testmod(plotting)
    assert result.failed == 0 and result.attempted > 0
