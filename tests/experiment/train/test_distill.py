"""The fitted regime, cluster tightness in the records, and run_distill end to end on a tiny
generated IDX dataset (no network)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from labelsmooth.experiment import report
from labelsmooth.experiment.models import MLP
from labelsmooth.experiment.tasks import get_task
from labelsmooth.experiment.tasks.image_metrics import model_title
from labelsmooth.experiment.train import TrainConfig
from labelsmooth.experiment.train.compare import (
    FITTED_TRAIN,
    FULL_SECTIONS,
    DistillGrid,
    Section,
    plan_runs,
    run_compare,
    run_distill,
    section_config,
)


@pytest.fixture(scope="module")
def tiny_fitted(tmp_path_factory, synthetic_idx):
    d = synthetic_idx(tmp_path_factory.mktemp("idx"), 160, 60)
    overrides = dict(width=8, epochs=1, batch_size=32, train_size=None, val_size=30)
    return f"idx:{d}", {**overrides, "num_threads": 1, "eval_batch_size": 256}


def test_mlp_model() -> None:
    model = MLP(784, (12, 7), num_classes=5)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 5)
    assert model.forward_features(torch.zeros(3, 784)).shape == (3, 7)
    with pytest.raises(ValueError, match="hidden"):
        MLP(784, (), num_classes=5)


def test_regimes_and_names() -> None:
    assert FITTED_TRAIN.model == "mlp" and FITTED_TRAIN.weight_decay == 0
    fitted = Section("mnist", (0.0, 0.1), ("uniform",), (0,), "fitted", extra=((0.1, "others"),))
    names = [r.name for r in plan_runs(fitted)]
    assert names == [
        "mnist-fitted-baseline-seed0",
        "mnist-fitted-ls0.1-uniform-seed0",
        "mnist-fitted-ls0.1-others-seed0",
    ]
    assert section_config(fitted, overrides={"epochs": 3}).epochs == 3
    assert section_config(fitted).model == "mlp"
    assert {s.regime for s in FULL_SECTIONS} == {"fitted", "short"}
    with pytest.raises(ValueError, match="regime must be one of"):
        Section("mnist", regime="long")
    with pytest.raises(ValueError, match="convention"):
        Section("mnist", extra=((0.1, "bogus"),))


def test_distill_grid_values_are_checked() -> None:
    with pytest.raises(ValueError, match="temperatures"):
        DistillGrid(temperatures=(0.0,))
    with pytest.raises(ValueError, match="alpha"):
        DistillGrid(alpha=1.5)
    with pytest.raises(ValueError, match="seeds"):
        DistillGrid(seeds=(0, 0))
    with pytest.raises(ValueError, match="label_smoothing"):
        DistillGrid(teacher_epsilons=(0.0, 1.0))


def test_fitted_compare_with_distill_reuses_the_teachers(tiny_fitted, tmp_path) -> None:
    spec, overrides = tiny_fitted
    out = tmp_path / "res"
    sections = [Section(spec, (0.0, 0.1), ("uniform",), (0,), "fitted")]
    grid = DistillGrid(spec, (0.0, 0.1), (2.0,), (0,), alpha=0.5, student_width=4)
    messages: list[str] = []
    res = run_compare(sections, None, out, overrides=overrides, distill=grid, plots=False,
                      progress=False, log=messages.append)  # fmt: skip
    record = res["records"][0]
    assert record["regime"] == "fitted" and record["config"]["model"] == "mlp"
    assert 0 <= record["train_metrics"]["top1"] <= 1 and record["train_metrics"]["nll"] > 0
    rep = record["representation"]
    assert rep["tightness"] > 0 and rep["tightness_projection"] > 0
    table = (out / "results.md").read_text()
    for text in ("fitted regime", "MLP 8-8", "Train top-1 (%)", "Tightness (proj.)"):
        assert text in table, text

    assert sum("already done" in m for m in messages) == 2  # both teachers reused
    got = res["distill"]
    assert len(got["students"]) == 3  # alone + one per teacher
    student = json.loads((out / "runs" / f"{got['students'][1]['name']}.json").read_text())
    assert student["distill"]["temperature"] == 2.0 and student["distill"]["alpha"] == 0.5
    assert student["config"]["width"] == 4
    text = (out / "distill.md").read_text()
    for words in ("| Teacher ε", "alone", "MLP 4-4", "α = 0.5"):
        assert words in text, words
    rows = got["summary"]
    assert [r["temperature"] for r in rows] == [None, 2.0, 2.0]
    assert not math.isnan(rows[1]["teacher_top1"])

    # run_distill alone, resumed: every run is reused
    again: list[str] = []
    run_distill(grid, out, overrides=overrides, resume=True, plots=False, progress=False,
                log=again.append)  # fmt: skip
    assert sum("already done" in m for m in again) == 5


def test_summaries_of_older_records_show_dashes() -> None:
    metrics = {"top1": 0.9, "top5": 0.99, "nll": 0.3, "ece": 0.02}
    old = {
        "name": "mnist-baseline-seed0", "dataset": "mnist", "label_smoothing": 0.0,
        "convention": "-", "seed": 0, "config": TrainConfig().to_dict(), "dtype": "float32",
        "completed": True, "history": [], "metrics": metrics, "temperature": 1.0,
        "metrics_after_temperature": metrics, "seconds": 1.0, "num_parameters": 10,
        "sizes": {"train": 10, "val": 5, "test": 5},
    }  # fmt: skip
    rows = report.summarize([old], get_task("image"))
    assert rows[0]["regime"] == "short" and math.isnan(rows[0]["tightness"])
    table = report.format_table(rows, [old], 1.0, get_task("image"))
    assert "short regime" in table and "| —" in table
    new = dataclasses.replace(TrainConfig(), model="mlp", width=5).to_dict()
    assert model_title(new) == "MLP 5-5"
