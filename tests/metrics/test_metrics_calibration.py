"""Calibration metrics: hand-worked answers, an independent numpy reference, edges, errors."""

from __future__ import annotations

import doctest
import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import labelsmooth.metrics as lm
from labelsmooth.metrics import (
    brier_score,
    classwise_calibration_error,
    expected_calibration_error,
    negative_log_likelihood,
    negative_log_likelihood_from_logits,
    top_k_accuracy,
)

NORMS = ("l1", "l2", "max")


# ------------------------------------------------------------------------------------------
# plain numpy references, written from the definitions (not from the library code)
# ------------------------------------------------------------------------------------------


def _np_ce_from_groups(groups: list[np.ndarray], conf: np.ndarray, hit: np.ndarray, norm: str):
    n = len(conf)
    gaps, weights = [], []
    for members in groups:
        if members.sum() == 0:
            continue
        gaps.append(abs(hit[members].mean() - conf[members].mean()))
        weights.append(members.sum() / n)
    gaps_a, w = np.array(gaps), np.array(weights)
    if norm == "l1":
        return float((w * gaps_a).sum())
    if norm == "l2":
        return float(np.sqrt((w * gaps_a**2).sum()))
    return float(gaps_a.max())


def np_ece(probs: np.ndarray, target: np.ndarray, n_bins: int, norm: str, binning: str) -> float:
    conf = probs.max(axis=1)
    hit = (probs.argmax(axis=1) == target).astype(np.float64)
    if binning == "uniform":
        # Guo et al.: bin m = ((m-1)/M, m/M], the value 0 joins the first bin
        groups = []
        for m in range(1, n_bins + 1):
            lo, hi = (m - 1) / n_bins, m / n_bins
            members = (conf > lo) & (conf <= hi)
            if m == 1:
                members |= conf == 0
            groups.append(members)
    else:
        # equal mass: sort, cut after every ceil(m N / M)-th sample (distinct confidences)
        order = np.argsort(conf, kind="stable")
        n = len(conf)
        cuts = [0] + [-(-m * n // n_bins) for m in range(1, n_bins + 1)]
        groups = []
        for m in range(n_bins):
            members = np.zeros(n, dtype=bool)
            members[order[cuts[m] : cuts[m + 1]]] = True
            groups.append(members)
    return _np_ce_from_groups(groups, conf, hit, norm)


def np_classwise(probs: np.ndarray, target: np.ndarray, n_bins: int, norm: str) -> float:
    out = []
    for c in range(probs.shape[1]):
        p = probs[:, c]
        hit = (target == c).astype(np.float64)
        groups = []
        for m in range(1, n_bins + 1):
            members = (p > (m - 1) / n_bins) & (p <= m / n_bins)
            if m == 1:
                members |= p == 0
            groups.append(members)
        out.append(_np_ce_from_groups(groups, p, hit, norm))
    return float(np.mean(out))


def random_probs(n: int, c: int, seed: int, sharpness: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = sharpness * torch.randn(n, c, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (n,), generator=g)
    # make the classifier better than chance so that accuracy varies across bins
    flip = torch.rand(n, generator=g) < 0.5
    target = torch.where(flip, logits.argmax(1), target)
    return logits.softmax(1), target, logits


# ------------------------------------------------------------------------------------------
# hand-worked examples
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binning", ["uniform", "quantile"])
@pytest.mark.parametrize("norm", NORMS)
def test_perfectly_calibrated_set_gives_zero(norm: str, binning: str) -> None:
    # 10 samples at confidence 0.8 with 8 correct, 4 at 0.5 with 2 correct
    probs = torch.tensor([[0.8, 0.2]] * 10 + [[0.5, 0.5]] * 4, dtype=torch.float64)
    target = torch.tensor([0] * 8 + [1] * 2 + [0] * 2 + [1] * 2)
    ece = expected_calibration_error(probs, target, n_bins=10, norm=norm, binning=binning)
    assert ece.item() == pytest.approx(0.0, abs=1e-12)


def test_one_bin_off_by_known_amount() -> None:
    # bin (0.8, 0.9]: 10 samples at 0.9 with 6 correct -> gap 0.3; bin (0.6, 0.7]: calibrated
    probs = torch.tensor([[0.9, 0.1]] * 10 + [[0.7, 0.3]] * 10)
    target = torch.tensor([0] * 6 + [1] * 4 + [0] * 7 + [1] * 3)
    assert expected_calibration_error(probs, target, n_bins=10).item() == pytest.approx(0.15)
    rms = expected_calibration_error(probs, target, n_bins=10, norm="l2").item()
    assert rms == pytest.approx((0.5 * 0.3**2) ** 0.5)
    assert expected_calibration_error(probs, target, n_bins=10, norm="max").item() == (
        pytest.approx(0.3)
    )
    # one bin for everything: acc 0.65, conf 0.8
    assert expected_calibration_error(probs, target, n_bins=1).item() == pytest.approx(0.15)


def test_returns_0dim_float64() -> None:
    probs, target, _ = random_probs(20, 3, seed=0)
    out = expected_calibration_error(probs.float(), target)
    assert out.shape == () and out.dtype == torch.float64


# ------------------------------------------------------------------------------------------
# numpy reference on random data
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binning", ["uniform", "quantile"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("n_bins", [1, 7, 15])
def test_ece_matches_numpy_reference(n_bins: int, norm: str, binning: str) -> None:
    probs, target, _ = random_probs(503, 7, seed=n_bins)
    got = expected_calibration_error(probs, target, n_bins=n_bins, norm=norm, binning=binning)
    want = np_ece(probs.numpy(), target.numpy(), n_bins, norm, binning)
    assert got.item() == pytest.approx(want, rel=1e-12, abs=1e-14)


def test_reliability_bins_match_numpy_reference() -> None:
    probs, target, _ = random_probs(211, 5, seed=3)
    bins = lm.reliability_bins(probs, target, n_bins=7)
    conf = probs.numpy().max(axis=1)
    hit = probs.numpy().argmax(axis=1) == target.numpy()
    want = np.zeros((3, 7))
    for m in range(7):  # ((m)/7, (m+1)/7], 0 in the first bin
        members = (conf > m / 7) & (conf <= (m + 1) / 7)
        want[:, m] = members.sum(), conf[members].sum(), hit[members].sum()
    assert bins.shape == (3, 7) and bins.dtype == torch.float64
    np.testing.assert_allclose(bins.numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("binning", ["uniform", "quantile"])
@pytest.mark.parametrize("norm", NORMS)
def test_calibration_error_from_bins_equals_the_direct_metric(norm: str, binning: str) -> None:
    probs, target, _ = random_probs(300, 4, seed=5)
    target[::7] = -100
    bins = lm.reliability_bins(probs, target, 9, binning=binning, ignore_index=-100)
    want = expected_calibration_error(probs, target, 9, norm, binning, ignore_index=-100)
    assert torch.equal(lm.calibration_error_from_bins(bins, norm), want)


def test_uniform_reliability_bins_of_two_halves_add_up() -> None:
    probs, target, _ = random_probs(100, 3, seed=6)
    whole = lm.reliability_bins(probs, target, 10)
    halves = lm.reliability_bins(probs[:40], target[:40], 10) + lm.reliability_bins(
        probs[40:], target[40:], 10
    )
    torch.testing.assert_close(halves, whole, rtol=1e-12, atol=0.0)


def test_reliability_bins_of_nothing_are_zero_and_give_nan() -> None:
    bins = lm.reliability_bins(torch.empty(0, 3), torch.empty(0, dtype=torch.long), 4)
    assert torch.equal(bins, torch.zeros(3, 4, dtype=torch.float64))
    assert lm.calibration_error_from_bins(bins).isnan()


@pytest.mark.parametrize("norm", NORMS)
def test_classwise_matches_numpy_reference(norm: str) -> None:
    probs, target, _ = random_probs(300, 5, seed=1)
    probs[0] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # exact 0 and 1
    got = classwise_calibration_error(probs, target, n_bins=10, norm=norm)
    want = np_classwise(probs.numpy(), target.numpy(), 10, norm)
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_nll_brier_topk_match_numpy_reference() -> None:
    probs, target, logits = random_probs(400, 6, seed=2)
    p, y = probs.numpy(), target.numpy()
    onehot = np.eye(6)[y]
    assert negative_log_likelihood(probs, target).item() == pytest.approx(
        -np.log(p[np.arange(400), y]).mean(), rel=1e-12
    )
    assert brier_score(probs, target).item() == pytest.approx(
        ((p - onehot) ** 2).sum(1).mean(), rel=1e-12
    )
    ranks = (p > p[np.arange(400), y][:, None]).sum(1)  # how many classes beat the target
    for k in range(1, 7):
        assert top_k_accuracy(probs, target, k=k).item() == pytest.approx((ranks < k).mean())


# ------------------------------------------------------------------------------------------
# bin edges, ties, empty bins
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_confidence_exactly_one_over_m_falls_in_first_bin(dtype: torch.dtype) -> None:
    # A: confidence 1/3, correct; B: confidence 0.5, wrong; M = 3 bins (0,1/3], (1/3,2/3], ...
    probs = torch.tensor([[1 / 3, 0.3, 0.2, 0.1, 1 / 15], [0.5, 0.2, 0.1, 0.1, 0.1]], dtype=dtype)
    target = torch.tensor([0, 1])
    c = float(probs[0, 0])  # 1/3 as represented in dtype
    got = expected_calibration_error(probs, target, n_bins=3).item()
    # separate bins: (|1 − c| + |0 − 0.5|) / 2; a shared bin would give |0.5 − (c + 0.5)/2|
    assert got == pytest.approx(0.5 * (1 - c) + 0.25, rel=1e-12)


def test_confidence_zero_goes_to_first_bin_and_one_to_last() -> None:
    # confidence 0 (an all-zero row, correct) shares (0, 0.1] with a wrong 0.05
    probs = torch.tensor([[0.0, 0.0], [0.05, 0.05]], dtype=torch.float64)
    got = expected_calibration_error(probs, torch.tensor([0, 1]), n_bins=10).item()
    assert got == pytest.approx(abs(0.5 - 0.025))
    # confidence 1 (correct) shares (0.9, 1] with a wrong 0.95
    probs = torch.tensor([[1.0, 0.0], [0.95, 0.05]], dtype=torch.float64)
    got = expected_calibration_error(probs, torch.tensor([0, 1]), n_bins=10).item()
    assert got == pytest.approx(abs(0.5 - 0.975))


def test_uniform_empty_bins_do_not_count_in_mce() -> None:
    probs = torch.tensor([[0.7, 0.3]] * 4)
    target = torch.tensor([0, 0, 1, 1])  # only bin (0.6, 0.7] is occupied, gap 0.2
    for norm in NORMS:
        assert expected_calibration_error(probs, target, norm=norm).item() == pytest.approx(0.2)


def test_quantile_ties_stay_in_one_bin() -> None:
    probs = torch.tensor([[0.7, 0.3]] * 10, dtype=torch.float64)
    target = torch.tensor([0] * 5 + [1] * 5)  # acc 0.5, conf 0.7
    for norm in NORMS:
        got = expected_calibration_error(probs, target, n_bins=4, norm=norm, binning="quantile")
        assert got.item() == pytest.approx(0.2)


def test_quantile_fewer_samples_than_bins() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2]], dtype=torch.float64)
    target = torch.tensor([0, 1, 1])
    got = expected_calibration_error(probs, target, n_bins=15, binning="quantile").item()
    assert got == pytest.approx((0.1 + 0.6 + 0.8) / 3)  # every sample alone in its bin
    mce = expected_calibration_error(probs, target, n_bins=15, norm="max", binning="quantile")
    assert mce.item() == pytest.approx(0.8)


def test_quantile_bins_have_equal_mass() -> None:
    # 60 distinct confidences, 5 bins of 12: the ECE is that of the 5 sorted chunks
    probs, target, _ = random_probs(60, 4, seed=3)
    conf, pred = probs.max(1)
    order = conf.argsort()
    want = 0.0
    for chunk in order.chunk(5):
        want += (
            len(chunk)
            / 60
            * abs((pred[chunk] == target[chunk]).double().mean() - conf[chunk].mean())
        )
    got = expected_calibration_error(probs, target, n_bins=5, binning="quantile")
    assert got.item() == pytest.approx(float(want), rel=1e-12)


def test_quantile_and_uniform_agree_on_one_bin() -> None:
    probs, target, _ = random_probs(50, 3, seed=4)
    a = expected_calibration_error(probs, target, n_bins=1, binning="uniform")
    b = expected_calibration_error(probs, target, n_bins=1, binning="quantile")
    assert a.item() == pytest.approx(b.item(), rel=1e-14)


# ------------------------------------------------------------------------------------------
# ignore_index, dtypes, NLL from logits
# ------------------------------------------------------------------------------------------


def test_ignore_index_equals_dropping_rows() -> None:
    probs, target, _ = random_probs(100, 5, seed=5)
    masked = target.clone()
    masked[::3] = -100
    keep = masked != -100
    for norm in NORMS:
        for binning in ("uniform", "quantile"):
            a = expected_calibration_error(
                probs, masked, norm=norm, binning=binning, ignore_index=-100
            )
            b = expected_calibration_error(probs[keep], target[keep], norm=norm, binning=binning)
            assert a.item() == b.item()
    pairs: list[tuple[Callable[..., torch.Tensor], dict[str, int]]] = [
        (classwise_calibration_error, {}),
        (negative_log_likelihood, {}),
        (brier_score, {}),
        (top_k_accuracy, {"k": 2}),
    ]
    for fn, kw in pairs:
        a = fn(probs, masked, ignore_index=-100, **kw)
        b = fn(probs[keep], target[keep], **kw)
        assert a.item() == pytest.approx(b.item(), rel=1e-14), fn.__name__


def test_everything_ignored_gives_nan() -> None:
    probs = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    target = torch.tensor([-1, -1])
    for norm in NORMS:
        assert torch.isnan(expected_calibration_error(probs, target, norm=norm, ignore_index=-1))
    assert torch.isnan(classwise_calibration_error(probs, target, ignore_index=-1))
    assert torch.isnan(negative_log_likelihood(probs, target, ignore_index=-1))
    assert torch.isnan(brier_score(probs, target, ignore_index=-1))
    assert torch.isnan(top_k_accuracy(probs, target, ignore_index=-1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_match_float64_of_same_values(dtype: torch.dtype) -> None:
    probs, target, _ = random_probs(200, 5, seed=6)
    low = probs.to(dtype)
    # drop rows whose confidence sits on an edge m/M as rounded to dtype (those go to the lower
    # bin in dtype, but would not in float64; see the 1/M test)
    edges = (torch.arange(1, 15, dtype=torch.float64) / 15).to(dtype)
    on_edge = (low.max(1).values[:, None] == edges[None, :]).any(1)
    low, target = low[~on_edge], target[~on_edge]
    up = low.double()  # the same numbers in float64
    for norm in NORMS:
        a = expected_calibration_error(low, target, norm=norm)
        b = expected_calibration_error(up, target, norm=norm)
        assert a.dtype == torch.float64
        assert a.item() == pytest.approx(b.item(), rel=1e-12, abs=1e-15)
    assert brier_score(low, target).item() == pytest.approx(brier_score(up, target).item())


def test_nll_from_logits_matches_cross_entropy_and_probs_version() -> None:
    _, target, logits = random_probs(64, 5, seed=7)
    want = F.cross_entropy(logits, target).item()
    assert negative_log_likelihood_from_logits(logits, target).item() == pytest.approx(want)
    assert negative_log_likelihood(logits.softmax(1), target).item() == pytest.approx(want)
    # (N, C, d) layout and ignore_index, as F.cross_entropy
    x = logits.reshape(8, 8, 5).permute(0, 2, 1)  # (8, C=5, 8)
    y = target.reshape(8, 8).clone()
    y[0, :3] = -100
    got = negative_log_likelihood_from_logits(x.float(), y, ignore_index=-100).item()
    assert got == pytest.approx(F.cross_entropy(x, y, ignore_index=-100).item(), rel=1e-6)


def test_nll_zero_probability_is_finite() -> None:
    out = negative_log_likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert torch.isfinite(out) and out.item() > 80


def test_brier_and_topk_hand_values() -> None:
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.5, 0.3], [0.0, 0.0, 1.0]])
    target = torch.tensor([0, 2, 1])
    # 0 + (0.04 + 0.25 + 0.49) + (1 + 1)
    assert brier_score(probs, target).item() == pytest.approx((0.78 + 2.0) / 3)
    assert top_k_accuracy(probs, target, k=1).item() == pytest.approx(1 / 3)
    assert top_k_accuracy(probs, target, k=2).item() == pytest.approx(2 / 3)
    assert top_k_accuracy(probs, target, k=3).item() == 1.0


