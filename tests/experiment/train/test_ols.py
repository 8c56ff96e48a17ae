"""Online label smoothing as a setting of the app: the loss in the loop (soft labels updated at
every epoch end, kept in checkpoints, exact resume), OLS rows in a comparison, the refusals,
and records written before the loss was recorded."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
import torch

import labelsmooth
from labelsmooth.experiment import report
from labelsmooth.experiment.config import TrainConfig, config_differences
from labelsmooth.experiment.tasks import get_task, resolve
from labelsmooth.experiment.train import (
    TrainingInterrupted,
    load_checkpoint,
    prepare_data,
    train,
)
from labelsmooth.experiment.train.compare import Section, plan_runs, run_compare

IMAGE = get_task("image")


@pytest.fixture(scope="module")
def config(tmp_path_factory, synthetic_idx, tiny_config):
    d = synthetic_idx(tmp_path_factory.mktemp("idx"), 320, 100)
    return tiny_config(f"idx:{d}", epochs=3, val_size=40, loss="ols", ols_alpha=0.4)


@pytest.fixture(scope="module")
def data(config):
    return prepare_data(config, log=None)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _same_criterion(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_loop_trains_with_ols_and_updates_s_at_each_epoch_end(config, data, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    calls = {"forward": 0, "next_epoch": 0}
    OLS = labelsmooth.OnlineLabelSmoothing
    forward, next_epoch = OLS.forward, OLS.next_epoch

    def spy_forward(self, *args):
        calls["forward"] += 1
        assert self.alpha == 0.4 and self.training
        return forward(self, *args)

    def spy_next_epoch(self):
        calls["next_epoch"] += 1
        next_epoch(self)

    monkeypatch.setattr(labelsmooth.OnlineLabelSmoothing, "forward", spy_forward)
    monkeypatch.setattr(labelsmooth.OnlineLabelSmoothing, "next_epoch", spy_next_epoch)
    result = train(config, data=data, out_dir=tmp_path, progress=False, log=None)
    steps = -(-len(data.train) // config.batch_size)
    assert calls == {"forward": 3 * steps, "next_epoch": 3}
    assert result.completed and result.history[-1]["top1"] > 0.8
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    S = state["criterion"]["soft_labels"]  # learned: no longer uniform, rows sum to 1
    assert int(state["criterion"]["epoch"]) == 3 and not torch.allclose(S, torch.full_like(S, 0.2))
    torch.testing.assert_close(S.sum(1), torch.ones(5, dtype=torch.float64))
    assert float(state["criterion"]["counts"].sum()) == 0  # reset after the last epoch
    assert state["config"]["loss"] == "ols" and state["config"]["ols_alpha"] == 0.4


def test_ols_is_not_the_baseline(config, data):
    ols = train(dataclasses.replace(config, epochs=1), data=data, progress=False, log=None)
    ce = train(dataclasses.replace(config, epochs=1, loss="ce", ols_alpha=0.5), data=data,
               progress=False, log=None)  # fmt: skip
    assert ols.history[0]["loss"] != ce.history[0]["loss"]


def test_resume_after_an_epoch_equals_uninterrupted(config, data, tmp_path):
    full = train(config, data=data, out_dir=tmp_path / "full", progress=False, log=None)
    part = train(dataclasses.replace(config, epochs_stop=1), data=data, out_dir=tmp_path / "split",
                 progress=False, log=None)  # fmt: skip
    assert not part.completed
    assert int(load_checkpoint(tmp_path / "split" / "checkpoint.pt")["criterion"]["epoch"]) == 1
    resumed = train(config, data=data, out_dir=tmp_path / "split", resume=True, progress=False,
                    log=None)  # fmt: skip
    assert _same_weights(full.model, resumed.model) and full.metrics == resumed.metrics
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["criterion"]
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["criterion"]
    assert _same_criterion(a, b)


def test_ctrl_c_mid_epoch_keeps_the_partial_statistics_and_resumes_exactly(config, data,
                                                                          tmp_path):  # fmt: skip
    full = train(config, data=data, out_dir=tmp_path / "full", progress=False, log=None)

    def press_ctrl_c(epoch, step):
        if (epoch, step) == (1, 3):
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted, match="checkpoint saved"):
        train(config, data=data, out_dir=out, progress=False, log=None, on_step=press_ctrl_c)
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 4)
    assert float(state["criterion"]["counts"].sum()) > 0  # the epoch's statistics so far
    resumed = train(config, data=data, out_dir=out, resume=True, progress=False, log=None)
    assert _same_weights(full.model, resumed.model) and full.metrics == resumed.metrics
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["criterion"]
    assert _same_criterion(a, load_checkpoint(out / "checkpoint.pt")["criterion"])


def test_a_checkpoint_without_the_loss_state_does_not_resume_an_ols_run(config, data, tmp_path):
    from labelsmooth.experiment.train import CheckpointError, save_checkpoint

    train(dataclasses.replace(config, epochs_stop=1), data=data, out_dir=tmp_path, progress=False,
          log=None)  # fmt: skip
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    del state["criterion"]
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match="does not fit"):
        train(config, data=data, out_dir=tmp_path, resume=True, progress=False, log=None)


def test_compare_with_ols_rows_end_to_end_and_resume(config, tmp_path):
    base = dataclasses.replace(config, epochs=2, loss="ce", ols_alpha=0.5)
    sections = [Section(config.dataset, (0.0, 0.1), ("uniform",), (0, 1), ols_alphas=(0.5,))]
    out = tmp_path / "res"
    res = run_compare(sections, base, out, plots=False, progress=False, log=None)
    assert len(res["records"]) == 6
    assert [r["setting"] for r in res["summary"]] == ["baseline", "LS ε=0.1 (uniform)",
                                                    "OLS (α=0.5)"]  # fmt: skip
    ols = next(r for r in res["summary"] if r["setting"] == "OLS (α=0.5)")
    baseline = res["summary"][0]
    assert ols["d_top1"] == pytest.approx(ols["top1"] - baseline["top1"])
    table = (out / "results.md").read_text()
    row = next(line for line in table.splitlines() if "OLS (α=0.5)" in line)
    assert "—" not in row  # its Δ Top-1 is a number: OLS is not the baseline
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert csv_rows[0].endswith("loss,ols_alpha") and sum(",ols,0.5" in r for r in csv_rows) == 2
    names = [r["name"] for r in res["records"]]
    assert sum("-ols0.5-seed" in n for n in names) == 2
    record = json.loads((out / "runs" / f"{names[2]}.json").read_text())
    assert record["loss"] == "ols" and record["ols_alpha"] == 0.5
    assert record["config"]["loss"] == "ols" and record["label_smoothing"] == 0.0
    messages: list[str] = []
    again = run_compare(sections, base, out, resume=True, plots=False, progress=False,
                        log=messages.append)  # fmt: skip
    assert sum("already done" in m for m in messages) == 6
    assert again["summary"] == res["summary"]


def test_plan_runs_adds_ols_runs_per_seed():
    runs = plan_runs(Section("mnist", (0.0, 0.1), ("uniform",), (0, 1), "short",
                             ols_alphas=(0.5, 0.3)))  # fmt: skip
    assert [r.name for r in runs[:4]] == [
        "mnist-baseline-seed0",
        "mnist-ls0.1-uniform-seed0",
        "mnist-ols0.5-seed0",
        "mnist-ols0.3-seed0",
    ]
    assert runs[2].ols_alpha == 0.5 and runs[2].label_smoothing == 0 and len(runs) == 8


def test_refusals_name_the_field_and_value():
    with pytest.raises(ValueError, match="label_smoothing must be 0, got label_smoothing=0.1"):
        TrainConfig(loss="ols", label_smoothing=0.1)
    with pytest.raises(ValueError, match="ols_alpha is read only with loss='ols'"):
        TrainConfig(ols_alpha=0.3)
    with pytest.raises(ValueError, match=r"ols_alpha must be a number in \[0, 1\]"):
        TrainConfig(loss="ols", ols_alpha=1.5)
    with pytest.raises(ValueError, match="loss must be one of ce, ols, got loss='focal'"):
        TrainConfig(loss="focal")
    lm = TrainConfig(task="lm", dataset="shakespeare", model="transformer", loss="ols")
    with pytest.raises(ValueError, match="loss='ols' does not fit task='lm'"):
        resolve(lm)
    with pytest.raises(ValueError, match="ols_alphas: task 'lm' takes loss ce"):
        Section("shakespeare", (0.0,), task="lm", ols_alphas=(0.5,))
    with pytest.raises(ValueError, match="ols_alpha must be"):
        Section("mnist", ols_alphas=(2.0,))


def test_records_and_configs_written_before_the_loss_existed_still_read():
    old = TrainConfig().to_dict()
    del old["loss"], old["ols_alpha"]
    assert config_differences(old, TrainConfig().to_dict()) == []
    assert config_differences(old, TrainConfig(loss="ols").to_dict()) == [
        "loss: saved 'ce' vs now 'ols'"
    ]
    record = {"label_smoothing": 0.0, "convention": "-"}  # an old baseline record
    assert report.ols_alpha(record) is None and report.is_baseline(record)
    assert report.setting_name(0.0, "uniform", 0.5) == "OLS (α=0.5)"
    assert report.setting_name(0.0, "others", 0.3) == "OLS (α=0.3, others)"


def test_the_convention_reaches_the_loss_and_a_plain_run_has_no_loss_state(config, data,
                                                                          tmp_path):  # fmt: skip
    from labelsmooth.experiment.tasks import ImageClassification

    task = ImageClassification(dataclasses.replace(config, convention="others"), data)
    criterion = task.build_loss()
    assert isinstance(criterion, labelsmooth.OnlineLabelSmoothing)
    assert (criterion.convention, criterion.alpha, criterion.num_classes) == ("others", 0.4, 5)
    plain = dataclasses.replace(config, loss="ce", ols_alpha=0.5, epochs=1)
    assert ImageClassification(plain, data).build_loss() is None
    train(plain, data=data, out_dir=tmp_path, progress=False, log=None)
    assert "criterion" not in load_checkpoint(tmp_path / "checkpoint.pt")  # the format as before
