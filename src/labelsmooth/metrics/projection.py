"""Penultimate-layer projection of Müller et al. 2019 ("When does label smoothing help?")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["penultimate_projection"]


def _check_classes(classes: Sequence[int], num_classes: int) -> tuple[int, int, int]:
    try:
        cls = tuple(int(c) for c in classes)
        ok = all(not isinstance(c, bool) and int(c) == c for c in classes)
    except (TypeError, ValueError):
        ok, cls = False, ()
    if not ok or len(cls) != 3 or len(set(cls)) != 3 or not all(0 <= c < num_classes for c in cls):
        raise ValueError(
            f"classes must be 3 distinct class indices in [0, {num_classes}), got "
            f"classes={classes!r}"
        )
    return cls[0], cls[1], cls[2]


def penultimate_projection(
    features: Tensor, labels: Tensor, weight: Tensor, classes: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Project penultimate activations of three classes onto the plane of their templates.

    With final-layer weight rows (templates) :math:`w_a, w_b, w_c` of the three ``classes``, the
    plane through the three points has the orthonormal basis :math:`Q = [q_1, q_2]` obtained by
    Gram–Schmidt (a QR factorization with positive diagonal) of :math:`[w_b - w_a, w_c - w_a]`,
    so :math:`q_1` points from :math:`w_a` to :math:`w_b`. Each activation x of an example of
    one of the three classes is mapped to

    .. math::
        (x - w_a)^\\top Q \\in \\mathbb{R}^2,

    which puts the templates at (0, 0), (‖w_b − w_a‖, 0) and (w_c − w_a)ᵀQ. Biases are ignored,
    as in the paper.

    Args:
        features: (N, D) penultimate-layer activations.
        labels: (N,) integer class of each example.
        weight: (C, D) weight of the final linear layer (``nn.Linear(D, C).weight``).
        classes: three distinct class indices (a, b, c) in [0, C).

    Returns:
        ``coords`` (M, 2) float64 coordinates of the M examples whose label is one of
        ``classes`` (in their original order) and ``labels`` (M,) their labels.

    Raises:
        ValueError: bad shapes, bad ``classes``, or templates on one line (no plane).

    Example:
        >>> import torch
        >>> weight = torch.eye(3, 4)  # templates e0, e1, e2 in R^4
        >>> features = torch.eye(3, 4)  # one example of each class, at its template
        >>> coords, lab = penultimate_projection(features, torch.arange(3), weight, [0, 1, 2])
        >>> coords.round(decimals=4) + 0.0  # + 0.0 turns -0.0 into 0.0
        tensor([[0.0000, 0.0000],
                [1.4142, 0.0000],
                [0.7071, 1.2247]], dtype=torch.float64)
    """
    if features.dim() != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {tuple(features.shape)}")
    if weight.dim() != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"weight must be 2-D (C, D) with D={features.shape[1]} matching features, got "
            f"weight of shape {tuple(weight.shape)}"
        )
    if labels.shape != features.shape[:1]:
        raise ValueError(
            f"labels must have shape ({features.shape[0]},) to match features, got "
            f"labels of shape {tuple(labels.shape)}"
        )
    a, b, c = _check_classes(classes, weight.shape[0])
    w = weight.detach().to(torch.float64)  # (C, D)
    span = torch.stack([w[b] - w[a], w[c] - w[a]], dim=1)  # (D, 2)
    q, r = torch.linalg.qr(span)  # (D, 2), (2, 2)
    scale = float(span.norm()) or 1.0
    if span.shape[0] < 2 or abs(float(r[1, 1])) <= 1e-10 * scale or float(r[0, 0]) == 0.0:
        raise ValueError(
            f"the weight vectors of classes {(a, b, c)} lie on one line (or D < 2), so they do "
            "not span a plane"
        )
    q = q * torch.sign(torch.diagonal(r))  # Gram–Schmidt signs: positive diagonal of R
    keep = (labels == a) | (labels == b) | (labels == c)  # (N,)
    x = features.detach()[keep].to(torch.float64)  # (M, D)
    return (x - w[a]) @ q, labels[keep]
