"""The shared fixtures of ``tests/conftest.py`` do what they say."""

from __future__ import annotations

import pytest
import torch

import labelsmooth
from labelsmooth._validate import CONVENTIONS as LIBRARY_CONVENTIONS


def test_conventions_are_the_librarys(conventions) -> None:
    assert tuple(conventions) == tuple(LIBRARY_CONVENTIONS)


def test_convention_fixture_runs_each_convention(convention: str, conventions) -> None:
    assert convention in conventions
    q = labelsmooth.smooth_labels(torch.tensor([0]), 3, 0.3, convention=convention)
    assert q.shape == (1, 3)


def test_row_kernel_switches_the_native_kernel(row_kernel: str) -> None:
    assert labelsmooth.runtime.config.native_kernel is (row_kernel == "native")


def test_near_truth_accepts_errors_within_the_rule(near_truth) -> None:
    truth = torch.tensor([1.0, 2.0, float("inf"), float("nan")], dtype=torch.float64)
    same_dtype = truth + torch.tensor([2**-10, -(2**-10), 0.0, 0.0], dtype=torch.float64)
    near_truth(truth + 2**-9, truth, same_dtype)  # exactly 2x torch's error
    near_truth(truth + 2**-20, truth, truth, atol=2**-20)  # torch exact: the atol is the bar
    near_truth(truth + 2**-20, truth, truth, floor=2**-21)
    near_truth(1.0 + 1e-9, 1.0, 1.0, atol=1e-8)  # plain floats
    near_truth(truth + 2**-20 * truth.abs(), truth, truth, rtol=2**-20)  # relative slack
    big = torch.tensor([1.0, 1024.0], dtype=torch.float64)
    near_truth(big + 2**-10, big, big, rtol=2**-20, elementwise=False)  # 2^-20 of max |truth|


def test_near_truth_rejects_and_names_the_worst_entry(near_truth) -> None:
    truth = torch.zeros(5, dtype=torch.float64)
    got = torch.tensor([0.0, 1e-3, 0.0, 5e-3, 0.0])
    with pytest.raises(AssertionError, match=r"2 entries; worst at flat index 3: error 5\.0"):
        near_truth(got, truth, truth + 1e-4)
    with pytest.raises(AssertionError, match="1 entries"):
        near_truth(got, truth, truth + 1e-4, elementwise=False)
    with pytest.raises(AssertionError):
        near_truth(float("nan"), 1.0, 1.0)
    big = torch.tensor([1.0, 1024.0], dtype=torch.float64)
    with pytest.raises(AssertionError, match="rtol 1e-06"):
        near_truth(big + 2**-10, big, big, rtol=1e-6)  # 1e-6 of 1 < 2^-10
