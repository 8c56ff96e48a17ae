"""The compare recipe end to end on a tiny generated IDX dataset (no network)."""

from __future__ import annotations

import json

import pytest

from labelsmooth.data import DataUnavailableError
from labelsmooth.train import TrainConfig, prepare_data
from labelsmooth.train import compare as compare_mod
from labelsmooth.train.compare import Section, plan_runs, run_compare


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, synthetic_idx):
    d = synthetic_idx(tmp_path_factory.mktemp("idx"), 240, 100)
    base = TrainConfig(
        depth=8,
        width=4,
        epochs=2,
        batch_size=32,
        lr=0.1,
        train_size=None,
        val_size=40,
        eval_batch_size=256,
        num_threads=1,
    )
    return f"idx:{d}", base


def test_plan_runs_dedupes_the_baseline():
    runs = plan_runs(Section("mnist", (0.0, 0.1, 0.2), ("uniform", "others"), (0, 1)))
    assert len(runs) == 2 * (1 + 2 * 2)
    assert [r.name for r in runs[:5]] == [
        "mnist-baseline-seed0",
        "mnist-ls0.1-uniform-seed0",
        "mnist-ls0.1-others-seed0",
        "mnist-ls0.2-uniform-seed0",
        "mnist-ls0.2-others-seed0",
    ]


def test_compare_end_to_end_and_resume(tiny, tmp_path):
    spec, base = tiny
    sections = [Section(spec, (0.0, 0.1), ("uniform",), (0, 1))]
    out = tmp_path / "res"
    res = run_compare(sections, base, out, progress=False, log=None, projection_classes=(0, 1, 2))
    assert len(res["records"]) == 4 and len(res["summary"]) == 2
    table = (out / "results.md").read_text()
    for text in ("Top-1 (%)", "ECE after T (%)", "baseline", "LS ε=0.1 (uniform)", "± ", "2 seeds"):
        assert text in table
    assert len((out / "results.csv").read_text().splitlines()) == 5
    record = json.loads((out / "runs" / f"{res['records'][1]['name']}.json").read_text())
    assert record["label_smoothing"] == 0.1 and record["temperature"] > 0
    assert {"ece", "nll", "top1"} <= set(record["metrics_after_temperature"])
    assert record["sizes"] == {"train": 200, "val": 40, "test": 100}
    plots = {p.name for p in (out / "plots").glob("*.png")}
    slug = res["records"][0]["name"].rsplit("-baseline", 1)[0]
    for name in (
        "training-curves",
        "reliability-baseline",
        "reliability-ls0.1",
        "penultimate-baseline",
        "penultimate-ls0.1",
        "ece-vs-eps",
        "ece_T-vs-eps",
    ):
        assert f"{slug}-{name}.png" in plots, (name, plots)

    # --resume skips finished runs
    messages = []
    again = run_compare(
        sections, base, out, resume=True, plots=False, progress=False, log=messages.append
    )
    assert sum("already done" in m for m in messages) == 4
    assert again["summary"] == res["summary"]


def test_compare_falls_back_to_the_other_builtin_dataset(tiny, tmp_path, monkeypatch):
    spec, base = tiny

    def fake_prepare(config, log=None):
        if config.dataset == "fashion-mnist":
            raise DataUnavailableError("cannot obtain Fashion-MNIST (offline)")
        assert config.dataset == "mnist"
        return prepare_data(config.__class__(**{**config.to_dict(), "dataset": spec}), log=None)

    monkeypatch.setattr(compare_mod, "prepare_data", fake_prepare)
    messages = []
    res = run_compare(
        [Section("fashion-mnist", (0.0,), ("uniform",), (0,))],
        base,
        tmp_path,
        plots=False,
        progress=False,
        log=messages.append,
    )
    assert [r["dataset"] for r in res["records"]] == ["mnist"]
    assert any("falling back to mnist" in m for m in messages)
    assert any("offline" in m for m in messages)


def test_compare_without_any_data_says_so(tiny, tmp_path):
    _, base = tiny
    with pytest.raises(DataUnavailableError, match="no dataset could be obtained"):
        run_compare(
            [Section(f"idx:{tmp_path / 'missing'}", (0.0,), ("uniform",), (0,))],
            base,
            tmp_path / "out",
            progress=False,
            log=None,
        )
