"""benchmarks/bench_compile.py: its arguments and one tiny end-to-end run (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch


def _bench():
    """benchmarks/bench_compile.py as a module (a script, not part of the package)."""
    path = Path(__file__).parents[1] / "benchmarks" / "bench_compile.py"
    spec = importlib.util.spec_from_file_location("bench_compile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        _bench().main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--quick", "--rounds", "--threads", "--out", "--device", "--inductor-cache"):
        assert option in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "0"], "argument --rounds: expected a positive integer, got '0'"),
        (["--threads", "x"], "argument --threads: expected a positive integer, got 'x'"),
        (["--mlp-steps", "-1"], "argument --mlp-steps: expected a positive integer"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--inductor-cache", "x"], "argument --inductor-cache: invalid choice"),
        (["--one", "apex"], "--one: unknown variant 'apex'"),
    ],
)
def test_bad_arguments_are_one_error_line_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        _bench().main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("bench_compile: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    with pytest.raises(SystemExit) as e:
        _bench().main(["--quick", "--out", str(tmp_path / "f")])
    assert e.value.code == 2 and "exists and is not a folder" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_device_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        _bench().main(["--device", "cuda"])
    assert e.value.code == 2 and "no CUDA device" in capsys.readouterr().err


def test_quick_run_writes_both_files(tmp_path, capsys):
    bench = _bench()
    argv = ["--quick", "--inductor-cache", "shared", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    data = json.loads((tmp_path / "compile.json").read_text())
    assert data["quick"] is True and data["machine"]["torch"] == torch.__version__
    assert list(data["mlp"]) == list(bench.MLP_VARIANTS)
    assert list(data["lm"]) == list(bench.LM_VARIANTS)
    for name, (_, compiled) in bench.MLP_VARIANTS.items():
        r = data["mlp"][name]
        assert r["compiled"] is compiled and len(r["times_ms"]) == 2
        if compiled:  # cross_entropy compiles whole with the default arguments
            assert r["fullgraph"] is True and r["graph_breaks"] == 0, r
    assert data["mlp"][bench.MLP_BASE]["median_ratio"] == 1.0
    for name, r in data["lm"].items():
        assert "memory_error" not in r, r
        assert r["peak_bytes"] is not None, name  # measured in a fresh process (Linux)
        assert isinstance(r["fullgraph"], bool) is r["compiled"]
    md = (tmp_path / "compile.md").read_text()
    assert md.startswith("# torch.compile: training steps") and "`--quick` smoke test" in md
    assert data["targets"] == [
        "- not checked: `--quick` is a smoke test at tiny shapes, not a measurement"
    ]
    assert "Load average" in md and "Command: `python benchmarks/bench_compile.py --quick" in md


def test_targets_report_every_target_with_a_verdict():
    bench = _bench()

    def row(ms, compiled=True, peak=None):
        return {"median_ms": ms, "median_ratio": ms, "compiled": compiled, "fullgraph": compiled,
                "fallback_reason": None, "graph_breaks": 0, "peak_bytes": peak}  # fmt: skip

    data = {
        "quick": False,
        "mlp": {
            bench.MLP_BASE: row(1.0),
            "labelsmooth auto, compiled": row(1.04),
            "labelsmooth auto others, compiled": row(1.2),
            "labelsmooth auto, eager": row(2.0, compiled=False),
        },
        "lm": {
            bench.LM_BASE: row(1.0, peak=100),
            "linear_cross_entropy, compiled": row(0.9, peak=60),
        },
    }
    lines = bench.targets(data)
    assert "1.040× — met" in lines[0] and "1.200× — NOT met" in lines[1]
    assert "0.900× — met" in lines[2] and "0.600× (0 MiB vs 0 MiB) — NOT met" in lines[3]
    assert "fullgraph=True" in lines[4] and "0.520×" in lines[5]
