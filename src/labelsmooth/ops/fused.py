"""Fused blockwise label-smoothed cross-entropy: the autograd Function and its block driver.

The forward pass walks over the logits in blocks of rows. For each row it computes the
statistics of :mod:`labelsmooth.ops.rowmath` (max, sum of exponentials, target logit and
smoothing sum, both relative to the max), and — unless asked for statistics only — the
gradient ``g_p·p − g_a·a − g_y·onehot(y)``, written once into a buffer of the input's shape and
dtype. The loss comes from the statistics (:func:`rowmath.loss_from_stats`); nothing of size
(N, C) besides the gradient is allocated. Backward only scales the saved gradient.

With ``inplace_backward=True`` the forward pass computes the statistics only, and backward
computes the gradient from the (still intact) logits straight into their storage, then bumps
their version counter: every use of the logits after the loss reads the logits, and a use
whose backward would run after this one (it saved the logits earlier) raises instead of
reading the gradient. Extra memory is O(N); the price is a second read of the logits.

Rows are done by the C kernel (:mod:`labelsmooth.ops.cpu.kernel`) for CPU float32, bfloat16
and (through a float32 block buffer) float16 and N-D inputs, shared out to a pool of Python
threads (:mod:`labelsmooth.ops.cpu.runtime`); otherwise (other devices, float64, the kernel
unavailable or switched off) by a handful of eager torch ops per block in the calling thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from labelsmooth.ops import rowmath
from labelsmooth.ops.cpu import kernel as cpu_kernel
from labelsmooth.ops.cpu import runtime as _cpu_runtime
from labelsmooth.ops.reference import compute_dtype
from labelsmooth.ops.rowmath import RowStats

__all__ = [
    "FusedOptions",
    "Rows",
    "begin_backward",
    "cross_entropy_fused",
    "row_statistics",
    "BLOCK_BYTES",
]

#: Target size in bytes of one block of (compute-dtype) logits: fits in a core's L2 cache.
BLOCK_BYTES = 1 << 21


@dataclass(frozen=True)
class FusedOptions:
    """The non-tensor arguments of one fused call (validated by the caller)."""

    ignore_index: int
    reduction: str
    eps: float
    convention: str
    kl: bool
    inplace_backward: bool = False
    uniform_prior: bool = False  # u_k = 1/C (no prior, no class mask): scalar coefficients


@dataclass
class Rows:
    """Per-row inputs of the row kernels: targets (-1 for ignored rows) and, for a gradient,
    its coefficients g_p, g_a, g_y (compute dtype); ``a`` (C,) or its constant value ``a0``."""

    y: torch.Tensor
    a: torch.Tensor
    a0: float | None
    g_p: torch.Tensor | None = None
    g_a: torch.Tensor | None = None
    g_y: torch.Tensor | None = None


def _use_native(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and compute_dtype(x.dtype) == torch.float32
        and cpu_kernel.native_unavailable(x.device) is None
    )


def row_statistics(x: torch.Tensor, rows: Rows, grad: torch.Tensor | None) -> RowStats:
    """Statistics of every row of ``x`` ((M, C) or (N, C, d...), contiguous) and, if ``grad``
    is given (``x``'s shape and dtype, may be ``x`` itself), the gradient written into it.
    Statistics are in the compute dtype; ignored rows get the neutral ones."""
    C = x.shape[1]
    M = rows.y.shape[0]
    cdt, dev = compute_dtype(x.dtype), x.device
    stats = RowStats(*(torch.empty(M, dtype=cdt, device=dev) for _ in range(4)))
    if M == 0:
        return stats
    native = _use_native(x)
    if native and x.dim() == 2 and x.dtype in cpu_kernel.native_dtypes():
        # rows straight from the logits into the gradient (bfloat16 is converted in the
        # kernel): a few row ranges on the pool, no block buffer
        cpu_kernel.check_targets(rows.y, C)  # once, here: the workers run no torch op
        threads = torch.get_num_threads()
        n_units = max(1, min(4 * threads, M * C // (1 << 17)))
        bounds = [M * k // n_units for k in range(n_units + 1)]

        def unit(k: int) -> None:
            r0, r1 = bounds[k], bounds[k + 1]
            gb = None if grad is None else grad[r0:r1]
            _kernel_rows(x[r0:r1], gb, rows, r0, r1, stats, targets_checked=True)

        _cpu_runtime.run_parallel(unit, n_units, threads)
        return stats

    rows_per_block = max(1, BLOCK_BYTES // (C * torch.finfo(cdt).bits // 8))
    buf = torch.empty(min(rows_per_block, M), C, dtype=cdt, device=dev)
    grad_views = _blocks(grad, rows_per_block) if grad is not None else None
    with torch.no_grad():
        for r0, r1, xb in _blocks(x, rows_per_block):
            gb = None if grad_views is None else next(grad_views)[2]
            if native:  # float16 or N-D: through the float32 buffer
                tmp = buf[: r1 - r0]
                tmp.copy_(xb)
                _kernel_rows(tmp, None if gb is None else tmp, rows, r0, r1, stats)
                if gb is not None:
                    gb.copy_(tmp)
            else:
                _eager_block(xb, gb, buf[: r1 - r0], rows, r0, r1, stats)
    return stats


def _blocks(x: torch.Tensor, rows_per_block: int):
    """Yield (row_start, row_stop, view) over the rows of x, each view (B, C) possibly strided.

    2-D input: row blocks. N-D input (N, C, D...): per sample, chunks of positions, viewed
    transposed as (B, C) (a strided view; the caller copies it into a block buffer).
    """
    if x.dim() == 2:
        M = x.shape[0]
        for r0 in range(0, M, rows_per_block):
            r1 = min(M, r0 + rows_per_block)
            yield r0, r1, x[r0:r1]
        return
    N, C = x.shape[0], x.shape[1]
    x3 = x.reshape(N, C, -1)  # a view for contiguous inputs
    D = x3.shape[2]
    for n in range(N):
        for d0 in range(0, D, rows_per_block):
            d1 = min(D, d0 + rows_per_block)
            yield n * D + d0, n * D + d1, x3[n, :, d0:d1].t()


def _kernel_rows(
    xb: torch.Tensor,
    gb: torch.Tensor | None,
    rows: Rows,
    r0: int,
    r1: int,
    out: RowStats,
    targets_checked: bool = False,
) -> None:
    """The C kernel on rows r0:r1 (logits ``xb``, gradient ``gb``, both (B, C))."""
    sl = slice(r0, r1)
    zeros = out.m[sl]  # any float32 vector: the coefficients are not read without a gradient
    g_p, g_a, g_y = (
        (rows.g_p[sl], rows.g_a[sl], rows.g_y[sl])
        if rows.g_p is not None and rows.g_a is not None and rows.g_y is not None
        else (zeros, zeros, zeros)
    )
    cpu_kernel.rows(
        xb, gb, rows.y[sl], None if rows.a0 is not None else rows.a, rows.a0 or 0.0,
        g_p, g_a, g_y, out.m[sl], out.s[sl], out.d_y[sl], out.S[sl],
        targets_checked=targets_checked,
    )  # fmt: skip


def _eager_block(
    xb: torch.Tensor,
    gb: torch.Tensor | None,
    buf: torch.Tensor,
    rows: Rows,
    r0: int,
    r1: int,
    out: RowStats,
) -> None:
    """Statistics (and gradient into ``gb``) of rows r0:r1 with eager torch ops."""
    cdt = buf.dtype
    y = rows.y[r0:r1]
    valid = (y >= 0)[:, None]
    ys = y.clamp_min(0)[:, None]
    xf = xb if (xb.dtype == cdt and xb.is_contiguous()) else buf.copy_(xb)
    m = xf.amax(1, keepdim=True)
    m = torch.where(m == float("-inf"), 0, m)  # a row of -inf only: exp(-inf - 0) = 0
    d_y = xf.gather(1, ys) - m
    # the block's working copy: the gradient block when it can hold it (it may be the logits
    # block itself with inplace_backward; the statistics above were read first), else buf
    direct = gb is not None and gb.dtype == cdt and gb.is_contiguous()
    work = gb if direct else buf
    assert work is not None
    torch.sub(xf, m, out=work)  # x - m
    if rows.a0 is not None:
        S = work.sum(1, keepdim=True) * rows.a0
    else:
        a = rows.a
        S = (torch.where(a != 0, work, 0) @ a)[:, None]  # skip a_k = 0: 0 * -inf is NaN
    work.exp_()
    s = work.sum(1, keepdim=True)
    out.m[r0:r1] = torch.where(valid, m, 0).squeeze(1)
    out.s[r0:r1] = torch.where(valid, s, 1).squeeze(1)
    out.d_y[r0:r1] = torch.where(valid, d_y, 0).squeeze(1)
    out.S[r0:r1] = torch.where(valid, S, 0).squeeze(1)
    if gb is None:
        return
    assert rows.g_p is not None and rows.g_a is not None and rows.g_y is not None
    g_p, g_a, g_y = rows.g_p[r0:r1, None], rows.g_a[r0:r1, None], rows.g_y[r0:r1, None]
    work.mul_(g_p / s)
    if rows.a0 is not None:
        work.sub_(g_a * rows.a0)
    else:
        work.sub_(g_a * rows.a)
    work.scatter_add_(1, ys, -g_y)
    work.masked_fill_(~valid, 0)  # ignored rows: exactly 0, whatever their logits hold
    if work is not gb:
        gb.copy_(work)


def begin_backward(ctx: Any, impl: str) -> tuple[torch.Tensor, ...]:
    """The saved tensors of a fused-style Function's one and only backward.

    Its gradient was computed without a graph (so no double backward) and is scaled or
    written in place (so no second backward through the same loss): both raise, pointing to
    ``impl='reference'``, which supports them.
    """
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"impl={impl!r} does not support double backward (create_graph=True): its "
            "gradient is computed without a graph; use impl='reference'"
        )
    if ctx.consumed:
        raise RuntimeError(
            f"impl={impl!r} cannot backward twice through the same loss (retain_graph=True): "
            "the gradient is produced in place; use impl='reference'"
        )
    ctx.consumed = True
    saved: tuple[torch.Tensor, ...] = ctx.saved_tensors
    return saved


class _FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        input: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        u: torch.Tensor,
        opt: FusedOptions,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cdt = compute_dtype(input.dtype)
        x = input if input.is_contiguous() else input.contiguous()
        plan = rowmath.plan_rows(
            target, weight, u, ignore_index=opt.ignore_index, eps=opt.eps,
            convention=opt.convention, reduction=opt.reduction, uniform_prior=opt.uniform_prior,
        )  # fmt: skip
        rows = Rows(y=plan.y, a=plan.a.to(cdt), a0=plan.a0)
        need_grad = ctx.needs_input_grad[0]
        if need_grad:
            g_p, g_y, g_a = plan.grad_coefficients()
            rows.g_p, rows.g_a, rows.g_y = g_p.to(cdt), g_a.to(cdt), g_y.to(cdt)
        grad = None
        if need_grad and not opt.inplace_backward:
            grad = _cpu_runtime.empty_like_gradient(x)
        stats = row_statistics(x, rows, grad)
        out, nll = rowmath.finish(
            stats, plan, weight, u, kl=opt.kl, reduction=opt.reduction, shape=target.shape
        )

        ctx.reduction = opt.reduction
        ctx.inplace = opt.inplace_backward
        ctx.consumed = False
        if need_grad:
            if opt.inplace_backward:
                ctx.rows = rows
                ctx.save_for_backward(x)  # version-checked: a later in-place change raises
            else:
                ctx.save_for_backward(grad)
        nll = nll.to(cdt)
        ctx.mark_non_differentiable(nll)
        return out.to(input.dtype), nll

    @staticmethod
    def backward(
        ctx: Any, grad_output: torch.Tensor, _grad_nll: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, ...]:
        (saved,) = begin_backward(ctx, "fused")
        per_row = ctx.reduction == "none"
        if ctx.inplace:
            # scale the O(N) coefficients, then one pass writes the gradient into the logits
            rows: Rows = ctx.rows
            assert rows.g_p is not None and rows.g_a is not None and rows.g_y is not None
            go = grad_output.reshape(-1) if per_row else grad_output.reshape(())
            go = go.to(rows.g_p.dtype)
            rows.g_p, rows.g_a, rows.g_y = rows.g_p * go, rows.g_a * go, rows.g_y * go
            row_statistics(saved, rows, saved)
            torch.autograd.graph.increment_version(saved)
            return saved, None, None, None, None
        grad = saved
        if per_row:  # (N, C, d...) * (N, 1, d...)
            grad.mul_(grad_output.unsqueeze(1).to(grad.dtype))
        elif grad_output.device.type != "cpu" or float(grad_output) != 1.0:
            grad.mul_(grad_output.to(grad.dtype))
        return grad, None, None, None, None


def cross_entropy_fused(
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
    inplace_backward: bool = False,
    uniform_prior: bool = False,
    return_nll: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fused label-smoothed cross-entropy for class-index targets (arguments validated).

    Same arguments and result as :func:`labelsmooth.ops.reference.cross_entropy_reference`
    (soft targets are refused by the registry before this is called).

    Args:
        inplace_backward: backward writes the gradient into ``input``'s storage (the logits
            are overwritten during backward; extra memory O(N)). A non-contiguous input is
            first copied, and the copy is overwritten instead.
        uniform_prior: the caller guarantees that ``u`` is uniform (no prior, no class
            mask), which makes every row's coefficients the same scalars: less O(N) work.
        return_nll: also return the per-row unsmoothed NLL (as the reference does).
    """
    opt = FusedOptions(
        ignore_index, reduction, label_smoothing, convention, kl, inplace_backward, uniform_prior
    )
    out, nll = _FusedCrossEntropy.apply(input, target, weight, u, opt)
    return (out, nll) if return_nll else out
