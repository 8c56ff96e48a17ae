"""Calibration errors of the top label and of every class: binning, ``_update``, ``_compute``.

Binning follows Guo et al. 2017: with M bins, bin m holds the confidences in ((m−1)/M, m/M]
(right-closed), and a confidence of exactly 0 goes to the first bin. The bin edges m/M are rounded
to the input's dtype first, so a confidence equal to the representable value nearest m/M counts as
lying on the edge. Note that torchmetrics' ``multiclass_calibration_error`` buckets left-closed,
[(m−1)/M, m/M) (``bucketize(right=True) - 1``), with a confidence of exactly 1 in an extra bin of
its own; the two only differ for confidences that sit exactly on an edge.

The binned sums (count, Σ confidence, Σ correct per bin) are the sufficient statistics: the
``_update`` helpers return them (summable over batches and ranks), ``_calibration_error_compute``
turns them into the l1 / l2 / max errors. :func:`reliability_bins` and
:func:`calibration_error_from_bins` are the same two steps as public functions (for plots and
custom reports).
"""

from __future__ import annotations

import torch
from torch import Tensor

from labelsmooth.metrics._checks import _F64, _check_n_bins, _prepare_probs

__all__ = [
    "expected_calibration_error",
    "classwise_calibration_error",
    "reliability_bins",
    "calibration_error_from_bins",
]

_NORMS = ("l1", "l2", "max")
_BINNINGS = ("uniform", "quantile")


# --------------------------------------------------------------------------------------------
# argument validation
# --------------------------------------------------------------------------------------------


def _calibration_error_arg_validation(n_bins: int, norm: str, binning: str = "uniform") -> None:
    """Check the options of the calibration errors (the tensors are checked by _prepare_probs)."""
    _check_n_bins(n_bins)
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got norm={norm!r}")
    if binning not in _BINNINGS:
        raise ValueError(f"binning must be one of {_BINNINGS}, got binning={binning!r}")


# --------------------------------------------------------------------------------------------
# _update and _compute helpers (shared by the functions, the panel and the meter)
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
    _calibration_error_arg_validation(n_bins, norm, binning)
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
    _calibration_error_arg_validation(n_bins, norm)
    probs, target = _prepare_probs(probs, target, ignore_index)
    with torch.no_grad():
        sums = _classwise_update(probs, target, n_bins)  # (3, C, M)
        return _calibration_error_compute(sums, norm).mean()


def reliability_bins(
    probs: Tensor,
    target: Tensor,
    n_bins: int = 15,
    binning: str = "uniform",
    ignore_index: int | None = None,
) -> Tensor:
    """Per-bin sums of the top-label confidence and correctness: the data of a reliability diagram.

    The bins are those of :func:`expected_calibration_error` (same ``n_bins``, ``binning`` and
    ``ignore_index``). Row m of the result holds, for bin m, the number of samples
    :math:`|B_m|`, the sum of their confidences :math:`\\sum_{i\\in B_m} \\hat p_i` and the
    number of correct predictions :math:`\\sum_{i\\in B_m} 1[\\hat y_i = y_i]`; the sums of
    several batches add up (for uniform bins), and :func:`calibration_error_from_bins` turns
    them into the calibration error.

    Args:
        probs: (N, C) probabilities, any floating dtype; values in [0, 1].
        target: (N,) integer class indices.
        n_bins: number of bins M ≥ 1.
        binning: "uniform" (equal width) or "quantile" (equal mass).
        ignore_index: rows whose target equals it are left out.

    Returns:
        (3, M) float64 tensor: counts, confidence sums and correct counts (zeros when no
        sample is left).

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
        >>> bins = reliability_bins(probs, torch.tensor([0, 1, 0, 0]), n_bins=5)
        >>> bins[0]  # samples per bin: two in (0.4, 0.6], two in (0.8, 1]
        tensor([0., 0., 2., 0., 2.], dtype=torch.float64)
        >>> bins[2]  # correct predictions per bin
        tensor([0., 0., 2., 0., 1.], dtype=torch.float64)
        >>> calibration_error_from_bins(bins)  # |1 - 0.6|/2 + |0.5 - 0.9|/2
        tensor(0.4000, dtype=torch.float64)
    """
    _calibration_error_arg_validation(n_bins, "l1", binning)
    probs, target = _prepare_probs(probs, target, ignore_index)
    with torch.no_grad():
        return _top_label_update(probs, target, n_bins, binning)


def calibration_error_from_bins(bins: Tensor, norm: str = "l1") -> Tensor:
    """The calibration error of binned sums, as returned by :func:`reliability_bins`.

    With :math:`n_m` samples in bin m, gap :math:`g_m = |\\text{acc}_m - \\text{conf}_m|` and
    :math:`n = \\sum_m n_m`:

    .. math::
        \\text{l1} = \\sum_m \\tfrac{n_m}{n} g_m, \\quad
        \\text{l2} = \\sqrt{\\sum_m \\tfrac{n_m}{n} g_m^2}, \\quad
        \\text{max} = \\max_{m: n_m > 0} g_m

    Args:
        bins: (3, ..., M) sums: counts, confidence sums, correct counts (float).
        norm: "l1" (ECE), "l2" (RMS calibration error) or "max" (MCE).

    Returns:
        (...) float64 tensor (0-dim for a (3, M) input); NaN where no sample was binned.

    Example:
        >>> import torch
        >>> bins = torch.tensor([[2.0, 2.0], [1.8, 1.2], [1.0, 2.0]])  # 2 + 2 samples
        >>> calibration_error_from_bins(bins)  # |0.5-0.9|/2 + |1-0.6|/2
        tensor(0.4000, dtype=torch.float64)
    """
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got norm={norm!r}")
    if not isinstance(bins, Tensor) or bins.dim() < 2 or bins.shape[0] != 3:
        shape = tuple(bins.shape) if isinstance(bins, Tensor) else type(bins).__name__
        raise ValueError(f"bins must be a (3, ..., M) tensor of binned sums, got {shape}")
    return _calibration_error_compute(bins.to(_F64), norm)
