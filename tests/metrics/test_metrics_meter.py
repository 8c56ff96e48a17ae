"""CalibrationMeter: streaming equals one-shot, shapes, reset, ignore_index, errors."""

from __future__ import annotations

import math

import pytest
import torch

from labelsmooth.metrics import (
    CalibrationMeter,
    brier_score,
    classwise_calibration_error,
    evaluate_calibration,
    expected_calibration_error,
    negative_log_likelihood_from_logits,
    top_k_accuracy,
)


def _data(n: int, c: int, seed: int, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (2.5 * torch.randn(n, c, generator=g)).to(dtype)
    target = torch.randint(0, c, (n,), generator=g)
    target = torch.where(torch.rand(n, generator=g) < 0.6, logits.argmax(1), target)
    return logits, target


def _assert_same(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12, nan_ok=True), key


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_meter_over_random_batch_splits_equals_one_shot(seed: int) -> None:
    logits, target = _data(397, 11, seed)
    target[::17] = -100
    g = torch.Generator().manual_seed(100 + seed)
    cuts = sorted(torch.randint(0, 397, (5,), generator=g).tolist())  # empty batches allowed
    meter = CalibrationMeter(11, n_bins=12, ignore_index=-100, classwise=True)
    for chunk_x, chunk_y in zip(torch.tensor_split(logits, cuts), torch.tensor_split(target, cuts)):
        meter.update(chunk_x, chunk_y)
    whole = evaluate_calibration(logits, target, n_bins=12, ignore_index=-100, classwise=True)
    _assert_same(meter.compute(), whole)


def test_one_shot_panel_equals_the_functions() -> None:
    logits, target = _data(300, 7, seed=3)
    probs = logits.double().softmax(1)
    m = evaluate_calibration(logits, target, n_bins=10, classwise=True)
    assert set(m) == {"ece", "rmsce", "mce", "nll", "brier", "top1", "top5", "cwece", "count"}
    assert m["ece"] == pytest.approx(expected_calibration_error(probs, target, 10).item())
    assert m["rmsce"] == pytest.approx(expected_calibration_error(probs, target, 10, "l2").item())
    assert m["mce"] == pytest.approx(expected_calibration_error(probs, target, 10, "max").item())
    assert m["cwece"] == pytest.approx(classwise_calibration_error(probs, target, 10).item())
    assert m["nll"] == pytest.approx(negative_log_likelihood_from_logits(logits, target).item())
    assert m["brier"] == pytest.approx(brier_score(probs, target).item())
    assert m["top1"] == pytest.approx(top_k_accuracy(probs, target, 1).item())
    assert m["top5"] == pytest.approx(top_k_accuracy(probs, target, 5).item())
    assert m["count"] == 300.0


def test_temperature_divides_logits() -> None:
    logits, target = _data(200, 5, seed=4)
    a = evaluate_calibration(logits, target, temperature=2.0)
    b = evaluate_calibration(logits.double() / 2.0, target)
    _assert_same(a, b)
    meter = CalibrationMeter(5, temperature=2.0)
    meter.update(logits, target)
    _assert_same(meter.compute(), a)


def test_spatial_logits_are_flattened_like_cross_entropy() -> None:
    logits, target = _data(4 * 6 * 5, 3, seed=5)
    x = logits.reshape(4, 6, 5, 3).permute(0, 3, 1, 2)  # (N=4, C=3, 6, 5)
    y = target.reshape(4, 6, 5)
    meter = CalibrationMeter(3, topk=(1, 2, 5))
    meter.update(x, y)
    flat = evaluate_calibration(logits, target, topk=(1, 2, 5))
    _assert_same(meter.compute(), flat)
    assert "top5" not in flat and "top2" in flat  # k > C is dropped


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_logits_accepted(dtype: torch.dtype) -> None:
    logits, target = _data(100, 4, seed=6, dtype=dtype)
    meter = CalibrationMeter(4)
    meter.update(logits, target)
    _assert_same(meter.compute(), evaluate_calibration(logits.double(), target))


def test_reset_and_empty_meter() -> None:
    meter = CalibrationMeter(5, ignore_index=-1)
    empty = meter.compute()
    assert empty["count"] == 0.0 and all(math.isnan(v) for k, v in empty.items() if k != "count")
    logits, target = _data(50, 5, seed=7)
    meter.update(logits, target)
    assert meter.compute()["count"] == 50.0
    meter.reset()
    assert meter.compute()["count"] == 0.0
    meter.update(logits, torch.full_like(target, -1))  # everything ignored
    assert meter.compute()["count"] == 0.0
    meter.update(logits, target)
    _assert_same(meter.compute(), evaluate_calibration(logits, target))


def test_state_size_does_not_grow_with_data() -> None:
    meter = CalibrationMeter(10, n_bins=15)
    sizes = set()
    for seed in range(3):
        meter.update(*_data(200, 10, seed))
        sizes.add(sum(v.numel() for v in meter.state.values()))
    assert sizes == {3 * 15 + 3 + 2}  # bins + nll, brier, count + top1, top5


def test_all_reduce_without_distributed_is_a_noop() -> None:
    meter = CalibrationMeter(4)
    meter.update(*_data(30, 4, seed=8))
    before = meter.compute()
    meter.all_reduce()
    _assert_same(meter.compute(), before)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: CalibrationMeter(0), r"num_classes must be a positive integer, got .*=0"),
        (lambda: CalibrationMeter(3, n_bins=-2), r"n_bins must be a positive .*=-2"),
        (lambda: CalibrationMeter(3, topk=(1, -5)), r"topk must be .*\(1, -5\)"),
        (lambda: CalibrationMeter(3, temperature=-1.0), r"temperature .*-1\.0"),
        (
            lambda: CalibrationMeter(3).update(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)),
            r"num_classes=3 channels in dimension 1, got 4",
        ),
        (
            lambda: CalibrationMeter(3).update(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long)),
            r"target must have shape \(2,\) to match logits of shape \(2, 3\)",
        ),
        (
            lambda: CalibrationMeter(3).update(torch.zeros(2, 3), torch.full((2,), 3)),
            r"target values must be class indices in \[0, 3\)",
        ),
        (
            lambda: CalibrationMeter(3).update(torch.zeros(3), torch.zeros(3, dtype=torch.long)),
            r"logits must have shape \(N, C\)",
        ),
    ],
)
def test_meter_bad_input(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
