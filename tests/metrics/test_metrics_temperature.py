"""Temperature scaling: recovers a known temperature, never raises the NLL, degenerate cases."""

from __future__ import annotations

import math

import pytest
import torch

from labelsmooth.metrics import evaluate_calibration, fit_temperature


def _well_specified(n: int, c: int, seed: int, scale: float = 2.0):
    """Labels drawn from softmax(true_logits): the true logits are calibrated (T = 1)."""
    g = torch.Generator().manual_seed(seed)
    true = scale * torch.randn(n, c, generator=g, dtype=torch.float64)
    target = torch.multinomial(true.softmax(1), 1, generator=g).squeeze(1)
    return true, target


@pytest.mark.parametrize(("factor", "seed"), [(3.0, 0), (0.5, 1)])
def test_recovers_known_temperature(factor: float, seed: int) -> None:
    true, target = _well_specified(3000, 8, seed)
    t = fit_temperature((factor * true).float(), target)
    assert t == pytest.approx(factor, rel=0.06)


def test_scaled_nll_not_worse_and_ece_improves() -> None:
    true, target = _well_specified(2000, 6, seed=2)
    logits = 3.0 * true
    t = fit_temperature(logits, target)
    before = evaluate_calibration(logits, target)
    after = evaluate_calibration(logits, target, temperature=t)
    assert after["nll"] <= before["nll"]
    assert after["ece"] < before["ece"]
    assert after["top1"] == before["top1"]  # scaling never changes the argmax
    # the fitted T is a minimum: nudging it either way does not lower the NLL
    for nudge in (0.97, 1.03):
        assert evaluate_calibration(logits, target, temperature=t * nudge)["nll"] >= after["nll"]


def test_deterministic() -> None:
    true, target = _well_specified(500, 5, seed=3)
    assert fit_temperature(2 * true, target) == fit_temperature(2 * true, target)


def test_works_under_no_grad_and_inference_mode() -> None:
    true, target = _well_specified(300, 4, seed=5)
    want = fit_temperature(2 * true, target)
    with torch.no_grad():
        assert fit_temperature(2 * true, target) == want
    with torch.inference_mode():
        logits = 2 * true  # an inference tensor
        assert fit_temperature(logits, target) == want


def test_degenerate_cases_are_clamped_not_nan() -> None:
    logits = torch.zeros(40, 4)
    logits[:, 0] = 10.0
    target = torch.zeros(40, dtype=torch.long)
    assert fit_temperature(logits, target) == 0.05  # all correct and confident: T -> 0
    assert fit_temperature(1e4 * logits, target) == 0.05
    assert fit_temperature(logits, target + 1) == 20.0  # all wrong: T -> inf
    assert fit_temperature(1e4 * logits, target + 1) == 20.0
    assert fit_temperature(torch.zeros(5, 3), torch.tensor([0, 1, 2, 0, 1])) == 1.0  # constant
    t = fit_temperature(torch.randn(64, 3).half(), torch.randint(0, 3, (64,)))
    assert math.isfinite(t) and 0.05 <= t <= 20.0


def test_ignore_index_and_spatial_shape() -> None:
    true, target = _well_specified(600, 4, seed=4)
    masked = target.clone()
    masked[::4] = -100
    keep = masked != -100
    a = fit_temperature(2 * true, masked, ignore_index=-100)
    b = fit_temperature(2 * true[keep], target[keep])
    assert a == pytest.approx(b, rel=1e-9)
    x = (2 * true).reshape(6, 100, 4).permute(0, 2, 1)  # (6, C=4, 100)
    assert fit_temperature(x, target.reshape(6, 100)) == pytest.approx(
        fit_temperature(2 * true, target), rel=1e-9
    )


def test_does_not_modify_input() -> None:
    logits = torch.randn(50, 3, requires_grad=True)
    copy = logits.detach().clone()
    fit_temperature(logits, torch.randint(0, 3, (50,)))
    assert torch.equal(logits.detach(), copy) and logits.grad is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_iter": 0}, r"max_iter must be a positive integer, got max_iter=0"),
        ({"ignore_index": 1.5}, r"ignore_index must be an int or None, got ignore_index=1\.5"),
    ],
)
def test_bad_arguments(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_temperature(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), **kwargs)


def test_all_ignored_raises() -> None:
    with pytest.raises(ValueError, match="at least one non-ignored target"):
        fit_temperature(torch.randn(4, 3), torch.full((4,), -1), ignore_index=-1)
