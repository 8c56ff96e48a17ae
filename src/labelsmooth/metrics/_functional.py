"""Calibration metrics as plain functions: validation, ``_update``/``_compute`` helpers, public API.

All logic lives here (torchmetrics layout); :class:`~labelsmooth.metrics.CalibrationMeter` only
accumulates the states that the ``_update`` helpers return and calls the ``_compute`` helpers.

Every metric is computed in float64 whatever the input dtype (fp16, bf16, fp32, fp64); the cost is
O(N·C), negligible next to the model that produced the probabilities.

Binning follows Guo et al. 2017: with M bins, bin m holds the confidences in ((m−1)/M, m/M]
(right-closed), and a confidence of exactly 0 goes to the first bin. The bin edges m/M are rounded
to the input's dtype first, so a confidence equal to the representable value nearest m/M counts as
lying on the edge. Note that torchmetrics' ``multiclass_calibration_error`` buckets left-closed,
[(m−1)/M, m/M) (``bucketize(right=True) - 1``), with a confidence of exactly 1 in an extra bin of
its own; the two only differ for confidences that sit exactly on an edge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "expected_calibration_error",
    "classwise_calibration_error",
    "negative_log_likelihood",
    "negative_log_likelihood_from_logits",
    "brier_score",
    "top_k_accuracy",
    "evaluate_calibration",
]

_NORMS = ("l1", "l2", "max")
_BINNINGS = ("uniform", "quantile")
_F64 = torch.float64


# --------------------------------------------------------------------------------------------
# argument validation: one place for the error messages
# --------------------------------------------------------------------------------------------


def _check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got n_bins={n_bins!r}")


def _check_norm(norm: str) -> None:
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got norm={norm!r}")


def _check_binning(binning: str) -> None:
    if binning not in _BINNINGS:
        raise ValueError(f"binning must be one of {_BINNINGS}, got binning={binning!r}")


def _check_ignore_index(ignore_index: int | None) -> None:
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise ValueError(f"ignore_index must be an int or None, got ignore_index={ignore_index!r}")


def _check_k(k: int, num_classes: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got k={k!r}")
    if k > num_classes:
        raise ValueError(f"k must be at most the number of classes C={num_classes}, got k={k}")


def _check_probs_target(probs: Tensor, target: Tensor) -> None:
    """Check the shapes and dtypes of ``probs`` (N, C) floating point and ``target`` (N,)."""
    if not isinstance(probs, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            f"probs and target must be tensors, got probs={type(probs).__name__}, "
            f"target={type(target).__name__}"
        )
    if probs.dim() != 2:
        raise ValueError(
            f"probs must be 2-D (N, C), got probs of shape {tuple(probs.shape)}; "
            "flatten extra dimensions first (class dimension last)"
        )
    if not probs.is_floating_point():
        raise ValueError(f"probs must be a floating point tensor, got probs.dtype={probs.dtype}")
    if probs.shape[1] < 1:
        raise ValueError(f"probs must have at least one class, got shape {tuple(probs.shape)}")
    _check_target_dtype(target)
    if target.shape != probs.shape[:1]:
        raise ValueError(
            f"target must have shape (N,) = {tuple(probs.shape[:1])} to match probs of shape "
            f"{tuple(probs.shape)}, got target of shape {tuple(target.shape)}"
        )


def _exact(value: float, dtype: torch.dtype) -> str:
    """The shortest decimal that reads back as ``value`` in ``dtype`` (1.0000001 for float32)."""
    if not math.isfinite(value):
        return repr(value)  # nan, inf, -inf
    for digits in range(1, 18):
        text = f"{value:.{digits}g}"
        if torch.tensor(float(text), dtype=dtype).item() == value:
            return text
    return repr(value)


def _first_bad(bad: Tensor) -> tuple[tuple[int, ...], int]:
    """Index of the first True entry of ``bad`` (row-major) and the number of True entries."""
    flat = bad.reshape(-1)
    first = int(flat.nonzero()[0, 0])
    index = []
    for size in reversed(bad.shape):
        first, rest = divmod(first, size)
        index.append(rest)
    return tuple(reversed(index)), int(flat.sum())


def _check_probs_values(probs: Tensor, keep: Tensor | None) -> None:
    """Every probability of a counted row (``keep``, (N,) bool or None for all) is in [0, 1].

    NaN fails too. The message names the first offending entry and its exact value.
    """
    if probs.numel() == 0:
        return
    bad = ~((probs >= 0) & (probs <= 1))  # (N, C); also True for NaN
    if keep is not None:
        bad &= keep.unsqueeze(1)
    if not bool(bad.any()):
        return
    (i, j), count = _first_bad(bad)
    more = f" (and {count - 1} more outside [0, 1])" if count > 1 else ""
    raise ValueError(
        f"probs must hold probabilities in [0, 1], got probs[{i}, {j}]="
        f"{_exact(float(probs[i, j]), probs.dtype)}{more}; apply softmax first or use the "
        "*_from_logits / evaluate_calibration functions"
    )


def _check_target_dtype(target: Tensor) -> None:
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got target.dtype={target.dtype}")


def _check_target_range(target: Tensor, num_classes: int) -> None:
    """``target`` must already be stripped of ``ignore_index`` entries."""
    if target.numel() == 0:
        return
    lo, hi = int(target.min()), int(target.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"target values must be class indices in [0, {num_classes}) (or ignore_index), "
            f"got values in [{lo}, {hi}]"
        )


def _flatten_logits(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Accept ``cross_entropy``-style shapes: (N, C) with (N,), or (N, C, d1, …) with (N, d1, …).

    Returns the logits with the class dimension last and flattened, ``(N·d1·…, C)``, and the
    target flattened to match.
    """
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            f"logits and target must be tensors, got logits={type(logits).__name__}, "
            f"target={type(target).__name__}"
        )
    if logits.dim() < 2:
        raise ValueError(
            f"logits must have shape (N, C) or (N, C, d1, ...), got shape {tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating point tensor, got logits.dtype={logits.dtype}")
    _check_target_dtype(target)
    expected = logits.shape[:1] + logits.shape[2:]
    if target.shape != expected:
        raise ValueError(
            f"target must have shape {tuple(expected)} to match logits of shape "
            f"{tuple(logits.shape)}, got target of shape {tuple(target.shape)}"
        )
    num_classes = logits.shape[1]
    if logits.dim() > 2:
        logits = logits.movedim(1, -1).reshape(-1, num_classes)  # (N·d1·…, C)
        target = target.reshape(-1)
    return logits, target


