"""Online label smoothing on the command line: ``train --loss ols [--ols-alpha A]`` and
``compare --ols [--ols-alpha A ...]``, end to end on a tiny generated dataset, and the one-line
refusals of combinations that make no sense."""

from __future__ import annotations

import json

import pytest

import labelsmooth.experiment.tasks.image
from labelsmooth.experiment.cli import main
from labelsmooth.experiment.train import load_checkpoint

TINY = ["--depth", "8", "--width", "4", "--batch-size", "32", "--val-size", "20"]
TINY += ["--train-size", "0", "--threads", "1", "--quiet", "--regime", "short"]


@pytest.fixture(scope="module")
def idx_spec(tmp_path_factory, synthetic_idx):
    return f"idx:{synthetic_idx(tmp_path_factory.mktemp('idx'), 200, 60)}"


def test_train_loss_ols_stops_and_resumes(idx_spec, tmp_path, capsys):
    args = ["train", "--dataset", idx_spec, "--epochs", "2", "--out", str(tmp_path), *TINY]
    args += ["--loss", "ols", "--ols-alpha", "0.3"]
    assert main([*args, "--stop-after-epoch", "1"]) == 0
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert int(state["criterion"]["epoch"]) == 1 and state["config"]["ols_alpha"] == 0.3
    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert '"completed": true' in out
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["config"]["loss"] == "ols" and len(result["history"]) == 2
    # the same folder with another loss is another run
    assert main([*args[:-4], "--resume"]) == 1
    assert "loss: saved 'ols' vs now 'ce'" in capsys.readouterr().err


def test_compare_ols_rows_beside_the_eps_rows(idx_spec, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--dataset", idx_spec, "--seeds", "0", "--epochs", "1", "--out", str(out)]
    args += ["--label-smoothing", "0", "0.1", "--ols", "--ols-alpha", "0.5", "0.7", "--no-plots"]
    assert main([*args, *TINY]) == 0
    table = (out / "results.md").read_text()
    for setting in ("baseline", "LS ε=0.1 (uniform)", "OLS (α=0.5)", "OLS (α=0.7)"):
        assert f"| {setting} " in table, setting
    assert "OLS (α=0.7)" in capsys.readouterr().out


@pytest.fixture
def no_data_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data were loaded before the arguments were checked")

    monkeypatch.setattr(labelsmooth.experiment.tasks.image, "load_dataset", refuse)


BAD = [
    # (arguments, words the one error line must contain)
    (["train", "--loss", "ols", "--label-smoothing", "0.1"],
     ["--label-smoothing", "--loss ols replaces the uniform ε term", "0.1"]),
    (["train", "--ols-alpha", "0.3"], ["--ols-alpha", "--loss ols", "--loss ce"]),
    (["train", "--loss", "ols", "--ols-alpha", "1.5"], ["--ols-alpha", "[0, 1]", "'1.5'"]),
    (["train", "--loss", "focal"], ["--loss", "'focal'"]),
    (["train", "--task", "lm", "--loss", "ols"], ["--loss", "ols", "--task lm", "ce"]),
    (["compare", "--ols-alpha", "0.3"], ["--ols-alpha", "add --ols"]),
    (["compare", "--ols", "--ols-alpha", "0.5", "0.5"], ["--ols-alpha", "more than once"]),
    (["compare", "--ols", "--ols-alpha", "-1"], ["--ols-alpha", "'-1'"]),
    (["compare", "--task", "lm", "--ols"], ["--ols", "--task lm"]),
    (["compare", "--full", "--ols"], ["--full", "drop --ols"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_refused_in_one_line_before_any_work(args, words, tmp_path, capsys, no_data_loading):
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("labelsmooth: error: argument "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert captured.out == "" and not out.exists()
