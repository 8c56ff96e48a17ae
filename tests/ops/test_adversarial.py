"""The adversarial checklist every implementation passes (CONTRIBUTING.md, "A new kernel").

Non-finite and masked logits, large common offsets, parameter gradients, in-place backward
and later uses of the logits, explicit refusals, dtype rules independent of the input size.
The fused path runs twice: rows by the C kernel and by eager torch blocks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import labelsmooth
from labelsmooth.ops.cpu import kernel as cpu_kernel

INF, NAN = float("inf"), float("nan")


@pytest.fixture(params=["reference", "fused", "fused-eager", "torch"])
def impl(request, monkeypatch):
    if request.param == "fused-eager":
        monkeypatch.setattr(labelsmooth.runtime.config, "native_kernel", False)
        return "fused"
    if request.param == "fused" and cpu_kernel.native_unavailable(torch.device("cpu")):
        pytest.skip("no native kernel")
    return request.param


def _loss_grad(x, y, impl, **kw):
    x = x.detach().clone().requires_grad_(True)
    loss = labelsmooth.cross_entropy(x, y, impl=impl, **kw)
    (g,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), g


def _torch_loss_grad(x, y, **kw):
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(x, y, **kw)
    (g,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), g


def _data(n=256, c=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 2, torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_non_finite_logits_in_an_ignored_row(impl, bad, reduction):
    x, y = _data()
    y[0] = -100
    x[0, 5] = bad
    want, want_g = _torch_loss_grad(x, y, label_smoothing=0.1, reduction=reduction)
    got, got_g = _loss_grad(x, y, impl, label_smoothing=0.1, reduction=reduction)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_g[1:], want_g[1:], rtol=1e-5, atol=1e-6)
    assert torch.equal(got_g[0], torch.zeros_like(got_g[0]))  # PyTorch's row is NaN here


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_minus_inf_logits_without_target_mass(impl, reduction):
    # classes masked by -inf logits at ε = 0: PyTorch is finite, so must every impl be
    x, y = _data()
    x[:, 7] = -INF
    x[3, :500] = -INF
    y[y == 7] = 8
    y[3] = 600
    want, want_g = _torch_loss_grad(x, y, reduction=reduction)
    got, got_g = _loss_grad(x, y, impl, reduction=reduction)
    assert torch.isfinite(want).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_g, want_g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("convention", ["uniform", "others", "unnormalized"])
def test_minus_inf_logits_on_masked_classes(impl, convention):
    # class_mask is the documented way to give -inf classes no mass: the loss is the loss of
    # the remaining classes alone
    if impl == "torch":
        pytest.skip("PyTorch has no class mask")
    x, y = _data(64, 101)
    keep = torch.ones(101, dtype=torch.bool)
    keep[[0, 13, 50]] = False
    x[:, ~keep] = -INF
    y = torch.where(keep[y], y, 1)
    got, got_g = _loss_grad(x, y, impl, label_smoothing=0.1, class_mask=keep, convention=convention)
    sub_y = keep.long().cumsum(0)[y] - 1  # class index among the kept classes
    want, want_g = _loss_grad(
        x[:, keep], sub_y, "reference", label_smoothing=0.1, convention=convention
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_g[:, keep], want_g, rtol=1e-5, atol=1e-6)
    assert torch.equal(got_g[:, ~keep], torch.zeros(64, 3))


def test_all_ignored_with_infinite_logits_is_zero(impl):
    x, y = _data(8, 50)
    x[0, 0], x[1, 1], x[2, 2] = INF, -INF, NAN
    y[:] = -100
    got, got_g = _loss_grad(x, y, impl, label_smoothing=0.1)
    assert got.item() == 0.0
    assert torch.equal(got_g, torch.zeros_like(got_g))


@pytest.mark.parametrize("bad", [NAN, INF])
def test_non_finite_in_a_counted_row_as_pytorch(impl, bad):
    x, y = _data(16, 30)
    x[2, 4] = bad
    want, _ = _torch_loss_grad(x, y, label_smoothing=0.1, reduction="none")
    got, _ = _loss_grad(x, y, impl, label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("offset", [0.0, 1e4, 1e6, 3.0e38])
@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_large_common_offsets_house_rule_2(impl, offset, eps):
    g = torch.Generator().manual_seed(1)
    n, c = 64, 1031
    y = torch.randint(0, c, (n,), generator=g)
    spread = 1e37 if offset > 1e30 else 3.0
    x = (offset - spread * torch.rand(n, c, generator=g, dtype=torch.float64)).float()
    truth, truth_g = _torch_loss_grad(x.double(), y, label_smoothing=eps, reduction="none")
    ref, ref_g = _torch_loss_grad(x, y, label_smoothing=eps, reduction="none")
    got, got_g = _loss_grad(x, y, impl, label_smoothing=eps, reduction="none")
    assert torch.isfinite(truth).all()
    for a, b, t in ((got, ref, truth), (got_g, ref_g, truth_g)):
        err = (a.double() - t).abs()
        allowed = 2 * (b.double() - t).abs() + 1e-5 * (1 + t.abs())
        assert bool((err <= allowed).all()), float((err - allowed).max())


@pytest.mark.parametrize("which", ["weight", "prior"])
def test_parameter_gradients_computed_or_refused(impl, which):
    x, y = _data(32, 40)
    vec = (torch.rand(40, generator=torch.Generator().manual_seed(2)) + 0.5).requires_grad_()
    kw = {which: vec, "label_smoothing": 0.2}
    if impl != "reference":
        with pytest.raises(ValueError, match=f"impl='{impl}' cannot run here: .*{which}"):
            labelsmooth.cross_entropy(x, y, impl=impl, **kw)
        return
    loss = labelsmooth.cross_entropy(x, y, impl=impl, **kw)
    (g,) = torch.autograd.grad(loss, vec)
    # against float64 finite differences of the same function
    v64 = vec.detach().double()
    assert torch.autograd.gradcheck(
        lambda v: labelsmooth.cross_entropy(
            x.double(), y, impl="reference", **{which: v, "label_smoothing": 0.2}
        ),
        (v64.requires_grad_(),),
    )
    assert g is not None and torch.isfinite(g).all()


def test_auto_runs_the_reference_when_parameter_gradients_are_needed():
    x, y = _data(32, 40)
    w = (torch.rand(40) + 0.5).requires_grad_()
    assert labelsmooth.chosen_impl(x, y, w, label_smoothing=0.1) == "reference"
    labelsmooth.cross_entropy(x, y, w, label_smoothing=0.1).backward()
    assert w.grad is not None
    with torch.no_grad():  # no gradient wanted: any impl may run
        assert labelsmooth.chosen_impl(x, y, w, label_smoothing=0.1, impl="fused") == "fused"


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("shape", [(64, 300), (4, 30, 5)])
def test_inplace_backward_later_use_reads_the_logits(native, shape):
    if native and cpu_kernel.native_unavailable(torch.device("cpu")):
        pytest.skip("no native kernel")
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=g)
    base = torch.randn(shape, generator=g)
    grads = []
    with labelsmooth.runtime.options(native_kernel=native):
        for inplace in (False, True):
            h = base.clone().requires_grad_(True)
            logits = h * 1.0  # a non-leaf, as a model's output
            loss = labelsmooth.cross_entropy(
                logits, y, label_smoothing=0.1, impl="fused", inplace_backward=inplace
            )
            total = loss + 1e-3 * (logits**2).mean()  # a use recorded after the loss
            total.backward()
            grads.append(h.grad)
    torch.testing.assert_close(grads[1], grads[0])


def test_explicit_impls_refuse_what_they_cannot_run():
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 3])
    soft = torch.softmax(torch.randn(4, 6), 1)
    cases = [
        ("fused", dict(target=soft), "class-index targets only"),
        ("reference", dict(inplace_backward=True), "inplace_backward=True needs impl='fused'"),  # noqa: E501
        ("torch", dict(inplace_backward=True), "inplace_backward=True needs impl='fused'"),
        ("torch", dict(prior=torch.ones(6)), "no smoothing prior"),
        ("torch", dict(kl=True), "no KL form"),
        ("torch", dict(class_mask=torch.ones(6, dtype=torch.bool)), "no smoothing prior"),
    ]
    for impl, kw, match in cases:
        kw = {"target": y, **kw}
        with pytest.raises(ValueError, match=f"impl='{impl}' cannot run here: .*{match}"):
            labelsmooth.cross_entropy(x, impl=impl, label_smoothing=0.1, **kw)


@pytest.mark.parametrize("n", [16, 256])  # below and above auto's size threshold
def test_auto_dtype_rules_do_not_depend_on_size(n):
    x, y = _data(n, 1000)
    w64 = torch.rand(1000, dtype=torch.float64) + 0.5
    got = labelsmooth.cross_entropy(x, y, w64, label_smoothing=0.1)
    want = labelsmooth.cross_entropy(x, y, w64, label_smoothing=0.1, impl="reference")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    soft64 = torch.softmax(torch.randn(n, 1000, dtype=torch.float64), 1)
    for impl in ("auto", "reference", "torch"):
        out = labelsmooth.cross_entropy(x, soft64, label_smoothing=0.1, impl=impl)
        assert out.dtype == torch.float32, impl


@pytest.mark.parametrize("impl_name", ["reference", "fused", "torch", "auto"])
def test_validate_args_false_gives_identical_results(impl_name):
    x, y = _data(64, 500)
    y[::5] = -100
    w = torch.rand(500) + 0.1
    kw = dict(label_smoothing=0.1, impl=impl_name, weight=w)
    a, ga = _loss_grad(x, y, **kw, validate_args=True)
    b, gb = _loss_grad(x, y, **kw, validate_args=False)
    assert torch.equal(a, b) and torch.equal(ga, gb)


@pytest.mark.parametrize("convention", ["uniform", "others", "unnormalized"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignored", ["none", "some", "all"])
def test_validate_args_false_torch_path_keeps_the_ignored_row_rules(convention, reduction, ignored):
    # without validate_args the torch path still reads the targets' range on CPU (free there)
    # to skip the selects when no row is ignored; the results must not depend on it
    x, y = _data(16, 10)
    if ignored != "none":
        y[::3] = -100
        x[0] = NAN  # an ignored row's NaN logits: no NaN in the loss or the gradient
    if ignored == "all":
        y[:] = -100
    kw = dict(label_smoothing=0.1, convention=convention, reduction=reduction)
    a, ga = _loss_grad(x, y, "torch", **kw, validate_args=True)
    b, gb = _loss_grad(x, y, "torch", **kw, validate_args=False)
    assert torch.equal(a, b) and torch.equal(ga, gb)
    assert not ga.isnan().any()


def test_validate_args_false_still_checks_shapes_and_options():
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match="target of class indices must have shape"):
        labelsmooth.cross_entropy(x, torch.zeros(5, dtype=torch.long), validate_args=False)
    with pytest.raises(ValueError, match="reduction must be one of"):
        labelsmooth.cross_entropy(
            x, torch.zeros(4, dtype=torch.long), reduction="avg", validate_args=False
        )
