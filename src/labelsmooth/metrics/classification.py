"""Classification accuracy: top-k accuracy (argument checks, ``_update``, ``_compute``, public)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from labelsmooth.metrics._checks import (
    _F64,
    _check_ignore_index,
    _check_probs_target,
    _prepare_probs,
)

__all__ = ["top_k_accuracy"]


# --------------------------------------------------------------------------------------------
# argument validation
# --------------------------------------------------------------------------------------------


def _top_k_accuracy_arg_validation(k: int, num_classes: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got k={k!r}")
    if k > num_classes:
        raise ValueError(f"k must be at most the number of classes C={num_classes}, got k={k}")


def _topk_arg_validation(topk: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(topk)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"topk must be a sequence of positive integers, got topk={topk!r}")
    return ks


# --------------------------------------------------------------------------------------------
# _update and _compute helpers
# --------------------------------------------------------------------------------------------


def _top_k_accuracy_update(scores: Tensor, target: Tensor, ks: Sequence[int]) -> Tensor:
    """Number of rows with the target in the top k, for each k in ``ks``: (len(ks),) float64."""
    out = torch.zeros(len(ks), dtype=_F64, device=scores.device)
    if target.numel() == 0 or len(ks) == 0:
        return out
    kmax = max(ks)
    top = scores.topk(kmax, dim=1).indices  # (N, kmax), sorted by decreasing score
    match = top == target.unsqueeze(1)  # (N, kmax), at most one True per row
    for j, k in enumerate(ks):
        out[j] = match[:, :k].sum()
    return out


def _top_k_accuracy_compute(hits: Tensor, count: int) -> Tensor:
    """Accuracy from a hit count: hits / count, NaN when no sample is left (0-dim float64)."""
    return hits / count if count else torch.tensor(float("nan"), dtype=_F64, device=hits.device)


# --------------------------------------------------------------------------------------------
# public function
# --------------------------------------------------------------------------------------------


def top_k_accuracy(
    probs: Tensor, target: Tensor, k: int = 1, ignore_index: int | None = None
) -> Tensor:
    """Fraction of samples whose target is among the k largest probabilities.

    .. math::
        \\text{acc@}k = \\frac{1}{N}\\sum_i 1\\big[y_i \\in \\operatorname{top}_k(p_i)\\big]

    Ties at the k-th place are broken by ``torch.topk``. For logits, pass their softmax (the
    same ranking).

    Args:
        probs: (N, C) probabilities, any floating dtype.
        target: (N,) integer class indices.
        k: 1 ≤ k ≤ C.
        ignore_index: rows whose target equals it are left out.

    Returns:
        0-dim float64 tensor in [0, 1]; NaN when no sample is left.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]])
        >>> top_k_accuracy(probs, torch.tensor([1, 1]), k=2)
        tensor(1., dtype=torch.float64)
    """
    _check_ignore_index(ignore_index)
    _check_probs_target(probs, target)
    _top_k_accuracy_arg_validation(k, probs.shape[1])
    probs, target = _prepare_probs(probs, target, ignore_index)
    hits = _top_k_accuracy_update(probs, target, (k,))
    return _top_k_accuracy_compute(hits[0], target.numel())
