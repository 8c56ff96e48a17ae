"""The scripts in examples/ run and print what they promise."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_conventions_example(capsys):
    runpy.run_path(str(EXAMPLES / "conventions.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "uniform" in out and "others" in out and "unnormalized" in out


def test_calibration_example(capsys, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    png = tmp_path / "reliability.png"
    monkeypatch.setattr(sys, "argv", ["calibration.py", str(png)])
    runpy.run_path(str(EXAMPLES / "calibration.py"), run_name="__main__")
    out = capsys.readouterr().out
    temperature = float(out.split("fitted temperature ")[1].split()[0])
    assert 2.0 < temperature < 3.0
    assert png.stat().st_size > 0
