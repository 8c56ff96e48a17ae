"""The full panel of calibration metrics from logits, in one call or streamed by the meter.

:func:`evaluate_calibration` and :class:`~labelsmooth.metrics.CalibrationMeter` share these
helpers: ``_panel_arg_validation`` (the options), ``_panel_update`` (the summable float64
statistics of one batch, from the ``_update`` helpers of every family) and ``_panel_compute``
(the metric values, from the ``_compute`` helpers). The meter adds no math of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from labelsmooth.metrics._checks import _F64, _check_ignore_index, _check_n_bins, _prepare_logits
from labelsmooth.metrics.calibration import (
    _calibration_error_compute,
    _classwise_update,
    _top_label_update,
)
from labelsmooth.metrics.classification import _top_k_accuracy_update, _topk_arg_validation
from labelsmooth.metrics.scoring import _brier_score_update, _negative_log_likelihood_update

__all__ = ["evaluate_calibration"]


# --------------------------------------------------------------------------------------------
# argument validation
# --------------------------------------------------------------------------------------------


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and 0 < float(temperature) < float("inf")
    ):
        raise ValueError(
            f"temperature must be a positive finite number, got temperature={temperature!r}"
        )


def _panel_arg_validation(
    n_bins: int, ignore_index: int | None, temperature: float, topk: Sequence[int]
) -> tuple[int, ...]:
    """Check the panel's options; returns ``topk`` as a tuple (k > C not yet removed)."""
    _check_n_bins(n_bins)
    _check_ignore_index(ignore_index)
    _check_temperature(temperature)
    return _topk_arg_validation(topk)


# --------------------------------------------------------------------------------------------
# _update and _compute
# --------------------------------------------------------------------------------------------


def _panel_update(
    logits: Tensor,
    target: Tensor,
    n_bins: int,
    topk: Sequence[int],
    temperature: float = 1.0,
    classwise: bool = False,
) -> dict[str, Tensor]:
    """Sufficient statistics of one batch for all the panel metrics, float64.

    Args:
        logits: (N, C) logits, already flattened and validated.
        target: (N,) class indices, ignored rows already removed and range-checked.
        topk: the k of the top-k accuracies (each ≤ C).

    Returns:
        ``bins`` (3, M) top-label (count, Σ conf, Σ correct); ``nll``, ``brier``, ``count``
        0-dim sums; ``topk`` (K,) hit counts; with ``classwise`` also ``classwise`` (3, C, M).
    """
    with torch.no_grad():
        z = logits.detach().to(_F64) / float(temperature)  # (N, C)
        logp = torch.log_softmax(z, dim=1)
        p = logp.exp()
        state = {
            "bins": _top_label_update(p, target, n_bins),
            "nll": _negative_log_likelihood_update(logp, target).sum(),
            "brier": _brier_score_update(p, target).sum(),
            "topk": _top_k_accuracy_update(p, target, topk),
            "count": torch.tensor(float(target.numel()), dtype=_F64, device=p.device),
        }
        if classwise:
            state["classwise"] = _classwise_update(p, target, n_bins)
    return state


def _panel_compute(state: dict[str, Tensor], topk: Sequence[int]) -> dict[str, float]:
    """The metric values from summed panel statistics; NaN everywhere when count is 0."""
    count = float(state["count"])
    nan = float("nan")
    out = {
        "ece": float(_calibration_error_compute(state["bins"], "l1")),
        "rmsce": float(_calibration_error_compute(state["bins"], "l2")),
        "mce": float(_calibration_error_compute(state["bins"], "max")),
        "nll": float(state["nll"]) / count if count else nan,
        "brier": float(state["brier"]) / count if count else nan,
    }
    for k, hits in zip(topk, state["topk"].tolist()):
        out[f"top{k}"] = hits / count if count else nan
    if "classwise" in state:
        out["cwece"] = float(_calibration_error_compute(state["classwise"], "l1").mean())
    out["count"] = count
    return out


# --------------------------------------------------------------------------------------------
# public function
# --------------------------------------------------------------------------------------------


def evaluate_calibration(
    logits: Tensor,
    target: Tensor,
    *,
    temperature: float = 1.0,
    n_bins: int = 15,
    ignore_index: int | None = None,
    topk: Sequence[int] = (1, 5),
    classwise: bool = False,
) -> dict[str, float]:
    """All calibration metrics of ``softmax(logits / temperature)`` in one call.

    Same keys and values as :meth:`CalibrationMeter.compute` after one ``update``: "ece",
    "rmsce", "mce" (uniform bins, see :func:`expected_calibration_error`), "nll" (from the
    float64 log-softmax), "brier", "top{k}" for each k in ``topk`` with k ≤ C, "cwece" when
    ``classwise`` is set, and "count" (number of non-ignored samples). A ``-inf`` logit masks
    its class (probability 0); NaN and ``+inf`` logits raise, except in ignored entries.

    Args:
        logits: (N, C) or (N, C, d1, …) logits, any floating dtype.
        target: (N,) or (N, d1, …) integer class indices.
        temperature: T > 0; the metrics are those of ``softmax(logits / T)``.
        n_bins: number of equal-width bins M ≥ 1.
        ignore_index: entries whose target equals it are left out.
        topk: which top-k accuracies to report (k > C are skipped).
        classwise: also report the class-wise ECE ("cwece").

    Returns:
        dict of Python floats; every metric is NaN when no sample is left.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
        >>> m = evaluate_calibration(logits, torch.tensor([0, 1, 1]), n_bins=10)
        >>> round(m["top1"], 4), m["count"], sorted(m)
        (0.6667, 3.0, ['brier', 'count', 'ece', 'mce', 'nll', 'rmsce', 'top1'])
    """
    ks = _panel_arg_validation(n_bins, ignore_index, temperature, topk)
    logits, target = _prepare_logits(logits, target, ignore_index)
    ks = tuple(k for k in ks if k <= logits.shape[1])
    state = _panel_update(logits, target, n_bins, ks, temperature, classwise)
    return _panel_compute(state, ks)
