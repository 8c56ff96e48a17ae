"""The CPU-free paths on a CUDA device: the fused eager blocks, the reference and PyTorch's
kernel against each other, auto's device rule, and the adversarial cases that matter most.
Skipped without CUDA (run on a GPU machine with ``pytest -m gpu``)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

import labelsmooth

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DEV = "cuda"


def _loss_grad(x, y, **kw):
    x = x.detach().clone().requires_grad_(True)
    loss = labelsmooth.cross_entropy(x, y, **kw)
    (g,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), g


@pytest.mark.parametrize("impl", ["reference", "fused", "torch"])
@pytest.mark.parametrize("shape", [(64, 1031), (8, 128256), (4, 50, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_impls_agree_on_cuda(impl, shape, dtype):
    if impl == "torch" and dtype == torch.bfloat16:
        pytest.skip("the torch impl refuses half dtypes")
    g = torch.Generator(device=DEV).manual_seed(0)
    x = (torch.randn(shape, generator=g, device=DEV) * 3).to(dtype)
    y = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=g, device=DEV)
    y.view(-1)[::5] = -100
    w = torch.rand(shape[1], generator=g, device=DEV) + 0.5
    kw = dict(label_smoothing=0.1, weight=w, reduction="none")
    got = _loss_grad(x, y, impl=impl, **kw)
    want = _loss_grad(x.double(), y, impl="reference", **kw)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol)


def test_auto_keeps_pytorchs_kernel_on_cuda_where_it_covers_the_options():
    x = torch.zeros(8192, 32000, device=DEV)
    y = torch.zeros(8192, dtype=torch.long, device=DEV)
    assert labelsmooth.chosen_impl(x, y, label_smoothing=0.1) == "torch"  # 2.6e8 < 2**28
    others = labelsmooth.chosen_impl(x, y, label_smoothing=0.1, convention="others")
    assert others == ("triton" if importlib.util.find_spec("triton") else "fused")


def test_non_finite_ignored_rows_and_offsets_on_cuda():
    g = torch.Generator(device=DEV).manual_seed(1)
    x = torch.randn(64, 1031, generator=g, device=DEV) + 1e6
    y = torch.randint(0, 1031, (64,), generator=g, device=DEV)
    y[0] = -100
    x[0, 3] = float("nan")
    want = F.cross_entropy(x.double(), y, label_smoothing=0.1)
    for impl in ("reference", "fused", "torch"):
        loss, grad = _loss_grad(x, y, impl=impl, label_smoothing=0.1)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), impl
        assert abs(loss.double().item() - want.item()) < 1e-4 * (1 + abs(want.item())), impl


def test_inplace_backward_on_cuda():
    g = torch.Generator(device=DEV).manual_seed(2)
    base = torch.randn(128, 5000, generator=g, device=DEV)
    y = torch.randint(0, 5000, (128,), generator=g, device=DEV)
    grads = []
    for inplace in (False, True):
        h = base.clone().requires_grad_(True)
        logits = h * 1.0
        loss = labelsmooth.cross_entropy(
            logits, y, label_smoothing=0.1, impl="fused", inplace_backward=inplace
        )
        (loss + 1e-3 * (logits**2).mean()).backward()
        grads.append(h.grad)
    torch.testing.assert_close(grads[1], grads[0])


def _cuda_impls() -> list[str]:
    impls = ["fused", "torch", "reference"]
    if importlib.util.find_spec("triton") is not None:
        impls.append("triton")
    return impls


@pytest.mark.parametrize("impl", _cuda_impls())
@pytest.mark.parametrize("convention", ["uniform", "others", "unnormalized"])
def test_cuda_graphs_capture_a_compiled_step(impl, convention):
    """``torch.compile(mode="reduce-overhead")`` captures a training step with
    ``validate_args=False`` in a CUDA graph (no host synchronization on replay, no
    cudagraph skip), and the replays equal eager."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    lin = torch.nn.Linear(64, 1031, device=DEV)
    kw = dict(label_smoothing=0.1, convention=convention, impl=impl, validate_args=False)

    def step(h, y):
        loss = labelsmooth.cross_entropy(lin(h), y, **kw)
        loss.backward()
        return loss.detach()

    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    g = torch.Generator(device=DEV).manual_seed(0)
    h = torch.randn(256, 64, device=DEV, generator=g)
    y = torch.randint(0, 1031, (256,), device=DEV, generator=g)
    y[::7] = -100
    for _ in range(3):  # warm-up, record, replay
        lin.zero_grad(set_to_none=False)
        got = compiled(h, y).clone()
    torch.cuda.synchronize()
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    got_grad = lin.weight.grad.clone()
    torch.cuda.set_sync_debug_mode("error")  # a host synchronization on replay raises
    try:
        lin.zero_grad(set_to_none=False)
        compiled(h, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    lin.zero_grad(set_to_none=True)
    want = step(h, y)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, lin.weight.grad, rtol=1e-4, atol=1e-6)
