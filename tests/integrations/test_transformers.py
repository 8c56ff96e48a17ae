"""labelsmooth.integrations.transformers: a real Trainer run, the class-mask helpers, errors.

The Trainer runs a tiny randomly initialized GPT-2 built in code (no download, no tokenizer:
token ids are made directly) on CPU for a few steps, without saving or reporting.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from labelsmooth.integrations.transformers import (
    LabelSmoothingLoss,
    class_mask_from_ids,
    class_mask_from_tokenizer,
    nll_logging_callback,
)

VOCAB, PAD, STEPS = 64, 0, 3


def _dataset(n=16, seq=12, seed=0):
    """Sequences of varying length, right-padded with PAD; labels -100 on the padding."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = 4 + (i * 5) % (seq - 3)
        ids = torch.full((seq,), PAD)
        ids[:length] = torch.randint(1, VOCAB, (length,), generator=g)
        labels = ids.clone()
        labels[length:] = -100
        rows.append({"input_ids": ids, "attention_mask": (labels != -100).long(), "labels": labels})
    return rows


def _train(tmp_path, *, loss_func=None, factor=0.0, batch=4, accumulation=1, lr=1e-3, steps=STEPS):
    """Loss per optimizer step and the trained model."""
    transformers = pytest.importorskip("transformers")
    transformers.set_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=1, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation, max_steps=steps, learning_rate=lr,
        label_smoothing_factor=factor, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, seed=0, disable_tqdm=True, lr_scheduler_type="constant",
        dataloader_num_workers=0,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=_dataset(), compute_loss_func=loss_func
    )
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == steps
    return losses, model


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_matches_label_smoothing_factor(tmp_path, accumulation):
    """Same seed, same batches: the loss trajectory of Trainer(compute_loss_func=
    LabelSmoothingLoss(0.1)) equals TrainingArguments(label_smoothing_factor=0.1)'s."""
    batch = 4 // accumulation
    hf, _ = _train(tmp_path, factor=0.1, batch=batch, accumulation=accumulation)
    ours, _ = _train(
        tmp_path, loss_func=LabelSmoothingLoss(0.1), batch=batch, accumulation=accumulation
    )
    assert ours == pytest.approx(hf, rel=1e-5)
    if accumulation == 2:  # num_items_in_batch: 2 micro-batches of 2 = one batch of 4
        one_batch, _ = _train(tmp_path, loss_func=LabelSmoothingLoss(0.1), batch=4)
        assert ours == pytest.approx(one_batch, rel=1e-5)


def test_class_mask_moves_mass_off_the_pad_token(tmp_path):
    """Uniform smoothing pushes the pad token's probability towards ε/V at every position;
    with the pad token masked out of the smoothing support it only falls."""
    mask = class_mask_from_ids(VOCAB, [PAD])
    kwargs = dict(lr=0.1, steps=4)  # measured: 0.0021 masked, 0.0083 plain
    _, plain = _train(tmp_path, loss_func=LabelSmoothingLoss(0.5), **kwargs)
    _, masked = _train(tmp_path, loss_func=LabelSmoothingLoss(0.5, class_mask=mask), **kwargs)
    ids = torch.stack([r["input_ids"] for r in _dataset()])
    counted = torch.stack([r["labels"] for r in _dataset()]) != -100

    def pad_probability(model):
        with torch.no_grad():
            p = model(input_ids=ids).logits.softmax(-1)[..., PAD]
        return float(p[counted].mean())

    assert pad_probability(masked) < 0.5 * pad_probability(plain)


def test_nll_tracking_and_callback(tmp_path):
    loss_func = LabelSmoothingLoss(0.1, track_nll=True)
    transformers = pytest.importorskip("transformers")
    callback = nll_logging_callback(loss_func)
    assert isinstance(callback, transformers.TrainerCallback)
    logits = torch.randn(2, 6, VOCAB)
    labels = torch.randint(0, VOCAB, (2, 6))
    loss_func(logits, labels)
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1)
    )
    assert loss_func.pop_nll() == pytest.approx(float(expected), rel=1e-6)
    assert loss_func.pop_nll() is None
    state = SimpleNamespace(log_history=[{"loss": 1.0, "step": 1}])
    loss_func(logits, labels)
    logs = {"loss": 1.0}
    callback.on_log(None, state, None, logs=logs)
    assert logs["nll"] == pytest.approx(float(expected), rel=1e-6)
    assert state.log_history[-1]["perplexity"] == pytest.approx(float(expected.exp()), rel=1e-5)
    with pytest.raises(ValueError, match="track_nll=True"):
        nll_logging_callback(LabelSmoothingLoss(0.1))


def test_class_mask_from_tokenizer():
    fake = type(
        "Tok", (), {"pad_token_id": 3, "all_special_ids": [0, 1, 3], "__len__": lambda s: 8}
    )()
    mask = class_mask_from_tokenizer(fake, 10, keep=[1])
    assert mask.tolist() == [False, True, True, False, True, True, True, True, False, False]
    assert class_mask_from_tokenizer(fake).shape == (8,)
    with pytest.raises(ValueError, match="num_classes must be an int >= len"):
        class_mask_from_tokenizer(fake, 7)


