"""Parity with torch.nn.functional.cross_entropy over the test grid, for every implementation."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import labelsmooth
from labelsmooth._dispatch import available_impls

IMPLS = available_impls() + ["torch"]
SHAPES = [(16, 2), (16, 7), (6, 1000), (3, 7, 4, 5), (2, 1000, 3)]  # C=2, prime C, C > a block


def _make(shape, *, ignore: bool, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3).to(dtype)
    c = shape[1]
    tshape = shape[:1] + shape[2:]
    y = torch.randint(0, c, tshape, generator=g)
    if ignore:
        y.view(-1)[::3] = -100
    return x, y


def _loss_and_grad(fn, x, *args, **kw):
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, *args, **kw)
    g = torch.randn(loss.shape, generator=torch.Generator().manual_seed(7))
    (loss * g).sum().backward()
    return loss.detach(), x.grad


def _close(a, b, tol=1e-6):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _parity(fn_kw, x, y, **kw):
    """Loss and gradient equal torch's within 1e-6, or are at least as close as torch's own
    fp32 result to the float64 truth (house rule 2: |impl - truth| <= 2|torch - truth| + atol).
    """
    ref_l, ref_g = _loss_and_grad(F.cross_entropy, x, y, **kw)
    got_l, got_g = _loss_and_grad(labelsmooth.cross_entropy, x, y, **fn_kw, **kw)
    y64 = y.double() if y.is_floating_point() else y
    w64 = None if kw.get("weight") is None else kw["weight"].double()
    true_l, true_g = _loss_and_grad(F.cross_entropy, x.double(), y64, **{**kw, "weight": w64})
    for got, ref, truth in ((got_l, ref_l, true_l), (got_g, ref_g, true_g)):
        assert got.shape == ref.shape and got.dtype == ref.dtype
        near_torch = (got - ref).abs() <= 1e-6 * (1 + ref.abs())
        near_truth = (got.double() - truth).abs() <= 2 * (ref.double() - truth).abs() + 1e-6
        assert bool((near_torch | near_truth).all()), (got - ref).abs().max()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "weighted,ignore", [(False, False), (True, False), (False, True), (True, True)]
)
def test_parity_with_torch(impl, shape, weighted, ignore):
    x, y = _make(shape, ignore=ignore)
    w = torch.rand(shape[1], generator=torch.Generator().manual_seed(1)) + 0.1 if weighted else None
    for eps, reduction in itertools.product((0.0, 0.1, 1.0), ("mean", "sum", "none")):
        kw = dict(weight=w, reduction=reduction, label_smoothing=eps)
        _parity({"impl": impl}, x, y, **kw)


SOFT_IMPLS = [i for i in IMPLS if i != "fused"]  # fused refuses soft targets (tested below)


@pytest.mark.parametrize("impl", SOFT_IMPLS)
@pytest.mark.parametrize("shape", [(16, 7), (3, 7, 4, 5), (4, 1000)])
@pytest.mark.parametrize("weighted", [False, True])
def test_parity_soft_targets(impl, shape, weighted):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g)
    t = torch.softmax(torch.randn(shape, generator=g), dim=1)
    w = torch.rand(shape[1], generator=g) if weighted else None
    for eps, reduction in itertools.product((0.0, 0.1, 1.0), ("mean", "sum", "none")):
        kw = dict(weight=w, reduction=reduction, label_smoothing=eps)
        _parity({"impl": impl}, x, t, **kw)


@pytest.mark.parametrize("impl", IMPLS)
def test_unbatched_input(impl):
    x, y = torch.randn(11), torch.tensor(4)
    for reduction in ("mean", "sum", "none"):
        ref = F.cross_entropy(x, y, reduction=reduction, label_smoothing=0.2)
        got = labelsmooth.cross_entropy(x, y, reduction=reduction, label_smoothing=0.2, impl=impl)
        assert got.shape == ref.shape
        _close(got, ref)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("weighted", [False, True])
def test_all_ignored_mean_is_zero_not_nan(impl, weighted):
    x = torch.randn(5, 9, requires_grad=True)
    y = torch.full((5,), -100)
    w = torch.rand(9) if weighted else None
    assert torch.isnan(F.cross_entropy(x, y, weight=w, label_smoothing=0.1))  # torch's behaviour
    loss = labelsmooth.cross_entropy(x, y, weight=w, label_smoothing=0.1, impl=impl)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch(impl):
    x = torch.randn(0, 5, requires_grad=True)
    y = torch.zeros(0, dtype=torch.long)
    assert labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl=impl).item() == 0.0
    assert labelsmooth.cross_entropy(x, y, reduction="none", impl=impl).shape == (0,)


@pytest.mark.parametrize("impl", available_impls())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_large_vocab_is_finite(impl, dtype):
    # naive fp16 code overflows summing 50,257 logits (huggingface/transformers#10674)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 50257, generator=g) * 4 + 30).to(dtype).requires_grad_(True)
    y = torch.randint(0, 50257, (4,), generator=g)
    loss = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl=impl)
    loss.backward()
    assert loss.dtype == dtype and x.grad is not None and x.grad.dtype == dtype
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    truth = F.cross_entropy(x.detach().double(), y, label_smoothing=0.1)
    assert abs(loss.double().item() - truth.item()) <= 1e-2 * truth.item()


@pytest.mark.parametrize("impl", available_impls())
def test_module_matches_function(impl):
    x, y = _make((8, 13), ignore=True)
    w = torch.rand(13)
    mask = torch.ones(13, dtype=torch.bool)
    mask[0] = False
    crit = labelsmooth.LabelSmoothingCrossEntropy(
        0.2, weight=w, convention="others", class_mask=mask, kl=True, impl=impl
    )
    expected = labelsmooth.cross_entropy(
        x, y, w, label_smoothing=0.2, convention="others", class_mask=mask, kl=True, impl=impl
    )
    _close(crit(x, y), expected)
    assert set(crit.state_dict()) == {"weight", "class_mask"}
    assert "label_smoothing=0.2" in repr(crit)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"convention": "others", "eps": 0.9}, "label_smoothing above 1"),
        ({"prior": torch.ones(5)}, "no smoothing prior or class mask"),
        ({"kl": True}, "no KL form"),
        ({"input": torch.randn(3, 5).half()}, "can overflow"),
    ],
)
def test_torch_impl_refuses_what_torch_lacks(kw, match):
    eps = kw.pop("eps", 0.1)
    args = {"input": torch.randn(3, 5), "target": torch.tensor([0, 1, 2]), **kw}
    with pytest.raises(ValueError, match="impl='torch' cannot run here: .*" + match):
        labelsmooth.cross_entropy(impl="torch", label_smoothing=eps, **args)


@pytest.mark.parametrize("convention", ["others", "unnormalized"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignored", [True, False])
@pytest.mark.parametrize("shape", [(7, 5), (7, 5, 3)])
def test_torch_impl_runs_every_convention_by_a_change_of_eps(
    convention, weighted, reduction, ignored, shape
):
    # uniform prior: PyTorch's uniform smoothing with ε' = εC/(C-1) ("others") or
    # (1-ε/C)·uniform with ε' = ε/(1-ε/C) ("unnormalized"), class weights included; without
    # ignored rows or weights the factor 1-ε/C rides on uniform class weights
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, shape[:1] + shape[2:])
    if ignored:
        y.view(-1)[5] = -100
    w = torch.rand(5, dtype=torch.float64) + 0.5 if weighted else None
    kw = dict(weight=w, reduction=reduction, label_smoothing=0.3, convention=convention)
    got = labelsmooth.cross_entropy(x, y, impl="torch", **kw)
    ref = labelsmooth.cross_entropy(x, y, impl="reference", **kw)
    torch.testing.assert_close(got, ref)
    g1, g2 = (torch.autograd.grad(v.sum(), x)[0] for v in (got, ref))
    torch.testing.assert_close(g1, g2)


def test_chosen_impl_takes_exactly_the_arguments_of_cross_entropy():
    import inspect

    ce_sig = inspect.signature(labelsmooth.cross_entropy)
    assert inspect.signature(labelsmooth.chosen_impl).parameters == ce_sig.parameters
    x, y = torch.zeros(4, 10), torch.zeros(4, dtype=torch.long)
    assert labelsmooth.chosen_impl(x, y, None, -100, "mean", 0.1, return_nll=True) == "torch"
    with pytest.raises(TypeError, match=r"chosen_impl\(\) got an unexpected keyword .*'bogus'"):
        labelsmooth.chosen_impl(x, y, bogus=1)
    with pytest.raises(TypeError, match=r"chosen_impl\(\) missing a required argument"):
        labelsmooth.chosen_impl(x)


def test_auto_choice():
    from labelsmooth._dispatch import AUTO_TORCH_MAX_NUMEL

    small, large = torch.zeros(4, 10), torch.zeros(2, AUTO_TORCH_MAX_NUMEL // 2 + 1)
    ys, yl = torch.zeros(4, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    assert labelsmooth.chosen_impl(small, ys) == "torch"
    assert labelsmooth.chosen_impl(small, ys, convention="others") == "torch"  # ε·C/(C-1)
    assert labelsmooth.chosen_impl(small, torch.full((4, 10), 0.1), kl=True) == "reference"
    assert labelsmooth.chosen_impl(large, yl) == "fused"
    assert labelsmooth.chosen_impl(small, ys, inplace_backward=True) == "fused"


def test_auto_prefers_fused_sooner_with_the_native_kernel():
    from labelsmooth._dispatch import AUTO_TORCH_MAX_NUMEL_NATIVE
    from labelsmooth.ops.cpu.kernel import native_unavailable

    mid = torch.zeros(2, AUTO_TORCH_MAX_NUMEL_NATIVE // 2 + 1)  # between the two limits
    y = torch.zeros(2, dtype=torch.long)
    assert labelsmooth.chosen_impl(mid.double(), y) == "torch"
    if native_unavailable(mid.device) is None:
        assert labelsmooth.chosen_impl(mid, y) == "fused"
    with labelsmooth.runtime.options(native_kernel=False):
        assert labelsmooth.chosen_impl(mid, y) == "torch"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_any_integer_target_dtype_equals_int64(impl, dtype):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(40, 200, generator=g, requires_grad=True)
    y = torch.randint(0, 200, (40,), generator=g)  # includes 156, i.e. -100 wrapped in uint8
    y[0] = 156
    kw = dict(label_smoothing=0.1, impl=impl)
    want = labelsmooth.cross_entropy(x, y, **kw)
    (want_grad,) = torch.autograd.grad(want, x)
    got = labelsmooth.cross_entropy(x, y.to(dtype), **kw)
    (got_grad,) = torch.autograd.grad(got, x)
    torch.testing.assert_close((got, got_grad), (want, want_grad), rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(16, 7), (3, 7, 4)])
def test_return_nll_is_the_unsmoothed_unweighted_nll(impl, reduction, shape):
    x, y = _make(shape, ignore=True, seed=5)
    w = torch.rand(shape[1]) + 0.5
    x.requires_grad_(True)
    loss, nll = labelsmooth.cross_entropy(
        x, y, w, label_smoothing=0.2, reduction=reduction, impl=impl, return_nll=True
    )
    plain = labelsmooth.cross_entropy(x, y, w, label_smoothing=0.2, reduction=reduction, impl=impl)
    _close(loss, plain)
    want = F.cross_entropy(x.detach(), y, reduction=reduction)  # unweighted, ε = 0
    _close(nll, want, tol=1e-5)
    assert not nll.requires_grad and nll.dtype == x.dtype


@pytest.mark.parametrize("impl", SOFT_IMPLS)
def test_return_nll_soft_targets(impl):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 9, generator=g)
    t = torch.softmax(torch.randn(6, 9, generator=g), 1)
    _, nll = labelsmooth.cross_entropy(x, t, label_smoothing=0.1, impl=impl, return_nll=True)
    _close(nll, F.cross_entropy(x, t), tol=1e-5)


def test_return_nll_all_ignored_mean_is_zero():
    x = torch.randn(4, 5)
    _, nll = labelsmooth.cross_entropy(x, torch.full((4,), -100), return_nll=True)
    assert nll.item() == 0.0


def test_auto_on_cuda_follows_the_committed_gpu_measurements(monkeypatch):
    from labelsmooth import _dispatch
    from labelsmooth._validate import Spec

    def spec(numel, convention="uniform", dtype=torch.float32, device="cuda", kl=False):
        return Spec(device, dtype, numel, 1000, False, convention, False, False, kl, False,
                    False, (), eps=0.1)  # fmt: skip

    monkeypatch.setattr(_dispatch, "_triton_missing", lambda: False)
    big = _dispatch.AUTO_TRITON_MIN_NUMEL_CUDA
    assert _dispatch.choose_auto(spec(big - 1)) == "torch"
    assert _dispatch.choose_auto(spec(big)) == "triton"
    assert _dispatch.choose_auto(spec(1000, "others")) == "torch"  # PyTorch's, another ε
    assert _dispatch.choose_auto(spec(1000, "others", kl=True)) == "triton"  # PyTorch lacks it
    assert _dispatch.choose_auto(spec(1000, dtype=torch.bfloat16)) == "triton"
    assert _dispatch.choose_auto(spec(big, device="mps")) == "torch"  # no measurement there
    assert _dispatch.choose_auto(spec(1000, "others", device="mps", kl=True)) == "fused"
    monkeypatch.setattr(_dispatch, "_triton_missing", lambda: True)
    assert _dispatch.choose_auto(spec(big)) == "torch"
    assert _dispatch.choose_auto(spec(1000, "others", kl=True)) == "fused"


@pytest.mark.parametrize("impl", ["reference", "fused", "torch"])
def test_non_finite_incoming_gradient_at_an_ignored_position_gives_zero(impl):
    x = torch.randn(4, 5, requires_grad=True)
    y = torch.tensor([0, -100, 2, 3])
    loss = labelsmooth.cross_entropy(x, y, reduction="none", label_smoothing=0.1, impl=impl)
    go = torch.tensor([1.0, float("nan"), 1.0, 1.0])  # NaN where the row is ignored
    (g,) = torch.autograd.grad(loss, x, go)
    assert torch.isfinite(g).all() and (g[1] == 0).all()


@pytest.mark.parametrize("impl", ["reference", "fused", "torch"])
def test_counted_targets_of_zero_weight_give_nan_in_every_impl(impl):
    x = torch.randn(3, 4)
    w = torch.tensor([0.0, 1.0, 1.0, 1.0])
    loss = labelsmooth.cross_entropy(
        x, torch.tensor([0, 0, -100]), w, label_smoothing=0.1, impl=impl
    )
    assert torch.isnan(loss)


def test_ignore_index_outside_int64_is_one_clear_error():
    with pytest.raises(ValueError, match="ignore_index must fit in int64"):
        labelsmooth.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), ignore_index=2**70)


@pytest.mark.parametrize("impl", ["auto", "torch", "fused", "reference"])
def test_a_parameter_as_logits_runs_the_eager_path(impl):
    # nn.Parameter is a tensor subclass that must not be taken for a tracer's tensor
    x = torch.randn(6, 9)
    y = torch.tensor([0, 8, -100, 3, 3, 1])
    p = torch.nn.Parameter(x.clone())
    loss = labelsmooth.cross_entropy(p, y, label_smoothing=0.1, impl=impl)
    loss.backward()
    ref = x.clone().requires_grad_(True)
    want = labelsmooth.cross_entropy(ref, y, label_smoothing=0.1, impl="reference")
    want.backward()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(p.grad, ref.grad)
    with pytest.raises(ValueError, match="target"):
        labelsmooth.cross_entropy(p, torch.tensor([0, 9, 0, 0, 0, 0]), impl=impl)
