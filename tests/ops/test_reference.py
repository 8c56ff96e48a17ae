"""The reference is the specification: float64 gradcheck and mathematical properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import labelsmooth
from labelsmooth._dispatch import available_impls

CONVENTIONS = ["uniform", "others", "unnormalized"]
IMPLS = available_impls()


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("kl", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_float64(convention, kl, reduction):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 6, (5, 2), generator=g)
    y[0, 0] = -100
    w = torch.rand(6, generator=g, dtype=torch.float64) + 0.5
    prior = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    mask = torch.tensor([True, True, False, True, True, True])

    def f(inp):
        return labelsmooth.cross_entropy(
            inp,
            y,
            w,
            reduction=reduction,
            label_smoothing=0.3,
            convention=convention,
            prior=prior,
            class_mask=mask,
            kl=kl,
            impl="reference",
        )

    assert torch.autograd.gradcheck(f, (x,))


def _batch(n, c, seed, ignore_every=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * 4
    y = torch.randint(0, c, (n,), generator=g)
    y[::ignore_every] = -100
    return x, y


cases = st.tuples(
    st.integers(1, 12),  # N
    st.integers(2, 40),  # C
    st.integers(0, 10_000),  # seed
    st.floats(0.0, 1.0),  # epsilon
    st.sampled_from(CONVENTIONS),
    st.sampled_from(IMPLS),
)


@settings(max_examples=40, deadline=None)
@given(cases, st.floats(-50, 50))
def test_adding_a_constant_to_a_row_changes_nothing(case, shift):
    n, c, seed, eps, conv, impl = case
    x, y = _batch(n, c, seed)
    kw = dict(reduction="none", label_smoothing=eps, convention=conv, impl=impl)
    a = labelsmooth.cross_entropy(x, y, **kw)
    b = labelsmooth.cross_entropy(x + shift, y, **kw)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(cases, st.booleans())
def test_gradient_of_each_row_sums_to_zero(case, weighted):
    n, c, seed, eps, conv, impl = case
    x, y = _batch(n, c, seed)
    x.requires_grad_(True)
    w = torch.rand(c, dtype=torch.float64) + 0.1 if weighted else None
    labelsmooth.cross_entropy(x, y, w, label_smoothing=eps, convention=conv, impl=impl).backward()
    assert x.grad is not None
    torch.testing.assert_close(
        x.grad.sum(-1), torch.zeros(n, dtype=torch.float64), atol=1e-12, rtol=0
    )
    assert torch.equal(x.grad[y == -100], torch.zeros_like(x.grad[y == -100]))


@settings(max_examples=40, deadline=None)
@given(cases)
def test_kl_is_nonnegative_and_zero_at_the_target(case):
    n, c, seed, eps, conv, impl = case
    x, y = _batch(n, c, seed)
    kw = dict(reduction="none", label_smoothing=eps, convention=conv, kl=True, impl=impl)
    assert bool((labelsmooth.cross_entropy(x, y, **kw) >= -1e-12).all())
    if eps > 1e-3 and (conv == "uniform" or eps < 1):
        # logits = log q (q > 0 everywhere for these; softmax renormalizes the unnormalized q)
        y = y.clamp_min(0)
        q = labelsmooth.smooth_labels(y, c, eps, convention=conv, dtype=torch.float64)
        kl = labelsmooth.cross_entropy(q.log(), y, **kw)
        torch.testing.assert_close(kl, torch.zeros(n, dtype=torch.float64), atol=1e-9, rtol=0)


@settings(max_examples=40, deadline=None)
@given(cases)
def test_epsilon_zero_is_plain_cross_entropy(case):
    n, c, seed, _, conv, impl = case
    x, y = _batch(n, c, seed)
    got = labelsmooth.cross_entropy(x, y, label_smoothing=0.0, convention=conv, impl=impl)
    ref = torch.nn.functional.cross_entropy(x, y)
    if bool((y == -100).all()):
        ref = torch.zeros((), dtype=torch.float64)
    torch.testing.assert_close(got, ref)


def test_kl_is_cross_entropy_minus_entropy():
    x, y = _batch(9, 11, 5)
    for conv in CONVENTIONS:
        kw = dict(reduction="none", label_smoothing=0.25, convention=conv)
        ce = labelsmooth.cross_entropy(x, y, **kw)
        kl = labelsmooth.cross_entropy(x, y, kl=True, **kw)
        q = labelsmooth.smooth_labels(y, 11, 0.25, convention=conv, dtype=torch.float64)
        entropy = -torch.xlogy(q, q).sum(-1)
        mass = q.sum(-1)
        torch.testing.assert_close(kl, ce - entropy - torch.xlogy(mass, mass))


def test_minimum_of_uniform_smoothing_is_at_p_equal_q():
    # the smoothed CE is minimized at p = q, where its value is H(q) (not 0)
    c, eps = 10, 0.1
    y = torch.tensor([3])
    q = labelsmooth.smooth_labels(y, c, eps, dtype=torch.float64)
    x = q.log().clone().requires_grad_(True)
    loss = labelsmooth.cross_entropy(x, y, label_smoothing=eps)
    loss.backward()
    torch.testing.assert_close(x.grad, torch.zeros_like(x), atol=1e-12, rtol=0)
    torch.testing.assert_close(loss, -torch.xlogy(q, q).sum())


# Gradients with respect to ``prior`` (and ``weight``) where part of the smoothed target is 0:
# the math is finite (finite differences are), so the backward must be too. Each case puts a
# zero into q a different way: an ignored row (q = 0 across the row, Σq = 0), a class_mask
# (q_k = 0 on the masked classes, with -inf logits there), ε = 0 (q = one-hot), soft targets
# with zeros on masked classes, and "others" with a single allowed class (nothing to spread
# the ε mass over).
ZERO_TARGET_CASES = ["ignored_row", "class_mask", "eps_zero", "soft_masked", "single_allowed"]


def _zero_target_case(case: str, convention: str):
    g = torch.Generator().manual_seed(3)
    c = 5
    x = torch.randn(4, c, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    kw: dict = dict(label_smoothing=0.2, convention=convention)
    if case == "ignored_row":
        y[2] = -100
        x[2] = float("nan")  # an ignored row's logits are never read
    elif case == "class_mask":
        kw["class_mask"] = torch.tensor([True, True, False, True, True])
        y = torch.tensor([0, 1, 4, 3])
        x[:, 2] = float("-inf")
    elif case == "eps_zero":
        kw["label_smoothing"] = 0.0
    elif case == "soft_masked":
        kw["class_mask"] = torch.tensor([True, True, False, True, True])
        kw["convention"] = "uniform"
        t = torch.rand(4, c, generator=g, dtype=torch.float64)
        t[:, 2] = 0
        y = t / t.sum(-1, keepdim=True)
        x[:, 2] = float("-inf")
    elif case == "single_allowed":
        kw["class_mask"] = torch.tensor([False, False, True, False, False])
        y = torch.tensor([2, 2, 2, 2])
        x[:, [0, 1, 3, 4]] = float("-inf")
    return x, y, kw


@pytest.mark.parametrize("case", ZERO_TARGET_CASES)
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("kl", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_prior_and_weight_gradients_are_finite_where_the_target_has_zeros(
    case, convention, kl, reduction
):
    x, y, kw = _zero_target_case(case, convention)
    g = torch.Generator().manual_seed(4)
    prior = (torch.rand(5, generator=g, dtype=torch.float64) + 0.1).requires_grad_(True)
    weight = (torch.rand(5, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    logits = x.clone().requires_grad_(True)

    def f(inp, p, w):
        loss = labelsmooth.cross_entropy(
            inp, y, w, reduction=reduction, prior=p, kl=kl, impl="reference", **kw
        )
        return loss if reduction != "none" else (loss * torch.arange(1.0, 5.0)).sum()

    f(logits, prior, weight).backward()
    for name, t in (("prior", prior), ("weight", weight), ("logits", logits)):
        assert t.grad is not None, name
        assert bool(torch.isfinite(t.grad).all()), (name, t.grad)
    if case == "eps_zero":  # the prior has no effect at ε = 0
        assert torch.equal(prior.grad, torch.zeros_like(prior))
    if case == "ignored_row":
        assert torch.equal(logits.grad[2], torch.zeros(5, dtype=torch.float64))
    # finite differences agree (the -inf / NaN logits are constants here)
    assert torch.autograd.gradcheck(lambda p, w: f(x, p, w), (prior, weight))