# ------------------------------------------------------------------------------------------
# non-finite values: -inf masks a class, NaN / +inf raise, ignored rows are never looked at
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "dtype", "shown"),
    [
        (1.0000001, torch.float32, "1.0000001"),
        (1.0000001, torch.float64, "1.0000001"),
        (1 + 2**-52, torch.float64, "1.0000000000000002"),
        (1.0078125, torch.bfloat16, "1.01"),  # shortest decimal that reads back in bf16
        (-1e-9, torch.float32, "-1e-09"),
        (float("nan"), torch.float16, "nan"),
    ],
)
def test_probability_range_error_shows_the_exact_value(value, dtype, shown) -> None:
    probs = torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.0, 1.0]], dtype=dtype)
    probs[2, 1] = value
    assert probs[2, 1].item() != 1.0  # the value really is out of range in this dtype
    target = torch.tensor([0, 1, 1])
    want = rf"probs must hold probabilities in \[0, 1\], got probs\[2, 1\]={re.escape(shown)};"
    for fn in (expected_calibration_error, classwise_calibration_error, negative_log_likelihood,
               brier_score, top_k_accuracy):  # fmt: skip
        with pytest.raises(ValueError, match=want):
            fn(probs, target)
        # the same row, ignored, is left out before any check (as F.cross_entropy does)
        got = fn(probs, torch.tensor([0, 1, -100]), ignore_index=-100)
        assert got.item() == pytest.approx(fn(probs[:2], target[:2]).item(), rel=1e-12)


