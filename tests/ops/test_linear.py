"""linear_cross_entropy: the chunked head against the dense composition, edge cases, errors."""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys

import pytest
import torch
import torch.nn.functional as F

import labelsmooth
from labelsmooth._dispatch import ROW_BACKENDS
from labelsmooth.ops import linear

CONVENTIONS = ["uniform", "others", "unnormalized"]
H, V = 24, 101  # V prime: never a multiple of anything
CUDA = torch.cuda.is_available()

if not CUDA and importlib.util.find_spec("triton") is not None and "triton" not in sys.modules:
    # as in test_triton.py: without a GPU the Triton row kernel runs under the interpreter,
    # which is chosen when triton is first imported (for the whole process)
    os.environ["TRITON_INTERPRET"] = "1"


def _data(shape=(3, 13), dtype=torch.float32, seed=0, ignore_every=4):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(*shape, H, generator=g, dtype=torch.float64)
    w = torch.randn(V, H, generator=g, dtype=torch.float64) * 0.3
    b = torch.randn(V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, shape, generator=g)
    if ignore_every:
        y.view(-1)[1::ignore_every] = -100
    return h.to(dtype), w.to(dtype), b.to(dtype), y


def _composition(h, w, y, b, softcap=None, **kw):
    """The specification: dense logits, then labelsmooth.cross_entropy(impl="reference")."""
    logits = F.linear(h, w, b)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    loss = labelsmooth.cross_entropy(
        logits.reshape(-1, w.shape[0]), y.reshape(-1), impl="reference", **kw
    )
    return loss.reshape(y.shape) if kw.get("reduction") == "none" else loss


def _run(fn, h, w, y, b, **kw):
    """Loss and the gradients of hidden, weight and bias, through a random upstream gradient."""
    h = h.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    b = None if b is None else b.detach().clone().requires_grad_(True)
    loss = fn(h, w, y, b, **kw)
    go = torch.rand(loss.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (loss * (go + 0.5).to(loss.device, loss.dtype)).sum().backward()
    return [loss.detach(), h.grad, w.grad, None if b is None else b.grad]


def _chunked(h, w, y, b, **kw):
    return labelsmooth.linear_cross_entropy(h, w, y, b, impl="chunked", **kw)


def _close(got, want, rtol, atol):
    for a, e in zip(got, want):
        if e is None:
            assert a is None
        else:
            torch.testing.assert_close(a.double(), e.double(), rtol=rtol, atol=atol)


def _option_grid(convention):
    """(keyword arguments, with_bias) over every option, ε and reduction cycling."""
    g = torch.Generator().manual_seed(1)
    prior = torch.rand(V, generator=g, dtype=torch.float64)
    mask = torch.rand(V, generator=g) > 0.3
    options = itertools.product((None, prior), (None, mask), (False, True), (False, True))
    cases = [(0.0, "mean"), (0.1, "sum"), (0.3, "none"), (1.0, "mean"), (0.1, "mean")]
    for i, (pr, cm, kl, with_bias) in enumerate(options):
        eps, reduction = cases[i % len(cases)]
        kw = dict(
            label_smoothing=eps, reduction=reduction, convention=convention, prior=pr,
            class_mask=cm, kl=kl, softcap=(None, 2.5)[i % 2],
        )  # fmt: skip
        yield kw, with_bias


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_chunked_equals_composition_over_options(convention):
    """Every option against the dense composition in float64. Tokens (39, 29 counted) and
    V (101) are no multiple of the chunk (8)."""
    h, w, b, y = _data(dtype=torch.float64)
    for kw, with_bias in _option_grid(convention):
        bb = b if with_bias else None
        truth = _run(_composition, h, w, y, bb, **kw)
        _close(_run(_chunked, h, w, y, bb, chunk_size=8, **kw), truth, 1e-10, 1e-12)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_float32_within_1e5_of_float64_truth(convention, row_kernel):
    """The same grid with float32 parameters: loss and the three gradients within 1e-5
    (relative) of the float64 composition."""
    h64, w64, b64, y = _data(dtype=torch.float64)
    for kw, with_bias in _option_grid(convention):
        b = b64 if with_bias else None
        truth = _run(_composition, h64, w64, y, b, **kw)
        f32 = [None if t is None else t.float() for t in (h64, w64, b)]
        pr = kw["prior"]
        kw32 = dict(kw, prior=None if pr is None else pr.float())
        got = _run(_chunked, f32[0], f32[1], y, f32[2], chunk_size=8, **kw32)
        _close(got, truth, 1e-5, 1e-6)


@pytest.mark.parametrize("chunk_size", [1, 5, 29, 1000, None])
def test_chunk_sizes_agree(chunk_size):
    h, w, b, y = _data(dtype=torch.float64)
    kw = dict(label_smoothing=0.1, reduction="sum")
    truth = _run(_composition, h, w, y, b, **kw)
    _close(_run(_chunked, h, w, y, b, chunk_size=chunk_size, **kw), truth, 1e-10, 1e-12)


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 5)])
def test_hidden_shapes_and_no_ignored_token(shape):
    h, w, b, y = _data(shape=shape, dtype=torch.float64, ignore_every=0)
    for reduction in ("none", "mean"):
        kw = dict(label_smoothing=0.2, reduction=reduction, convention="others")
        truth = _run(_composition, h, w, y, b, **kw)
        got = _run(_chunked, h, w, y, b, chunk_size=3, **kw)
        assert got[0].shape == truth[0].shape
        _close(got, truth, 1e-10, 1e-12)


