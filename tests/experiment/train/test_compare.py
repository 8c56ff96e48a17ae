"""The compare recipe end to end on a tiny generated IDX dataset (no network)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from labelsmooth.experiment import report
from labelsmooth.experiment.data import DataUnavailableError
from labelsmooth.experiment.tasks import get_task
from labelsmooth.experiment.tasks import image as image_task
from labelsmooth.experiment.train import TrainConfig, prepare_data
from labelsmooth.experiment.train.compare import Section, plan_runs, run_compare

IMAGE = get_task("image")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, synthetic_idx, tiny_config):
    d = synthetic_idx(tmp_path_factory.mktemp("idx"), 240, 100)
    base = tiny_config("fashion-mnist", epochs=2, val_size=40)
    return f"idx:{d}", base


def test_plan_runs_dedupes_the_baseline():
    runs = plan_runs(Section("mnist", (0.0, 0.1, 0.2), ("uniform", "others"), (0, 1), "short"))
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

    monkeypatch.setattr(image_task, "prepare_data", fake_prepare)
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


def test_compare_without_any_data_says_so_once_and_writes_nothing(tiny, tmp_path):
    _, base = tiny
    messages = []
    missing = f"idx:{tmp_path / 'missing'}"
    with pytest.raises(DataUnavailableError, match="not found") as info:
        run_compare(
            [Section(missing, (0.0,), ("uniform",), (0,))],
            base,
            tmp_path / "out",
            progress=False,
            log=messages.append,
        )
    assert str(info.value).count("does not exist") == 1
    assert not any("not found" in m for m in messages)  # said once: in the error
    assert not (tmp_path / "out").exists()


def test_section_values_are_checked():
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\)"):
        Section("mnist", (0.0, 0.1, 2.0))
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        Section("mnist", seeds=(0, -1))
    with pytest.raises(ValueError, match="Section.seeds must not be empty"):
        Section("mnist", seeds=())


def _record(seed, eps, top1, *, dataset="mnist", epochs=1, threads=1):
    metrics = {"top1": top1, "top5": 0.99, "nll": 0.3, "ece": 0.02}
    return {
        "name": f"{dataset}-{'baseline' if eps == 0 else f'ls{eps:g}-uniform'}-seed{seed}",
        "dataset": dataset,
        "label_smoothing": eps,
        "convention": "-" if eps == 0 else "uniform",
        "seed": seed,
        "config": {**TrainConfig(epochs=epochs, num_threads=threads).to_dict(), "depth": 8},
        "dtype": "bfloat16",
        "completed": True,
        "history": [{"epoch": 1, "loss": 1.0, "top1": top1, "ece": 0.02}],
        "metrics": metrics,
        "temperature": 1.1,
        "metrics_after_temperature": {**metrics, "ece": 0.01},
        "seconds": 30.0,
        "num_parameters": 1234,
        "sizes": {"train": 100, "val": 10, "test": 50},
    }


def test_one_seed_table_has_no_spread_and_singular_words():
    records = [_record(0, 0.0, 0.9), _record(0, 0.1, 0.91)]
    table = report.format_table(report.summarize(records, IMAGE), records, 60.0, IMAGE)
    assert "±" not in table
    for text in (
        "One run per row, seed 0", "1 epoch on", "2 runs ×", "1 CPU thread,",
        "this invocation took 1.0 min of wall time",
    ):  # fmt: skip
        assert text in table, text
    assert "| bf16 " in table  # the dtype of the record, not a constant
    assert "| 90.00 " in table and "+1.00" in table
    for bad in ("1 seeds", "1 epochs", "1 runs", "1 CPU threads"):
        assert bad not in table


def test_several_seeds_table_has_mean_and_std():
    records = [_record(s, e, 0.9 + s / 100, epochs=5, threads=2) for s in (0, 1) for e in (0, 0.1)]
    table = report.format_table(report.summarize(records, IMAGE), records, 60.0, IMAGE)
    assert "Mean ± std over 2 seeds (0, 1)" in table and "5 epochs" in table
    assert "90.50 ± 0.71" in table and "2 CPU threads" in table


def test_plots_take_n_bins_from_the_runs_config(tiny, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from labelsmooth.experiment import plotting

    spec, base = tiny
    seen = []
    real = plotting.reliability_diagram

    def spy(*args, **kwargs):
        seen.append(kwargs["n_bins"])
        return real(*args, **kwargs)

    monkeypatch.setattr(plotting, "reliability_diagram", spy)
    base = dataclasses.replace(base, epochs=1, n_bins=7)
    out = tmp_path / "res"
    res = run_compare(
        [Section(spec, (0.0, 0.1), ("uniform",), (3,))], base, out, progress=False, log=None
    )
    assert seen == [7, 7]
    assert all(r["config"]["n_bins"] == 7 for r in res["records"])
    assert "±" not in (out / "results.md").read_text()