def _panel_without_count(m: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in m.items() if k != "count"}


def test_minus_inf_masked_class_equals_leaving_the_class_out() -> None:
    _, target, logits = random_probs(300, 6, seed=8)
    target = target % 5  # class 5 is never a target
    masked = torch.cat([logits[:, :5], torch.full((300, 1), float("-inf"), dtype=logits.dtype)], 1)
    kept = logits[:, :5]
    a = negative_log_likelihood_from_logits(masked, target)
    assert torch.isfinite(a)
    assert a.item() == pytest.approx(negative_log_likelihood_from_logits(kept, target).item())
    got = lm.evaluate_calibration(masked, target, temperature=1.5)
    want = lm.evaluate_calibration(kept, target, temperature=1.5)
    assert all(math.isfinite(v) for v in got.values()), got
    assert got == pytest.approx(want, rel=1e-12)
    meter = lm.CalibrationMeter(num_classes=6, temperature=1.5)
    meter.update(masked[:100], target[:100])
    meter.update(masked[100:], target[100:])
    assert _panel_without_count(meter.compute()) == pytest.approx(
        _panel_without_count(want), rel=1e-9
    )
    # masks that differ per row: the NLL of each row over its own finite classes
    mask = torch.rand(300, 6, generator=torch.Generator().manual_seed(9)) < 0.4
    mask[torch.arange(300), target] = False
    per_row = logits.masked_fill(mask, float("-inf"))
    lse = torch.stack([row[~m].logsumexp(0) for row, m in zip(logits, mask)])
    want_nll = (lse - logits[torch.arange(300), target]).mean()
    got_nll = negative_log_likelihood_from_logits(per_row, target)
    assert got_nll.item() == pytest.approx(want_nll.item(), rel=1e-12)
    assert lm.evaluate_calibration(per_row, target)["nll"] == pytest.approx(want_nll.item())


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_plus_inf_logits_raise_naming_the_entry(value: float) -> None:
    logits = torch.randn(2, 3, 4)  # (N, C, d): entry [1, 2, 3] is class 2 of position (1, 3)
    target = torch.randint(0, 3, (2, 4))
    logits[1, 2, 3] = value
    want = rf"logits must not hold NaN or \+inf .*got logits\[1, 2, 3\]={value!r}$"
    meter = lm.CalibrationMeter(num_classes=3)
    for call in (
        lambda y, **kw: negative_log_likelihood_from_logits(logits, y, **kw),
        lambda y, **kw: lm.evaluate_calibration(logits, y, **kw),
        lambda y, **kw: meter.update(logits, y) if not kw else None,
    ):
        with pytest.raises(ValueError, match=want):
            call(target)
    assert meter.compute()["count"] == 0.0  # the refused batch left no trace
    # the same entry with an ignored target is left out, as F.cross_entropy leaves it out
    ignored = target.clone()
    ignored[1, 3] = -100
    got = negative_log_likelihood_from_logits(logits, ignored, ignore_index=-100)
    want_nll = F.cross_entropy(logits.double(), ignored, ignore_index=-100)
    assert got.item() == pytest.approx(want_nll.item(), rel=1e-12)
    assert math.isfinite(lm.evaluate_calibration(logits, ignored, ignore_index=-100)["ece"])
    lm.CalibrationMeter(num_classes=3, ignore_index=-100).update(logits, ignored)


