"""examples/hf_trainer.py and examples/lightning_module.py run and print what they promise
(each skipped with the reason when its framework is not installed)."""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_hf_trainer_example(capsys, tmp_path, monkeypatch):
    pytest.importorskip("transformers", reason="examples/hf_trainer.py needs transformers")
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")
    monkeypatch.setattr(sys, "argv", ["hf_trainer.py", str(tmp_path)])
    runpy.run_path(str(EXAMPLES / "hf_trainer.py"), run_name="__main__")
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(steps) == 4 and "nll" in steps[0]
    first, last = (float(s.split("smoothed loss ")[1].split()[0]) for s in (steps[0], steps[-1]))
    assert last < first
    assert float(out.split("final perplexity ")[1].split()[0]) < 5.0
    assert list(tmp_path.iterdir()) == []  # saving is off


# raised inside lightning's own code, not by the example
@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")
def test_lightning_example(capsys, tmp_path, monkeypatch):
    if not any(importlib.util.find_spec(m) for m in ("lightning", "pytorch_lightning")):
        pytest.skip("examples/lightning_module.py needs lightning (or pytorch_lightning)")
    monkeypatch.setattr(sys, "argv", ["lightning_module.py", str(tmp_path)])
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # seed_everything sets it
    runpy.run_path(str(EXAMPLES / "lightning_module.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "(smoothed)" in out
    assert float(out.split("val accuracy ")[1].split()[0]) > 0.9
