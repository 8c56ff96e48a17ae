"""linear_cross_entropy under torch.func: grad, vjp and vmap against eager autograd, for every
reduction, impl="chunked" and "reference", with and without bias, with softcap."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

import labelsmooth

N, H, V = 6, 4, 7
REDUCTIONS = ["none", "mean", "sum"]
IMPLS = ["chunked", "reference"]
GRID = list(itertools.product(REDUCTIONS, IMPLS, [False, True]))
KW = dict(label_smoothing=0.1, softcap=3.0)


def _data(batch=()):
    """float64 hidden (*batch, N, H), weight (V, H), bias (V,) and targets (N,), one ignored."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(*batch, N, H, generator=g, dtype=torch.float64)
    w = torch.randn(V, H, generator=g, dtype=torch.float64)
    b = torch.randn(V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (N,), generator=g)
    y[2] = -100
    return h, w, b, y


def _loss_fn(y, reduction, impl):
    """The loss as a function of (hidden, weight, bias or None)."""

    def loss(h, w, b):
        return labelsmooth.linear_cross_entropy(
            h, w, y, b, reduction=reduction, impl=impl, chunk_size=4, **KW
        )

    return loss


def _cotangent(shape):
    g = torch.Generator().manual_seed(3)
    return torch.rand(shape, generator=g, dtype=torch.float64) + 0.5


def _eager_grads(loss, params, cotangent):
    """Eager autograd: the gradients of (loss · cotangent).sum() for ``params``."""
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    (loss(*leaves) * cotangent).sum().backward()
    return tuple(p.grad for p in leaves)


def _params(with_bias):
    """(hidden, weight[, bias]) and the targets."""
    h, w, b, y = _data()
    return ((h, w, b) if with_bias else (h, w)), y


def _of_params(loss, with_bias):
    """``loss`` as a function of the params alone (bias None when not one of them)."""
    return (lambda h, w, b: loss(h, w, b)) if with_bias else (lambda h, w: loss(h, w, None))


def _close(got, want):
    assert len(got) == len(want)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction,impl,with_bias", GRID)
def test_grad_matches_eager(reduction, impl, with_bias):
    """torch.func.grad of the summed loss; reduction="none" with impl="chunked" used to raise
    (its backward op was reached with grad mode on inside the transform)."""
    params, y = _params(with_bias)
    f = _of_params(_loss_fn(y, reduction, impl), with_bias)
    argnums = tuple(range(len(params)))
    got = torch.func.grad(lambda *p: f(*p).sum(), argnums=argnums)(*params)
    _close(got, _eager_grads(f, params, 1.0))


@pytest.mark.parametrize("reduction,impl,with_bias", GRID)
def test_grad_and_value_with_weighted_tokens_matches_eager(reduction, impl, with_bias):
    """grad_and_value of a weighted sum of the losses (every token's incoming gradient
    differs for "none") and the value itself."""
    params, y = _params(with_bias)
    f = _of_params(_loss_fn(y, reduction, impl), with_bias)
    ct = _cotangent((N,) if reduction == "none" else ())
    argnums = tuple(range(len(params)))
    got, value = torch.func.grad_and_value(lambda *p: (f(*p) * ct).sum(), argnums=argnums)(*params)
    _close(got, _eager_grads(f, params, ct))
    torch.testing.assert_close(value, (f(*params) * ct).sum(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("reduction,impl,with_bias", GRID)
def test_vjp_matches_eager(reduction, impl, with_bias):
    params, y = _params(with_bias)
    f = _of_params(_loss_fn(y, reduction, impl), with_bias)
    out, vjp = torch.func.vjp(f, *params)
    ct = _cotangent(out.shape)
    _close(vjp(ct), _eager_grads(f, params, ct))
    torch.testing.assert_close(out, f(*params), rtol=0, atol=0)


@pytest.mark.parametrize("reduction,impl,with_bias", GRID)
def test_vmap_of_loss_and_grad_over_a_leading_batch(reduction, impl, with_bias):
    """vmap over a leading batch of hidden states: each entry as its own call, and so is the
    gradient (vmap of grad)."""
    hb, w, b, y = _data(batch=(2,))
    b = b if with_bias else None
    loss = _loss_fn(y, reduction, impl)
    with warnings.catch_warnings():
        # PyTorch's batching fallback for the custom ops (a loop) warns about its speed
        warnings.simplefilter("ignore", UserWarning)
        out = torch.vmap(lambda h: loss(h, w, b))(hb)
        grads = torch.vmap(torch.func.grad(lambda h: loss(h, w, b).sum()))(hb)
    for i in range(hb.shape[0]):
        torch.testing.assert_close(out[i], loss(hb[i], w, b), rtol=1e-12, atol=1e-12)
        (want,) = _eager_grads(lambda h: loss(h, w, b), (hb[i],), 1.0)
        torch.testing.assert_close(grads[i], want, rtol=1e-10, atol=1e-12)


def test_chunked_none_differentiating_the_gradient_raises_one_line():
    """The chunked head's gradients have no graph: jacrev of grad raises as create_graph=True
    does in eager mode (impl="reference" supports it)."""
    h, w, _, y = _data()
    f = _loss_fn(y, "none", "chunked")
    with pytest.raises(RuntimeError, match="does not support double backward"):
        torch.func.jacrev(torch.func.grad(lambda h: f(h, w, None).sum()))(h)
    ref = _loss_fn(y, "none", "reference")
    hess = torch.func.jacrev(torch.func.grad(lambda h: ref(h, w, None).sum()))(h)
    assert hess.shape == (N, H, N, H)