def test_a_row_of_only_minus_inf_raises() -> None:
    logits = torch.randn(4, 3)
    logits[2] = float("-inf")
    with pytest.raises(ValueError, match=r"at least one finite class .*logits\[2, :\]"):
        lm.evaluate_calibration(logits, torch.tensor([0, 1, 2, 0]))
    x = torch.randn(2, 3, 5)
    x[0, :, 4] = float("-inf")
    with pytest.raises(ValueError, match=r"logits\[0, :, 4\] equal to -inf"):
        negative_log_likelihood_from_logits(x, torch.zeros(2, 5, dtype=torch.long))


# ------------------------------------------------------------------------------------------
# errors: one per message
# ------------------------------------------------------------------------------------------

P = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
Y = torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: expected_calibration_error(P, Y, n_bins=0), r"n_bins must be a positive .*=0"),
        (lambda: expected_calibration_error(P, Y, n_bins=2.5), r"n_bins.*=2\.5"),  # type: ignore[arg-type]
        (lambda: expected_calibration_error(P, Y, norm="l3"), r"norm must be one of .*'l3'"),
        (lambda: expected_calibration_error(P, Y, binning="equal"), r"binning .*'equal'"),
        (lambda: expected_calibration_error(P[0], Y), r"probs must be 2-D .*\(2,\)"),
        (lambda: expected_calibration_error(P[None], Y), r"probs must be 2-D .*\(1, 2, 2\)"),
        (lambda: expected_calibration_error(P, Y[:1]), r"target must have shape \(N,\) = \(2,\)"),
        (lambda: expected_calibration_error(P.long(), Y), r"probs must be a floating .*int64"),
        (
            lambda: expected_calibration_error(P * 5, Y),
            r"probs must hold .*probs\[0, 0\]=3 \(and 3 more",
        ),
        (lambda: expected_calibration_error(P, Y.float()), r"target must hold integer .*float32"),
        (lambda: expected_calibration_error(P, Y + 1), r"target values .*\[0, 2\).*\[1, 2\]"),
        (lambda: expected_calibration_error(P, Y, ignore_index="x"), r"ignore_index.*'x'"),  # type: ignore[arg-type]
        (lambda: classwise_calibration_error(P, Y, norm="L1"), r"norm must be one of .*'L1'"),
        (lambda: top_k_accuracy(P, Y, k=0), r"k must be a positive integer, got k=0"),
        (lambda: top_k_accuracy(P, Y, k=3), r"k must be at most .*C=2, got k=3"),
        (lambda: brier_score(P, Y[:, None]), r"target must have shape .*\(2, 1\)"),
        (lambda: negative_log_likelihood(P, -Y - 1), r"target values .*\[-2, -1\]"),
        (lambda: negative_log_likelihood_from_logits(P[0], Y), r"logits must have shape .*\(2,\)"),
        (lambda: negative_log_likelihood_from_logits(P, Y[:1]), r"target must have shape \(2,\)"),
        (lambda: lm.evaluate_calibration(P, Y, temperature=0.0), r"temperature .*0\.0"),
        (lambda: lm.evaluate_calibration(P, Y, topk=(0,)), r"topk must be .*\(0,\)"),
        (lambda: lm.reliability_bins(P, Y, n_bins=0), r"n_bins must be .*n_bins=0"),
        (lambda: lm.reliability_bins(P, Y, binning="log"), r"binning must be .*'log'"),
        (lambda: lm.calibration_error_from_bins(P), r"bins must be a \(3, \.\.\., M\)"),
        (lambda: lm.calibration_error_from_bins(torch.ones(3, 2), "l3"), r"norm must be .*'l3'"),
    ],
)
def test_bad_input_raises_clear_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_docstring_examples_run() -> None:
    from labelsmooth.metrics import (
        calibration,
        classification,
        meter,
        panel,
        projection,
        scoring,
        temperature,
    )

    for mod in (calibration, classification, scoring, panel, meter, projection, temperature):
        result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, mod.__name__
        assert result.attempted > 0, mod.__name__
