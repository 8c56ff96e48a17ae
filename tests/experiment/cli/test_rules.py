"""One set of rules for every subcommand that trains: --task/--regime, model options, the
model's own defaults, --test-size, errors that point to the subcommand's help, path errors."""

from __future__ import annotations

import json

import pytest

import labelsmooth.experiment.train
from labelsmooth.experiment.cli import build_parser, main
from labelsmooth.experiment.cli import train as train_command
from labelsmooth.experiment.train.compare import DEFAULT_SECTIONS, Section


def _one_error_line(args, capsys) -> str:
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("labelsmooth: error: "), lines
    assert captured.out == ""
    return lines[0]


REFUSED = [
    # (arguments, words of the one line); --out under tmp_path is added
    (["train", "--model", "mlp", "--depth", "14"], ["--depth", "--model mlp", "resnet"]),
    (["train", "--depth", "14"], ["--depth", "fitted regime's model is mlp", "--regime short"]),
    (["compare", "--model", "mlp", "--depth", "8"], ["--depth", "--model mlp"]),
    (["distill", "--model", "mlp", "--depth", "8"], ["--depth", "--model mlp"]),
    (["distill", "--task", "lm"], ["--task", "image classifiers only", "got --task lm"]),
    (["distill", "--regime", "short"], ["--regime", "fitted"]),
    (["train", "--task", "lm", "--regime", "fitted"], ["--regime", "not a regime of --task lm"]),
    (["train", "--seq-len", "16"], ["--seq-len", "--task lm"]),
    (["compare", "--d-model", "16"], ["--d-model", "--task lm"]),
    (["train", "--task", "lm", "--hflip"], ["--hflip", "image-task"]),
    (["train", "--task", "lm", "--width", "8"], ["--width", "transformer"]),
    (["train", "--test-size", "-1"], ["--test-size", "integer >= 1"]),
]


@pytest.mark.parametrize(("args", "words"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_refused_in_one_line_pointing_to_the_subcommand_help(args, words, tmp_path, capsys):
    line = _one_error_line([*args, "--out", str(tmp_path / "out")], capsys)
    for word in words:
        assert word in line, (word, line)
    assert line.endswith(f"(see `labelsmooth {args[0]} --help`)")
    assert not (tmp_path / "out").exists()


def test_data_alone_lists_its_subcommands(capsys):
    line = _one_error_line(["data"], capsys)
    assert "fetch" in line and line.endswith("(see `labelsmooth data --help`)")


@pytest.mark.parametrize("flag", ["--out", "--dataset", "--from"])
def test_a_path_the_os_refuses_is_one_line_exit_2(flag, capsys):
    long = "/tmp/" + "x" * 5000  # longer than any file name (ENAMETOOLONG)
    args = {
        "--out": ["train", "--out", long],
        "--dataset": ["train", "--dataset", f"idx:{long}"],
        "--from": ["data", "fetch", "mnist", "--from", long],
    }[flag]
    line = _one_error_line(args, capsys)
    assert f"argument {flag}" in line and "too long" in line.lower(), line
    assert len(line) < 400  # the path is shortened, not printed whole


def _config_of(args, monkeypatch):
    seen = {}

    def fake_train(config, **kwargs):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(labelsmooth.experiment.train, "train", fake_train)
    with pytest.raises(SystemExit):
        main(args)
    return seen["config"]


@pytest.mark.parametrize("regime", [[], ["--regime", "short"], ["--regime", "fitted"]])
def test_the_mlp_width_default_is_its_own(regime, monkeypatch, tmp_path):
    config = _config_of(["train", *regime, "--model", "mlp", "--out", str(tmp_path)], monkeypatch)
    assert config.model == "mlp" and config.width == 1200


def test_resnet_in_the_fitted_regime_gets_the_resnet_defaults(monkeypatch, tmp_path):
    config = _config_of(["train", "--model", "resnet", "--out", str(tmp_path)], monkeypatch)
    assert (config.model, config.depth, config.width) == ("resnet", 14, 8)
    assert config.epochs == 20  # the rest is the regime's


def test_train_defaults_to_the_fitted_regime_as_compare_and_the_python_api():
    parser = build_parser()
    train_args = parser.parse_args(["train"])
    compare_args = parser.parse_args(["compare"])
    assert train_args.regime is None and compare_args.regime is None  # the task's first
    assert train_command._config(train_args).model == "mlp"
    assert Section("fashion-mnist").regime == "fitted" == DEFAULT_SECTIONS[0].regime


def test_train_regime_fitted_is_one_fitted_run_of_compare(tiny_idx, tmp_path, capsys):
    common = ["--dataset", tiny_idx, "--epochs", "1", "--width", "16", "--batch-size", "32",
              "--val-size", "20", "--train-size", "0", "--threads", "1", "--quiet"]  # fmt: skip
    assert main(["compare", *common, "--seeds", "0", "--label-smoothing", "0.1", "--no-plots",
                 "--out", str(tmp_path / "cmp")]) == 0  # fmt: skip
    assert main(["train", "--regime", "fitted", *common, "--seed", "0", "--label-smoothing",
                 "0.1", "--out", str(tmp_path / "one")]) == 0  # fmt: skip
    capsys.readouterr()
    (record_path,) = (tmp_path / "cmp" / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    result = json.loads((tmp_path / "one" / "result.json").read_text())
    same = lambda c: {k: v for k, v in c.items() if k not in ("epochs_stop",)}  # noqa: E731
    assert same(record["config"]) == same(result["config"])
    assert record["config"]["model"] == "mlp" and record["config"]["width"] == 16
    last = {k: v for k, v in result["history"][-1].items() if k != "seconds"}
    assert last == {k: v for k, v in record["history"][-1].items() if k != "seconds"}


def test_test_size_evaluates_on_a_stratified_subset(tiny_idx, tiny_args, tmp_path, capsys):
    from labelsmooth.experiment.tasks import prepare_data

    args = ["train", "--dataset", tiny_idx, "--epochs", "1", "--test-size", "20", *tiny_args]
    assert main([*args, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    config = json.loads((tmp_path / "result.json").read_text())["config"]
    assert config["test_size"] == 20
    from labelsmooth.experiment.config import TrainConfig

    data = prepare_data(TrainConfig(**config), log=None)
    assert len(data.test) == 20
    counts = data.test.labels.bincount().tolist()
    assert max(counts) - min(counts) <= 1  # stratified: 5 classes, 4 each
