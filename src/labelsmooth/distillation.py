"""Knowledge distillation loss (Hinton, Vinyals & Dean 2015), beside the smoothed loss.

Müller et al. (2019, section 5) show that a teacher trained with label smoothing is a worse
teacher: smoothing erases the information in its logits about which wrong classes resemble
the right one, and that information is what a student learns from the softened teacher.
:func:`distillation_loss` is the loss their (and Hinton's) students are trained with.
"""

from __future__ import annotations

import math

import torch

from labelsmooth._validate import REDUCTIONS, check_choice, check_label_smoothing
from labelsmooth.functional import cross_entropy

__all__ = ["distillation_loss"]


def _check_number(name: str, value: object, low: float, high: float, *, open_low: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {name}={value!r}")
    v = float(value)
    ok = (low < v if open_low else low <= v) and v <= high
    if math.isnan(v) or not ok:
        interval = f"({low:g}, {high:g}]" if open_low else f"[{low:g}, {high:g}]"
        raise ValueError(f"{name} must be in {interval}, got {name}={value!r}")
    return v


def _check_tensors(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor
) -> None:
    """Types, dtypes and shapes of the three tensors (errors name the argument)."""
    for name, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {t.dtype}")
    if student_logits.dim() != 2:
        raise ValueError(
            f"student_logits must be 2-D (N, C), got shape {tuple(student_logits.shape)}"
        )
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits must have the student's shape {tuple(student_logits.shape)}, got "
            f"shape {tuple(teacher_logits.shape)}"
        )
    if not isinstance(target, torch.Tensor) or target.is_floating_point():
        raise TypeError("target must be an integer tensor of class indices (N,)")
    if target.shape != student_logits.shape[:1]:
        raise ValueError(
            f"target must have shape ({student_logits.shape[0]},), got {tuple(target.shape)}"
        )


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    r"""Hinton's distillation loss: a softened teacher's KL term plus the hard-label term.

    For a row with student logits :math:`z_s`, teacher logits :math:`z_t`, target class
    :math:`y` and temperature :math:`T`,

    .. math::
        \ell = \alpha\, T^2\, \mathrm{KL}\big(\mathrm{softmax}(z_t/T)\,\big\|\,
               \mathrm{softmax}(z_s/T)\big)
             + (1-\alpha)\, \mathrm{CE}_\varepsilon(z_s, y),

    where :math:`\mathrm{CE}_\varepsilon` is :func:`labelsmooth.cross_entropy` with
    ``label_smoothing=ε`` (ε = 0: plain cross-entropy). The factor :math:`T^2` keeps the soft
    term's gradient, :math:`\alpha T (p^T_s - p^T_t)` with respect to :math:`z_s`, of the same
    size as :math:`T` changes (Hinton et al., section 2), so α means the same at every T.
    The KL term is :func:`labelsmooth.cross_entropy` with the teacher's probabilities as soft
    targets and ``kl=True``, the hard term the same function with the class indices; each
    takes whichever implementation ``impl="auto"`` picks. For the soft KL form that is the
    dense reference path (the fused kernels take class-index targets only); distillation's
    logits are (N, C) with small C, where that costs little next to the two networks, so no
    separate fused kernel is kept. The hard term gets PyTorch's kernel or the fused one.

    The teacher is a constant: ``teacher_logits`` are detached (no gradient flows to the
    teacher). Rows whose target is ``ignore_index`` contribute 0 to both terms and are left
    out of the mean; if every row is ignored, ``"mean"`` gives 0 (with zero gradients).
    Ignored rows are never read: padding that holds NaN or -inf, in the student or the
    teacher, gives the same loss and an exactly zero gradient on those rows. A row that is
    counted needs a teacher row with a finite softmax (at least one finite logit, no NaN or
    +inf); otherwise a ``ValueError`` names ``teacher_logits``.

    Args:
        student_logits: (N, C) student logits, floating point.
        teacher_logits: (N, C) teacher logits (same shape; any floating dtype).
        target: (N,) integer class indices.
        temperature: T > 0 (at most 1000); 1 compares the unsoftened distributions.
        alpha: weight α in [0, 1] of the soft term (1: the teacher only; 0: plain CE).
        ignore_index: target value of rows that are left out.
        reduction: ``"none"`` (per-row losses, (N,)), ``"mean"`` (over non-ignored rows) or
            ``"sum"``.
        label_smoothing: ε in [0, 1] of the hard-label term.

    Returns:
        The loss in the student logits' dtype: (N,) for ``"none"``, else a scalar.

    Raises:
        ValueError / TypeError: bad shapes, dtypes or option values (naming the argument);
            a counted row whose teacher logits have no finite softmax.

    Example:
        >>> import torch, labelsmooth
        >>> student = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> teacher = torch.tensor([[3.0, 1.0, -2.0], [0.0, 0.5, 4.0]])
        >>> y = torch.tensor([0, 2])
        >>> hard = labelsmooth.distillation_loss(student, teacher, y, temperature=2.0, alpha=0.0)
        >>> torch.allclose(hard, torch.nn.functional.cross_entropy(student, y))
        True
        >>> same = labelsmooth.distillation_loss(teacher, teacher, y, temperature=2.0, alpha=1.0)
        >>> abs(float(same)) < 1e-6  # a student equal to its teacher: KL = 0
        True
    """
    _check_tensors(student_logits, teacher_logits, target)
    temperature = _check_number("temperature", temperature, 0.0, 1000.0, open_low=True)
    alpha = _check_number("alpha", alpha, 0.0, 1.0, open_low=False)
    check_choice("reduction", reduction, REDUCTIONS)
    eps = check_label_smoothing(label_smoothing)

    valid = target != ignore_index  # (N,)
    # Ignored rows are padding: whatever they hold (NaN, all -inf) is replaced by 0 before any
    # math, by a select (a product with 0 would keep a NaN, and the backward of a softmax over a
    # NaN row is NaN even when the row's loss is then selected away). So an ignored student
    # row gets an exact zero gradient and an ignored teacher row never reaches a check.
    keep = valid[:, None]  # (N, 1)
    z_s = torch.where(keep, student_logits, 0)  # (N, C)
    with torch.no_grad():
        cdt = torch.float64 if z_s.dtype == torch.float64 else torch.float32
        z_t = torch.where(keep, teacher_logits.detach(), 0).to(cdt)  # (N, C)
        p_t = torch.softmax(z_t / temperature, dim=1)
        bad = valid & ~torch.isfinite(p_t).all(dim=1)  # (N,)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ValueError(
                "teacher_logits must have a finite softmax in every row that is not ignored "
                f"(NaN, +inf or all -inf give none), got row {row} = "
                f"{teacher_logits[row].tolist()[:8]}"
            )
        p_t = p_t.to(z_s.dtype)  # soft targets in the student's dtype, (N, C)
    # soft term: KL(p_t || softmax(z_s / T)) per row (soft targets have no ignore_index)
    soft = cross_entropy(z_s / temperature, p_t, reduction="none", kl=True)  # (N,)
    assert isinstance(soft, torch.Tensor)  # one tensor without return_nll=True
    soft = torch.where(valid, soft, 0)
    hard = cross_entropy(
        z_s, target, ignore_index=ignore_index, reduction="none", label_smoothing=eps
    )  # (N,), 0 on ignored rows
    assert isinstance(hard, torch.Tensor)
    rows = alpha * temperature**2 * soft + (1.0 - alpha) * hard  # (N,)
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "sum":
        return total
    return total / valid.sum().clamp(min=1).to(total.dtype)
