"""smooth_labels: the dense smoothed distribution for every convention, prior and mask."""

from __future__ import annotations

import pytest
import torch

import labelsmooth


def test_conventions_on_a_small_example():
    y = torch.tensor([1, -100])
    eps, c = 0.4, 5
    uni = labelsmooth.smooth_labels(y, c, eps, dtype=torch.float64)
    oth = labelsmooth.smooth_labels(y, c, eps, convention="others", dtype=torch.float64)
    unn = labelsmooth.smooth_labels(y, c, eps, convention="unnormalized", dtype=torch.float64)
    d = torch.float64
    torch.testing.assert_close(uni[0], torch.tensor([0.08, 0.68, 0.08, 0.08, 0.08], dtype=d))
    torch.testing.assert_close(oth[0], torch.tensor([0.1, 0.6, 0.1, 0.1, 0.1], dtype=d))
    torch.testing.assert_close(unn[0], torch.tensor([0.08, 0.6, 0.08, 0.08, 0.08], dtype=d))
    for q in (uni, oth, unn):
        assert torch.equal(q[1], torch.zeros(c, dtype=d))  # ignored row


def test_prior_and_class_mask():
    y = torch.tensor([0, 2])
    prior = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mask = torch.tensor([True, True, True, False])
    q = labelsmooth.smooth_labels(y, 4, 0.6, prior=prior, class_mask=mask, dtype=torch.float64)
    u = torch.tensor([1.0, 2.0, 3.0, 0.0], dtype=torch.float64) / 6
    torch.testing.assert_close(q[0], 0.4 * torch.eye(4, dtype=torch.float64)[0] + 0.6 * u)
    o = labelsmooth.smooth_labels(
        y, 4, 0.6, convention="others", prior=prior, class_mask=mask, dtype=torch.float64
    )
    # others: ε over the non-target allowed classes in proportion to the prior
    torch.testing.assert_close(o[1], torch.tensor([0.2, 0.4, 0.4, 0.0], dtype=torch.float64))


def test_others_with_no_other_allowed_class_keeps_mass_on_target():
    mask = torch.tensor([False, True, False])
    q = labelsmooth.smooth_labels(
        torch.tensor([1, 0]), 3, 0.3, convention="others", class_mask=mask
    )
    # target 1 is the only allowed class: it keeps everything; target 0 is masked itself
    torch.testing.assert_close(q, torch.tensor([[0.0, 1.0, 0.0], [0.7, 0.3, 0.0]]))


def test_nd_layout_matches_cross_entropy_soft_targets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 3, 4, generator=g)
    y = torch.randint(0, 6, (2, 3, 4), generator=g)
    q = labelsmooth.smooth_labels(y, 6, 0.2)
    assert q.shape == (2, 6, 3, 4)
    torch.testing.assert_close(
        labelsmooth.cross_entropy(x, q), labelsmooth.cross_entropy(x, y, label_smoothing=0.2)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype(dtype):
    assert labelsmooth.smooth_labels(torch.tensor([0]), 3, 0.1, dtype=dtype).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_any_integer_target_dtype(dtype):
    target = torch.tensor([0, 2, 156])
    want = labelsmooth.smooth_labels(target, 200, 0.3)
    torch.testing.assert_close(labelsmooth.smooth_labels(target.to(dtype), 200, 0.3), want)


def test_row_mass_and_target_share_for_every_convention(convention):
    # q = a·onehot(y) + b·u: uniform a = 1 − ε, b = ε; others: ε spread over the C − 1 other
    # classes; unnormalized: ε/C off the target, 1 − ε on it (total 1 − ε/C)
    eps, c = 0.3, 7
    q = labelsmooth.smooth_labels(torch.tensor([2, 5]), c, eps, convention=convention)
    q = q.double()
    want_mass = 1 - eps / c if convention == "unnormalized" else 1.0
    want_target = {"uniform": 1 - eps + eps / c, "others": 1 - eps, "unnormalized": 1 - eps}
    torch.testing.assert_close(q.sum(1), torch.full((2,), want_mass, dtype=torch.float64))
    torch.testing.assert_close(q[0, 2].item(), want_target[convention], rtol=1e-6, atol=0.0)
    assert bool((q.argmax(1) == torch.tensor([2, 5])).all())
