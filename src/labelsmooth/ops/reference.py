"""The reference implementation: plain PyTorch, dense, readable. It is the specification.

Every fast path is tested against these functions; they are checked against
``torch.nn.functional.cross_entropy`` and by float64 ``gradcheck``. Nothing here is clever:
the smoothed target ``q`` is materialized as a dense (M, C) tensor and the loss is
``sum_k w_k q_k (-log p_k)`` (plus ``sum_k w_k q_k log q_k`` for the KL form).

Notation used across the package (one row = one sample / position):

* ``x`` logits of a row, ``C`` classes, ``y`` the target class, ``ε`` the label smoothing.
* ``u`` the smoothing prior: ``prior`` (uniform if None) restricted to ``class_mask`` and
  normalized to sum to 1 over the allowed classes. A (C, C) prior is class-conditional: its
  row y, restricted and normalized the same way, is the ``u`` of every row with target y
  (``u_k`` below reads ``u[y, k]``).
* Conventions (``q`` is the smoothed target the row is trained against):

  - ``uniform``:       q = (1-ε)·onehot(y) + ε·u
  - ``others``:        q_y = 1-ε, q_k = ε·u_k / (1-u_y) for k != y  (ε spread over the others)
  - ``unnormalized``:  q_y = 1-ε, q_k = ε·u_k for k != y            (sums to 1-ε·u_y)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "compute_dtype",
    "smoothing_prior",
    "smoothed_target",
    "cross_entropy_reference",
    "distillation_loss_reference",
]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for half types, the input's own dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def smoothing_prior(
    num_classes: int,
    prior: torch.Tensor | None,
    class_mask: torch.Tensor | None,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """The normalized smoothing distribution ``u`` (C,) over the allowed classes, or, for a
    (C, C) prior, one such distribution per target class (each row normalized).

    Args:
        num_classes: C.
        prior: (C,) non-negative weights u(k), (C, C) with row y the weights u(k | y) of
            target class y, or None for uniform.
        class_mask: (C,) bool, False for classes that get no smoothing mass, or None.
        dtype: dtype of the result.
        device: device of the result.

    Returns:
        The prior's shape ((C,) for None), non-negative, each row summing to 1, zero where
        ``class_mask`` is False.
    """
    if prior is None:
        u = torch.ones(num_classes, dtype=torch.float64, device=device)
    else:
        u = prior.to(device=device, dtype=torch.float64)
    if class_mask is not None:
        u = u * class_mask.to(device=device, dtype=torch.float64)  # (C,) or, per row, (C, C)
    return (u / u.sum(-1, keepdim=True)).to(dtype)


def smoothed_target(
    target: torch.Tensor,
    num_classes: int,
    label_smoothing: float,
    u: torch.Tensor,
    convention: str,
    ignore_index: int,
) -> torch.Tensor:
    """Dense smoothed targets for class indices: (M,) -> (M, C), zero rows where ignored.

    Args:
        target: (M,) int64 class indices (``ignore_index`` allowed).
        num_classes: C.
        label_smoothing: ε in [0, 1].
        u: (C,) normalized smoothing prior, or (C, C) with row y the prior of target class y
            (see :func:`smoothing_prior`).
        convention: "uniform", "others" or "unnormalized".
        ignore_index: target value whose row is all zeros.

    Returns:
        (M, C) tensor in ``u``'s dtype.
    """
    eps = label_smoothing
    valid = target != ignore_index
    # (M, C); a comparison, not F.one_hot, which reads the targets on the host (no vmap)
    classes = torch.arange(num_classes, device=target.device)
    y = torch.where(valid, target, 0)
    onehot = (y.unsqueeze(-1) == classes).to(u.dtype)
    if u.dim() == 2:
        u = u[y]  # (M, C): every row's own prior, the row of its target class
    if convention == "uniform":
        q = (1 - eps) * onehot + eps * u
    elif convention == "others":
        others = u * (1 - onehot)  # (M, C): the prior on every non-target class
        mass = others.sum(-1, keepdim=True)  # 1 - u_y
        # No other allowed class to receive the ε mass: the target keeps it all. The divisor
        # is replaced (a select) where it is 0, so that no 0/0 reaches the backward either.
        has_others = mass > 0
        q = (1 - eps) * onehot + eps * others / torch.where(has_others, mass, 1)
        q = torch.where(has_others, q, onehot)
    elif convention == "unnormalized":
        q = (1 - eps) * onehot + eps * u * (1 - onehot)
    else:
        raise ValueError(f"unknown convention {convention!r}")
    return q * valid.unsqueeze(-1)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, d1, ..., dk) -> (N·d1·…·dk, C); (N, C) unchanged."""
    return t.movedim(1, -1).reshape(-1, t.shape[1]) if t.dim() > 2 else t


