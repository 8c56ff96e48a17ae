"""The training recipe on a tiny generated IDX dataset: end to end, exact resume, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
import torch

import labelsmooth
from labelsmooth.experiment.data import DataUnavailableError
from labelsmooth.experiment.train import (
    CheckpointError,
    TrainConfig,
    TrainingInterrupted,
    config_differences,
    load_checkpoint,
    prepare_data,
    save_checkpoint,
    train,
)


@pytest.fixture(scope="module")
def config(tmp_path_factory, synthetic_idx, tiny_config):
    d = synthetic_idx(tmp_path_factory.mktemp("idx"), 320, 100)
    return tiny_config(f"idx:{d}", epochs=3, val_size=40, label_smoothing=0.1, convention="others")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_end_to_end_uses_the_library_loss(config, tmp_path, monkeypatch):
    calls = []
    real = labelsmooth.cross_entropy

    def spy(*args, **kwargs):
        calls.append((kwargs["label_smoothing"], kwargs["convention"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(labelsmooth, "cross_entropy", spy)
    result = train(config, out_dir=tmp_path, progress=False, log=None)
    assert result.completed and len(result.history) == 3
    assert set(calls) == {(0.1, "others")}
    assert result.history[-1]["top1"] > 0.8  # the stripes are easy to tell apart
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["config"]["label_smoothing"] == 0.1 and len(saved["history"]) == 3
    assert {"loss", "top1", "top5", "nll", "ece"} <= set(saved["history"][0])
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 3


def test_same_seed_same_result(config):
    data = prepare_data(config, log=None)
    a = train(config, data=data, progress=False, log=None)
    b = train(config, data=data, progress=False, log=None)
    assert _same_weights(a.model, b.model) and a.history[-1]["nll"] == b.history[-1]["nll"]


def test_resume_after_epoch_equals_uninterrupted(config, tmp_path):
    data = prepare_data(config, log=None)
    full = train(config, data=data, out_dir=tmp_path / "full", progress=False, log=None)
    part = train(
        dataclasses.replace(config, epochs_stop=1),
        data=data,
        out_dir=tmp_path / "split",
        progress=False,
        log=None,
    )
    assert not part.completed and len(part.history) == 1
    resumed = train(
        config, data=data, out_dir=tmp_path / "split", resume=True, progress=False, log=None
    )
    assert resumed.completed and _same_weights(full.model, resumed.model)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]
    assert full.metrics == resumed.metrics


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(config, tmp_path):
    data = prepare_data(config, log=None)
    full = train(config, data=data, progress=False, log=None)

    def press_ctrl_c(epoch, step):
        if (epoch, step) == (1, 1):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="checkpoint saved") as info:
        train(config, data=data, out_dir=tmp_path, progress=False, log=None, on_step=press_ctrl_c)
    assert (info.value.epoch, info.value.step) == (1, 2)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 2)
    resumed = train(config, data=data, out_dir=tmp_path, resume=True, progress=False, log=None)
    assert _same_weights(full.model, resumed.model) and full.metrics == resumed.metrics


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_checkpoint_is_a_clear_error_and_is_kept(config, tmp_path, damage):
    train(dataclasses.replace(config, epochs_stop=1), out_dir=tmp_path, progress=False, log=None)
    ckpt = tmp_path / "checkpoint.pt"
    (tmp_path / "result.json").unlink()
    data = bytearray(ckpt.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        del data[len(data) // 2 :]
    ckpt.write_bytes(bytes(data))
    match = "corrupted" if damage == "flip" else "truncated"
    with pytest.raises(CheckpointError, match=match):
        train(config, out_dir=tmp_path, resume=True, progress=False, log=None)
    assert ckpt.read_bytes() == bytes(data)  # nothing overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_resume_with_other_settings_or_no_checkpoint(config, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(config, out_dir=tmp_path, resume=True, progress=False, log=None)
    train(dataclasses.replace(config, epochs_stop=1), out_dir=tmp_path, progress=False, log=None)
    other = dataclasses.replace(config, label_smoothing=0.2)
    with pytest.raises(CheckpointError, match="label_smoothing: saved 0.1 vs now 0.2"):
        train(other, out_dir=tmp_path, resume=True, progress=False, log=None)
    # where the data cache lives and where to stop are not part of "the same run"
    same = dataclasses.replace(config, data_dir=str(tmp_path), epochs_stop=2)
    assert train(same, out_dir=tmp_path, resume=True, progress=False, log=None).history


def test_missing_dataset_is_a_clear_error(config, tmp_path):
    missing = dataclasses.replace(config, dataset=f"idx:{tmp_path / 'nowhere'}")
    with pytest.raises(DataUnavailableError, match="not found"):
        train(missing, progress=False, log=None)


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("epochs", 0, "an integer >= 1"),
        ("epochs", True, "an integer >= 1"),
        ("batch_size", -5, "an integer >= 1"),
        ("num_threads", 0, "an integer >= 1"),
        ("train_size", -1, "an integer >= 1 or None"),
        ("train_size", 0, "an integer >= 1 or None"),
        ("val_size", -1, "an integer >= 0"),
        ("warmup_epochs", -1.0, "a finite number >= 0"),
        ("lr", float("nan"), "a finite number > 0"),
        ("lr", float("inf"), "a finite number > 0"),
        ("lr", 0.0, "a finite number > 0"),
        ("label_smoothing", 1.0, r"a number in \[0, 1\)"),
        ("label_smoothing", -0.1, r"a number in \[0, 1\)"),
        ("convention", "bogus", "one of uniform, others, unnormalized"),
        ("depth", 9, r"an integer 6n\+2"),
        ("seed", -1, "an integer >= 0"),
        ("epochs_stop", 0, "an integer >= 1 or None"),
    ],
)
def test_config_refuses_out_of_range_values(field, value, rule):
    with pytest.raises(ValueError, match=rf"^{field} must be {rule}.*got {field}="):
        TrainConfig(**{field: value})


def test_the_task_refuses_a_model_it_does_not_declare():
    from labelsmooth.experiment.tasks import resolve

    with pytest.raises(ValueError, match="model='vgg' does not fit task='image'"):
        resolve(TrainConfig(model="vgg"))
    with pytest.raises(ValueError, match="task must be one of image, lm"):
        resolve(TrainConfig(task="bogus"))


def test_config_differences_is_the_one_same_run_rule():
    a = TrainConfig().to_dict()
    assert config_differences(a, {**a, "data_dir": "/x", "epochs_stop": 1}) == []
    assert config_differences(a, {**a, "seed": 3}) == ["seed: saved 0 vs now 3"]
    assert config_differences({**a, "new_field": 1}, a) == ["new_field: saved 1 vs now None"]


def test_trainer_functions_stay_short():
    import ast
    import inspect

    from labelsmooth.experiment.train import trainer

    tree = ast.parse(inspect.getsource(trainer))
    lengths = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    assert max(lengths.values()) <= 60, lengths


def test_crafted_checkpoint_for_another_model_is_a_clear_error(config, tmp_path):
    train(dataclasses.replace(config, epochs_stop=1), out_dir=tmp_path, progress=False, log=None)
    ckpt = tmp_path / "checkpoint.pt"
    state = load_checkpoint(ckpt)
    state["model"] = torch.nn.Linear(3, 2).state_dict()
    save_checkpoint(ckpt, state)  # a valid checksum over the wrong contents
    with pytest.raises(CheckpointError, match="does not fit this run's model"):
        train(config, out_dir=tmp_path, resume=True, progress=False, log=None)
