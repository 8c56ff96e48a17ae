"""A class-conditional (C, C) ``prior``: row y is the smoothing distribution of target class y.

The reference is checked against a float64 dense formula written out here row by row (every
convention, ``kl``, class weights, ``ignore_index``, reductions, ``class_mask``, N-D inputs)
and by gradcheck (input and prior); the fused path (C kernel and eager blocks) against the
reference; ``smooth_labels`` against the same formula; and the argument errors.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import labelsmooth

C = 7  # prime


def _row_prior(prior: torch.Tensor, y: int, class_mask: torch.Tensor | None) -> torch.Tensor:
    u = prior[y].double().clone()
    if class_mask is not None:
        u = u * class_mask.double()
    return u / u.sum()


def _dense_q(y: int, eps: float, convention: str, u: torch.Tensor) -> torch.Tensor:
    """The smoothed target of one row with target ``y`` and prior row ``u`` (float64)."""
    onehot = torch.zeros(C, dtype=torch.float64)
    onehot[y] = 1.0
    if convention == "uniform":
        return (1 - eps) * onehot + eps * u
    off = u * (1 - onehot)  # the prior on the other classes
    if convention == "others":
        rest = 1 - float(u[y])
        return onehot if rest <= 0 else (1 - eps) * onehot + eps * off / rest
    return (1 - eps) * onehot + eps * off  # unnormalized


def _dense_loss(logits, target, weight, ignore_index, reduction, eps, convention, prior,
                class_mask, kl):  # fmt: skip
    """Σ_k w_k q_k (−log p_k) (+ Σ_k w_k q_k log(q_k/Σq)) per row, row by row in float64."""
    x = logits.double().movedim(1, -1).reshape(-1, C)
    ys = target.reshape(-1).tolist()
    w = torch.ones(C, dtype=torch.float64) if weight is None else weight.double()
    losses, denom = [], 0.0
    for i, y in enumerate(ys):
        if y == ignore_index:
            losses.append(torch.zeros((), dtype=torch.float64))
            continue
        q = _dense_q(y, eps, convention, _row_prior(prior, y, class_mask))
        logp = torch.log_softmax(x[i], 0)
        k = q != 0  # classes without mass add exactly 0
        row = -(w[k] * q[k] * logp[k]).sum()
        if kl:
            row = row + (w[k] * q[k] * torch.log(q[k] / q.sum())).sum()
        losses.append(row)
        denom += float(w[y])
    out = torch.stack(losses)
    if reduction == "none":
        return out.reshape(target.shape)
    if reduction == "sum":
        return out.sum()
    return out.sum() / denom if denom else out.sum() * 0


def _case(nd: bool, ignore: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (3, C, 2, 3) if nd else (11, C)
    logits = torch.randn(shape, generator=g) * 2
    tshape = shape[:1] + shape[2:]
    target = torch.randint(0, C, tshape, generator=g)
    if ignore:
        target.view(-1)[::4] = -100
    prior = torch.rand(C, C, generator=g) + 0.05
    prior[1, 3] = 0.0  # a zero entry
    prior[2] = 0.0
    prior[2, 2] = 1.0  # row 2: all its mass on its own class (others: the target keeps it)
    weight = torch.rand(C, generator=g) + 0.5
    mask = torch.ones(C, dtype=torch.bool)
    mask[5] = False
    return logits, target, prior, weight, mask


GRID = list(
    itertools.product(
        ("uniform", "others", "unnormalized"),
        (False, True),  # kl
        (False, True),  # weight
        (False, True),  # ignore_index used
        ("none", "mean", "sum"),
        (False, True),  # class_mask
        (False, True),  # N-D
    )
)


@pytest.mark.parametrize("convention,kl,weighted,ignore,reduction,masked,nd", GRID)
def test_reference_equals_dense_formula(convention, kl, weighted, ignore, reduction, masked, nd):
    logits, target, prior, weight, mask = _case(nd, ignore)
    w = weight if weighted else None
    m = mask if masked else None
    got = labelsmooth.cross_entropy(
        logits.double(), target, w, -100, reduction, 0.3, convention=convention, prior=prior,
        class_mask=m, kl=kl, impl="reference",
    )  # fmt: skip
    want = _dense_loss(logits, target, w, -100, reduction, 0.3, convention, prior, m, kl)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


#: the fused grid: ignore_index always used, weight and class_mask together
FUSED_GRID = [g for g in GRID if g[3] and g[2] == g[5]]


@pytest.mark.parametrize("convention,kl,weighted,ignore,reduction,masked,nd", FUSED_GRID)
def test_fused_equals_reference(
    convention, kl, weighted, ignore, reduction, masked, nd, row_kernel, near_truth
):
    logits, target, prior, weight, mask = _case(nd, ignore, seed=1)
    w = weight if weighted else None
    m = mask if masked else None
    kw = dict(convention=convention, prior=prior, class_mask=m, kl=kl)
    x64 = logits.double().requires_grad_()
    truth = labelsmooth.cross_entropy(x64, target, w, -100, reduction, 0.3, impl="reference", **kw)
    (g64,) = torch.autograd.grad(truth.sum(), x64)
    x32 = logits.clone().requires_grad_()
    same = labelsmooth.cross_entropy(x32, target, w, -100, reduction, 0.3, impl="reference", **kw)
    (g_same,) = torch.autograd.grad(same.sum(), x32)
    xf = logits.clone().requires_grad_()
    got = labelsmooth.cross_entropy(xf, target, w, -100, reduction, 0.3, impl="fused", **kw)
    (g_got,) = torch.autograd.grad(got.sum(), xf)
    near_truth(got, truth, same, atol=1e-6)
    near_truth(g_got, g64, g_same, atol=1e-6)


@pytest.mark.parametrize("convention", ["uniform", "others", "unnormalized"])
@pytest.mark.parametrize("kl", [False, True])
def test_reference_gradcheck_input_and_prior(convention, kl):
    logits, target, prior, weight, mask = _case(False, True)
    x = logits[:5].double().requires_grad_()
    p = (torch.rand(C, C, dtype=torch.float64) + 0.1).requires_grad_()

    def f(x, p):
        return labelsmooth.cross_entropy(
            x, target[:5], weight.double(), label_smoothing=0.3, convention=convention,
            prior=p, class_mask=mask, kl=kl, impl="reference",
        )  # fmt: skip

    assert torch.autograd.gradcheck(f, (x, p), fast_mode=True)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_equal_rows_equal_the_vector_prior(impl, convention):
    logits, target, _, weight, mask = _case(False, True)
    vec = torch.rand(C) + 0.1
    kw = dict(convention=convention, class_mask=mask, kl=True, impl=impl)
    a = labelsmooth.cross_entropy(logits, target, weight, label_smoothing=0.2, prior=vec, **kw)
    b = labelsmooth.cross_entropy(
        logits, target, weight, label_smoothing=0.2, prior=vec.expand(C, C).clone(), **kw
    )
    torch.testing.assert_close(a, b)


def test_auto_never_takes_torch_and_torch_refuses():
    x, y = torch.zeros(4, C), torch.zeros(4, dtype=torch.long)
    prior = torch.rand(C, C)
    assert labelsmooth.chosen_impl(x, y, prior=prior) != "torch"
    with pytest.raises(ValueError, match=r"impl='torch' cannot run here: .*prior"):
        labelsmooth.cross_entropy(x, y, prior=prior, impl="torch")


@pytest.mark.parametrize("convention", ["uniform", "others", "unnormalized"])
@pytest.mark.parametrize("masked", [False, True])
def test_smooth_labels_dense_target(convention, masked):
    _, target, prior, _, mask = _case(True, True)
    m = mask if masked else None
    q = labelsmooth.smooth_labels(
        target, C, 0.3, convention=convention, prior=prior, class_mask=m, dtype=torch.float64
    )
    assert q.shape == (3, C, 2, 3)
    rows = q.movedim(1, -1).reshape(-1, C)
    for row, y in zip(rows, target.reshape(-1).tolist()):
        if y == -100:
            assert not row.any()
        else:
            want = _dense_q(y, 0.3, convention, _row_prior(prior, y, m))
            torch.testing.assert_close(row, want)


@pytest.mark.parametrize(
    "prior,match",
    [
        (torch.rand(C, C + 1), r"prior must have shape \(7,\) or \(7, 7\).*prior.shape=\(7, 8\)"),
        (torch.rand(C, C, 1), r"prior must have shape .*prior.shape=\(7, 7, 1\)"),
        (torch.ones(C, C, dtype=torch.long), r"prior must be a floating-point tensor"),
        (torch.full((C, C), -1.0), r"prior must be non-negative"),
        (torch.full((C, C), float("nan")), r"prior must be finite, got prior\[0\]"),
        (torch.ones(C, C).index_fill_(0, torch.tensor([3]), float("inf")), r"got prior\[3\]"),
    ],
)
def test_bad_matrix_priors(prior, match):
    x, y = torch.zeros(4, C), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        labelsmooth.cross_entropy(x, y, label_smoothing=0.1, prior=prior)


@pytest.mark.parametrize("fn", ["cross_entropy", "smooth_labels"])
def test_an_empty_row_after_masking_names_the_row(fn):
    prior = torch.rand(C, C)
    prior[4] = 0.0
    prior[4, 5] = 1.0  # row 4's only mass is on class 5, which the mask removes
    mask = torch.ones(C, dtype=torch.bool)
    mask[5] = False
    y = torch.zeros(4, dtype=torch.long)
    match = r"prior row 4 .* positive total mass on the classes class_mask allows"
    with pytest.raises(ValueError, match=match):
        if fn == "cross_entropy":
            labelsmooth.cross_entropy(torch.zeros(4, C), y, prior=prior, class_mask=mask)
        else:
            labelsmooth.smooth_labels(y, C, 0.1, prior=prior, class_mask=mask)


def test_soft_targets_refuse_a_matrix_prior():
    x = torch.zeros(4, C)
    with pytest.raises(ValueError, match=r"prior of shape \(7, 7\) needs class-index targets"):
        labelsmooth.cross_entropy(x, torch.softmax(x, 1), label_smoothing=0.1,
                                  prior=torch.rand(C, C))  # fmt: skip


@pytest.mark.parametrize("impl", ["fused"])  # the reference's trace is the (C,) one's
def test_fullgraph_compile_equals_eager(impl):
    logits, target, prior, weight, mask = _case(False, True)

    def step(x, y, prior):
        return labelsmooth.cross_entropy(
            x, y, weight, label_smoothing=0.2, convention="others", prior=prior,
            class_mask=mask, kl=True, impl=impl,
        )  # fmt: skip

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (compiled, step):
        x = logits.clone().requires_grad_()
        loss = fn(x, target, prior)
        (g,) = torch.autograd.grad(loss, x)
        results.append((loss.detach(), g))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)
    empty = prior.clone()
    empty[3] = 0.0
    with pytest.raises(ValueError, match=r"prior row 3 "):  # validate_args inside the graph
        compiled(logits, target, empty)


@pytest.mark.parametrize("convention", ["uniform", "others", "unnormalized"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_cross_entropy_chunked_equals_dense(convention, reduction, row_kernel):
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(13, 5, generator=g)
    head = torch.randn(C, 5, generator=g)
    target = torch.randint(0, C, (13,), generator=g)
    target[::3] = -100
    prior = torch.rand(C, C, generator=g)
    _, _, _, _, mask = _case(False, False)
    kw = dict(reduction=reduction, label_smoothing=0.3, convention=convention, prior=prior,
              class_mask=mask, kl=True)  # fmt: skip
    results = []
    for impl in ("chunked", "reference"):
        h, w = hidden.clone().requires_grad_(), head.clone().requires_grad_()
        loss = labelsmooth.linear_cross_entropy(h, w, target, impl=impl, chunk_size=4, **kw)
        loss.sum().backward()
        results.append((loss.detach(), h.grad, w.grad))
    h, w = hidden.clone().requires_grad_(), head.clone().requires_grad_()
    dense = labelsmooth.cross_entropy(h @ w.t(), target, impl="reference", **kw)
    dense.sum().backward()
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0], (dense.detach(), h.grad, w.grad), rtol=1e-5, atol=1e-6)


def test_vocab_parallel_losses_refuse_a_matrix_prior():
    from labelsmooth import parallel

    x, y = torch.randn(4, C), torch.zeros(4, dtype=torch.long)
    match = r"prior of shape \(7, 7\) \(class-conditional\) is not supported by the vocab"
    with pytest.raises(ValueError, match=match):
        parallel.vocab_parallel_cross_entropy(
            x, y, vocab_range=(0, C), label_smoothing=0.1, prior=torch.rand(C, C)
        )
    with pytest.raises(ValueError, match=match):
        parallel.vocab_parallel_linear_cross_entropy(
            torch.randn(4, 3), torch.randn(C, 3), y, vocab_range=(0, C), label_smoothing=0.1,
            prior=torch.rand(C, C),
        )  # fmt: skip


def test_c_kernel_checks_the_shape_of_a():
    from labelsmooth.ops.cpu import kernel as cpu_kernel

    if cpu_kernel.native_unavailable(torch.device("cpu")) is not None:
        pytest.skip("the C kernel is unavailable")
    x = torch.randn(3, C)
    y = torch.tensor([0, -1, 4])
    vecs = [torch.zeros(3) for _ in range(7)]
    with pytest.raises(ValueError, match=r"a must be a contiguous \(7,\) or \(7, 7\) float32"):
        cpu_kernel.launcher(x, None, y, torch.ones(C, C + 1), 0.0, *vecs)
    m, s, d_y, S = vecs[3:]
    a = torch.rand(C, C)
    cpu_kernel.launcher(x, None, y, a, 0.0, *vecs)(0, 3)  # row i reads a[y_i]
    assert torch.allclose(S[[0, 2]], ((x - m[:, None]) * a[y.clamp_min(0)]).sum(1)[[0, 2]])
    assert S[1] == 0


@pytest.mark.parametrize("impl", ["reference", "fused"])
@pytest.mark.parametrize("convention", ["uniform", "others", "unnormalized"])
def test_matrix_prior_adversarial_rows(impl, convention, row_kernel):
    """The adversarial checklist with a (C, C) prior: NaN/inf in ignored rows give 0 and a
    zero gradient there; a common offset of 1e4 changes nothing; -inf on a class masked out
    of every prior row adds nothing; the prior's own gradient is finite (reference)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, C, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, -100, 3, -100, 6])
    x[2] = float("nan")
    x[4, 1] = float("inf")
    mask = torch.ones(C, dtype=torch.bool)
    mask[5] = False
    x[[0, 1, 3], 5] = float("-inf")  # class 5: no target mass in any counted row
    prior = torch.rand(C, C, generator=g, dtype=torch.float64) + 0.1
    kw = dict(label_smoothing=0.2, convention=convention, class_mask=mask, reduction="none")
    want = labelsmooth.cross_entropy(x, y, prior=prior, impl="reference", **kw)
    xg = x.clone().requires_grad_(True)
    got = labelsmooth.cross_entropy(xg, y, prior=prior, impl=impl, **kw)
    torch.testing.assert_close(got, want)
    assert torch.isfinite(got).all() and (got[[2, 4]] == 0).all()
    (grad,) = torch.autograd.grad(got.sum(), xg)
    assert torch.isfinite(grad[[0, 1, 3, 5]][:, [0, 1, 2, 3, 4, 6]]).all()
    assert (grad[[2, 4]] == 0).all()
    shifted = labelsmooth.cross_entropy(x + 1e4, y, prior=prior, impl=impl, **kw)
    torch.testing.assert_close(shifted, got.detach(), rtol=1e-9, atol=1e-9)
    if impl == "reference":
        p = prior.clone().requires_grad_(True)
        loss = labelsmooth.cross_entropy(x, y, prior=p, impl=impl, **kw).sum()
        (gp,) = torch.autograd.grad(loss, p)
        assert torch.isfinite(gp).all()
