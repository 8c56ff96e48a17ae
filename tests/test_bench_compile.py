"""benchmarks/bench_compile.py: its arguments, a tiny end-to-end run and the target verdicts.

No timing is asserted. The quick tests trace with ``--backend eager`` (Dynamo only, no
Inductor code generation) and skip the LM head's memory subprocesses; the whole ``--quick``
run with Inductor and fresh processes is marked slow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

_MODULE = None


def _load():
    """benchmarks/bench_compile.py as a module (a script, not part of the package).

    The module is in ``sys.modules`` while it executes, as an imported module is: its
    dataclasses (with ``from __future__ import annotations``) look their module up there.
    """
    path = Path(__file__).parents[1] / "benchmarks" / "bench_compile.py"
    spec = importlib.util.spec_from_file_location("bench_compile", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(spec.name)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:  # leave sys.modules as it was
        if previous is None:
            del sys.modules[spec.name]
        else:
            sys.modules[spec.name] = previous
    return module


def _bench():
    """The script's module, loaded once per test session."""
    global _MODULE
    if _MODULE is None:
        _MODULE = _load()
    return _MODULE


# --------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        _bench().main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--quick", "--parts", "--rounds", "--mlp-steps", "--lm-steps", "--threads",
                   "--device", "--backend", "--inductor-cache", "--out"):  # fmt: skip
        assert option in text, option


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "0"], "argument --rounds: expected a positive integer, got '0'"),
        (["--threads", "x"], "argument --threads: expected a positive integer, got 'x'"),
        (["--mlp-steps", "-1"], "argument --mlp-steps: expected a positive integer"),
        (["--lm-steps", "1.5"], "argument --lm-steps: expected a positive integer, got '1.5'"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--backend", "tvm"], "argument --backend: invalid choice: 'tvm'"),
        (["--parts", "cnn"], "argument --parts: invalid choice: 'cnn'"),
        (["--inductor-cache", "x"], "argument --inductor-cache: invalid choice"),
        (["--one", "apex"], "--one: unknown variant 'apex'"),
    ],
)
def test_bad_arguments_are_one_error_line_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        _bench().main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("bench_compile: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("below", ["", "sub"])
def test_out_must_be_a_folder(tmp_path, capsys, below):
    (tmp_path / "f").write_text("")
    out = tmp_path / "f" / below if below else tmp_path / "f"
    with pytest.raises(SystemExit) as e:
        _bench().main(["--quick", "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "exists and is not a folder" in err
    assert err.startswith("bench_compile: error: --out ") and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_device_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        _bench().main(["--device", "cuda"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--device cuda: no CUDA device" in err


# --------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------


def _check_rows(bench, data, part, variants):
    assert list(data[part]) == list(variants)
    for name, (_, compiled) in variants.items():
        r = data[part][name]
        assert r["compiled"] is compiled and len(r["times_ms"]) == data["rounds"], r
        assert r["ratio_q1"] <= r["median_ratio"] <= r["ratio_q3"], r
        assert r["cpu_ratio_q1"] <= r["cpu_ratio"] <= r["cpu_ratio_q3"], r  # CPU: measured
        assert len(r["cpu_times_ms"]) == data["rounds"], r
        if compiled:  # labelsmooth and the built-in compile whole with the default arguments
            assert r["fullgraph"] is True and r["graph_breaks"] == 0, r
            assert r["fallback_reason"] is None, r
        else:
            assert r["fullgraph"] is None and r["graph_breaks"] is None, r


def test_tiny_run_writes_md_and_json_and_leaves_the_process_as_it_was(tmp_path, capsys):
    """The MLP part at the tiny shape, traced by Dynamo (backend eager), in this process."""
    bench = _bench()
    threads, cache = torch.get_num_threads(), os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    argv = ["--quick", "--backend", "eager", "--parts", "mlp", "--threads", "1",
            "--out", str(tmp_path)]  # fmt: skip
    assert bench.main(argv) == 0
    assert torch.get_num_threads() == threads  # restored
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") == cache  # the fresh cache: restored
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compile.json", "compile.md"]
    data = json.loads((tmp_path / "compile.json").read_text())
    assert data["quick"] is True and data["backend"] == "eager" and data["parts"] == ["mlp"]
    assert data["machine"]["torch"] == torch.__version__ and data["machine"]["device"] == "cpu"
    assert [when for when, _ in data["load"]] == ["start", "after the MLP"]
    assert "lm" not in data and data["rounds"] == 2
    _check_rows(bench, data, "mlp", bench.MLP_VARIANTS)
    base = data["mlp"][bench.MLP_BASE]
    assert base["median_ratio"] == base["ratio_q1"] == base["ratio_q3"] == 1.0
    assert data["targets"] == [
        "- not checked: `--quick` is a smoke test at tiny shapes, not a measurement"
    ]
    md = (tmp_path / "compile.md").read_text()
    assert md == bench.render(data)
    assert md.startswith("# torch.compile: training steps") and "`--quick` smoke test" in md
    assert "Command: `python benchmarks/bench_compile.py --quick --backend eager" in md
    assert "Load (`/proc/loadavg`) start: `" in md and "torch.compile backend: eager" in md
    assert "## (a) and (c): MLP 64-32-32-10, batch 16" in md and "LM head" not in md
    assert "| labelsmooth auto, compiled | fullgraph=True (0 breaks) |" in md
    assert "| CPU ms/step | CPU-time ratio (quartiles) |" in md
    _check_tables(md)
    assert "wrote " in capsys.readouterr().out


def _check_tables(md):
    """Every row of each markdown table has the header's number of cells."""
    table = []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line.count("|"))
        elif table:
            assert len(table) > 2 and len(set(table)) == 1, (table, md)
            table = []


@pytest.mark.slow
def test_quick_run_with_inductor_and_memory_processes(tmp_path):
    """The whole ``--quick`` run: Inductor, both parts, peak memory in fresh processes."""
    bench = _bench()
    argv = ["--quick", "--inductor-cache", "shared", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    data = json.loads((tmp_path / "compile.json").read_text())
    assert data["backend"] == "inductor" and data["parts"] == ["mlp", "lm"]
    _check_rows(bench, data, "mlp", bench.MLP_VARIANTS)
    _check_rows(bench, data, "lm", bench.LM_VARIANTS)
    for name, r in data["lm"].items():
        assert "memory_error" not in r, r
        assert isinstance(r["peak_bytes"], int), name  # measured in a fresh process (Linux)
    assert data["memory_how"] == "VmHWM - VmRSS"
    md = (tmp_path / "compile.md").read_text()
    assert "## (b) and (c): LM head, 64 tokens × H 32 × V 500" in md
    _check_tables(md)


# --------------------------------------------------------------------------------------------
# the verdicts
# --------------------------------------------------------------------------------------------


def _row(ratio, ms=None, compiled=True, peak=None, fullgraph=True, reason=None, cpu=None):
    """A row of the results; ``cpu``: its CPU-time ratio (None: not measured, as on CUDA)."""
    return {"median_ms": ratio if ms is None else ms, "median_ratio": ratio,
            "ratio_q1": ratio - 0.01, "ratio_q3": ratio + 0.01, "compiled": compiled,
            "fullgraph": fullgraph if compiled else None, "fallback_reason": reason,
            "graph_breaks": 0 if compiled else None, "peak_bytes": peak, "cpu_ratio": cpu,
            "times_ms": [ratio if ms is None else ms] * 3,
            "cpu_times_ms": None if cpu is None else [cpu] * 3,
            "cpu_ratio_q1": None if cpu is None else cpu - 0.02,
            "cpu_ratio_q3": None if cpu is None else cpu + 0.02}  # fmt: skip


def _data(bench, mlp_ratio=1.05, others=1.2, lm_ratio=0.9, peak=60 * 2**20, cpu=None, **lm_kw):
    """Results as a full run gives them; ``cpu``: the compiled labelsmooth rows' CPU-time
    ratios (MLP, LM head), None as on CUDA."""
    cpu_mlp, cpu_lm = cpu or (None, None)
    return {
        "quick": False,
        "backend": "inductor",
        "mlp": {
            bench.MLP_BASE: _row(1.0),
            "labelsmooth auto, compiled": _row(mlp_ratio, cpu=cpu_mlp),
            "labelsmooth auto others, compiled": _row(others, cpu=cpu_mlp),
            "F.cross_entropy, eager": _row(1.1, compiled=False),
            "labelsmooth auto, eager": _row(2.1, compiled=False, cpu=cpu_mlp and 2 * cpu_mlp),
        },
        "lm": {
            bench.LM_BASE: _row(1.0, peak=100 * 2**20),
            bench.LM_COMPILED: _row(lm_ratio, peak=peak, cpu=cpu_lm, **lm_kw),
            "linear_cross_entropy, eager": _row(1.2, ms=1.8, compiled=False, peak=peak),
        },
    }


def test_every_target_has_its_value_and_verdict():
    bench = _bench()
    lines = bench.targets(_data(bench))
    assert len(lines) == 7, lines
    assert "(a) `labelsmooth auto, compiled` time ≤ 1.05×" in lines[0]
    assert lines[0].endswith(  # the limit is met; no CPU time measured (as on CUDA)
        ": wall time 1.050× — met (round ratios, quartiles 1.040–1.060)"
    )
    assert "others" in lines[1] and "1.200× — NOT met" in lines[1]
    assert "(b) `linear_cross_entropy, compiled` time ≤ 1.0×" in lines[2]
    assert "0.900× — met" in lines[2]
    assert "peak memory of a step ≤ 0.5×" in lines[3]
    assert "0.600× — NOT met (60 MiB vs 100 MiB)" in lines[3]
    assert "compiled whole (fullgraph=True)" in lines[4]
    assert lines[5] == (
        "- (c) compiled / eager labelsmooth MLP step, same rounds: "
        "wall time 0.500× (quartiles 0.500–0.500) (no target)"
    )
    assert (
        "(c) compiled / eager labelsmooth LM-head step, same rounds: wall time 0.500×" in lines[6]
    )


def test_verdicts_on_the_other_side_of_each_limit():
    bench = _bench()
    data = _data(bench, mlp_ratio=1.051, others=1.0, lm_ratio=1.001, peak=50 * 2**20,
                 cpu=(0.99, 1.02))  # fmt: skip
    lines = bench.targets(data)
    assert "wall time 1.051× — NOT met" in lines[0] and "wall time 1.000× — met" in lines[1]
    assert lines[0].endswith("; CPU time 0.990× — met (quartiles 0.970–1.010)")
    assert "wall time 1.001× — NOT met" in lines[2]
    assert lines[2].endswith("; CPU time 1.020× — NOT met (quartiles 1.000–1.040)")
    assert "0.500× — met (50 MiB vs 100 MiB)" in lines[3]
    assert lines[5].endswith("; CPU time 0.500× (quartiles 0.500–0.500) (no target)")


def test_a_missing_memory_number_is_not_met_and_a_fallback_is_reported():
    bench = _bench()
    data = _data(bench, peak=None, fullgraph=False, reason="Unsupported: a graph break")
    lines = bench.targets(data)
    assert lines[3] == "- (b) peak memory: not measured (see the table) — NOT met (no number)"
    assert "compiled in pieces (fullgraph=False)" in lines[4]
    assert lines[5] == "  - fullgraph=True raised: `Unsupported: a graph break`"


def test_targets_are_checked_only_for_a_full_inductor_run():
    bench = _bench()
    data = _data(bench)
    assert bench.targets({**data, "quick": True})[0].startswith("- not checked: `--quick`")
    assert bench.targets({**data, "backend": "eager"}) == [
        "- not checked: compiled with backend='eager', not inductor"
    ]
    only_mlp = bench.targets({k: v for k, v in data.items() if k != "lm"})
    assert only_mlp[2] == "- (b) not measured in this run (`--parts`)"
    assert not any("LM-head" in line for line in only_mlp)
    only_lm = bench.targets({**data, "mlp": None})
    assert only_lm[0] == "- (a) not measured in this run (`--parts`)"
