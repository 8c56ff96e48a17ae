"""labelsmooth.distillation_loss against the plain reference, gradcheck and argument errors."""

from __future__ import annotations

import pytest
import torch

import labelsmooth
from labelsmooth.ops.reference import distillation_loss_reference


def _data(n: int = 7, c: int = 5, dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    zs = (3 * torch.randn(n, c, generator=g)).to(dtype)
    zt = (3 * torch.randn(n, c, generator=g)).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    return zs, zt, y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "temperature,alpha,eps", [(1.0, 0.5, 0.0), (4.0, 0.9, 0.0), (2.0, 0.3, 0.1)]
)
def test_matches_reference(reduction: str, temperature: float, alpha: float, eps: float) -> None:
    zs, zt, y = _data(c=11)
    y[2] = -100  # an ignored row
    kw = dict(temperature=temperature, alpha=alpha, reduction=reduction, label_smoothing=eps)
    got = labelsmooth.distillation_loss(zs, zt, y, **kw)
    truth = distillation_loss_reference(zs.double(), zt.double(), y, temperature, alpha,
                                        -100, reduction, eps)  # fmt: skip
    torch.testing.assert_close(got.double(), truth, rtol=1e-5, atol=1e-6)
    if reduction == "none":
        assert float(got[2]) == 0.0


def test_limits_and_all_ignored() -> None:
    zs, zt, y = _data()
    hard = labelsmooth.distillation_loss(zs, zt, y, temperature=3.0, alpha=0.0)
    torch.testing.assert_close(hard, torch.nn.functional.cross_entropy(zs, y))
    same = labelsmooth.distillation_loss(zt, zt, y, temperature=3.0, alpha=1.0)
    assert abs(float(same)) < 1e-5
    zs.requires_grad_(True)
    none = labelsmooth.distillation_loss(zs, zt, torch.full_like(y, -100), temperature=2.0)
    none.backward()
    assert float(none.detach()) == 0.0 and zs.grad is not None and not zs.grad.any()


def test_gradcheck_float64() -> None:
    zs, zt, y = _data(n=4, c=3, dtype=torch.float64)
    zs.requires_grad_(True)

    def f(z: torch.Tensor) -> torch.Tensor:
        return labelsmooth.distillation_loss(z, zt, y, temperature=2.5, alpha=0.7,
                                             label_smoothing=0.1)  # fmt: skip

    assert torch.autograd.gradcheck(f, (zs,))
    # the teacher is a constant
    zt2 = zt.clone().requires_grad_(True)
    loss = labelsmooth.distillation_loss(zs, zt2, y, temperature=2.0)
    assert loss.grad_fn is not None
    loss.backward()
    assert zt2.grad is None


@pytest.mark.parametrize(
    "kw,err,match",
    [
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(temperature=float("nan")), ValueError, "temperature"),
        (dict(temperature="2"), TypeError, "temperature"),
        (dict(alpha=1.5), ValueError, "alpha"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(label_smoothing=2.0), ValueError, "label_smoothing"),
    ],
)
def test_argument_errors(kw: dict, err: type, match: str) -> None:
    zs, zt, y = _data()
    with pytest.raises(err, match=match):
        labelsmooth.distillation_loss(zs, zt, y, **kw)


def test_shape_errors() -> None:
    zs, zt, y = _data()
    with pytest.raises(ValueError, match="teacher_logits"):
        labelsmooth.distillation_loss(zs, zt[:, :3], y)
    with pytest.raises(ValueError, match="student_logits"):
        labelsmooth.distillation_loss(zs[0], zt[0], y[:1])
    with pytest.raises(ValueError, match="target"):
        labelsmooth.distillation_loss(zs, zt, y[:3])
    with pytest.raises(TypeError, match="target"):
        labelsmooth.distillation_loss(zs, zt, y.float())


PADDING = [float("nan"), float("-inf"), float("inf")]


@pytest.mark.parametrize("fill", PADDING, ids=["nan", "-inf", "+inf"])
@pytest.mark.parametrize("where", ["student", "teacher", "both"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_non_finite_padding_in_ignored_rows_is_never_read(
    fill: float, where: str, reduction: str
) -> None:
    zs, zt, y = _data(c=6)
    y[[1, 4]] = -100
    bad_s, bad_t = zs.clone(), zt.clone()
    if where in ("student", "both"):
        bad_s[[1, 4]] = fill
    if where in ("teacher", "both"):
        bad_t[[1, 4]] = fill
    kw = dict(temperature=2.0, alpha=0.7, reduction=reduction, label_smoothing=0.1)
    clean_s = zs.clone().requires_grad_(True)
    padded_s = bad_s.clone().requires_grad_(True)
    clean = labelsmooth.distillation_loss(clean_s, zt, y, **kw)
    padded = labelsmooth.distillation_loss(padded_s, bad_t, y, **kw)
    torch.testing.assert_close(padded, clean)
    (clean.sum() if reduction == "none" else clean).backward()
    (padded.sum() if reduction == "none" else padded).backward()
    assert padded_s.grad is not None and clean_s.grad is not None
    assert bool(torch.isfinite(padded_s.grad).all())
    assert not padded_s.grad[[1, 4]].any()  # exactly zero on the padding
    torch.testing.assert_close(padded_s.grad, clean_s.grad)
    truth = distillation_loss_reference(bad_s.double(), bad_t.double(), y, 2.0, 0.7,
                                        -100, reduction, 0.1)  # fmt: skip
    torch.testing.assert_close(padded.double(), truth, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fill", PADDING, ids=["nan", "-inf", "+inf"])
def test_a_counted_teacher_row_without_a_softmax_names_teacher_logits(fill: float) -> None:
    zs, zt, y = _data()
    zt[3] = fill
    with pytest.raises(ValueError, match=r"teacher_logits .*row 3") as info:
        labelsmooth.distillation_loss(zs, zt, y)
    assert "soft target" not in str(info.value) and "kl=True" not in str(info.value)


def test_teacher_minus_inf_on_some_classes_of_a_counted_row() -> None:
    # p_t = 0 on those classes: they add nothing to the KL term (0 · log 0 = 0)
    zs, zt, y = _data(c=5)
    zt[0, [1, 3]] = float("-inf")
    y[0] = 0
    s = zs.clone().requires_grad_(True)
    got = labelsmooth.distillation_loss(s, zt, y, temperature=2.0, alpha=0.8)
    got.backward()
    truth = distillation_loss_reference(zs.double(), zt.double(), y, 2.0, 0.8)
    assert bool(torch.isfinite(got)) and s.grad is not None
    assert bool(torch.isfinite(s.grad).all())
    torch.testing.assert_close(got.double(), truth, rtol=1e-5, atol=1e-6)
