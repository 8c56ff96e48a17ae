"""``labelsmooth::triton_cross_entropy``, the ``torch.library.triton_op`` of impl="triton":
its schema and eager equality with the fused op under the Triton interpreter (CPU), and on
CUDA a compiled step whose kernels Inductor sees."""

from __future__ import annotations

import pytest
import torch
from triton_setup import CUDA, DEVICE  # first: skips this module where triton cannot run

import labelsmooth
from labelsmooth.ops import library

pytestmark = pytest.mark.triton


def _args(reduction="mean", inplace=False, need_grad=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(9, 37, generator=g) * 3).to(DEVICE)
    y = torch.randint(0, 37, (9,), generator=g)
    y[::4] = -100
    u = torch.full((37,), 1 / 37, dtype=torch.float64)
    tail = (-100, reduction, 0.1, "uniform", False, True)
    return x, y.to(DEVICE), None, u.to(DEVICE), *tail, need_grad, inplace


def test_triton_op_exists_with_its_schema():
    library.triton_ops()
    schema = str(torch.ops.labelsmooth.triton_cross_entropy.default._schema)
    assert schema == (
        "labelsmooth::triton_cross_entropy(Tensor input, Tensor target, Tensor? weight, "
        "Tensor u, SymInt ignore_index, str reduction, float eps, str convention, bool kl, "
        "bool uniform_prior, bool need_grad, bool inplace) -> (Tensor, Tensor, Tensor, Tensor)"
    )
    gradient = str(torch.ops.labelsmooth.triton_gradient_.default._schema)
    assert gradient.startswith("labelsmooth::triton_gradient_(Tensor(a0!) input, Tensor target")
    assert gradient.endswith("bool uniform_prior) -> ()")


def test_ready_only_for_compiled_kernels():
    assert library.triton_op_ready() == CUDA


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("inplace", [False, True])
def test_triton_op_eager_equals_fused_op(reduction, inplace):
    library.triton_ops()
    args = _args(reduction, inplace)
    got = torch.ops.labelsmooth.triton_cross_entropy(*args)
    backend = "triton" if CUDA else "fused"  # the fused C/eager rows need CPU tensors
    want = torch.ops.labelsmooth.fused_cross_entropy(*args[:10], backend, *args[10:])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_triton_gradient_op_equals_fused_gradient(reduction):
    ops = library.triton_ops()
    x, y, w, u, *tail = _args(reduction, inplace=True)
    _, _, _, stats = torch.ops.labelsmooth.triton_cross_entropy(x, y, w, u, *tail)
    go = torch.ones(y.shape if reduction == "none" else (), device=DEVICE) * 0.5
    scalars = (tail[0], tail[1], tail[2], tail[3], tail[5])
    a, b = x.clone(), x.clone()
    ops["gradient"](a, y, w, u, stats, go, *scalars)
    library.fused_gradient_(b, y, w, u, stats, go, *scalars, "triton" if CUDA else "fused")
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert not torch.equal(a, x)


def test_triton_op_autograd_and_vmap():
    ops = library.triton_ops()
    x, y, w, u, *tail = _args("mean", need_grad=True)
    xr = x.clone().requires_grad_(True)
    loss, *_ = ops["forward"](xr, y, w, u, *tail)
    loss.backward()
    ref = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(ref, y, label_smoothing=0.1).backward()
    torch.testing.assert_close(xr.grad, ref.grad, atol=1e-6, rtol=1e-5)
    xs = torch.stack([x, x * 2])
    out = torch.vmap(lambda t: ops["forward"](t, y, w, u, *tail[:-2], False, False)[0])(xs)
    for b in range(2):
        want = ops["forward"](xs[b], y, w, u, *tail[:-2], False, False)[0]
        torch.testing.assert_close(out[b], want)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("inplace", [False, True])
def test_gpu_compiled_step_shows_the_kernels_to_inductor(inplace):
    from torch._inductor.utils import run_and_get_code

    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(64, 1000, generator=g).cuda()
    y = torch.randint(0, 1000, (64,), generator=g).cuda()
    y[::5] = -100

    def step(x):
        logits = x * 1.0  # a non-leaf (inplace_backward overwrites it)
        loss = labelsmooth.cross_entropy(
            logits, y, impl="triton", label_smoothing=0.1, validate_args=False,
            inplace_backward=inplace,
        )  # fmt: skip
        (grad,) = torch.autograd.grad(loss, x)
        return loss, grad

    explained = torch._dynamo.explain(step)(x0.clone().requires_grad_(True))
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(step, backend="inductor", fullgraph=True)
    (loss, grad), code = run_and_get_code(compiled, x0.clone().requires_grad_(True))
    want_loss, want_grad = step(x0.clone().requires_grad_(True))
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad, want_grad)
    text = "\n".join(code)
    assert "forward_kernel" in text
    if inplace:
        assert "gradient_kernel" in text
    assert "fused_cross_entropy" not in text


def test_compiled_interpreted_call_keeps_the_fused_op_without_graph_breaks():
    # Dynamo calls triton_op_ready while tracing (a constant): False under the interpreter
    if CUDA:
        pytest.skip("the interpreter's path")
    x, y, *_ = _args()

    def f(t):
        return labelsmooth.cross_entropy(t, y, impl="triton", label_smoothing=0.1)

    explained = torch._dynamo.explain(f)(x)
    assert explained.graph_break_count == 0
    torch.testing.assert_close(torch.compile(f, backend="eager", fullgraph=True)(x), f(x))
