"""Temperature scaling (Guo et al. 2017): one scalar T fitted on held-out logits by NLL."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from labelsmooth.metrics._checks import _prepare_logits

__all__ = ["fit_temperature"]

T_MIN = 0.05
T_MAX = 20.0


def _nll(z: Tensor, target: Tensor, masked: Tensor | None, log_t: Tensor) -> Tensor:
    """Mean NLL of ``softmax(z / T)`` with T = exp(log_t), masked classes left out.

    ``z`` (N, C) holds 0 where ``masked`` (N, C) is True, so that the product below and its
    gradient stay finite there (a -inf times T's derivative would be NaN); the masked classes
    then get the logit -inf, probability 0 at every T, and contribute nothing to the gradient.
    """
    scaled = z * torch.exp(-log_t)  # (N, C)
    if masked is not None:
        scaled = scaled.masked_fill(masked, float("-inf"))
    return F.cross_entropy(scaled, target)


def fit_temperature(
    logits: Tensor,
    target: Tensor,
    *,
    ignore_index: int | None = None,
    max_iter: int = 100,
) -> float:
    """Fit the temperature T minimizing the NLL of ``softmax(logits / T)`` on held-out data.

    .. math::
        T^\\star = \\operatorname{clamp}\\Big(\\arg\\min_{T>0} \\frac{1}{N}\\sum_i
        \\Big[\\log\\sum_{c:\\,z_{ic}>-\\infty} e^{z_{ic}/T} - z_{i y_i}/T\\Big],\\ 0.05,\\ 20\\Big)

    The NLL is convex in 1/T, hence unimodal in log T, so clamping the unconstrained minimizer is
    the constrained minimizer. It is found by L-BFGS (strong Wolfe line search) over
    :math:`\\log T` from :math:`\\log T = 0`, in float64 on the logits' device (CPU for MPS),
    which is deterministic on CPU. Each row is first shifted by its largest logit (softmax does
    not change), so large logits do not overflow at small T.

    A ``-inf`` logit masks its class: it has probability 0 at every T, and T is fitted on the
    remaining (finite) classes of each row. NaN and ``+inf`` logits, rows whose logits are all
    ``-inf`` and targets whose logit is ``-inf`` (infinite NLL at every T) raise a
    ``ValueError``; entries with ``target == ignore_index`` are left out before any check.

    Degenerate cases never give NaN or inf: when every target is a top prediction the NLL keeps
    falling as T → 0, and 0.05 is returned directly (without L-BFGS, which would stop wherever
    the NLL becomes numerically flat); when the NLL keeps falling as T → ∞ (e.g. every
    prediction wrong) the minimizer is clamped to 20. Constant logits (or C = 1), where T does
    not matter, give T = 1.

    The fit runs with autograd enabled whatever the caller's mode: it works under
    ``torch.no_grad()`` and ``torch.inference_mode()``, also for tensors created in inference
    mode (they are copied, never modified).

    Args:
        logits: (N, C) or (N, C, d1, …) held-out logits, any floating dtype (not modified).
        target: (N,) or (N, d1, …) integer class indices.
        ignore_index: entries whose target equals it are left out.
        max_iter: maximum number of L-BFGS iterations.

    Returns:
        T as a Python float in [0.05, 20].

    Raises:
        ValueError: bad shapes, ``max_iter < 1``, no non-ignored sample, NaN or ``+inf`` logits,
            a row of only ``-inf``, or a target class whose logit is ``-inf``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> true = torch.randn(2000, 5, generator=g)
        >>> y = torch.multinomial(true.softmax(1), 1, generator=g).squeeze(1)
        >>> round(fit_temperature(3.0 * true, y), 1)  # overconfident by a factor 3
        3.0
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got max_iter={max_iter!r}")
    z, y = _prepare_logits(logits, target, ignore_index)  # (N, C), (N,); values checked
    if y.numel() == 0:
        raise ValueError("fit_temperature needs at least one non-ignored target, got none")
    device = torch.device("cpu") if z.device.type == "mps" else z.device  # MPS has no float64
    z, y, masked = _shifted_logits(z.detach().to(device=device, dtype=torch.float64), y.to(device))
    lowest = z.amin(1) if masked is None else z.masked_fill(masked, float("inf")).amin(1)  # (N,)
    if z.shape[1] == 1 or bool((lowest == 0).all()):
        return 1.0  # every row constant over its finite classes: the NLL does not depend on T
    # best non-target class (masked ones excluded), (N,)
    others = z if masked is None else z.masked_fill(masked, float("-inf"))
    others = others.scatter(1, y.unsqueeze(1), float("-inf")).amax(1)
    if bool((z.gather(1, y.unsqueeze(1)).squeeze(1) >= others).all()):
        # every target is a top prediction: d NLL / d(1/T) = mean(E_p[z] - z_y) < 0 for all T,
        # the NLL falls all the way to T -> 0 (numerically flat long before), so take the bound
        return T_MIN

    lo, hi = math.log(T_MIN), math.log(T_MAX)
    value = _minimize_log_temperature(z, y, masked, max_iter, lo, hi)
    if not math.isfinite(value):
        # the line search ran into overflow: the minimum is at one of the ends
        with torch.no_grad():
            ends = [
                float(_nll(z, y, masked, torch.tensor(e, dtype=torch.float64, device=device)))
                for e in (lo, hi)
            ]
        value = lo if ends[0] <= ends[1] else hi
    if value <= lo:
        return T_MIN
    if value >= hi:
        return T_MAX
    return math.exp(value)


def _shifted_logits(z: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Shift each row of float64 ``z`` (N, C) to a maximum of 0 and find the masked classes.

    Returns ``z`` with 0 at the masked (-inf) classes (see :func:`_nll`), ``y`` and the
    (N, C) mask, or None when no class is masked. A -inf target logit raises.
    """
    z = z - z.amax(1, keepdim=True)  # row max 0 (finite: checked by _prepare_logits)
    is_masked = z == float("-inf")  # (N, C); -inf stays -inf
    if not bool(is_masked.any()):
        return z, y, None
    z_y = z.gather(1, y.unsqueeze(1)).squeeze(1)  # (N,)
    if bool((z_y == float("-inf")).any()):
        row = int((z_y == float("-inf")).nonzero()[0, 0])
        raise ValueError(
            "logits must be finite at the target class (a -inf target logit makes the NLL "
            "infinite at every temperature), got -inf at the target of non-ignored entry "
            f"{row}"
        )
    return z.masked_fill(is_masked, 0.0), y, is_masked


def _minimize_log_temperature(
    z: Tensor, y: Tensor, masked: Tensor | None, max_iter: int, lo: float, hi: float
) -> float:
    """log T minimizing :func:`_nll` by L-BFGS from log T = 0 (may be non-finite on overflow).

    Stops after ``max_iter`` iterations, when log T no longer moves, or once it is well past
    one of the bounds ``lo``, ``hi`` (the caller clamps).
    """
    # callers often sit under no_grad / inference_mode (evaluation code): switch both off here,
    # and copy inference tensors (they cannot be saved for backward)
    with torch.inference_mode(False), torch.enable_grad():
        if z.is_inference():
            z = z.clone()
        if y.is_inference():
            y = y.clone()
        if masked is not None and masked.is_inference():
            masked = masked.clone()
        log_t = torch.zeros((), dtype=torch.float64, device=z.device, requires_grad=True)
        chunk = min(max_iter, 10)
        opt = torch.optim.LBFGS(
            [log_t],
            lr=1.0,
            max_iter=chunk,
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            opt.zero_grad()
            loss = _nll(z, y, masked, log_t)
            loss.backward()
            return loss

        # L-BFGS in chunks of <= 10 iterations (its history carries over), so that a run towards
        # T -> 0 or T -> inf, where the gradient fades slowly, stops once well past a bound
        done = 0
        while done < max_iter:
            previous = float(log_t.detach())
            opt.step(closure)
            done += chunk
            value = float(log_t.detach())
            if not lo - 1.0 < value < hi + 1.0 or abs(value - previous) <= 1e-12:
                break
    return float(log_t.detach())
