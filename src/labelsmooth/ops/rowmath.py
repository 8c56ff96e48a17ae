"""Row math: where a smoothing convention becomes numbers. Every fast path uses this module.

:mod:`labelsmooth.ops.reference` is the specification (dense and independent of this file);
everything here is the same math reduced to a few scalars per row, so that a kernel only
computes per-row **statistics** of the logits and this module turns them into the loss and the
gradient coefficients. A new convention touches ``reference.py`` (its dense target),
:func:`alpha_beta` and :func:`alpha_beta_scalar` here, ``_validate.CONVENTIONS``, and, if
PyTorch's kernel can run it by a change of ε, ``ops/pytorch_kernel.py``.

Smoothed target
---------------
Every convention's smoothed target of a row with target ``y`` has the form
``q = α·onehot(y) + β·u`` (``u`` the normalized smoothing prior), with

* uniform:       α = 1-ε,             β = ε
* others:        α = 1-ε - β·u_y,     β = ε / (1-u_y)   (α = 1, β = 0 if 1-u_y = 0)
* unnormalized:  α = 1-ε - ε·u_y,     β = ε

A class-conditional (C, C) prior gives every row the prior row of its target: ``u`` below is
then ``u[y]`` (and ``a = w·u[y]``, ``A``, ``L`` per row), ``u_y`` is ``u[y, y]``; a kernel
reads row y of the (C, C) matrix ``a`` instead of the vector.

Statistics (the contract between kernels and this module)
---------------------------------------------------------
For a row ``x`` (C,), with class weights ``w`` and ``a_k = w_k·u_k``, a kernel returns

* ``m``   = max_k x_k                      (0 if the row is all -inf)
* ``s``   = Σ_k exp(x_k - m)
* ``d_y`` = x_y - m                        (target logit relative to the max)
* ``S``   = Σ_{k: a_k ≠ 0} a_k (x_k - m)   (smoothing sum relative to the max; classes with
  a_k = 0 are skipped, never multiplied, so a -inf logit on a masked class adds nothing)

Ignored rows (target = ignore_index) carry the neutral statistics m = 0, s = 1, d_y = 0,
S = 0 and a zero gradient, whatever their logits hold (NaN included). Everything is relative
to the row max, so a common offset of the logits (1e4, 1e6, near float32's maximum) costs no
precision: softmax is shift-invariant and so are these numbers.

Loss and gradient
-----------------
With ``A = Σ_k a_k`` and ``log s`` (so lse = m + log s)::

    loss = Σ_k w_k q_k (lse - x_k) = α·w_y·(log s - d_y) + β·(A·log s - S)
    ∂loss/∂x_k = (α·w_y + β·A)·p_k - α·w_y·[k = y] - β·a_k,          p = softmax(x)

so the gradient of a row is ``g_p·p - g_a·a - g_y·onehot(y)`` with per-row coefficients
``g_p = α w_y + β A``, ``g_y = α w_y``, ``g_a = β`` (times the reduction's scale). Each of the
two loss terms is selected away when its coefficient is 0 (not multiplied: 0·inf is NaN).

The KL form adds Σ_k w_k q_k log(q_k / Z) (Z = α + β = Σ_k q_k), a function of y only:
``A·β log β + β·L - β·a_y·log(β u_y) + w_y·q_y log q_y - (α w_y + β A)·log Z``,
with L = Σ_k a_k log u_k and q_y = α + β u_y; it does not change the gradient.

Combining slices of a row (tensor parallelism): statistics of slices r with maxima m_r
combine as m = max m_r, s = Σ s_r e^{m_r - m}, d_y = Σ_r [y in r](d_y,r + m_r - m),
S = Σ_r (S_r + A_r (m_r - m)); :func:`rebase` gives each slice's summands, a collective sums them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "RowCoefficients",
    "RowStats",
    "alpha_beta",
    "coefficients",
    "mean_scale",
    "mean_denominator_rule",
    "grad_coefficients",
    "loss_from_stats",
    "kl_constant",
    "alpha_beta_scalar",
    "Rows",
    "rebase",
    "RowPlan",
    "plan_rows",
    "plan_uniform_rows",
    "loss_and_nll",
]

Scalar = torch.Tensor | float


class RowStats(NamedTuple):
    """Per-row statistics (M,) of the logits: see the module docstring."""

    m: torch.Tensor
    s: torch.Tensor
    d_y: torch.Tensor
    S: torch.Tensor


@dataclass(frozen=True)
class RowCoefficients:
    """Per-row scalars of ``q = α·onehot(y) + β·u`` and the class-weight terms: (M,) float64
    tensors, or Python floats when every row has the same value (no weights, uniform prior).
    Ignored rows have α = β = w_y = a_y = 0."""

    alpha: Scalar
    beta: Scalar
    w_y: Scalar  # weight of the target class
    a_y: Scalar  # a_y = w_y·u_y
    u_y: Scalar
    A: Scalar  # Σ_k w_k u_k (per row for a (C, C) prior)
    #: a (C, C) prior: the rows' (safe) targets, which pick the prior row of each (kl_constant)
    y: torch.Tensor | None = None


def alpha_beta(u_y: torch.Tensor, eps: float, convention: str) -> tuple[torch.Tensor, torch.Tensor]:
    """α and β of ``q = α·onehot(y) + β·u`` given the prior's mass on the target, ``u_y``
    (a tensor of any shape; the result has its shape and dtype)."""
    if convention == "uniform":
        return torch.full_like(u_y, 1 - eps), torch.full_like(u_y, eps)
    if convention == "others":
        rest = 1 - u_y
        has_rest = rest > 0  # no other allowed class: the target keeps all the mass
        beta = torch.where(has_rest, eps / torch.where(has_rest, rest, 1), 0)
        return torch.where(has_rest, 1 - eps - beta * u_y, 1), beta
    if convention == "unnormalized":
        return 1 - eps - eps * u_y, torch.full_like(u_y, eps)
    raise ValueError(f"unknown convention {convention!r}")


def alpha_beta_scalar(u_y: float, eps: float, convention: str) -> tuple[float, float]:
    """:func:`alpha_beta` for one Python float ``u_y`` (no tensor, no device): what a
    uniform prior without class weights gives every row."""
    if convention == "uniform":
        return 1 - eps, eps
    if convention == "others":
        rest = 1 - u_y
        if rest <= 0:  # no other allowed class: the target keeps all the mass
            return 1.0, 0.0
        beta = eps / rest
        return 1 - eps - beta * u_y, beta
    if convention == "unnormalized":
        return 1 - eps - eps * u_y, eps
    raise ValueError(f"unknown convention {convention!r}")


def coefficients(
    y: torch.Tensor,
    valid: torch.Tensor,
    weight: torch.Tensor | None,
    u: torch.Tensor,
    eps: float,
    convention: str,
    *,
    uniform_prior: bool = False,
) -> RowCoefficients:
    """α, β and the weight terms of every row, in float64.

    Args:
        y: (M,) class indices with ignored rows replaced by any valid class.
        valid: (M,) bool, False for ignored rows (their coefficients are 0).
        weight: (C,) class weights or None.
        u: (C,) normalized smoothing prior, or (C, C) with row y that of target class y.
        eps: ε.
        convention: "uniform", "others" or "unnormalized".
        uniform_prior: the caller guarantees u_k = 1/C for every k. Without weights every
            row then has the same α and β (Python floats; ignored rows are left to the
            caller's row mask), which saves O(M) work per call.
    """
    C = u.shape[0]
    if weight is None and uniform_prior:
        a_s, b_s = alpha_beta_scalar(1 / C, eps, convention)
        return RowCoefficients(a_s, b_s, 1.0, 1 / C, 1 / C, 1.0)
    u = u.to(torch.float64)
    a = u if weight is None else weight.to(torch.float64) * u  # (C,), or (C, C) by row
    if u.dim() == 2:  # class-conditional: each row reads the prior row of its target
        u_y, a_y, A, rows_y = u[y, y], a[y, y], a.sum(-1)[y], y
    else:
        u_y, a_y, A, rows_y = u[y], a[y], a.sum(), None
    alpha, beta = alpha_beta(u_y, eps, convention)
    zero = torch.zeros((), dtype=torch.float64, device=u.device)
    w_y = valid.to(torch.float64) if weight is None else torch.where(valid, weight[y].double(), 0)
    return RowCoefficients(
        alpha=torch.where(valid, alpha, zero),
        beta=torch.where(valid, beta, zero),
        w_y=w_y,
        a_y=torch.where(valid, a_y, zero),
        u_y=u_y,
        A=A,
        y=rows_y,
    )


def mean_scale(rc: RowCoefficients, valid: torch.Tensor) -> torch.Tensor:
    """1 / Σ_i w_{y_i} over the counted rows: the "mean" reduction's scale, as PyTorch's.

    The one place (the reference restates it in its own `_reduce`) of two rules:

    * a mean over a batch whose targets are all ignored is 0, with zero gradients (PyTorch
      returns 0/0 = NaN): the scale is then 1 and every row is 0;
    * counted rows whose target classes all have weight 0 (Σ_i w_{y_i} = 0) give NaN, loss and
      gradient, as PyTorch does (0/0): the scale is NaN.
    """
    if isinstance(rc.w_y, torch.Tensor):
        denom = rc.w_y.sum()  # ignored rows have w_y = 0
    else:
        denom = valid.sum().to(torch.float64) * rc.w_y
    return 1 / mean_denominator_rule(denom, valid.any())


def mean_denominator_rule(denom: torch.Tensor, any_counted: torch.Tensor) -> torch.Tensor:
    """The "mean" denominator with the two rules of :func:`mean_scale` applied: 1 when no row
    is counted, NaN when rows are counted but their target weights sum to 0."""
    nan = torch.full_like(denom, float("nan"))
    return torch.where(any_counted, torch.where(denom == 0, nan, denom), torch.ones_like(denom))


def grad_coefficients(
    rc: RowCoefficients, valid: torch.Tensor, scale: torch.Tensor | float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g_p, g_y, g_a), each (M,) float64: the gradient of a row is g_p·p − g_a·a − g_y·onehot(y)
    (zero for ignored rows). ``scale`` is the reduction's factor (None for "sum"/"none")."""
    row = valid.to(torch.float64)
    if scale is not None:
        row = row * scale
    alpha_w = rc.alpha * rc.w_y
    g_p = row * (alpha_w + rc.beta * rc.A)
    g_y = row * alpha_w
    g_a = row * rc.beta
    return g_p, g_y, g_a


def _select_term(coef: Scalar, value: torch.Tensor) -> torch.Tensor:
    """``coef·value``, but exactly 0 where ``coef`` is 0 (even if value is ±inf or NaN)."""
    if isinstance(coef, float):
        return value * coef if coef != 0 else torch.zeros_like(value)
    return torch.where(coef != 0, coef * value, 0)


def loss_from_stats(stats: RowStats, rc: RowCoefficients) -> torch.Tensor:
    """Per-row smoothed cross-entropy (M,) float64: α w_y (log s − d_y) + β (A log s − S)."""
    log_s = stats.s.double().log()
    return _loss_terms(log_s, log_s - stats.d_y.double(), stats.S, rc)


def _loss_terms(
    log_s: torch.Tensor, nll: torch.Tensor, S: torch.Tensor, rc: RowCoefficients
) -> torch.Tensor:
    """:func:`loss_from_stats` from ``log s`` and ``log s − d_y`` (float64) already computed.
    An ``A`` of exactly 1.0 (a Python float) skips its multiplication (1·v = v)."""
    A_log_s = log_s if (isinstance(rc.A, float) and rc.A == 1.0) else rc.A * log_s
    target_term = _select_term(rc.alpha * rc.w_y, nll)
    smooth_term = _select_term(rc.beta, A_log_s - S.double())
    return target_term + smooth_term


def kl_constant(rc: RowCoefficients, weight: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k q_k log(q_k / Σq) per row (M,): what turns the cross-entropy into the KL form."""
    u = u.to(torch.float64)
    a = u if weight is None else weight.to(torch.float64) * u
    L = torch.xlogy(a, u).sum(-1)  # Σ_k a_k log u_k, 0·log 0 = 0 (per prior row if (C, C))
    if u.dim() == 2:
        assert rc.y is not None
        L = L[rc.y]
    # floats become tensors made on the device (torch.full: no host-to-device copy, so no
    # synchronization on CUDA)
    alpha, beta, w_y, a_y, u_y, A = (
        torch.full((), v, dtype=torch.float64, device=u.device) if isinstance(v, float) else v
        for v in (rc.alpha, rc.beta, rc.w_y, rc.a_y, rc.u_y, rc.A)
    )
    q_y = (alpha + beta * u_y).clamp_min(0)  # ≥ 0 exactly; rounding can leave -1e-17
    mass = alpha + beta  # Σ_k q_k (0 for ignored rows)
    total = alpha * w_y + beta * A  # Σ_k w_k q_k
    return (
        A * torch.xlogy(beta, beta)
        + beta * L
        - torch.xlogy(beta * a_y, beta * u_y)
        + w_y * torch.xlogy(q_y, q_y)
        - torch.xlogy(total, mass)
    )


def rebase(stats: RowStats, m: torch.Tensor, owner: torch.Tensor, A: Scalar) -> RowStats:
    """A slice's statistics relative to the whole row's max ``m`` (≥ the slice's own max):
    the summands of the combination in the module docstring, for a caller that sums them
    itself (a collective).

    With δ = m_r − m ≤ 0: s_r e^δ, d_y,r + δ where the slice holds the target (``owner``)
    and 0 elsewhere, S_r + A_r δ (``A`` = Σ a_k over the slice's classes). Summing the
    results over the slices gives the whole row's statistics with max ``m``. Computed in
    the statistics' dtype.
    """
    delta = stats.m - m
    return RowStats(
        m,
        stats.s * torch.exp(delta),
        torch.where(owner, stats.d_y + delta, 0),
        stats.S + A * delta,
    )


@dataclass
class Rows:
    """Per-row inputs of every row backend (C kernel, eager blocks, Triton): targets ``y``
    (-1 for ignored rows), ``a`` (C,) = w·u in the compute dtype (or (C, C), contiguous, for a
    class-conditional prior: a row reads ``a[y]``) and ``a0`` its value when it
    is the same for every class (None otherwise), and for a gradient its coefficients g_p,
    g_a, g_y (compute dtype): the gradient of a row is g_p·p − g_a·a − g_y·onehot(y)."""

    y: torch.Tensor
    a: torch.Tensor
    a0: float | None
    g_p: torch.Tensor | None = None
    g_a: torch.Tensor | None = None
    g_y: torch.Tensor | None = None

    def scaled(self, go: torch.Tensor) -> Rows:
        """The same rows with the gradient coefficients multiplied by ``go`` (a scalar or one
        value per row): the incoming gradient folded into the coefficients."""
        assert self.g_p is not None and self.g_a is not None and self.g_y is not None
        go = go.to(self.g_p.dtype)
        return Rows(self.y, self.a, self.a0, self.g_p * go, self.g_a * go, self.g_y * go)


@dataclass(frozen=True)
class RowPlan:
    """Everything a kernel needs besides the logits, and what :func:`loss_and_nll` needs after it.

    ``y`` holds the kernels' targets (-1 for an ignored row), ``a`` the (C,) float64 vector
    a_k = w_k u_k (or (C, C), row y for the rows with target y), ``a0`` its common value
    when it is constant (no weights, uniform prior). ``all_valid``: no row is ignored (the
    row selects are skipped). A plan of :func:`plan_uniform_rows` has Python-float
    coefficients and ``scale``.
    """

    valid: torch.Tensor
    y: torch.Tensor
    rc: RowCoefficients
    scale: torch.Tensor | float | None
    a: torch.Tensor
    a0: float | None
    all_valid: bool = False

    def grad_coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(g_p, g_y, g_a) per row, the reduction's scale included."""
        return grad_coefficients(self.rc, self.valid, self.scale)

    def _constant_on_cpu(self) -> bool:
        """Python-float coefficients and scale, rows on the CPU (:func:`_constant_grad_rows`)."""
        return (
            isinstance(self.rc.alpha, float)
            and not isinstance(self.scale, Tensor)
            and self.valid.device.type == "cpu"
        )

    def rows(self, cdt: torch.dtype, need_grad: bool) -> Rows:
        """The row backends' inputs in the compute dtype ``cdt`` (gradient coefficients only
        if ``need_grad``)."""
        rows = Rows(y=self.y, a=self.a.to(cdt), a0=self.a0)
        if need_grad and self._constant_on_cpu():
            rows.g_p, rows.g_a, rows.g_y = _constant_grad_rows(self, cdt)
        elif need_grad:
            g_p, g_y, g_a = self.grad_coefficients()
            rows.g_p, rows.g_a, rows.g_y = g_p.to(cdt), g_a.to(cdt), g_y.to(cdt)
        return rows


def plan_rows(
    target: torch.Tensor,
    weight: torch.Tensor | None,
    u: torch.Tensor,
    *,
    ignore_index: int,
    eps: float,
    convention: str,
    reduction: str,
    uniform_prior: bool,
) -> RowPlan:
    """The per-row coefficients of a call with class-index ``target`` (any shape)."""
    y = target.reshape(-1)
    valid = y != ignore_index
    y_safe = torch.where(valid, y, 0)
    rc = coefficients(y_safe, valid, weight, u, eps, convention, uniform_prior=uniform_prior)
    scale = mean_scale(rc, valid) if reduction == "mean" else None
    u64 = u.to(torch.float64)
    a = u64 if weight is None else weight.to(torch.float64) * u64
    a0 = 1 / u.shape[0] if (weight is None and uniform_prior) else None
    return RowPlan(valid, torch.where(valid, y, -1), rc, scale, a, a0)


def _constant_grad_rows(plan: RowPlan, cdt: torch.dtype) -> torch.Tensor:
    """(g_p, g_a, g_y) in ``cdt`` (one (3, M) tensor) for Python-float coefficients and scale:
    the values :func:`grad_coefficients` gives (the same float64 products, then rounded to
    ``cdt``), times the row mask (0 for an ignored row) unless every row is valid."""
    rc, scale = plan.rc, plan.scale
    assert isinstance(rc.alpha, float) and isinstance(rc.beta, float)
    assert isinstance(rc.w_y, float) and isinstance(rc.A, float)
    assert not isinstance(scale, Tensor)
    row = 1.0 if scale is None else 1.0 * scale
    alpha_w = rc.alpha * rc.w_y
    g_p, g_y, g_a = row * (alpha_w + rc.beta * rc.A), row * alpha_w, row * rc.beta
    coef = torch.tensor([[g_p], [g_a], [g_y]], dtype=torch.float64).to(cdt)
    M = plan.y.shape[0]
    return coef.expand(3, M).contiguous() if plan.all_valid else coef * plan.valid


def plan_uniform_rows(
    target: torch.Tensor,
    u: torch.Tensor,
    *,
    ignore_index: int,
    eps: float,
    convention: str,
    reduction: str,
) -> RowPlan:
    """:func:`plan_rows` for a uniform prior without class weights on the CPU (``target``
    int64): the same numbers, as Python floats where every row has the same value, and the
    kernels' targets ``target`` itself when no row is ignored (one count, no selects)."""
    y = target.reshape(-1)
    valid = y != ignore_index
    n_valid = int(valid.sum())
    all_valid = n_valid == y.shape[0]
    y_k = y.contiguous() if all_valid else torch.where(valid, y, -1)
    rc = coefficients(y, valid, None, u, eps, convention, uniform_prior=True)
    scale = None
    if reduction == "mean":  # mean_scale's rules: 1 when no row is counted (no NaN here)
        scale = 1 / float(n_valid) if n_valid else 1.0
    return RowPlan(valid, y_k, rc, scale, u.to(torch.float64), 1 / u.shape[0], all_valid)


def loss_and_nll(
    stats: RowStats,
    plan: RowPlan,
    weight: torch.Tensor | None,
    u: torch.Tensor,
    *,
    kl: bool,
    reduction: str,
    shape: torch.Size,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reduced loss and the per-row unsmoothed NLL (``shape``), both float64.

    Ignored rows are exactly 0 in both (a select: their statistics may be anything).
    The NLL is −log p_y = log s − d_y, from the same statistics.
    """
    log_s = stats.s.double().log()
    nll = log_s - stats.d_y.double()
    loss = _loss_terms(log_s, nll, stats.S, plan.rc)
    if kl:
        loss = loss + kl_constant(plan.rc, weight, u)
    if not plan.all_valid:  # else both selects keep every row
        loss = torch.where(plan.valid, loss, 0)
        nll = torch.where(plan.valid, nll, 0)
    if reduction == "none":
        out = loss.reshape(shape)
    else:
        out = loss.sum() if plan.scale is None else loss.sum() * plan.scale
    return out, nll.reshape(shape)
