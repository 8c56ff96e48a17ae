"""The language-model task on a tiny in-memory corpus: loss, padding, class mask, resume."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

import labelsmooth
from labelsmooth.experiment.config import TrainConfig
from labelsmooth.experiment.data import PAD
from labelsmooth.experiment.data.text import corpus_from_plays
from labelsmooth.experiment.models import TransformerLM
from labelsmooth.experiment.tasks import lm as lm_task
from labelsmooth.experiment.tasks import resolve
from labelsmooth.experiment.tasks.lm import LanguageModel, evaluate_lm, prepare_text
from labelsmooth.experiment.train import train
from labelsmooth.experiment.train.compare import Section, run_compare

LINE = "To be, or not to be: that is the question.\n"
PLAYS = {
    "one": (LINE + "\n" + "Whether 'tis nobler in the mind to suffer\n\n") * 6,
    "two": ("The slings and arrows of outrageous fortune,\n\n" + LINE) * 5,
    "val": "Or to take arms against a sea of troubles,\n\n" * 3,
    "test": "And by opposing end them. To die: to sleep;\n\n" + LINE,
}


@pytest.fixture(scope="module")
def corpus():
    return corpus_from_plays(PLAYS, ("val",), ("test",))


def config(**kw) -> TrainConfig:
    base = dict(
        task="lm",
        dataset="shakespeare",
        model="transformer",
        options={"d_model": 16, "n_heads": 2, "n_layers": 1, "seq_len": 24},
        batch_size=8,
        epochs=2,
        lr=0.05,
        warmup_epochs=0.0,
        train_size=None,
        val_size=4,
        eval_batch_size=16,
        num_threads=1,
    )
    return TrainConfig(**{**base, **kw})


def test_the_task_checks_the_config():
    with pytest.raises(ValueError, match="model='resnet' does not fit task='lm'"):
        resolve(config(model="resnet"))
    with pytest.raises(ValueError, match="dataset='mnist' does not fit task='lm'"):
        resolve(config(dataset="mnist"))
    with pytest.raises(ValueError, match="dataset='shakespeare' does not fit task='image'"):
        resolve(TrainConfig(dataset="shakespeare"))
    with pytest.raises(ValueError, match="n_heads must divide d_model"):
        resolve(config(options={"d_model": 16, "n_heads": 3}))
    with pytest.raises(ValueError, match="options has 'depth'"):
        resolve(config(options={"depth": 3}))
    assert resolve(config(options={}, dataset="shakespeare")).options == {
        "seq_len": 128, "d_model": 128, "n_layers": 2, "n_heads": 4
    }  # fmt: skip


def test_padding_is_excluded(corpus):
    c = config(label_smoothing=0.1)
    task = LanguageModel(c, prepare_text(c, corpus=corpus, log=None))
    torch.manual_seed(0)
    model = TransformerLM(corpus.vocab_size, d_model=16, n_layers=1, n_heads=2, max_len=32)
    x, y = next(task.train_batches(torch.Generator().manual_seed(0), 0, None))  # (B, T)
    loss, n = task.loss(model, (x, y))
    assert n == int((y != PAD).sum()) and n < y.numel()  # variable lengths: some padding
    # extra padded columns, and an extra row of padding only: the same loss and count
    pad_cols = torch.full((x.shape[0], 3), PAD)
    x2, y2 = torch.cat([x, pad_cols], 1), torch.cat([y, pad_cols], 1)
    x2 = torch.cat([x2, torch.full((1, x2.shape[1]), PAD)])
    y2 = torch.cat([y2, torch.full((1, y2.shape[1]), PAD)])
    loss2, n2 = task.loss(model, (x2, y2))
    assert n2 == n
    torch.testing.assert_close(loss2, loss, rtol=1e-6, atol=1e-6)


def test_class_mask_keeps_no_mass_on_pad(corpus):
    eps = 0.2
    c = config(label_smoothing=eps)
    task = LanguageModel(c, prepare_text(c, corpus=corpus, log=None))
    torch.manual_seed(0)
    model = task.build_model().double()
    x, y = next(task.train_batches(torch.Generator().manual_seed(0), 0, None))
    loss, _ = task.loss(model, (x, y))
    # written from the definition: q = (1 - eps) onehot(y) + eps / (V - 1) on every token but PAD
    logp = model.logits(x).log_softmax(-1)[y != PAD]  # (n, V)
    v = logp.shape[1]
    q = torch.full_like(logp, eps / (v - 1))
    q[:, PAD] = 0.0
    q[torch.arange(len(q)), y[y != PAD]] += 1 - eps
    expected = -(q * logp).sum(1).mean()
    torch.testing.assert_close(loss, expected)
    # and the same as the reference with class_mask (padding gets zero smoothing mass)
    mask = torch.ones(v, dtype=torch.bool)
    mask[PAD] = False
    ref = labelsmooth.cross_entropy(
        model.logits(x).flatten(0, 1),
        y.flatten(),
        ignore_index=PAD,
        label_smoothing=eps,
        class_mask=mask,
        impl="reference",
    )
    torch.testing.assert_close(loss, ref)


def test_train_evaluate_resume(corpus, tmp_path):
    c = config(label_smoothing=0.1)
    data = prepare_text(c, corpus=corpus, log=None)
    full = train(c, task=LanguageModel(c, data), out_dir=tmp_path / "a", progress=False, log=None)
    m = full.metrics
    assert len(full.history) == 2 and full.completed
    assert m["perplexity"] == pytest.approx(math.exp(m["nll"]))
    assert m["loss_smoothed"] > m["nll"] - 1e-9  # smoothed CE >= NLL here (eps > 0)
    assert 0 <= m["top1"] <= 1 and 0 <= m["ece"] <= 1 and 0.05 <= m["temperature"] <= 20
    # the NLL from linear_cross_entropy equals the meter's (full-vocabulary softmax)
    with torch.no_grad():
        logits = full.model.logits(pad_x := torch.stack([s[:-1] for s in data.test[:1]]))
    assert pad_x.shape[0] == 1
    nll = F.cross_entropy(logits[0], data.test[0][1:])
    m1 = evaluate_lm(full.model, dataclasses.replace(data, test=data.test[:1], val=[]))
    assert m1["nll"] == pytest.approx(float(nll), rel=1e-5)
    # stop after one epoch, resume: the same history and weights as the uninterrupted run
    c1 = dataclasses.replace(c, epochs_stop=1)
    train(c1, task=LanguageModel(c1, data), out_dir=tmp_path / "b", progress=False, log=None)
    resumed = train(
        c,
        task=LanguageModel(c, data),
        out_dir=tmp_path / "b",
        resume=True,
        progress=False,
        log=None,
    )
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(resumed.history) == drop(full.history)
    saved = json.loads((tmp_path / "b" / "result.json").read_text())
    assert saved["config"]["task"] == "lm" and saved["metrics"]["nll"] == m["nll"]


def test_compare_lm(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(lm_task, "load_shakespeare", lambda *a, **k: corpus)
    c = config(epochs=1)
    section = Section("shakespeare", (0.0, 0.1), seeds=(0,), task="lm")
    out = run_compare([section], c, tmp_path / "cmp", plots=False, log=None)
    names = sorted(r["name"] for r in out["records"])
    assert names == ["shakespeare-baseline-seed0", "shakespeare-ls0.1-uniform-seed0"]
    table = (tmp_path / "cmp" / "results.md").read_text()
    assert "test perplexity" in table and "LS ε=0.1 (uniform)" in table
    assert "Transformer 1 layers × 16 wide" in table
    again = run_compare(
        [section], c, tmp_path / "cmp", resume=True, plots=False, log=None
    )  # both runs done: reused
    assert [r["metrics"] for r in again["records"]] == [r["metrics"] for r in out["records"]]
