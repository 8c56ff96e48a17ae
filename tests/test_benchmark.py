"""The benchmark runs end to end on a tiny grid and writes its table (no timing asserted)."""

from __future__ import annotations

import json

from labelsmooth import benchmark


def test_benchmark_smoke(tmp_path):
    rc = benchmark.main(
        ["--shapes", "64x101", "--dtypes", "float32", "--variants", "builtin", "fused", "roofline",
         "--repeats", "1", "--threads", "1", "--out", str(tmp_path)]
    )  # fmt: skip
    assert rc == 0
    data = json.loads((tmp_path / "cpu.json").read_text())
    assert [r["variant"] for r in data["results"]] == ["builtin", "fused", "roofline"]
    assert all("error" not in r for r in data["results"]), data["results"]
    assert data["machine"]["torch"]
    table = (tmp_path / "cpu.md").read_text()
    assert "| 64×101 | float32 | fused |" in table
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (tmp_path / "cpu.png").exists()
    else:
        assert (tmp_path / "cpu.png").stat().st_size > 0


def test_markdown_reports_ratio_to_builtin():
    info = benchmark.machine_info(2)
    rows = [
        {"variant": "builtin", "shape": [2, 3], "dtype": "float32", "time_s": 2.0,
         "peak_above_inputs_bytes": 60, "logits_bytes": 24},
        {"variant": "fused", "shape": [2, 3], "dtype": "float32", "time_s": 0.5,
         "peak_above_inputs_bytes": 24, "logits_bytes": 24},
    ]  # fmt: skip
    md = benchmark.render_markdown(rows, info)
    assert "500.0 ms (0.25×) | 1.00× logits" in md
    assert "2000.0 ms (1.00×) | 2.50× logits" in md
