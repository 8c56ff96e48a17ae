"""benchmarks/gpu_linear.py: its arguments and a tiny end-to-end run (on CPU without a GPU)."""

from __future__ import annotations

import json

import pytest
import torch

CUDA = torch.cuda.is_available()


def test_arguments(capsys, benchmark_script, refuses_each):
    bench = benchmark_script("gpu_linear")
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0 and "--dry-run" in capsys.readouterr().out
    assert bench.main(["--dry-run", "--shapes", "8x16x1000", "--dtypes", "bfloat16"]) == 0
    plan = capsys.readouterr().out
    assert "case 8x16x1000 bfloat16" in plan and "variant labelsmooth: available" in plan
    bad = [
        (["--dry-run", "--shapes", "8x1000"], "argument --shapes: expected NxHxV"),
        (["--dry-run", "--shapes", "8x0x1000"], "N and H must be >= 1"),
        (["--dry-run", "--variants", "apex"], "argument --variants: invalid choice"),
        (["--dry-run", "--label-smoothing", "-0.1"], "--label-smoothing must be in [0, 1]"),
        (["--dry-run", "--warmup", "-1"], "--iters must be >= 1 and --warmup >= 0"),
        (["--dry-run", "--budget-s", "0"], "--budget-s must be positive"),
        ([], "--out DIR is required"),
    ]
    if not CUDA:
        bad.append((["--out", "x"], "no CUDA device (use --dry-run"))
    refuses_each(bench.main, "gpu_linear.py", bad)


def test_runs_end_to_end(tmp_path, capsys, benchmark_script):
    """Every variant that can run here agrees with the float64 loss; the rest say why not."""
    device = "cuda" if CUDA else "cpu"
    argv = ["--device", device, "--shapes", "5x8x300", "--dtypes", "float32", "--iters", "1",
            "--warmup", "0", "--variants", "builtin", "labelsmooth", "liger", "cce",
            "--out", str(tmp_path)]  # fmt: skip
    assert benchmark_script("gpu_linear").main(argv) == 0
    result = json.loads((tmp_path / "gpu-linear.json").read_text())
    (case,) = result["cases"]
    rows = {row["variant"]: row for row in case["rows"]}
    assert list(rows) == ["builtin", "labelsmooth", "liger", "cce"]
    for name in ("builtin", "labelsmooth"):
        assert rows[name]["rel_loss_err"] < 1e-5, rows[name]
    assert rows["labelsmooth"]["x_builtin"] > 0
    if not CUDA:
        assert "skipped" in rows["liger"] and "skipped" in rows["cce"]
    md = (tmp_path / "gpu-linear.md").read_text()
    assert "## 5x8x300 float32" in md and "| labelsmooth |" in md


def test_cce_composition_is_the_smoothed_loss():
    """The smoothing term composed around an NLL-only head equals the smoothed loss."""
    torch.manual_seed(0)
    h, w = torch.randn(7, 5, dtype=torch.float64), torch.randn(11, 5, dtype=torch.float64)
    y = torch.randint(0, 11, (7,))
    nll = torch.nn.functional.cross_entropy(h @ w.T, y, reduction="none")
    composed = (nll + 0.1 * ((h * w[y]).sum(-1) - h @ w.mean(0))).mean()
    expected = torch.nn.functional.cross_entropy(h @ w.T, y, label_smoothing=0.1)
    torch.testing.assert_close(composed, expected)
