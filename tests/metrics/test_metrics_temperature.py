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


# ------------------------------------------------------------------------------------------
# masked (-inf) classes, non-finite logits, inference-mode tensors
# ------------------------------------------------------------------------------------------


def _grid_argmin(nll_of_t, lo: float = 0.05, hi: float = 20.0) -> float:
    """argmin over T of a vectorized NLL(T): a 2001-point log grid, then a finer one around it."""
    for _ in range(2):
        ts = torch.exp(torch.linspace(math.log(lo), math.log(hi), 2001, dtype=torch.float64))
        best = int(nll_of_t(ts).argmin())
        lo, hi = float(ts[max(best - 2, 0)]), float(ts[min(best + 2, 2000)])
    return float(ts[best])


def _grid_nll(z: torch.Tensor, y: torch.Tensor):
    """NLL(T) for a (G,) vector of temperatures, written from the definition on (N, C') logits."""

    def nll(ts: torch.Tensor) -> torch.Tensor:
        scaled = z.unsqueeze(0) / ts[:, None, None]  # (G, N, C')
        lse = scaled.logsumexp(2)  # (G, N)
        return (lse - scaled[:, torch.arange(len(y)), y]).mean(1)  # (G,)

    return nll


def test_one_class_masked_with_minus_inf_is_the_optimum_over_the_finite_classes() -> None:
    g = torch.Generator().manual_seed(7)
    true = 2 * torch.randn(500, 5, generator=g, dtype=torch.float64)
    target = torch.multinomial(true[:, :4].softmax(1), 1, generator=g).squeeze(1)  # never 4
    logits = 3 * true
    logits[:, 4] = float("-inf")
    want = _grid_argmin(_grid_nll(logits[:, :4], target))  # the finite classes only
    assert 0.1 < want < 19  # an interior optimum, not a clamp
    for dtype in (torch.float64, torch.float32):
        assert fit_temperature(logits.to(dtype), target) == pytest.approx(want, rel=1e-4)


def test_per_row_masks_match_grid_search() -> None:
    g = torch.Generator().manual_seed(8)
    true = 2 * torch.randn(400, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(400, 6, generator=g) < 0.3
    mask[:, 0] = False  # at least one finite class per row
    probs = true.masked_fill(mask, float("-inf")).softmax(1)
    target = torch.multinomial(probs, 1, generator=g).squeeze(1)  # never a masked class
    logits = 3 * true
    masked = logits.masked_fill(mask, float("-inf"))
    # NLL of row i over its finite classes: log Σ_{c unmasked} e^{z_c/T} − z_y/T
    z = logits.unsqueeze(0)

    def nll(ts: torch.Tensor) -> torch.Tensor:
        scaled = (z / ts[:, None, None]).masked_fill(mask, float("-inf"))  # (G, N, C)
        return (scaled.logsumexp(2) - scaled[:, torch.arange(400), target]).mean(1)

    want = _grid_argmin(nll)
    assert 0.1 < want < 19
    assert fit_temperature(masked, target) == pytest.approx(want, rel=1e-4)


def test_a_common_offset_does_not_change_t() -> None:
    true, target = _well_specified(300, 4, seed=9)
    t = fit_temperature(2 * true, target)
    assert fit_temperature(2 * true + 1e6, target) == pytest.approx(t, rel=1e-6)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (float("nan"), r"logits must not hold NaN or \+inf .*got logits\[3, 1\]=nan"),
        (float("inf"), r"logits must not hold NaN or \+inf .*got logits\[3, 1\]=inf"),
    ],
)
def test_nan_or_plus_inf_logits_raise(value: float, match: str) -> None:
    logits = torch.randn(8, 3)
    target = torch.randint(0, 3, (8,))
    logits[3, 1] = value
    with pytest.raises(ValueError, match=match):
        fit_temperature(logits, target)
    # in an ignored entry it is left out, as F.cross_entropy leaves it out
    target[3] = -100
    keep = target != -100
    got = fit_temperature(logits, target, ignore_index=-100)
    assert got == fit_temperature(logits[keep], target[keep])


def test_rows_of_minus_inf_and_masked_targets_raise() -> None:
    logits = torch.randn(6, 3)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    logits[2] = float("-inf")
    with pytest.raises(ValueError, match=r"at least one finite class .*logits\[2, :\]"):
        fit_temperature(logits, target)
    logits[2] = 0.0
    logits[4, 1] = float("-inf")  # the target class of entry 4
    with pytest.raises(ValueError, match=r"finite at the target class .*entry 4"):
        fit_temperature(logits, target)


def test_constant_over_finite_classes_gives_one() -> None:
    logits = torch.zeros(10, 4)
    logits[:, 3] = float("-inf")
    assert fit_temperature(logits, torch.randint(0, 3, (10,))) == 1.0


@pytest.mark.parametrize("which", ["logits", "target", "both"])
def test_tensors_created_under_inference_mode(which: str) -> None:
    true, target = _well_specified(300, 4, seed=5)
    logits = 2 * true
    logits[:, 3] = float("-inf")
    target = target % 3
    want = fit_temperature(logits, target)
    with torch.inference_mode():
        inf_logits, inf_target = logits.clone(), target.clone()
    x = inf_logits if which != "target" else logits
    y = inf_target if which != "logits" else target
    assert fit_temperature(x, y) == want  # called outside inference mode
    with torch.inference_mode():
        assert fit_temperature(x, y) == want  # and inside it
