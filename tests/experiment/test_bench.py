"""The benchmark harness: a tiny end-to-end run, where it writes, what its table and plot list.

No timing is asserted (house rule 10); the one end-to-end run measures two variants at one
small shape, everything else works on hand-made result rows.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest

from labelsmooth.experiment import bench as benchmark


def _row(variant: str, time_s: float, mem: int | None, shape=(2, 3), dtype="float32") -> dict:
    return {"variant": variant, "shape": list(shape), "dtype": dtype, "time_s": time_s,
            "peak_above_inputs_bytes": mem, "logits_bytes": 24}  # fmt: skip


def test_quick_run_writes_a_new_folder_in_the_current_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--quick", "--shapes", "64x101", "--dtypes", "float32", "--variants", "builtin",
            "fused", "--threads", "1"]  # fmt: skip
    assert benchmark.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    # a smoke test says so first, then the terminal table with its column headers
    assert printed[0] == benchmark.QUICK_CAVEAT
    assert printed[1].split() == ["shape", "dtype", "variant", "time", "(median)", "memory"]
    assert printed[2].split()[:3] == ["64×101", "float32", "builtin"]
    assert "×" not in "".join(line.split("float32", 1)[1] for line in printed[2:4])  # no ratios
    # the default output is a new folder under ./labelsmooth-bench, never benchmarks/results
    (out,) = (tmp_path / "labelsmooth-bench").iterdir()
    assert not (tmp_path / "benchmarks").exists()
    data = json.loads((out / "cpu-quick.json").read_text())
    assert [r["variant"] for r in data["results"]] == ["builtin", "fused"]
    assert all("error" not in r for r in data["results"]), data["results"]
    assert data["machine"]["torch"] and data["machine"]["c_compiler"]
    assert data["smoke_test"] is True
    table = (out / "cpu-quick.md").read_text()
    assert table.startswith("# CPU benchmark smoke test (`--quick`): not a measurement")
    assert benchmark.QUICK_CAVEAT in table
    assert re.search(r"\| 64×101 \| float32 \| fused \| \d+\.\d{3} ms \| not measured \|", table)
    assert "`fused-inplace`" not in table and "Targets" not in table
    if data["auto_runs"]:  # labelsmooth.chosen_impl is public: what auto runs is reported
        assert data["auto_runs"][0]["impl"] in ("torch", "fused", "reference")
    assert not (out / "cpu-quick.png").exists()  # the plot shows ratios; a smoke test has none
    # a second run never writes over the first
    assert benchmark.default_out() != out.relative_to(tmp_path)


def test_a_measured_run_uses_fresh_processes_and_reports_memory(tmp_path, monkeypatch, capsys):
    """Without --quick each variant is timed and measured in its own processes."""
    monkeypatch.chdir(tmp_path)
    argv = ["--shapes", "64x101", "--dtypes", "float32", "--variants", "builtin",
            "--repeats", "1", "--threads", "1", "--out", "out"]  # fmt: skip
    assert benchmark.main(argv) == 0
    printed = capsys.readouterr().out
    assert benchmark.QUICK_CAVEAT not in printed
    data = json.loads((tmp_path / "out" / "cpu.json").read_text())
    assert data["smoke_test"] is False
    assert all(r["peak_above_inputs_bytes"] is not None for r in data["results"]), data
    table = (tmp_path / "out" / "cpu.md").read_text()
    assert table.startswith("# CPU benchmark: label-smoothed cross-entropy")
    assert re.search(
        r"\| 64×101 \| float32 \| builtin \| [\d.]+ ms \(1\.00×\) \| [\d.]+× logits \|", table
    )


def test_quick_grid_is_small_runs_in_process_and_skips_compilation(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    calls = []

    def fake(variant, n, c, dtype, repeats, threads):  # noqa: ANN001, ANN202
        calls.append((variant, (n, c), dtype, repeats))
        return {**_row(variant, 1e-4, None, shape=(n, c), dtype=dtype), "times_s": [1e-4]}

    def no_subprocess(*args):  # noqa: ANN002, ANN202
        raise AssertionError("--quick must not start a process per variant")

    monkeypatch.setattr(benchmark, "_in_process", fake)
    monkeypatch.setattr(benchmark, "_subprocess", no_subprocess)
    assert benchmark.main(["--quick", "--threads", "1"]) == 0
    variants = [v for v in benchmark.VARIANTS if v != "compiled-builtin"]
    grid = [(s, d) for s in benchmark.QUICK_SHAPES for d in benchmark.DTYPES]
    assert [(shape, dtype) for _, shape, dtype, _ in calls[:: len(variants)]] == grid
    assert len(calls) == len(grid) * len(variants) == 2 * 2 * 8
    assert {v for v, *_ in calls} == set(variants)
    assert {r for *_, r in calls} == {benchmark.QUICK_REPEATS}
    out = capsys.readouterr().out
    assert out.startswith(benchmark.QUICK_CAVEAT) and "smoke test only" in out
    assert "SMOKE TEST" in benchmark.QUICK_CAVEAT and "not a measurement" in benchmark.QUICK_CAVEAT


def test_ratio_is_a_dash_where_the_spread_exceeds_its_distance_from_one() -> None:
    base = {"variant": "builtin", "time_s": 1.0, "times_s": [0.8, 1.0, 1.0, 1.2]}  # IQR 0.1
    steady = [0.5, 0.5, 0.5, 0.5]
    assert benchmark.ratio_or_dash({"time_s": 0.5, "times_s": steady}, base) == "0.50×"
    # 1.05 is 0.05 from 1, the spreads add up to 0.1 + 0: not measured which side of 1 it is
    assert benchmark.ratio_or_dash({"time_s": 1.05, "times_s": [1.05] * 4}, base) == "—"
    noisy = {"time_s": 0.5, "times_s": [0.1, 0.3, 0.5, 0.9, 1.4]}  # IQR / median = 1.2
    assert benchmark.ratio_or_dash(noisy, base) == "—"
    assert benchmark.ratio_or_dash(base, base) == "1.00×"  # the reference itself
    md = benchmark.render_markdown(
        [{**_row("builtin", 1.0, 24), **base}, {**_row("fused", 1.05, 24), "times_s": [1.05] * 4}],
        benchmark.machine_info(2),
    )
    assert "| 2×3 | float32 | fused | 1050.0 ms (—) |" in md


def test_markdown_records_the_load_average_or_says_it_was_not() -> None:
    info = benchmark.machine_info(2)
    rows = [_row("builtin", 2.0, 60)]
    with_load = benchmark.render_markdown(rows, {**info, "load_average": [1.5, 2.25, 3.0]})
    assert "load average 1.50 / 2.25 / 3.00 (1, 5, 15 min)" in with_load
    assert "load average not recorded" in benchmark.render_markdown(
        rows, {**info, "load_average": None}
    )


def test_default_out_is_new_and_not_the_committed_results(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = benchmark.default_out(now=0.0)
    assert first.parts[0] == "labelsmooth-bench" and "benchmarks" not in first.parts
    first.mkdir(parents=True)
    assert benchmark.default_out(now=0.0) != first  # same second: a suffixed new folder


def test_markdown_reports_ratio_to_builtin_and_lists_only_variants_that_ran() -> None:
    info = benchmark.machine_info(2)
    rows = [_row("builtin", 2.0, 60), _row("fused", 0.5, 24)]
    md = benchmark.render_markdown(rows, info)
    assert "500.0 ms (0.25×) | 1.00× logits" in md
    assert "2000.0 ms (1.00×) | 2.50× logits" in md
    assert "- `fused`:" in md and "- `builtin`:" in md
    for absent in set(benchmark.VARIANTS) - {"builtin", "fused"}:
        assert f"`{absent}`" not in md, absent
    assert "Targets" not in md  # targets live in benchmarks/results/cpu-notes.md


def test_markdown_says_what_auto_runs_and_keeps_the_notes() -> None:
    info = benchmark.machine_info(2)
    rows = [_row("builtin", 2.0, 60), {**_row("auto", 1.0, 24), "auto_runs": "torch"}]
    auto = [
        {"shape": [2, 3], "dtype": "float32", "impl": "torch", "measured_as": None},
        {"shape": [8, 9], "dtype": "float32", "impl": "fused", "measured_as": "fused"},
    ]
    md = benchmark.render_markdown(rows, info, notes="## Targets\n\nhand-written", auto_runs=auto)
    assert "| 2×3 | float32 | auto (runs torch) | 1000.0 ms (0.50×) |" in md
    assert "- 2×3 float32: `torch` (its own `auto` row)" in md
    assert "- 8×9 float32: `fused` (the same call as the `fused` row)" in md
    assert md.rstrip().endswith("hand-written")


def test_auto_is_measured_unless_it_repeats_a_measured_call() -> None:
    assert benchmark._auto_alias("fused", ["builtin", "auto", "fused"]) == "fused"
    assert benchmark._auto_alias("fused", ["builtin", "auto"]) is None  # fused not measured
    assert benchmark._auto_alias("torch", ["builtin", "auto", "fused"]) is None  # + our checks
    assert benchmark._auto_alias(None, ["builtin", "auto", "fused"]) is None  # no chosen_impl


def test_plot_shows_only_variants_that_ran() -> None:
    pytest.importorskip("matplotlib")
    rows = [
        _row("builtin", 2.0, 60),
        _row("fused", 0.5, 24),
        _row("roofline", 0.1, 0),
        _row("builtin", 1.0, 10, shape=(4, 5)),
        {"variant": "reference", "shape": [4, 5], "dtype": "float32", "error": "boom"},
    ]
    fig = benchmark.plot_figure(rows)
    _, labels = fig.axes[0].get_legend_handles_labels()
    assert labels == ["fused", "roofline"]  # not the baseline, not a variant that only failed
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["2×3\nfloat32", "4×5\nfloat32"]
    heights = [b.get_height() for b in fig.axes[0].patches]
    assert heights[0] == 0.25 and math.isnan(heights[1])  # fused: 2×3 measured, 4×5 not


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--repeats", "0"], r"argument --repeats: must be a positive integer, got '0'"),
        (["--threads", "-1"], r"argument --threads: must be a positive integer, got '-1'"),
        (["--shapes", "8x0"], r"argument --shapes: a shape is written NxC .*'8x0'"),
        (["--variants", "compiled"], r"argument --variants: invalid choice: 'compiled'"),
        (["--merge"], r"--merge needs --out"),
    ],
)
def test_bad_arguments_one_line_exit_2_before_any_work(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        benchmark.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("labelsmooth: error: bench: ") and err.count("\n") == 1, err
    assert re.search(match, err), err
    assert os.listdir(tmp_path) == []  # nothing created


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    target = tmp_path / "a-file"
    target.write_text("")
    with pytest.raises(SystemExit) as exc:
        benchmark.main(["--out", str(target / "sub")])
    assert exc.value.code == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_harness_uses_only_public_api() -> None:
    source = Path(benchmark.__file__).read_text()
    # no private module or name (labelsmooth._dispatch, labelsmooth.ops, from ... import _x)
    assert not re.search(r"labelsmooth\._(?!_version__)|labelsmooth\.ops|import _", source)


def test_recorded_command_names_no_machine_path(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    argv = ["--out", "/tmp/run 1", "--from", str(tmp_path / "data"), "--x", "/elsewhere/f"]
    got = benchmark.recorded_command("python3 benchmarks/gpu_bench.py", argv)
    assert got == "python3 benchmarks/gpu_bench.py --out OUT --from data --x PATH"
    assert benchmark.recorded_command("python b.py", ["--out=/abs/x"]) == "python b.py --out=OUT"
    assert benchmark.recorded_command("python b.py", []) == "python b.py"


def test_background_load_starts_and_stops_its_processes() -> None:
    with benchmark.background_load(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.returncode is not None for p in procs)
    with benchmark.background_load(0) as none:
        assert none == []


def test_load_option_records_the_load_and_writes_its_own_table(
    tmp_path: Path, monkeypatch, capsys
) -> None:  # noqa: ANN001
    started: list[int] = []
    real = benchmark.background_load

    def load(n: int):  # noqa: ANN202
        started.append(n)
        return real(n)

    monkeypatch.setattr(benchmark, "background_load", load)
    argv = ["--quick", "--load", "1", "--variants", "fused", "--shapes", "8x10",
            "--dtypes", "float32", "--out", str(tmp_path)]  # fmt: skip
    assert benchmark.main(argv) == 0
    assert started == [1]
    info = json.loads((tmp_path / "cpu-quick.json").read_text())["machine"]
    assert info["background_load"] == 1
    assert (
        "1 busy background processes started by the benchmark (`--load 1`)"
        in (tmp_path / "cpu-quick.md").read_text()
    )
    with pytest.raises(SystemExit):
        benchmark.main(["--load", "-1"])
    assert "argument --load: must be an integer >= 0, got '-1'" in capsys.readouterr().err