def test_non_contiguous_hidden():
    h, w, b, y = _data(shape=(13, 3), dtype=torch.float64)
    h_t, y_t = h.transpose(0, 1), y.t()  # (3, 13, H) views, not contiguous
    kw = dict(label_smoothing=0.1, reduction="none")
    _close(
        _run(_chunked, h_t, w, y_t, b, chunk_size=4, **kw),
        _run(_composition, h_t, w, y_t, b, **kw),
        1e-10,
        1e-12,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_return_nll_is_the_unsmoothed_nll(reduction, impl):
    h, w, b, y = _data(dtype=torch.float64)
    loss, nll = labelsmooth.linear_cross_entropy(
        h, w, y, b, label_smoothing=0.3, reduction=reduction, softcap=3.0, return_nll=True,
        impl=impl, chunk_size=6,
    )  # fmt: skip
    logits = 3.0 * torch.tanh(F.linear(h, w, b) / 3.0)
    want = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction=reduction)
    torch.testing.assert_close(nll, want.reshape(nll.shape), rtol=1e-10, atol=1e-12)
    assert not nll.requires_grad and nll.shape == loss.shape and nll.dtype == loss.dtype
    smoothed = _composition(h, w, y, b, softcap=3.0, label_smoothing=0.3, reduction=reduction)
    torch.testing.assert_close(loss, smoothed, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_all_tokens_ignored(impl, row_kernel):
    h, w, b, y = _data(dtype=torch.float32)
    y = torch.full_like(y, -7)
    for reduction in ("mean", "sum", "none"):
        fn = lambda *a, **k: labelsmooth.linear_cross_entropy(*a, impl=impl, **k)  # noqa: E731
        loss, gh, gw, gb = _run(fn, h, w, y, b, reduction=reduction, ignore_index=-7,
                                label_smoothing=0.1)  # fmt: skip
        assert torch.equal(loss, torch.zeros_like(loss))
        for grad in (gh, gw, gb):
            assert torch.equal(grad, torch.zeros_like(grad))
    _, nll = labelsmooth.linear_cross_entropy(h, w, y, b, ignore_index=-7, return_nll=True)
    assert float(nll) == 0.0


def test_empty_batch(row_kernel):
    h, w, b, y = _data(shape=(0,), dtype=torch.float32)
    loss, gh, gw, gb = _run(_chunked, h, w, y, b, label_smoothing=0.1)
    assert float(loss) == 0.0 and gh.shape == (0, H)
    assert torch.equal(gw, torch.zeros_like(gw)) and torch.equal(gb, torch.zeros_like(gb))


def test_large_bias_offset_costs_no_precision(row_kernel):
    """Statistics are relative to each row's max: a bias of +1e4 on every class changes
    nothing (exp(1e4) would overflow any formula that exponentiates the raw logits)."""
    h, w, b, y = _data(dtype=torch.float64)
    kw = dict(label_smoothing=0.1, reduction="sum", convention="others", kl=True, chunk_size=8)
    shifted = _run(_chunked, h, w, y, b + 1e4, **kw)
    plain = _run(_chunked, h, w, y, b, **kw)
    _close(shifted, plain, 1e-9, 1e-9)
    # float32: the logits themselves round to ~1e-3 near 1e4; measured against the float64
    # truth of the same float32 numbers, the chunked head is as good as the dense reference
    h32, w32, b32 = h.float(), w.float(), (b + 1e4).float()
    truth = _composition(h32.double(), w32.double(), y, b32.double(), label_smoothing=0.1)
    got = labelsmooth.linear_cross_entropy(h32, w32, y, b32, label_smoothing=0.1, chunk_size=8)
    dense32 = _composition(h32, w32, y, b32, label_smoothing=0.1)
    assert torch.isfinite(got)
    assert abs(float(got) - float(truth)) <= 2 * abs(float(dense32) - float(truth)) + 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_parameters(dtype, row_kernel):
    """Half-precision parameters: within twice the dense composition's own error of the
    float64 truth (same rounded inputs), gradients returned in the parameters' dtype."""
    h, w, b, y = _data(dtype=dtype)
    kw = dict(label_smoothing=0.1, reduction="mean", softcap=4.0)
    got = _run(_chunked, h, w, y, b, chunk_size=8, **kw)
    dense = _run(_composition, h, w, y, b, **kw)
    truth = _run(_composition, h.double(), w.double(), y, b.double(), **kw)
    for g, d, t in zip(got, dense, truth):
        assert g.dtype == dtype
        err, ref_err = (g.double() - t).abs().max(), (d.double() - t).abs().max()
        assert err <= 2 * ref_err + 1e-3 * t.abs().max(), (err, ref_err)


def test_prior_requiring_grad():
    """The chunked head computes no gradient for prior: an explicit request says so, "auto"
    takes the reference, whose prior gradient is the composition's."""
    h, w, b, y = _data(dtype=torch.float64)
    prior = torch.rand(V, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    prior.requires_grad_(True)
    with pytest.raises(ValueError, match=r"impl='chunked' cannot run here.*prior"):
        labelsmooth.linear_cross_entropy(h, w, y, b, prior=prior, label_smoothing=0.2,
                                         impl="chunked")  # fmt: skip
    loss = labelsmooth.linear_cross_entropy(h, w, y, b, prior=prior, label_smoothing=0.2)
    (got,) = torch.autograd.grad(loss, prior)
    (want,) = torch.autograd.grad(_composition(h, w, y, b, prior=prior, label_smoothing=0.2), prior)
    torch.testing.assert_close(got, want)
    with torch.no_grad():  # no gradient wanted: the chunked head runs
        labelsmooth.linear_cross_entropy(h, w, y, b, prior=prior, impl="chunked")


def test_gradients_only_where_asked():
    h, w, b, y = _data(dtype=torch.float64)
    w_leaf = w.clone().requires_grad_(True)  # hidden and bias frozen
    loss = labelsmooth.linear_cross_entropy(h, w_leaf, y, b, label_smoothing=0.1, chunk_size=5)
    loss.backward()
    w_ref = w.clone().requires_grad_(True)
    _composition(h, w_ref, y, b, label_smoothing=0.1).backward()
    torch.testing.assert_close(w_leaf.grad, w_ref.grad)
    with torch.no_grad():  # statistics only
        plain = labelsmooth.linear_cross_entropy(h, w, y, b, label_smoothing=0.1, chunk_size=5)
    torch.testing.assert_close(plain, loss.detach())


def test_backward_once_and_no_double_backward():
    h, w, b, y = _data(dtype=torch.float64)
    h = h.requires_grad_(True)
    loss = labelsmooth.linear_cross_entropy(h, w, y, b, impl="chunked")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward twice"):
        loss.backward()
    loss = labelsmooth.linear_cross_entropy(h, w, y, b, impl="chunked")
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, h, create_graph=True)
    per_token = labelsmooth.linear_cross_entropy(h, w, y, b, reduction="none", impl="chunked")
    first = torch.autograd.grad(per_token.sum(), h, retain_graph=True)[0]
    second = torch.autograd.grad(per_token.sum(), h)[0]  # "none" recomputes: twice is fine
    torch.testing.assert_close(first, second)


def test_module_stores_arguments_and_calls_the_function():
    h, w, b, y = _data(dtype=torch.float64)
    mask = torch.ones(V, dtype=torch.bool)
    mask[:3] = False
    crit = labelsmooth.LinearCrossEntropyLoss(0.2, class_mask=mask, softcap=5.0, chunk_size=7,
                                              return_nll=True)  # fmt: skip
    loss, nll = crit(h, w, y, b)
    want, want_nll = labelsmooth.linear_cross_entropy(
        h, w, y, b, label_smoothing=0.2, class_mask=mask, softcap=5.0, return_nll=True
    )
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(nll, want_nll)
    assert "class_mask" in crit.state_dict() and "softcap=5.0" in repr(crit)


def test_default_chunk_size_rule():
    assert linear.default_chunk_size(128256) == linear.CHUNK_BYTES // (4 * 128256) == 130
    assert linear.default_chunk_size(32000) == 524
    assert linear.default_chunk_size(10**9) == 1


def _bad_calls():
    h, w, b, y = _data(dtype=torch.float32)
    yield (w, w, y, b, {}), "target must have shape"
    yield (h, w[:, :5], y, b, {}), r"weight must have shape \(V, H\).*weight.shape=\(101, 5\)"
    yield (h, w[None], y, b, {}), "weight must have shape"
    yield (h, w.double(), y, b, {}), "weight must have hidden's dtype"
    yield (h, w, y, b[:7], {}), r"bias must have shape \(101,\)"
    yield (h, w, y, b.double(), {}), "bias must have hidden's dtype"
    yield (h, w, y[:, :2], b, {}), r"target must have shape \(3, 13\)"
    yield (h, w, y.float(), b, {}), "target must hold integer class indices"
    yield (h.long(), w, y, b, {}), "hidden must be a floating-point tensor"
    yield (h, w, y, b, {"softcap": -1.0}), "softcap must be a positive finite number"
    yield (h, w, y, b, {"softcap": float("inf")}), "softcap must be a positive finite number"
    yield (h, w, y, b, {"chunk_size": 0}), "chunk_size must be a positive int"
    yield (h, w, y, b, {"impl": "fused"}), r"impl must be one of \['auto', 'chunked'"
    yield (h, w, y, b, {"reduction": "avg"}), "reduction must be one of"
    yield (h, w, y, b, {"label_smoothing": 1.5}), "label_smoothing must be in"
    yield (h, w, y, b, {"prior": torch.ones(7)}), r"prior must have shape \(101,\)"
    yield (h, w, y, b, {"class_mask": torch.ones(V)}), "class_mask must be a bool tensor"
    yield (h, w, y, b, {"class_mask": torch.zeros(V, dtype=torch.bool)}), "allows no class"
    bad = y.clone()
    bad[0, 0] = V
    yield (h, w, bad, b, {}), "target holds class index 101"


@pytest.mark.parametrize("case", range(19))
def test_errors_name_the_argument(case):
    args, match = list(_bad_calls())[case]
    *tensors, kw = args
    with pytest.raises(ValueError, match=match):
        labelsmooth.linear_cross_entropy(*tensors, **kw)


def test_type_errors():
    h, w, b, y = _data(dtype=torch.float32)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        labelsmooth.linear_cross_entropy(h, w.tolist(), y)
    with pytest.raises(TypeError, match="return_nll must be a bool"):
        labelsmooth.linear_cross_entropy(h, w, y, return_nll=1)
    with pytest.raises(TypeError, match="softcap must be a positive float"):
        labelsmooth.linear_cross_entropy(h, w, y, softcap="30")


@pytest.mark.triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_row_kernel(dtype, monkeypatch):
    """The chunk rows by the Triton kernel (the CUDA path; on CPU under the interpreter):
    a constant a_k (uniform prior) and a vector one (prior and class mask)."""
    pytest.importorskip("triton")
    from labelsmooth.ops.triton import kernels as _triton_kernels

    if _triton_kernels.INTERPRETED == CUDA:
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set")
    monkeypatch.setattr(linear, "row_backend_for", lambda device: ROW_BACKENDS["triton"])
    dev = "cuda" if CUDA else "cpu"
    h, w, b, y = (t.to(dev) for t in _data(shape=(17,), dtype=torch.float64))
    prior = torch.rand(V, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    mask = torch.arange(V) % 5 != 0
    for kw in (
        dict(label_smoothing=0.1, softcap=3.0, reduction="none"),
        dict(label_smoothing=0.3, prior=prior.to(dev), class_mask=mask.to(dev), kl=True),
    ):
        truth = _run(_composition, h, w, y, b, **kw)
        kw = {k: v.to(dtype) if k == "prior" else v for k, v in kw.items()}
        got = _run(_chunked, h.to(dtype), w.to(dtype), y, b.to(dtype), chunk_size=8, **kw)
        tol = 1e-9 if dtype == torch.float64 else 1e-5
        _close(got, truth, tol, tol / 10)


@pytest.fixture(params=["triton", "eager"])
def cuda_rows(request, monkeypatch):
    """CUDA chunks by the Triton row kernel, or by eager torch blocks."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if request.param == "triton":
        pytest.importorskip("triton")
    else:
        monkeypatch.setattr(linear, "row_backend_for", lambda device: ROW_BACKENDS["fused"])
    return request.param


@pytest.mark.gpu
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_cuda_options(convention, cuda_rows):
    """The option grid on CUDA in float64 against the composition."""
    h, w, b, y = (t.cuda() for t in _data(dtype=torch.float64))
    for kw, with_bias in _option_grid(convention):
        bb = b if with_bias else None
        kw = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        truth = _run(_composition, h, w, y, bb, **kw)
        _close(_run(_chunked, h, w, y, bb, chunk_size=8, **kw), truth, 1e-9, 1e-11)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_composition_and_holds_one_chunk(dtype, cuda_rows):
    """On CUDA: the composition's loss and gradients within twice its own error, and a peak
    of allocated memory above the inputs and the gradients of a few chunks, not N × V (N is
    64 chunks, so "a few chunks" and "a quarter of the logits" are far apart in bf16 too)."""
    dev = torch.device("cuda")
    n, hd, v, chunk = 4099, 128, 32003, 64
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, hd, generator=g, dtype=torch.float64)
    w = torch.randn(v, hd, generator=g, dtype=torch.float64) / hd**0.5
    b = torch.randn(v, generator=g, dtype=torch.float64)
    y = torch.randint(0, v, (n,), generator=g)
    y[::7] = -100
    h, w, b, y = (t.to(dev) for t in (h, w, b, y))
    mask = torch.arange(v, device=dev) % 11 != 0
    for kw in (
        dict(label_smoothing=0.1, convention="others", softcap=15.0),
        dict(label_smoothing=0.2, class_mask=mask, kl=True, reduction="sum"),
    ):
        truth = _run(_composition, h, w, y, b, **kw)
        hc, wc, bc = (t.to(dtype) for t in (h, w, b))
        dense = _run(_composition, hc, wc, y, bc, **kw)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        got = _run(_chunked, hc, wc, y, bc, chunk_size=chunk, **kw)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(dev) - before
        for a, d, t in zip(got, dense, truth):
            err, ref_err = (a.double() - t).abs().max(), (d.double() - t).abs().max()
            assert err <= 2 * ref_err + 1e-5 * t.abs().max(), (err, ref_err)
        itemsize = torch.finfo(dtype).bits // 8
        grads = (n * hd + v * hd + v) * (4 + itemsize)  # float32 accumulators and the results
        logits = n * v * itemsize
        assert peak - grads <= 4 * chunk * v * 4 + (1 << 20), (peak, grads, logits)
        assert peak - grads < logits / 4