def cross_entropy_reference(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    u: torch.Tensor,
    convention: str,
    kl: bool,
    *,
    return_nll: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Label-smoothed cross-entropy, computed the obvious way. Arguments already validated.

    Args:
        input: (N, C) or (N, C, d1, ..., dk) logits, any float dtype (computed in >= fp32).
        target: class indices of shape (N, d1, ..., dk), or soft targets of the input's shape.
        weight: (C,) class weights or None.
        ignore_index: ignored target value (class-index targets only).
        reduction: "none", "mean" or "sum".
        label_smoothing: ε.
        u: (C,) normalized smoothing prior, or (C, C) with row y that of target class y
            (class-index targets only).
        convention: smoothing convention (soft targets: "uniform" only).
        kl: return Σ_k w_k q_k log(q_k / (Z p_k)) with Z = Σq instead of CE(q, p): the
            KL divergence KL(q‖p) for the normalized conventions (Z = 1), Z·KL(q/Z‖p) for
            "unnormalized".
        return_nll: also return the unsmoothed, unweighted negative log-likelihood of each
            row (−log p_y, 0 for ignored rows; −Σ t log p for soft targets), detached, in
            the "none" shape: ``(loss, nll_rows)``.

    Returns:
        The loss: target's shape (class indices) or input's shape without dim 1 (soft) for
        "none", a scalar otherwise, in the input's dtype.
    """
    num_classes = input.shape[1]
    cdt = compute_dtype(input.dtype)
    soft = target.is_floating_point()
    x = _rows(input).to(cdt)  # (M, C)
    if not soft:
        # an ignored row contributes nothing, whatever it holds (NaN, inf): its logits are
        # replaced (a select, not a product with 0) before anything is computed from them
        x = torch.where((target.reshape(-1) != ignore_index)[:, None], x, 0)
    logp = torch.log_softmax(x, dim=-1)  # (M, C)
    u = u.to(cdt)
    w = (
        torch.ones(num_classes, dtype=cdt, device=input.device)
        if weight is None
        else weight.to(cdt)
    )

    if soft:
        if u.dim() != 1:
            raise ValueError("a (C, C) prior needs class-index targets (row y: target class y)")
        q = (1 - label_smoothing) * _rows(target).to(cdt) + label_smoothing * u  # (M, C)
    else:
        q = smoothed_target(
            target.reshape(-1), num_classes, label_smoothing, u, convention, ignore_index
        )

    # Classes without target mass add exactly 0, even where log p = -inf (0·(-inf) is NaN).
    # The rule for every term below: where q_k = 0 the term is a constant 0, so its gradient
    # with respect to q (and through q to ``prior``, ``weight`` or soft targets) is 0 too. A
    # select of the *result* alone is not enough: the backward of q·log p at log p = -inf, or
    # of q·log q at q = 0 (log 0 = -inf), multiplies that infinity by the zero incoming
    # gradient and gives NaN. So the operands are replaced first (q by 1, log p by 0) where
    # q_k = 0, and the results selected after ("the double select").
    has_mass = q != 0  # (M, C)
    logp_safe = torch.where(has_mass, logp, 0)
    loss = -torch.where(has_mass, w * q * logp_safe, 0).sum(-1)  # (M,)
    if kl:
        # KL(q̂ || p) with q̂ = q / Σq: Σ_k w_k q_k log(q_k / Σq). For the normalized conventions
        # Σq = 1 and this is CE − H(q); for "unnormalized" it keeps the loss zero at its
        # optimum p = q̂ (where CE − H(q) alone would be negative). An ignored row has q = 0
        # everywhere and Σq = 0: every term is 0 (and so is its gradient).
        q_safe = torch.where(has_mass, q, 1)
        mass = q.sum(-1, keepdim=True)  # (M, 1)
        mass_safe = torch.where(mass > 0, mass, 1)
        log_ratio = torch.log(q_safe) - torch.log(mass_safe)  # (M, C), finite
        loss = loss + torch.where(has_mass, w * q * log_ratio, 0).sum(-1)

    out_shape = target.shape[:1] + target.shape[2:] if soft else target.shape
    out = _reduce(loss, target, w, ignore_index, reduction, soft).to(input.dtype)
    if not return_nll:
        return out
    with torch.no_grad():
        if soft:
            nll = -torch.where(q != 0, _rows(target).to(cdt) * logp, 0).sum(-1)
        else:
            y = target.reshape(-1)
            valid = y != ignore_index
            nll = -torch.where(valid, logp.gather(1, torch.where(valid, y, 0)[:, None])[:, 0], 0)
    return out, nll.reshape(out_shape)


def _reduce(
    loss: torch.Tensor,
    target: torch.Tensor,
    w: torch.Tensor,
    ignore_index: int,
    reduction: str,
    soft: bool,
) -> torch.Tensor:
    """PyTorch's reductions of the per-row losses (M,)."""
    if reduction == "none":
        return loss.reshape(target.shape[:1] + target.shape[2:] if soft else target.shape)
    total = loss.sum()
    if reduction == "sum":
        return total
    if soft:
        denom = torch.tensor(float(max(loss.shape[0], 1)), dtype=loss.dtype, device=loss.device)
    else:
        y = target.reshape(-1)
        valid = y != ignore_index
        denom = (w[torch.where(valid, y, 0)] * valid).sum()
        # All targets ignored: 0 with zero gradients, where torch returns NaN; counted
        # targets whose weights sum to 0: NaN, as torch (0/0).
        nan = torch.full_like(denom, float("nan"))
        denom = torch.where(valid.any(), torch.where(denom == 0, nan, denom), 1)
    return total / denom


def distillation_loss_reference(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    alpha: float,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton's distillation loss, written out (arguments already validated).

    Per row: ``alpha * T**2 * sum_k p_t,k (log p_t,k - log p_s,k) + (1 - alpha) * CE_eps``
    with ``p_t = softmax(z_t / T)`` (a constant), ``p_s = softmax(z_s / T)`` and ``CE_eps``
    PyTorch's label-smoothed cross-entropy of the unsoftened student logits. Ignored rows
    contribute 0 and are left out of the mean (0 when every row is ignored); their logits (in
    the student and the teacher) are replaced by 0 before any math, so padding that holds NaN
    or -inf changes nothing and gets a zero gradient.
    """
    cdt = compute_dtype(student_logits.dtype)
    valid = target != ignore_index  # (N,)
    z_s = torch.where(valid[:, None], student_logits.to(cdt), 0)  # (N, C)
    z_t = torch.where(valid[:, None], teacher_logits.detach().to(cdt), 0)  # (N, C)
    log_pt = torch.log_softmax(z_t / temperature, dim=1)  # (N, C)
    log_ps = torch.log_softmax(z_s / temperature, dim=1)  # (N, C)
    # p_t log p_t is 0 where p_t = 0 (a -inf teacher logit): xlogy, not p·log p = 0·(-inf)
    kl = (torch.xlogy(log_pt.exp(), log_pt.exp()) - log_pt.exp() * log_ps).sum(1)  # (N,)
    ce = F.cross_entropy(
        z_s,
        torch.where(valid, target, 0),
        reduction="none",
        label_smoothing=label_smoothing,
    )  # (N,)
    rows = torch.where(valid, alpha * temperature**2 * kl + (1 - alpha) * ce, 0)
    if reduction == "none":
        out = rows
    elif reduction == "sum":
        out = rows.sum()
    else:
        out = rows.sum() / valid.sum().clamp(min=1)
    return out.to(student_logits.dtype)
