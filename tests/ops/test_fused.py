"""The fused path against the reference: options grid, in-place backward, dtypes, autograd."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import labelsmooth
from labelsmooth.ops import fused
from labelsmooth.ops.cpu import runtime as _cpu_runtime

CONVENTIONS = ["uniform", "others", "unnormalized"]


#: every test here runs twice: rows by the C kernel, and by eager torch blocks (conftest.py)
pytestmark = pytest.mark.usefixtures("row_kernel")


def _run(impl, x, y, **kw):
    x = x.detach().clone().requires_grad_(True)
    loss = labelsmooth.cross_entropy(x, y, impl=impl, **kw)
    go = torch.rand(loss.shape, generator=torch.Generator().manual_seed(3)) + 0.5
    (loss * go.to(loss.dtype)).sum().backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("shape", [(9, 13), (5, 1000), (3, 7, 5, 2), (2, 1031, 3)])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_fused_equals_reference_over_options(shape, convention, monkeypatch):
    monkeypatch.setattr(fused, "BLOCK_BYTES", 4 * 1031 * 2)  # several blocks, ragged last one
    g = torch.Generator().manual_seed(0)
    c = shape[1]
    x = torch.randn(shape, generator=g) * 3
    y = torch.randint(0, c, shape[:1] + shape[2:], generator=g)
    y.view(-1)[::4] = -100
    w = torch.rand(c, generator=g) + 0.2
    prior = torch.rand(c, generator=g)
    mask = torch.rand(c, generator=g) > 0.3
    mask[0] = True
    options = itertools.product((None, w), (None, prior), (None, mask), (False, True))
    cases = [(0.0, "mean"), (0.1, "sum"), (0.3, "none"), (1.0, "mean"), (0.1, "mean")]
    for i, (weight, pr, cm, kl) in enumerate(options):
        for eps, reduction in (cases[i % 5], cases[(i + 2) % 5]):
            kw = dict(
                weight=weight,
                reduction=reduction,
                label_smoothing=eps,
                convention=convention,
                prior=pr,
                class_mask=cm,
                kl=kl,
            )
            ref = _run("reference", x, y, **kw)
            got = _run("fused", x, y, **kw)
            for a, b in zip(got, ref):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 50), (2, 11, 4)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_inplace_backward_overwrites_logits_with_gradient(shape, reduction):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    y = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=g)
    ref_loss, ref_grad = _run("reference", x, y, label_smoothing=0.1, reduction=reduction)
    lin = torch.nn.Linear(shape[1], shape[1])
    torch.nn.init.eye_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    h = x.movedim(1, -1).clone().requires_grad_(True)
    logits = lin(h).movedim(-1, 1).contiguous()  # a non-leaf, as in a real model
    loss = labelsmooth.cross_entropy(
        logits, y, label_smoothing=0.1, reduction=reduction, impl="fused", inplace_backward=True
    )
    go = torch.rand(loss.shape, generator=torch.Generator().manual_seed(3)) + 0.5
    (loss * go).sum().backward()
    torch.testing.assert_close(loss.detach(), ref_loss)
    torch.testing.assert_close(h.grad.movedim(-1, 1), ref_grad)  # eye weight: same gradient
    torch.testing.assert_close(logits.detach(), ref_grad)  # the logits now hold the gradient


def test_inplace_backward_on_logits_saved_elsewhere_raises():
    x = torch.randn(4, 6, requires_grad=True)
    logits = x.exp()  # exp saves its output for backward
    loss = labelsmooth.cross_entropy(
        logits, torch.tensor([0, 1, 2, 3]), impl="fused", inplace_backward=True
    )
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_inplace_backward_needs_fused():
    with pytest.raises(ValueError, match="impl='reference' cannot run here: inplace_backward"):
        labelsmooth.cross_entropy(
            torch.randn(2, 3), torch.tensor([0, 1]), impl="reference", inplace_backward=True
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_half_precision_error_no_larger_than_builtin(dtype, reduction):
    g = torch.Generator().manual_seed(2)
    x64 = torch.randn(64, 3001, generator=g, dtype=torch.float64) * 4
    y = torch.randint(0, 3001, (64,), generator=g)
    kw = dict(label_smoothing=0.1, reduction=reduction)
    truth_l, truth_g = _run("reference", x64, y, **kw)
    x = x64.to(dtype)
    got_l, got_g = _run("fused", x, y, **kw)
    assert got_l.dtype == dtype and got_g.dtype == dtype
    xb = x.detach().clone().requires_grad_(True)
    bl = F.cross_entropy(xb, y, **kw)
    go = torch.rand(bl.shape, generator=torch.Generator().manual_seed(3)) + 0.5
    (bl * go.to(dtype)).sum().backward()
    for got, builtin, truth in ((got_l, bl.detach(), truth_l), (got_g, xb.grad, truth_g)):
        err = (got.double() - truth).abs().max()
        builtin_err = (builtin.double() - truth).abs().max()
        # rounding the result to the output dtype is the floor both share
        floor = (truth.to(dtype).double() - truth).abs().max()
        assert err <= max(builtin_err, floor) * 1.01 + 1e-12, (err, builtin_err, floor)


def test_double_backward_raises():
    x = torch.randn(3, 5, requires_grad=True)
    loss = labelsmooth.cross_entropy(x, torch.tensor([0, 1, 2]), impl="fused")
    (g,) = torch.autograd.grad(loss, x, create_graph=False)
    assert g.shape == x.shape
    loss = labelsmooth.cross_entropy(x, torch.tensor([0, 1, 2]), impl="fused")
    with pytest.raises(RuntimeError, match="does not support double backward"):
        torch.autograd.grad(loss, x, create_graph=True)


def test_second_backward_with_retained_graph_raises():
    x = torch.randn(3, 5, requires_grad=True)
    loss = labelsmooth.cross_entropy(x, torch.tensor([0, 1, 2]), impl="fused")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="cannot backward twice"):
        loss.backward()


def test_non_contiguous_input():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(20, 8, generator=g).t()  # (8, 20) non-contiguous
    y = torch.randint(0, 20, (8,), generator=g)
    for a, b in zip(
        _run("fused", x, y, label_smoothing=0.2), _run("reference", x, y, label_smoothing=0.2)
    ):
        torch.testing.assert_close(a, b)


def test_auto_uses_fused_for_class_indices_and_reference_for_soft():
    x, y = torch.zeros(2, 3), torch.tensor([0, 1])
    assert labelsmooth.chosen_impl(x, y, convention="others", kl=True) == "fused"
    assert labelsmooth.chosen_impl(x, y, prior=torch.ones(3)) == "fused"
    t = torch.full((2, 3), 1 / 3)
    assert labelsmooth.chosen_impl(x, t, kl=True) == "reference"


def test_hugepage_gradient_buffer(monkeypatch):
    impl = "fused"
    monkeypatch.setattr(_cpu_runtime, "HUGEPAGE_MIN_BYTES", 0)  # force the mmap'd buffer
    g = torch.Generator().manual_seed(5)
    x = torch.randn(33, 257, generator=g)
    y = torch.randint(0, 257, (33,), generator=g)
    buf = _cpu_runtime.empty_like_gradient(x)
    assert buf.shape == x.shape and buf.dtype == x.dtype and buf.is_contiguous()
    for a, b in zip(
        _run(impl, x, y, label_smoothing=0.1), _run("reference", x, y, label_smoothing=0.1)
    ):
        torch.testing.assert_close(a, b)


def test_hugepages_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(_cpu_runtime, "HUGEPAGE_MIN_BYTES", 0)
    x = torch.randn(4, 5)
    with labelsmooth.runtime.options(hugepages=False):
        assert _cpu_runtime.empty_like_gradient(x).untyped_storage().resizable()


@pytest.mark.parametrize("shape", [(6, 300), (2, 7, 3)])
def test_no_grad_computes_statistics_only(shape, monkeypatch):
    calls = []
    monkeypatch.setattr(
        _cpu_runtime, "empty_like_gradient", lambda x: calls.append(x) or torch.empty_like(x)
    )
    g = torch.Generator().manual_seed(6)
    x = torch.randn(shape, generator=g)
    y = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=g)
    ref = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, reduction="none", impl="reference")
    with torch.no_grad():
        got = labelsmooth.cross_entropy(
            x.requires_grad_(True),
            y,
            label_smoothing=0.1,
            reduction="none",
            impl="fused",
            inplace_backward=True,
        )
    torch.testing.assert_close(got, ref)
    assert calls == []  # no gradient buffer
    torch.testing.assert_close(
        labelsmooth.cross_entropy(
            x.detach(), y, label_smoothing=0.1, reduction="none", impl="fused"
        ),
        ref,
    )
    assert calls == []
    assert not got.requires_grad


def test_soft_targets_refuse_inplace_backward():
    t = torch.softmax(torch.randn(2, 3), 1)
    with pytest.raises(ValueError, match="impl='fused' cannot run here: it takes class-index"):
        labelsmooth.cross_entropy(torch.randn(2, 3), t, impl="fused", inplace_backward=True)


def test_cached_gradient_mapping_is_reused_only_when_free(monkeypatch):
    monkeypatch.setattr(_cpu_runtime, "HUGEPAGE_MIN_BYTES", 0)
    labelsmooth.empty_cache()
    g = torch.Generator().manual_seed(8)
    xs = [torch.randn(16, 300, generator=g, requires_grad=True) for _ in range(3)]
    y = torch.randint(0, 300, (16,), generator=g)

    def grad(x):
        (gx,) = torch.autograd.grad(
            labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused"), x
        )
        return gx

    expected = [
        torch.autograd.grad(
            labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="reference"), x
        )[0]
        for x in xs
    ]
    g0 = grad(xs[0])
    g1 = grad(xs[1])  # g0 is alive: a new mapping
    assert g0.data_ptr() != g1.data_ptr()
    torch.testing.assert_close(g0, expected[0])
    ptr1 = g1.data_ptr()
    del g1
    g2 = grad(xs[2])  # g1's mapping is free again: reused
    assert g2.data_ptr() == ptr1
    torch.testing.assert_close(g2, expected[2])
    torch.testing.assert_close(g0, expected[0])  # untouched
    labelsmooth.empty_cache()


def test_concurrent_callers_get_their_own_results_and_thread_count():
    import threading

    g = torch.Generator().manual_seed(9)
    xs = [torch.randn(600, 700, generator=g) for _ in range(4)]  # several units each
    y = torch.randint(0, 700, (600,), generator=g)
    want = [_run("reference", x, y, label_smoothing=0.1) for x in xs]
    got: list = [None] * 4
    threads_before = torch.get_num_threads()

    def call(i: int) -> None:
        for _ in range(3):
            got[i] = _run("fused", xs[i], y, label_smoothing=0.1)

    workers = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.get_num_threads() == threads_before


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_integer_target_dtypes(dtype):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 1000, generator=g)
    y = torch.randint(0, 250, (300,), generator=g)
    want = _run("reference", x, y, label_smoothing=0.1)
    got = _run("fused", x, y.to(dtype), label_smoothing=0.1)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
