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
