"""Proper scoring rules: negative log-likelihood (from probabilities or logits) and Brier score.

Each is a mean over the non-ignored samples, computed in float64 and differentiable with respect
to its input; the per-row ``_update`` helpers are what the panel sums
(:func:`~labelsmooth.metrics.evaluate_calibration`, :class:`~labelsmooth.metrics.CalibrationMeter`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from labelsmooth.metrics._checks import _F64, _prepare_logits, _prepare_probs

__all__ = ["negative_log_likelihood", "negative_log_likelihood_from_logits", "brier_score"]


# --------------------------------------------------------------------------------------------
# _update helpers
# --------------------------------------------------------------------------------------------


def _negative_log_likelihood_update(logp: Tensor, target: Tensor) -> Tensor:
    """−log p_y per row from log-probabilities: (N, C), (N,) -> (N,)."""
    return -logp.gather(1, target.unsqueeze(1)).squeeze(1)


def _brier_score_update(p: Tensor, target: Tensor) -> Tensor:
    """Σ_c (p_c − 1[y=c])² = Σ_c p_c² − 2 p_y + 1 per row: (N, C) float64 -> (N,)."""
    p_y = p.gather(1, target.unsqueeze(1)).squeeze(1)
    return p.square().sum(1) - 2.0 * p_y + 1.0


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------


def negative_log_likelihood(
    probs: Tensor, target: Tensor, ignore_index: int | None = None
) -> Tensor:
    """Mean negative log-likelihood of the target class, from probabilities.

    .. math::
        \\text{NLL} = -\\frac{1}{N}\\sum_i \\log \\max(p_{i y_i}, \\epsilon_{\\text{tiny}})

    The target probability is clamped below at the smallest normal number of the input dtype
    (e.g. 1.2e-38 for float32), so a zero probability gives a large finite value rather than
    inf. Prefer :func:`negative_log_likelihood_from_logits` when logits are available.

    Args:
        probs: (N, C) probabilities, any floating dtype.
        target: (N,) integer class indices.
        ignore_index: rows whose target equals it are left out of the mean.

    Returns:
        0-dim float64 tensor (differentiable w.r.t. ``probs``); NaN when no sample is left.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
        >>> negative_log_likelihood(probs, torch.tensor([0, 1]))  # (log 2 + log 4/3) / 2
        tensor(0.4904, dtype=torch.float64)
    """
    probs, target = _prepare_probs(probs, target, ignore_index, detach=False)
    tiny = torch.finfo(probs.dtype).tiny
    p_y = probs.to(_F64).gather(1, target.unsqueeze(1)).squeeze(1)  # (N,)
    return -p_y.clamp(min=tiny).log().mean()


def negative_log_likelihood_from_logits(
    logits: Tensor, target: Tensor, ignore_index: int | None = None
) -> Tensor:
    """Mean negative log-likelihood from logits, via a float64 ``log_softmax`` (stable).

    .. math::
        \\text{NLL} = \\frac{1}{N}\\sum_i \\Big(\\log\\sum_c e^{z_{ic}} - z_{i y_i}\\Big)

    Equal to ``F.cross_entropy(logits.double(), target, ignore_index=...)``. A ``-inf`` logit
    masks its class (the sum runs over the finite classes; a masked target gives +inf).

    Args:
        logits: (N, C) or (N, C, d1, …) logits, any floating dtype.
        target: (N,) or (N, d1, …) integer class indices.
        ignore_index: entries whose target equals it are left out of the mean (and never
            looked at, whatever their logits hold).

    Returns:
        0-dim float64 tensor (differentiable w.r.t. ``logits``); NaN when no entry is left.

    Raises:
        ValueError: bad shapes or targets; NaN or ``+inf`` logits, or an entry whose logits are
            all ``-inf``, in an entry that is not ignored (the message names the first one).

    Example:
        >>> import torch
        >>> negative_log_likelihood_from_logits(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
        tensor(1.3863, dtype=torch.float64)
    """
    logits, target = _prepare_logits(logits, target, ignore_index)
    logp = torch.log_softmax(logits.to(_F64), dim=1)  # (N, C)
    return _negative_log_likelihood_update(logp, target).mean()


def brier_score(probs: Tensor, target: Tensor, ignore_index: int | None = None) -> Tensor:
    """Multi-class Brier score: mean over samples of the summed squared error to the one-hot.

    .. math::
        \\text{BS} = \\frac{1}{N}\\sum_i \\sum_c (p_{ic} - 1[y_i = c])^2 \\in [0, 2]

    Args:
        probs: (N, C) probabilities, any floating dtype.
        target: (N,) integer class indices.
        ignore_index: rows whose target equals it are left out.

    Returns:
        0-dim float64 tensor (differentiable w.r.t. ``probs``); NaN when no sample is left.

    Example:
        >>> import torch
        >>> brier_score(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([0, 0]))
        tensor(0.2500, dtype=torch.float64)
    """
    probs, target = _prepare_probs(probs, target, ignore_index, detach=False)
    return _brier_score_update(probs.to(_F64), target).mean()
