"""Cluster tightness of penultimate-layer representations (Müller et al. 2019, section 3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from labelsmooth.metrics.projection import penultimate_projection

__all__ = ["cluster_tightness"]


def cluster_tightness(
    features: Tensor,
    labels: Tensor,
    *,
    weight: Tensor | None = None,
    classes: Sequence[int] | None = None,
) -> float:
    """Mean within-class spread divided by the mean distance between class means.

    With :math:`\\mu_c` the mean of the activations of class :math:`c` and :math:`K` the
    classes present,

    .. math::
        \\text{tightness} = \\frac{\\frac1K \\sum_c \\sqrt{\\frac{1}{n_c}\\sum_{i: y_i = c}
        \\lVert x_i - \\mu_c \\rVert^2}}
        {\\binom{K}{2}^{-1} \\sum_{a < b} \\lVert \\mu_a - \\mu_b \\rVert},

    the mean root-mean-square radius of the classes over the mean pairwise distance of their
    centres. It does not change when the features are scaled, rotated or shifted; smaller
    is tighter (0: every class a point). Label smoothing is expected to lower it (Müller et
    al.: each example is pulled towards its class template).

    With ``weight`` and ``classes`` the figure is computed in the two-dimensional projection
    of :func:`~labelsmooth.metrics.penultimate_projection` (the plane of the three classes'
    templates, only examples of those classes), the space of the paper's figure.

    Args:
        features: (N, D) penultimate-layer activations.
        labels: (N,) integer classes.
        weight: (C, D) final-layer weight, for the projection (with ``classes``).
        classes: three distinct class indices, for the projection (with ``weight``).

    Returns:
        The ratio as a Python float (computed in float64).

    Raises:
        ValueError: bad shapes, fewer than two classes present, all class means equal, or
            only one of ``weight`` and ``classes`` given.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0, 1.0], [0.0, -1.0], [4.0, 1.0], [4.0, -1.0]])
        >>> cluster_tightness(x, torch.tensor([0, 0, 1, 1]))  # radius 1, centres 4 apart
        0.25
    """
    if (weight is None) != (classes is None):
        raise ValueError(
            "weight and classes go together (the projection needs both), got "
            f"weight={'None' if weight is None else 'a tensor'}, classes={classes!r}"
        )
    if features.dim() != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {tuple(features.shape)}")
    if labels.shape != features.shape[:1]:
        raise ValueError(
            f"labels must have shape ({features.shape[0]},) to match features, got "
            f"labels of shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if weight is not None and classes is not None:
        x, y = penultimate_projection(features, labels, weight, classes)  # (M, 2), (M,)
    else:
        x, y = features.detach().to(torch.float64), labels
    present = torch.unique(y)  # (K,)
    if present.numel() < 2:
        raise ValueError(
            f"cluster_tightness needs examples of at least 2 classes, got {present.numel()}"
        )
    means = torch.stack([x[y == c].mean(0) for c in present])  # (K, D)
    radii = torch.stack(
        [(x[y == c] - m).pow(2).sum(1).mean().sqrt() for c, m in zip(present, means)]
    )
    k = present.numel()
    i, j = torch.triu_indices(k, k, offset=1)
    between = (means[i] - means[j]).norm(dim=1).mean()
    if float(between) == 0.0:
        raise ValueError("cluster_tightness is undefined: every class has the same mean")
    return float(radii.mean() / between)