def _kept(target: Tensor, ignore_index: int | None) -> Tensor | None:
    """(N,) bool mask of the entries that count, or None when nothing is ignored."""
    return None if ignore_index is None else target != ignore_index


def _drop_ignored(x: Tensor, target: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """Remove the rows whose target equals ``ignore_index``: (N, C), (N,) -> (N', C), (N',)."""
    if ignore_index is None:
        return x, target
    keep = target != ignore_index
    return x[keep], target[keep]


def _prepare_probs(
    probs: Tensor, target: Tensor, ignore_index: int | None, *, detach: bool = True
) -> tuple[Tensor, Tensor]:
    """Validate, drop ignored rows, check target range; returns probs in their own dtype.

    Ignored rows may hold anything (NaN included): they are left out before any arithmetic.
    """
    _check_ignore_index(ignore_index)
    _check_probs_target(probs, target)
    _check_probs_values(probs, _kept(target, ignore_index))
    probs, target = _drop_ignored(probs.detach() if detach else probs, target, ignore_index)
    _check_target_range(target, probs.shape[1])
    return probs, target


def _check_logits_values(flat: Tensor, keep: Tensor | None, shape: torch.Size) -> None:
    """Every counted row of ``flat`` (R, C) has a finite maximum: no NaN, no +inf, not all -inf.

    A ``-inf`` logit is allowed: it masks its class (probability 0), and the metrics are those
    of the remaining classes. NaN, ``+inf`` (no probability distribution: inf − inf) and rows
    whose every logit is ``-inf`` raise a ``ValueError`` naming the first offending entry in the
    caller's ``shape`` (N, C, d1, …). Rows not in ``keep`` (ignored targets) are not looked at.
    One reduction and one synchronization when everything is fine.
    """
    if flat.numel() == 0:
        return
    ok = torch.isfinite(flat.amax(1))  # (R,); amax propagates NaN
    if keep is not None:
        ok |= ~keep
    if bool(ok.all()):
        return
    bad_rows = ~ok
    entries = (torch.isnan(flat) | (flat == float("inf"))) & bad_rows.unsqueeze(1)  # (R, C)
    rest = shape[2:]

    def where(row: int, column: str) -> str:
        inner = []
        for size in reversed(rest):
            row, d = divmod(row, size)
            inner.append(str(d))
        return ", ".join([str(row), column, *reversed(inner)])

    if bool(entries.any()):
        (r, j), count = _first_bad(entries)
        more = f" (and {count - 1} more NaN or +inf)" if count > 1 else ""
        raise ValueError(
            f"logits must not hold NaN or +inf (a -inf logit masks its class), got "
            f"logits[{where(r, str(j))}]={_exact(float(flat[r, j]), flat.dtype)}{more}"
        )
    (r,), count = _first_bad(bad_rows)
    more = f" (and {count - 1} more such rows)" if count > 1 else ""
    raise ValueError(
        f"logits must keep at least one finite class per counted entry, got every logit of "
        f"logits[{where(r, ':')}] equal to -inf{more}"
    )


def _prepare_logits(
    logits: Tensor,
    target: Tensor,
    ignore_index: int | None,
    num_classes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Flatten to (N', C) and (N',), check values, drop ignored entries, check the target range.

    Args:
        logits: (N, C) or (N, C, d1, …) logits (any floating dtype, returned in it).
        target: (N,) or (N, d1, …) class indices.
        num_classes: if given, the C that ``logits`` must have.
    """
    _check_ignore_index(ignore_index)
    shape = logits.shape if isinstance(logits, Tensor) else torch.Size()
    flat, target = _flatten_logits(logits, target)  # (R, C), (R,)
    if num_classes is not None and flat.shape[1] != num_classes:
        raise ValueError(
            f"logits must have num_classes={num_classes} channels in dimension 1, "
            f"got {flat.shape[1]}"
        )
    _check_logits_values(flat, _kept(target, ignore_index), shape)
    flat, target = _drop_ignored(flat, target, ignore_index)
    _check_target_range(target, flat.shape[1])
    return flat, target


# --------------------------------------------------------------------------------------------
# binning helpers (shared by the functions, the meter and the reliability diagram)
# --------------------------------------------------------------------------------------------


def _uniform_edges(n_bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Inner bin edges m/M, m = 1..M−1, rounded to ``dtype`` and returned in float64: (M−1,)."""
    edges = torch.arange(1, n_bins, dtype=_F64, device=device) / n_bins  # correctly rounded m/M
    if dtype != _F64:
        edges = edges.to(dtype).to(_F64)
    return edges


def _quantile_edges(conf: Tensor, n_bins: int) -> Tensor:
    """Inner edges of equal-mass bins: the order statistics x_(⌈mN/M⌉), m = 1..M−1: (M−1,).

    With right-closed bins (e_{m−1}, e_m], bin m then holds the samples of rank ⌈(m−1)N/M⌉+1 ..
    ⌈mN/M⌉ when the confidences are distinct, i.e. exactly N/M each when M divides N. Tied
    confidences all go to the lowest bin that reaches their value (later bins may be empty); N < M
    also leaves bins empty. No interpolation between samples.
    """
    n = conf.numel()
    if n == 0:
        return _uniform_edges(n_bins, _F64, conf.device)
    sorted_conf = conf.sort().values  # (N,)
    m = torch.arange(1, n_bins, device=conf.device)
    rank = (m * n + n_bins - 1) // n_bins  # ⌈mN/M⌉ in [1, N]
    return sorted_conf[rank - 1]


def _bin_index(values: Tensor, edges: Tensor) -> Tensor:
    """Right-closed bin index in [0, M−1]: values in (e_{m−1}, e_m] -> m, values ≤ e_1 -> 0."""
    # bucketize(right=False) returns i with edges[i−1] < v <= edges[i]
    return torch.bucketize(values, edges, right=False)


def _binned_sums(index: Tensor, conf: Tensor, hit: Tensor, n_bins: int) -> Tensor:
    """Per-bin (count, Σ confidence, Σ correct) as a (3, M) float64 tensor."""
    out = torch.zeros(3, n_bins, dtype=_F64, device=conf.device)
    out[0].index_add_(0, index, torch.ones_like(conf))
    out[1].index_add_(0, index, conf)
    out[2].index_add_(0, index, hit)
    return out


def _top_label_update(
    probs: Tensor, target: Tensor, n_bins: int, binning: str = "uniform"
) -> Tensor:
    """Binned sums of the top-label confidence and correctness: (3, M) float64.

    Args:
        probs: (N, C) probabilities, any floating dtype (edges rounded to it).
        target: (N,) class indices, ignored rows already removed.
    """
    conf_in, pred = probs.max(dim=1)  # (N,), (N,)
    conf = conf_in.to(_F64)
    hit = (pred == target).to(_F64)
    if binning == "quantile":
        edges = _quantile_edges(conf, n_bins)
    else:
        edges = _uniform_edges(n_bins, probs.dtype, probs.device)
    return _binned_sums(_bin_index(conf, edges), conf, hit, n_bins)


def _classwise_update(probs: Tensor, target: Tensor, n_bins: int) -> Tensor:
    """Binned sums for every class c of p_c against 1[y = c]: (3, C, M) float64."""
    n, c = probs.shape
    edges = _uniform_edges(n_bins, probs.dtype, probs.device)
    p = probs.to(_F64)  # (N, C)
    # flat bin id of (class c, bin m) is c·M + m
    flat = _bin_index(p, edges)  # (N, C)
    flat += torch.arange(c, device=probs.device) * n_bins
    size = c * n_bins
    count = torch.bincount(flat.reshape(-1), minlength=size).to(_F64)
    conf = torch.bincount(flat.reshape(-1), weights=p.reshape(-1), minlength=size)
    # 1[y = c] is 1 only at (i, y_i): count those entries' bins, no (N, C) one-hot needed
    hit = torch.bincount(flat.gather(1, target.unsqueeze(1)).reshape(-1), minlength=size)
    return torch.stack([count, conf, hit.to(_F64)]).reshape(3, c, n_bins)


def _calibration_error_compute(sums: Tensor, norm: str) -> Tensor:
    """Calibration error from binned sums (3, ..., M) -> (...) float64.

    With n_m samples in bin m, gap g_m = |acc_m − conf_m| and n = Σ n_m:

    .. math::
        \\text{l1} = \\sum_m \\tfrac{n_m}{n} g_m, \\quad
        \\text{l2} = \\sqrt{\\sum_m \\tfrac{n_m}{n} g_m^2}, \\quad
        \\text{max} = \\max_{m: n_m > 0} g_m

    Empty bins contribute nothing; with n = 0 the result is NaN.
    """
    count, conf_sum, hit_sum = sums[0], sums[1], sums[2]
    total = count.sum(-1)
    gap = (hit_sum - conf_sum).abs() / count.clamp(min=1.0)  # 0 in empty bins
    if norm == "l1":
        out = (count * gap).sum(-1) / total
    elif norm == "l2":
        out = ((count * gap.square()).sum(-1) / total).sqrt()
    else:
        out = gap.amax(-1)
        out = torch.where(total > 0, out, torch.full_like(out, float("nan")))
    return out


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------


def expected_calibration_error(
    probs: Tensor,
    target: Tensor,
    n_bins: int = 15,
    norm: str = "l1",
    binning: str = "uniform",
    ignore_index: int | None = None,
) -> Tensor:
    """Top-label calibration error (ECE, RMS calibration error or MCE) of predicted probabilities.

    The confidence of row i is :math:`\\hat p_i = \\max_c p_{ic}`, the prediction
    :math:`\\hat y_i = \\arg\\max_c p_{ic}`. Samples are grouped into M bins B_m by confidence;
    with :math:`\\text{acc}_m = |B_m|^{-1}\\sum_{i\\in B_m} 1[\\hat y_i = y_i]` and
    :math:`\\text{conf}_m = |B_m|^{-1}\\sum_{i\\in B_m} \\hat p_i`:

    .. math::
        \\text{ECE} = \\sum_m \\frac{|B_m|}{N}\\,|\\text{acc}_m - \\text{conf}_m|, \\qquad
        \\text{RMSCE} = \\Big(\\sum_m \\frac{|B_m|}{N}\\,(\\text{acc}_m - \\text{conf}_m)^2
        \\Big)^{1/2}, \\qquad
        \\text{MCE} = \\max_{m:\\,|B_m|>0} |\\text{acc}_m - \\text{conf}_m|

    These are torchmetrics' ``multiclass_calibration_error`` norms "l1", "l2" (without debiasing)
    and "max". ``binning="uniform"`` uses the bins ((m−1)/M, m/M] of Guo et al. 2017 (a
    confidence of exactly 1/M is in bin 1, a confidence of 0 too); ``binning="quantile"`` uses
    equal-mass bins whose edges are order statistics of the confidences (ties stay together, so
    some bins may be empty). Empty bins contribute nothing.

    Args:
        probs: (N, C) probabilities (rows of a softmax), any floating dtype; values in [0, 1]
            (NaN or a value outside raises, with the entry and its exact value in the message).
        target: (N,) integer class indices.
        n_bins: number of bins M ≥ 1.
        norm: "l1" (ECE), "l2" (RMS calibration error) or "max" (MCE).
        binning: "uniform" (equal width) or "quantile" (equal mass).
        ignore_index: rows whose target equals it are left out.

    Returns:
        0-dim float64 tensor; NaN when no sample is left (all ignored or N = 0).

    Raises:
        ValueError: bad ``n_bins``, ``norm``, ``binning``, shapes, dtypes or target values.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
        >>> target = torch.tensor([0, 1, 0, 0])
        >>> expected_calibration_error(probs, target, n_bins=10)  # |0.5-0.9|/2 + |1-0.6|/2
        tensor(0.4000, dtype=torch.float64)
        >>> expected_calibration_error(probs, target, n_bins=10, norm="max")
        tensor(0.4000, dtype=torch.float64)
    """
    _check_n_bins(n_bins)
    _check_norm(norm)
    _check_binning(binning)
    probs, target = _prepare_probs(probs, target, ignore_index)
    with torch.no_grad():
        sums = _top_label_update(probs, target, n_bins, binning)
        return _calibration_error_compute(sums, norm)


def classwise_calibration_error(
    probs: Tensor,
    target: Tensor,
    n_bins: int = 15,
    norm: str = "l1",
    ignore_index: int | None = None,
) -> Tensor:
    """Class-wise calibration error (classwise-ECE of Kull et al. 2019), equal-width bins.

    For every class c, the probabilities :math:`p_{ic}` of all N samples are binned into the
    uniform right-closed bins ((m−1)/M, m/M] (0 goes to the first bin) and compared with the
    frequency of class c in each bin; the per-class errors (same ``norm`` as
    :func:`expected_calibration_error`) are averaged over the C classes:

    .. math::
        \\text{cwCE} = \\frac{1}{C}\\sum_{c=1}^{C} \\text{CE}_c, \\qquad
        \\text{CE}_c^{\\text{l1}} = \\sum_m \\frac{|B_{mc}|}{N}
        \\Big|\\frac{1}{|B_{mc}|}\\sum_{i\\in B_{mc}} (1[y_i=c] - p_{ic})\\Big|

    Args:
        probs: (N, C) probabilities, any floating dtype.
        target: (N,) integer class indices.
        n_bins: number of bins M ≥ 1.
        norm: "l1", "l2" or "max", applied per class before the mean over classes.
        ignore_index: rows whose target equals it are left out.

    Returns:
        0-dim float64 tensor; NaN when no sample is left.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.75, 0.25], [0.75, 0.25]])
        >>> classwise_calibration_error(probs, torch.tensor([0, 1]), n_bins=4)
        tensor(0.2500, dtype=torch.float64)
    """
    _check_n_bins(n_bins)
    _check_norm(norm)
    probs, target = _prepare_probs(probs, target, ignore_index)
    with torch.no_grad():
        sums = _classwise_update(probs, target, n_bins)  # (3, C, M)
        return _calibration_error_compute(sums, norm).mean()


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
    return -logp.gather(1, target.unsqueeze(1)).squeeze(1).mean()


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
    return _brier_rows(probs.to(_F64), target).mean()


def _brier_rows(p: Tensor, target: Tensor) -> Tensor:
    """Σ_c (p_c − 1[y=c])² = Σ_c p_c² − 2 p_y + 1 per row: (N, C) float64 -> (N,)."""
    p_y = p.gather(1, target.unsqueeze(1)).squeeze(1)
    return p.square().sum(1) - 2.0 * p_y + 1.0


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
    _check_k(k, probs.shape[1])
    probs, target = _prepare_probs(probs, target, ignore_index)
    hits = _topk_hits(probs, target, (k,))
    return hits[0] / target.numel() if target.numel() else torch.tensor(float("nan"), dtype=_F64)


def _topk_hits(scores: Tensor, target: Tensor, ks: Sequence[int]) -> Tensor:
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


# --------------------------------------------------------------------------------------------
# the full panel from logits: shared by evaluate_calibration and CalibrationMeter
# --------------------------------------------------------------------------------------------


def _check_topk(topk: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(topk)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"topk must be a sequence of positive integers, got topk={topk!r}")
    return ks


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and 0 < float(temperature) < float("inf")
    ):
        raise ValueError(
            f"temperature must be a positive finite number, got temperature={temperature!r}"
        )


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
            "nll": -logp.gather(1, target.unsqueeze(1)).sum(),
            "brier": _brier_rows(p, target).sum(),
            "topk": _topk_hits(p, target, topk),
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
    _check_n_bins(n_bins)
    _check_ignore_index(ignore_index)
    _check_temperature(temperature)
    ks = _check_topk(topk)
    logits, target = _prepare_logits(logits, target, ignore_index)
    ks = tuple(k for k in ks if k <= logits.shape[1])
    state = _panel_update(logits, target, n_bins, ks, temperature, classwise)
    return _panel_compute(state, ks)
