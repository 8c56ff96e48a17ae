"""The image task's comparison plots: the regime in every title, shared penultimate limits,
and the by-regime ECE plot only when there are regimes to compare (rendered with Agg)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from labelsmooth.experiment import plotting  # noqa: E402
from labelsmooth.experiment.report import prefix  # noqa: E402
from labelsmooth.experiment.tasks.image_plots import redraw_from_table, write_plots  # noqa: E402

_CLASSES = (0, 2, 4)


def _record(regime: str, eps: float, seed: int) -> dict[str, Any]:
    name = f"toy-{regime}-{'baseline' if eps == 0 else f'ls{eps:g}-uniform'}-seed{seed}"
    m = {"top1": 0.8 + eps, "top5": 0.99, "nll": 0.5, "ece": 0.05 + eps / 2}
    return {
        "name": name,
        "regime": regime,
        "dataset": "toy",
        "label_smoothing": eps,
        "convention": "-" if eps == 0 else "uniform",
        "seed": seed,
        "config": {"model": "mlp", "width": 16, "depth": 2, "epochs": 2, "n_bins": 10},
        "metrics": m,
        "metrics_after_temperature": {"ece": 0.02, "nll": 0.45},
        "temperature": 1.5 - eps,
        "seconds": 1.0,
        "history": [
            {"epoch": e, "loss": 1.0 / e, "top1": 0.8, "nll": 0.5, "ece": 0.05} for e in (1, 2)
        ],
    }


def _save_arrays(runs_dir: Path, record: dict[str, Any], spread: float, seed: int) -> None:
    """A run's test arrays as the trainer saves them: tight (small spread) or loose clusters."""
    g = np.random.default_rng(seed)
    weight = g.normal(size=(5, 12)).astype(np.float32)
    labels = g.integers(0, 5, size=200)
    feats = (weight[labels] + spread * g.normal(size=(200, 12))).astype(np.float32)
    np.savez(
        runs_dir / f"{record['name']}.npz",
        test_logits=feats @ weight.T,
        test_features=feats,
        test_labels=labels,
        fc_weight=weight,
    )


def _draw(tmp_path: Path, regimes: tuple[str, ...]) -> dict[str, Figure]:
    """write_plots of a toy comparison; every figure it draws, by file name."""
    drawn: dict[str, Figure] = {}
    real_save = plotting._save

    def save(fig: Figure, path: Any) -> None:
        if path is not None:
            drawn[Path(path).name] = fig
        real_save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plotting, "_save", save)
        _write(tmp_path, regimes)
    return drawn


def _write(tmp_path: Path, regimes: tuple[str, ...]) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    records = [_record(rg, e, s) for rg in regimes for e in (0.0, 0.1) for s in (0, 1)]
    for i, r in enumerate(records):
        _save_arrays(runs_dir, r, 0.2 if r["label_smoothing"] else 2.0, i)
    sections = [SimpleNamespace(regime=rg, dataset="toy", seeds=(0, 1)) for rg in regimes]
    data: Any = SimpleNamespace(num_classes=5, class_names=[f"c{k}" for k in range(5)])
    write_plots([(s, data) for s in sections], records, tmp_path / "plots", _CLASSES)


@pytest.fixture(scope="module")
def one_regime(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Figure]]:
    tmp = tmp_path_factory.mktemp("one")
    return tmp, _draw(tmp, ("fitted",))


@pytest.fixture(scope="module")
def two_regimes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Figure]:
    return _draw(tmp_path_factory.mktemp("two"), ("fitted", "short"))


def test_one_regime_draws_no_lone_by_regime_panel(one_regime) -> None:  # noqa: ANN001
    tmp_path, drawn = one_regime
    assert "toy-ece-vs-eps-by-regime.png" not in drawn
    assert not (tmp_path / "plots" / "toy-ece-vs-eps-by-regime.png").exists()
    assert "toy-fitted-ece-vs-eps.png" in drawn  # the one regime's ECE against ε is there


