"""Parity with the label smoothing users already have: Hugging Face, timm, fairseq.

* Transformers' ``LabelSmoother`` (``TrainingArguments(label_smoothing_factor=ε)``) and its
  plain causal-LM loss ``ForCausalLMLoss`` (ε = 0), imported from the installed package.
* timm's ``LabelSmoothingCrossEntropy`` and ``SoftTargetCrossEntropy``: ``timm`` cannot be
  imported beside this CPU torch (its package ``__init__`` imports torchvision, whose PyPI
  wheels are CUDA builds that fail to load here), so when the package is installed (the
  Makefile installs it with ``--no-deps``) its file ``timm/loss/cross_entropy.py``, which imports
  only torch, is loaded by path; without it, the two classes are restated from their
  definition below (the test id says which ran).
* fairseq's ``label_smoothed_nll_loss`` is restated from its definition (fairseq is not
  installable beside this torch).

Differences from ``LabelSmoother``, each checked or documented here:

1. Normalization: ``LabelSmoother`` divides the NLL sum by the number of non-ignored tokens
   D and the smoothing sum Σ_tokens Σ_k −log p_k by D·V. That is exactly the per-token
   uniform loss (1−ε)(−log p_y) + ε·mean_k(−log p_k) averaged over D tokens, so the values
   agree (tested); with ``num_items_in_batch`` both divide by it instead of D.
2. Precision: ``LabelSmoother`` takes ``log_softmax`` in the logits' dtype (only the
   smoothing sum is accumulated in float32), so in bfloat16 its NLL is rounded per element;
   labelsmooth accumulates in float32 (tested: closer to the float64 truth).
3. All tokens ignored without ``num_items_in_batch``: ``LabelSmoother`` gives 0/0 = NaN,
   labelsmooth 0 (tested).
4. Memory: ``LabelSmoother`` copies ``logits[..., :-1, :]`` for the shift and materializes
   −log_softmax (V floats per token); labelsmooth shifts the labels instead and does not
   materialize log-probabilities on its fused path (benchmarks/results/frameworks.md).
5. Labels: ``LabelSmoother`` clamps every negative label to 0 for the gather but counts only
   ``ignore_index`` as padding; labelsmooth rejects labels outside [0, V) other than
   ``ignore_index`` with a ``ValueError``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import labelsmooth
from labelsmooth.integrations.transformers import LabelSmoothingLoss

EPS = 0.1


def _batch(b=3, t=7, v=31, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, t, v, generator=g, dtype=torch.float64) * 2).to(dtype)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[0, 4:] = -100  # right padding
    labels[2, :2] = -100  # an ignored prompt
    return logits, labels


def _grad(fn, logits):
    x = logits.detach().clone().requires_grad_(True)
    loss = fn(x)
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


# --------------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers.trainer_pt_utils", reason="transformers missing")


@pytest.mark.parametrize("task", ["causal_lm", "token_classification"])
@pytest.mark.parametrize("num_items", [None, "tensor", "int"])
def test_equals_hf_label_smoother(hf, task, num_items):
    logits, labels = _batch()
    shift = task == "causal_lm"
    counted = labels[:, 1:] if shift else labels
    n = int((counted != -100).sum()) + 5  # as if other micro-batches of the step had 5 more
    items = {None: None, "tensor": torch.tensor(n), "int": n}[num_items]
    smoother = hf.LabelSmoother(epsilon=EPS)
    ours = LabelSmoothingLoss(EPS, task=task)
    hf_loss, hf_grad = _grad(
        lambda x: smoother({"logits": x}, labels, shift_labels=shift, num_items_in_batch=items),
        logits,
    )
    loss, grad = _grad(lambda x: ours({"logits": x}, labels, num_items_in_batch=items), logits)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, hf_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, hf_grad, rtol=1e-5, atol=1e-7)


def test_equals_hf_label_smoother_sequence_classification(hf):
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(6, 5, generator=g), torch.tensor([0, 4, 2, -100, 1, 3])
    ours = LabelSmoothingLoss(EPS, task="sequence_classification")
    expected = hf.LabelSmoother(epsilon=EPS)((logits,), labels)  # a tuple output: logits first
    torch.testing.assert_close(ours((logits,), labels), expected, rtol=1e-6, atol=1e-6)


def test_bf16_closer_to_truth_than_hf(hf):
    """Difference 2: LabelSmoother's log_softmax runs in bf16; labelsmooth accumulates in fp32.
    Both are compared with the float64 loss of the same bf16 numbers."""
    logits, labels = _batch(b=4, t=16, v=1000, seed=3)
    low = logits.bfloat16()
    smoother = hf.LabelSmoother(epsilon=EPS)
    truth = float(smoother({"logits": low.double()}, labels, shift_labels=True))
    hf_err = abs(float(smoother({"logits": low}, labels, shift_labels=True)) - truth)
    ours_err = abs(float(LabelSmoothingLoss(EPS)({"logits": low}, labels)) - truth)
    assert ours_err <= hf_err


def test_all_ignored_is_zero_not_nan(hf):
    """Difference 3."""
    logits, labels = _batch()
    labels[:] = -100
    assert torch.isnan(hf.LabelSmoother(epsilon=EPS)({"logits": logits}, labels))
    assert float(LabelSmoothingLoss(EPS)({"logits": logits}, labels)) == 0.0


@pytest.mark.parametrize("num_items", [None, "tensor", "int"])
def test_eps_zero_equals_for_causal_lm_loss(num_items):
    """ε = 0: Transformers' own causal-LM loss (shift, flatten, fixed_cross_entropy)."""
    loss_utils = pytest.importorskip("transformers.loss.loss_utils", reason="transformers missing")
    logits, labels = _batch()
    n = int((labels[:, 1:] != -100).sum()) + 3
    items = {None: None, "tensor": torch.tensor(n), "int": n}[num_items]
    expected = loss_utils.ForCausalLMLoss(
        logits, labels, logits.shape[-1], num_items_in_batch=items
    )
    loss = LabelSmoothingLoss(0.0)(logits, labels, num_items_in_batch=items)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- timm


