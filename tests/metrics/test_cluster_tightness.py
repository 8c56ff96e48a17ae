"""labelsmooth.metrics.cluster_tightness: values, invariances, projection and errors."""

from __future__ import annotations

import pytest
import torch

from labelsmooth.metrics import cluster_tightness, penultimate_projection


def _blobs(spread: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weight = 5 * torch.randn(4, 6, generator=g, dtype=torch.float64)  # (C, D) templates
    labels = torch.arange(200) % 4
    feats = weight[labels] + spread * torch.randn(200, 6, generator=g, dtype=torch.float64)
    return feats, labels, weight


def test_by_hand() -> None:
    x = torch.tensor([[0.0, 1.0], [0.0, -1.0], [4.0, 1.0], [4.0, -1.0], [0.0, 4.0]])
    y = torch.tensor([0, 0, 1, 1, 2])
    # radii 1, 1, 0; centres (0,0), (4,0), (0,4): distances 4, 4, sqrt(32)
    expected = (2 / 3) / ((8 + 32**0.5) / 3)
    assert cluster_tightness(x, y) == pytest.approx(expected)


def test_tighter_is_smaller_and_invariant() -> None:
    loose, y, w = _blobs(2.0)
    tight, _, _ = _blobs(0.5)
    assert cluster_tightness(tight, y) < cluster_tightness(loose, y)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1)).double())
    moved = 3.0 * loose @ q + 7.0
    assert cluster_tightness(moved, y) == pytest.approx(cluster_tightness(loose, y))


def test_projection_matches_manual() -> None:
    x, y, w = _blobs(1.0)
    coords, lab = penultimate_projection(x, y, w, [0, 1, 2])
    got = cluster_tightness(x, y, weight=w, classes=[0, 1, 2])
    assert got == pytest.approx(cluster_tightness(coords, lab))


def test_errors() -> None:
    x, y, w = _blobs(1.0)
    with pytest.raises(ValueError, match="weight and classes"):
        cluster_tightness(x, y, weight=w)
    with pytest.raises(ValueError, match="features"):
        cluster_tightness(x[0], y)
    with pytest.raises(ValueError, match="labels"):
        cluster_tightness(x, y[:5])
    with pytest.raises(ValueError, match="at least 2 classes"):
        cluster_tightness(x, torch.zeros_like(y))
    with pytest.raises(ValueError, match="same mean"):
        cluster_tightness(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="classes"):
        cluster_tightness(x, y, weight=w, classes=[0, 1, 9])
