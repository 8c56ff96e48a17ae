"""Drop-in under tracing: torch.compile (fullgraph), torch._dynamo.explain, torch.func, export.

The default suite compiles with ``backend="aot_eager"`` (Dynamo + AOTAutograd with the ops'
fake functions and autograd formulas, no code generation: seconds, not minutes) over every
impl × convention and each option; a few cases go through Inductor; the whole grid through
Inductor is marked slow.
"""

from __future__ import annotations

import pytest
import torch

import labelsmooth

IMPLS = ("reference", "fused", "torch")  # triton: tests/ops/triton (interpreter), GPU suite
CONVENTIONS = ("uniform", "others", "unnormalized")
C = 11  # prime, not a power of two


def _data(dtype=torch.float32, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, C, generator=g).to(dtype)
    y = torch.randint(0, C, (n,), generator=g)
    y[3] = -100
    return x, y


def _options(convention):
    """(name, kwargs, impls that run them) of the option grid."""
    g = torch.Generator().manual_seed(1)
    w = torch.rand(C, generator=g) + 0.5
    prior = torch.rand(C, generator=g) + 0.1
    mask = torch.arange(C) % 4 != 1
    every = IMPLS
    return [
        ("plain", {}, every),
        ("weight", {"weight": w}, every),
        ("sum", {"reduction": "sum"}, every),
        ("none", {"reduction": "none"}, every),
        ("prior", {"prior": prior}, ("reference", "fused")),
        ("class_mask", {"class_mask": mask}, ("reference", "fused")),
        ("kl", {"kl": True}, ("reference", "fused")),
    ]


def _loss_and_grad(fn, x, y, **kw):
    xr = x.detach().clone().requires_grad_(True)
    loss = fn(xr, y, **kw)
    (g,) = torch.autograd.grad(loss.sum(), xr)
    return loss.detach(), g


def _compare(impl, convention, kw, dtype=torch.float32, backend="aot_eager"):
    x, y = _data(dtype)

    def step(x, y, **kw):
        return labelsmooth.cross_entropy(
            x, y, label_smoothing=0.1, convention=convention, impl=impl, **kw
        )

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    got = _loss_and_grad(compiled, x, y, **kw)
    want = _loss_and_grad(step, x, y, **kw)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("impl", (*IMPLS, "auto"))
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_default_call_has_no_graph_break(impl, convention):
    x, y = _data()

    def fn(x, y):
        return labelsmooth.cross_entropy(
            x, y, label_smoothing=0.1, convention=convention, impl=impl
        )

    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(x.requires_grad_(True), y)
    assert explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("impl", IMPLS)
def test_fullgraph_equals_eager_over_the_option_grid(impl, convention):
    for _name, kw, impls in _options(convention):
        if impl in impls:
            _compare(impl, convention, kw)


@pytest.mark.parametrize("impl", ("reference", "fused"))
def test_fullgraph_bfloat16(impl):
    _compare(impl, "others", {"weight": torch.rand(C) + 0.5}, dtype=torch.bfloat16)


def test_module_and_inductor():
    criterion = labelsmooth.LabelSmoothingCrossEntropy(0.1, convention="others")
    model = torch.nn.Linear(7, C)

    def step(h, y):
        return criterion(model(h), y)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    h = torch.randn(12, 7)
    _, y = _data()
    loss = compiled(h, y)
    (g,) = torch.autograd.grad(loss, model.weight)
    loss_e = step(h, y)
    (g_e,) = torch.autograd.grad(loss_e, model.weight)
    torch.testing.assert_close(loss, loss_e)
    torch.testing.assert_close(g, g_e)


@pytest.mark.parametrize("impl", ("fused", "reference"))
def test_inductor_fused_options(impl):
    _compare(impl, "unnormalized", {"prior": torch.rand(C) + 0.1, "kl": True}, backend="inductor")


@pytest.mark.slow
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("impl", IMPLS)
def test_inductor_option_grid(impl, convention):
    for _name, kw, impls in _options(convention):
        if impl in impls:
            _compare(impl, convention, kw, backend="inductor")


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_input_under_compile_raises_the_eager_error(impl):
    x, y = _data()
    bad = y.clone()
    bad[0] = C

    def fn(x, y, prior=None):
        return labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl=impl, prior=prior)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    compiled(x, y)  # compiles with good data
    with pytest.raises(ValueError) as eager:
        fn(x, bad)
    with pytest.raises(ValueError) as traced:
        compiled(x, bad)
    assert str(traced.value) == str(eager.value)
    assert "class index 11" in str(traced.value)
    if impl != "torch":
        prior = torch.ones(C)
        prior[2] = float("nan")
        with pytest.raises(ValueError, match="prior must be finite"):
            compiled(x, y, prior)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("convention", ("uniform", "others"))