def _timm_losses():
    """(LabelSmoothingCrossEntropy, SoftTargetCrossEntropy, where they came from)."""
    try:
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        return LabelSmoothingCrossEntropy, SoftTargetCrossEntropy, "timm"
    except Exception:  # noqa: BLE001 - timm absent, or its __init__ fails without torchvision
        pass
    spec = importlib.util.find_spec("timm")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "loss" / "cross_entropy.py"
        if path.is_file():
            file_spec = importlib.util.spec_from_file_location("_timm_cross_entropy", path)
            assert file_spec is not None and file_spec.loader is not None
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
            return module.LabelSmoothingCrossEntropy, module.SoftTargetCrossEntropy, "timm-file"
    return _RestatedLSCE, _RestatedSoftTarget, "restated"


class _RestatedLSCE(torch.nn.Module):
    """timm's LabelSmoothingCrossEntropy, restated: mean over rows of
    (1−ε)·(−log p_y) + ε·mean_k(−log p_k); no ignore_index."""

    def __init__(self, smoothing=0.1):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, x, target):
        logp = F.log_softmax(x, dim=-1)
        nll = -logp.gather(-1, target[:, None])[:, 0]
        return ((1 - self.smoothing) * nll + self.smoothing * -logp.mean(-1)).mean()


class _RestatedSoftTarget(torch.nn.Module):
    """timm's SoftTargetCrossEntropy, restated: mean over rows of Σ_k −t_k log p_k."""

    def forward(self, x, target):
        return torch.sum(-target * F.log_softmax(x, dim=-1), dim=-1).mean()


TIMM_LSCE, TIMM_SOFT, TIMM_SOURCE = _timm_losses()


@pytest.mark.parametrize("source", [TIMM_SOURCE])
def test_timm_label_smoothing_cross_entropy(source):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(9, 101, generator=g) * 3, torch.randint(0, 101, (9,), generator=g)
    expected, g_exp = _grad(lambda z: TIMM_LSCE(smoothing=EPS)(z, y), x)
    loss, g_ours = _grad(lambda z: labelsmooth.cross_entropy(z, y, label_smoothing=EPS), x)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_ours, g_exp, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("source", [TIMM_SOURCE])
def test_timm_soft_target_cross_entropy(source):
    """timm's mixup targets: one-hot smoothed to off = ε/C, on = 1 − ε + ε/C (the uniform
    convention), fed to SoftTargetCrossEntropy; and plain soft targets with ε = 0."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(9, 101, generator=g) * 3, torch.randint(0, 101, (9,), generator=g)
    off = EPS / 101
    smoothed = torch.full((9, 101), off).scatter_(1, y[:, None], 1 - EPS + off)
    expected = TIMM_SOFT()(x, smoothed)
    torch.testing.assert_close(labelsmooth.cross_entropy(x, y, label_smoothing=EPS), expected)
    soft = torch.softmax(torch.randn(9, 101, generator=g), dim=1)
    torch.testing.assert_close(labelsmooth.cross_entropy(x, soft), TIMM_SOFT()(x, soft))


# ------------------------------------------------------------------------ fairseq


def _fairseq_label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index):
    """fairseq's label_smoothed_nll_loss (reduce=True), restated from its definition:
    eps_i = ε/(V−1), loss = (1 − ε − eps_i)·Σ nll + eps_i·Σ_tokens Σ_k −log p_k over the
    non-padding tokens; returns (loss, nll_loss), both sums."""
    target = target.unsqueeze(-1)
    pad = target.eq(ignore_index)
    nll = -lprobs.gather(-1, target.clamp_min(0)).masked_fill(pad, 0.0)
    smooth = -lprobs.sum(-1, keepdim=True).masked_fill(pad, 0.0)
    eps_i = epsilon / (lprobs.size(-1) - 1)
    return (1.0 - epsilon - eps_i) * nll.sum() + eps_i * smooth.sum(), nll.sum()


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_fairseq_label_smoothed_nll_loss(eps):
    logits, labels = _batch(v=37, seed=5)
    rows, target = logits.reshape(-1, 37), labels.reshape(-1)
    expected, expected_nll = _fairseq_label_smoothed_nll_loss(
        F.log_softmax(rows, dim=-1), target, eps, -100
    )
    loss, nll = labelsmooth.cross_entropy(
        rows, target, reduction="sum", label_smoothing=eps, convention="others", return_nll=True
    )
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(nll, expected_nll, rtol=1e-6, atol=1e-5)
    # the Trainer adapter with num_items_in_batch = fairseq's sample_size (its token count)
    tokens = int((target != -100).sum())
    adapter = LabelSmoothingLoss(eps, task="token_classification", convention="others")
    torch.testing.assert_close(
        adapter(logits, labels, num_items_in_batch=tokens), expected / tokens, rtol=1e-6, atol=1e-6
    )