def test_class_mask_from_a_real_tokenizer():
    """A Transformers fast tokenizer built in code (word-level vocabulary, no download)."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, "a": 3, "b": 4}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )
    mask = class_mask_from_tokenizer(tok, 8)
    assert mask.tolist() == [False, False, False, True, True, False, False, False]
    # an excluded token can still be a label: its own 1 − ε stays on it
    loss = LabelSmoothingLoss(0.1, class_mask=mask, task="token_classification")
    assert torch.isfinite(loss(torch.randn(1, 3, 8), torch.tensor([[2, 3, 0]])))


def test_class_mask_from_ids_errors():
    with pytest.raises(ValueError, match=r"excluded ids must be in \[0, 4\)"):
        class_mask_from_ids(4, [4])
    with pytest.raises(ValueError, match="every class"):
        class_mask_from_ids(2, [0, 1])
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        class_mask_from_ids(0, [])


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="task must be one of"):
        LabelSmoothingLoss(0.1, task="seq2seq")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        LabelSmoothingLoss(1.5)
    with pytest.raises(ValueError, match="convention must be one of"):
        LabelSmoothingLoss(0.1, convention="fairseq")
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        LabelSmoothingLoss(0.1, ignore_index=-100.0)  # type: ignore[arg-type]
    loss = LabelSmoothingLoss(0.1)
    logits = torch.randn(2, 4, 5)
    with pytest.raises(ValueError, match="labels is None"):
        loss(logits, None)
    with pytest.raises(ValueError, match="integer tensor of class indices"):
        loss(logits, torch.rand(2, 4))
    with pytest.raises(ValueError, match=r"logits \(2, 4, 5\), labels \(2, 3\)"):
        loss(logits, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="no 'logits'"):
        loss({"loss": torch.tensor(1.0)}, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point tensor"):
        loss(torch.zeros(2, 4, 5, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):  # labelsmooth's own check: a label ≥ V
        loss(logits, torch.full((2, 4), 7))


# The count the Trainer hands over (num_items_in_batch): checked, and 0 is a padding-only step.
def _lm_batch(all_padding: bool = False):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[1, 3:] = -100
    if all_padding:
        labels[:] = -100
    return logits, labels


@pytest.mark.parametrize("count", [0, torch.tensor(0), torch.tensor([0]), 0.0])
@pytest.mark.parametrize("validate_args", [True, False])
def test_a_count_of_zero_on_a_padding_only_step_gives_zero_loss_and_gradients(count, validate_args):
    logits, labels = _lm_batch(all_padding=True)
    logits[0, 0, :] = 1e4  # large logits: padding holds anything, its gradient stays 0
    logits.requires_grad_(True)
    loss = LabelSmoothingLoss(0.1, validate_args=validate_args)(
        {"logits": logits}, labels, num_items_in_batch=count
    )
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert logits.grad is not None and not logits.grad.any()


@pytest.mark.parametrize(
    "count,shown",
    [
        (True, "got True"),
        (False, "got False"),
        (-3, "got -3"),
        (-0.5, "got -0.5"),
        (float("nan"), "got nan"),
        (float("inf"), "got inf"),
        ("12", "got '12'"),
        ([12], r"got \[12\]"),
        (torch.tensor(True), "dtype torch.bool"),
        (torch.tensor([3, 4]), r"shape \(2,\)"),
        (torch.tensor(-2), r"got tensor\(-2\)"),
        (torch.tensor(float("nan")), r"got tensor\(nan\)"),
    ],
)
def test_a_bad_count_is_a_value_error_naming_num_items_in_batch(count, shown):
    logits, labels = _lm_batch()
    with pytest.raises(ValueError, match=rf"num_items_in_batch must be a count.*{shown}"):
        LabelSmoothingLoss(0.1)({"logits": logits}, labels, num_items_in_batch=count)


@pytest.mark.parametrize(
    "count",
    [12, 12.0, torch.tensor(12), torch.tensor([12]), torch.tensor(12.0), torch.tensor([[12]])],
)
@pytest.mark.parametrize("validate_args", [True, False])
def test_good_counts_divide_the_sum(count, validate_args):
    logits, labels = _lm_batch()
    f = LabelSmoothingLoss(0.1, validate_args=validate_args)
    mean = f({"logits": logits}, labels)  # 6 predicted tokens
    summed = f({"logits": logits}, labels, num_items_in_batch=count)
    assert summed.dtype == torch.float32 and summed.shape == ()
    torch.testing.assert_close(summed * 12, mean * 6)


def test_a_fractional_count_as_transformers_divides_it_between_ranks():
    # Transformers divides its count by the ranks that share a batch (tp/cp/sp): 7 / 2 = 3.5
    logits, labels = _lm_batch()
    f = LabelSmoothingLoss(0.1)
    total = f({"logits": logits}, labels, num_items_in_batch=1)
    half = f({"logits": logits}, labels, num_items_in_batch=torch.tensor(7) / 2)
    torch.testing.assert_close(half * 3.5, total)


def test_trainer_on_padding_only_batches_keeps_the_model_finite(tmp_path):
    """Transformers hands num_items_in_batch = 0 for a step of padding only."""
    transformers = pytest.importorskip("transformers")
    transformers.set_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=1, n_head=2,
        bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = _dataset(n=8)
    for r in rows:
        r["labels"] = torch.full_like(r["labels"], -100)
    counts, returned = [], []
    base = LabelSmoothingLoss(0.1)

    def loss_func(outputs, labels, num_items_in_batch=None):
        counts.append(num_items_in_batch)
        loss = base(outputs, labels, num_items_in_batch=num_items_in_batch)
        returned.append(float(loss.detach()))  # the Trainer's log hides NaN (nan_inf_filter)
        return loss

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2,
        learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows,
                                   compute_loss_func=loss_func)  # fmt: skip
    trainer.train()
    assert counts and all(c is not None and int(c) == 0 for c in counts)
    assert returned == [0.0] * len(counts)
    for k, v in model.state_dict().items():
        assert bool(torch.isfinite(v).all()), k
        torch.testing.assert_close(v, before[k], msg=k)  # zero gradients: AdamW moves nothing
