"""penultimate_projection: orthonormal basis of the template plane, Gram–Schmidt orientation."""

from __future__ import annotations

import pytest
import torch

from labelsmooth.metrics import penultimate_projection


def test_templates_and_distances_are_preserved() -> None:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 9, generator=g, dtype=torch.float64)
    a, b, c = 5, 1, 3
    coords, lab = penultimate_projection(
        weight[[a, b, c]], torch.tensor([a, b, c]), weight, [a, b, c]
    )
    assert lab.tolist() == [a, b, c]
    # w_a at the origin, w_b on the positive first axis, w_c in the upper half plane
    assert coords[0].abs().max() < 1e-12
    assert coords[1, 0] > 0 and abs(coords[1, 1]) < 1e-12 and coords[2, 1] > 0
    # in-plane points keep their pairwise distances
    pts = weight[[a, b, c]]
    assert torch.allclose(torch.cdist(coords, coords), torch.cdist(pts, pts), atol=1e-12)


def test_off_plane_component_is_dropped_and_other_classes_filtered() -> None:
    weight = torch.eye(4, 5)  # templates e0..e3
    normal = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])  # e3 is orthogonal to the plane of e0,e1,e2
    features = torch.stack([weight[1] + 2 * normal, weight[3], weight[2] - 3 * torch.eye(5)[4]])
    labels = torch.tensor([1, 3, 2])
    coords, lab = penultimate_projection(features, labels, weight, (0, 1, 2))
    assert lab.tolist() == [1, 2]
    assert torch.allclose(coords[0], torch.tensor([2**0.5, 0.0], dtype=torch.float64), atol=1e-12)
    # e2 - 3 e4: e4 is orthogonal to the plane too, so it projects onto the e2 template
    assert torch.allclose(coords[1], torch.tensor([0.5**0.5, 1.5**0.5], dtype=torch.float64))


def test_collinear_templates_raise() -> None:
    weight = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    with pytest.raises(ValueError, match=r"classes \(0, 1, 2\) lie on one line"):
        penultimate_projection(torch.zeros(3, 2), torch.arange(3), weight, [0, 1, 2])