def test_torch_func_grad_and_vjp(impl, convention):
    x, y = _data(torch.float64)

    def f(a):
        return labelsmooth.cross_entropy(
            a, y, label_smoothing=0.1, convention=convention, impl=impl
        )

    want = _loss_and_grad(lambda a, b: f(a), x, y)[1]
    torch.testing.assert_close(torch.func.grad(f)(x), want)
    _, vjp = torch.func.vjp(f, x)
    torch.testing.assert_close(vjp(torch.tensor(1.0, dtype=torch.float64))[0], want)


@pytest.mark.parametrize("impl", IMPLS)
def test_vmap_over_a_leading_batch(impl):
    g = torch.Generator().manual_seed(2)
    xb = torch.randn(3, 6, C, dtype=torch.float64, generator=g)
    yb = torch.randint(0, C, (3, 6), generator=g)
    yb[1, 2] = -100

    def f(a, b):
        return labelsmooth.cross_entropy(a, b, label_smoothing=0.2, convention="others", impl=impl)

    got = torch.vmap(f)(xb, yb)
    want = torch.stack([f(xb[i], yb[i]) for i in range(3)])
    torch.testing.assert_close(got, want)
    grads = torch.vmap(torch.func.grad(f))(xb, yb)
    for i in range(3):
        torch.testing.assert_close(grads[i], torch.func.grad(f)(xb[i], yb[i]))
    bad = yb.clone()
    bad[2, 0] = C
    with pytest.raises(ValueError, match="class index 11"):
        torch.vmap(f)(xb, bad)


def test_export_of_a_module_runs_and_equals_eager():
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(7, C)
            self.loss = labelsmooth.LabelSmoothingCrossEntropy(0.1, convention="others")

        def forward(self, h, y):
            return self.loss(self.head(h), y)

    model = Model()
    h = torch.randn(12, 7)
    _, y = _data()
    program = torch.export.export(model, (h, y))
    torch.testing.assert_close(program.module()(h, y), model(h, y))
    h2 = torch.randn(12, 7)
    torch.testing.assert_close(program.module()(h2, y), model(h2, y))


@pytest.mark.parametrize("strict", (True, False))
def test_export_of_the_fused_impl_records_the_op(strict):
    # eager calls of the fused family skip the op (FusedEager); a tracer must still see it,
    # also non-strict export, which traces with a dispatch mode instead of Dynamo
    class Model(torch.nn.Module):
        def forward(self, x, y):
            return labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused")

    x, y = _data()
    program = torch.export.export(Model(), (x, y), strict=strict)
    assert "labelsmooth.fused_cross_entropy" in str(program.graph)
    torch.testing.assert_close(program.module()(x, y), Model()(x, y))


def test_make_fx_of_the_fused_impl_traces_the_op():
    from torch.fx.experimental.proxy_tensor import make_fx

    x, y = _data()

    def f(x, y):
        return labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused")

    gm = make_fx(f, tracing_mode="fake")(x, y)
    assert "labelsmooth.fused_cross_entropy" in gm.code


@pytest.mark.parametrize("impl", ("chunked", "reference"))
@pytest.mark.parametrize("reduction", ("mean", "none"))
def test_linear_cross_entropy_fullgraph(impl, reduction):
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(2, 9, 16, generator=g)
    head = torch.nn.Linear(16, 37)
    y = torch.randint(0, 37, (2, 9), generator=g)
    y[0, 3] = -100
    kw = dict(label_smoothing=0.1, reduction=reduction, impl=impl, chunk_size=5)

    def step(h, y):
        return labelsmooth.linear_cross_entropy(
            h, head.weight, y, head.bias, convention="others", **kw
        )

    torch._dynamo.reset()
    explained = torch._dynamo.explain(step)(hidden, y)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    params = (head.weight, head.bias)
    results = []
    for fn in (compiled, step):
        h = hidden.clone().requires_grad_(True)
        loss = fn(h, y)
        grads = torch.autograd.grad(loss.sum(), (h, *params))
        results.append((loss.detach(), *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    bad = y.clone()
    bad[1, 1] = 37
    with pytest.raises(ValueError, match="class index 37"):
        compiled(hidden, bad)