def test_two_regimes_side_by_side(two_regimes) -> None:  # noqa: ANN001
    fig = two_regimes["toy-ece-vs-eps-by-regime.png"]
    assert len(fig.axes) == 2
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("fitted regime") and titles[1].startswith("short regime")


def test_every_title_names_the_regime(two_regimes) -> None:  # noqa: ANN001
    for regime in ("fitted", "short"):
        stem = prefix("toy", regime)  # the default regime's files carry no regime name
        own = {
            n: f
            for n, f in two_regimes.items()
            if n.startswith(stem + "-") and "by-regime" not in n
        }
        if stem == "toy":
            own = {n: f for n, f in own.items() if not n.startswith("toy-fitted-")}
        curves = own.pop(f"{stem}-training-curves.png")
        assert curves._suptitle is not None
        assert f"({regime} regime)" in curves._suptitle.get_text()
        assert len(own) >= 10  # metric vs ε, reliability diagrams, projections
        for name, fig in own.items():
            assert f"({regime} regime)" in fig.axes[0].get_title(), name


def test_penultimate_plots_share_axis_limits(one_regime) -> None:  # noqa: ANN001
    tmp_path, drawn = one_regime
    base = drawn["toy-fitted-penultimate-baseline.png"].axes[0]
    smooth = drawn["toy-fitted-penultimate-ls0.1.png"].axes[0]
    for fig in (base.figure, smooth.figure):
        fig.canvas.draw()
    assert base.get_xlim() == smooth.get_xlim() and base.get_ylim() == smooth.get_ylim()
    # the limits hold both runs' points (the baseline's clusters are the wide ones)
    (x0, x1), (y0, y1) = base.get_xlim(), base.get_ylim()
    for ax in (base, smooth):
        for x, y in ax.collections[0].get_offsets():
            assert x0 <= x <= x1 and y0 <= y <= y1
    assert (tmp_path / "plots" / "toy-fitted-penultimate-baseline.png").stat().st_size > 1000


def test_redraw_from_the_table_alone(tmp_path: Path) -> None:
    """results.csv (as the report writes it) is enough for every metric against ε and the
    by-regime plot; no run folder, nothing trained."""
    import csv

    columns = ["name", "regime", "dataset", "label_smoothing", "convention", "seed", "model",
               "depth", "width", "epochs", "batch_size", "lr", "train_size", "top1", "top5",
               "nll", "ece", "ece_T", "nll_T", "T", "train_top1", "train_nll", "tightness",
               "tightness_proj", "seconds"]  # fmt: skip
    rows = []
    for regime in ("fitted", "short"):
        for eps in (0.0, 0.1):
            for seed in (0, 1):
                r = _record(regime, eps, seed)
                rows.append({**{k: r.get(k, "") for k in columns[:6]}, "model": "mlp",
                             "depth": 2, "width": 16, "epochs": 2, "batch_size": 128,
                             "lr": 0.05, "train_size": 100, "top1": 0.8 + eps, "top5": 0.99,
                             "nll": 0.5, "ece": 0.05 + eps, "ece_T": 0.02, "nll_T": 0.45,
                             "T": 1.5 - eps, "train_top1": 0.9, "train_nll": 0.3,
                             "tightness": 0.5 - eps, "tightness_proj": "nan",
                             "seconds": 1.0})  # fmt: skip
    table = tmp_path / "results.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    write_plots_dir = tmp_path / "plots"
    redraw_from_table(table, write_plots_dir)
    drawn = sorted(p.name for p in write_plots_dir.iterdir())
    for stem in ("toy-fitted", "toy"):
        for key in ("top1", "top5", "nll", "ece", "ece_T", "T", "train_top1", "tightness"):
            assert f"{stem}-{key}-vs-eps.png" in drawn
    assert "toy-ece-vs-eps-by-regime.png" in drawn
    assert not any("tightness_proj" in n or "reliability" in n or "curves" in n for n in drawn)
