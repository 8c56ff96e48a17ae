"""``impl="triton"``: label-smoothed cross-entropy by Triton kernels, launchers and the
autograd Function.

The kernels (:mod:`labelsmooth.ops.triton.kernels`, imported on the first call, never by
``import labelsmooth``) compute the statistics of :mod:`labelsmooth.ops.rowmath` per row in one
streaming pass (online log-sum-exp), and the gradient ``g_p·p − g_a·a − g_y·onehot(y)``. The
loss is assembled from the statistics by rowmath, exactly as in :mod:`labelsmooth.ops.fused`,
and the per-row coefficients stay on the device: no host synchronization anywhere in a call.

* Default: the forward launch writes the gradient (a second pass over each row, often from
  the L2 cache) into a buffer of the logits' shape; backward multiplies it by the incoming
  gradient, a row at a time, skipping (on the device) rows whose factor is exactly 1.
* ``inplace_backward=True``: forward computes the statistics only (reads the logits once);
  backward writes the gradient from the saved statistics straight into the logits' storage
  in one pass and bumps their version counter, with fused's semantics: extra memory O(N).

CUDA tensors; CPU tensors only under the Triton interpreter (``TRITON_INTERPRET=1`` set before
the first call), which is how the tests run on machines without a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from labelsmooth.ops import rowmath
from labelsmooth.ops.fused import FusedOptions, begin_backward
from labelsmooth.ops.reference import compute_dtype
from labelsmooth.ops.rowmath import RowStats

__all__ = ["cross_entropy_triton", "Rows", "MAX_BLOCK", "NUM_WARPS"]

#: Classes per block of the streaming loop (a power of two; smaller rows use one block of
#: their own size rounded up); None: 8192 for 4-byte logits and 4096 for 2-byte ones, with 8
#: warps the fastest settings measured on an H200 (benchmarks/results/gpu.md: 6.97 ms fp32,
#: 4.29 ms bf16 at 16384 x 131072, against 8.31 / 6.26 ms with 8192 classes and 16 warps).
#: Tests shrink it to get several blocks and a ragged last one.
MAX_BLOCK: int | None = None
#: Warps per program (one program per row); None: 8, fewer for blocks under 2048 classes.
NUM_WARPS: int | None = None


@dataclass
class Rows:
    """Per-row kernel inputs, all on the logits' device: targets (-1 where ignored), a (C,)
    in the compute dtype or a0 (the same a_k for every class), gradient coefficients."""

    y: torch.Tensor
    a: torch.Tensor | None
    a0: float
    g_p: torch.Tensor | None = None
    g_a: torch.Tensor | None = None
    g_y: torch.Tensor | None = None


def _kernels() -> Any:
    """The kernel module, imported on first use (imports triton)."""
    from labelsmooth.ops.triton import kernels as _triton_kernels

    return _triton_kernels


def _launch_setup(x: torch.Tensor) -> tuple[Any, int, int, int, dict[str, Any]]:
    """(kernel module, rows M, classes C, positions D, common launch options) for logits x,
    (N, C) or (N, C, d...) contiguous."""
    k = _kernels()
    if x.device.type != ("cpu" if k.INTERPRETED else "cuda"):
        raise RuntimeError(
            f"impl='triton' got a {x.device.type} tensor but its kernels were defined "
            + (
                "under the Triton interpreter (TRITON_INTERPRET=1), which runs CPU tensors only"
                if k.INTERPRETED
                else "for CUDA tensors (set TRITON_INTERPRET=1 before triton is first imported "
                "to run them on CPU tensors)"
            )
        )
    C = x.shape[1]
    D = math.prod(x.shape[2:])  # positions per sample (1 for 2-D input)
    M = x.shape[0] * D
    max_block = MAX_BLOCK if MAX_BLOCK is not None else (4096 if x.element_size() == 2 else 8192)
    block = min(max_block, _next_power_of_2(C))
    acc = k.tl.float64 if x.dtype == torch.float64 else k.tl.float32
    warps = NUM_WARPS if NUM_WARPS is not None else max(1, min(8, block // 256))
    return k, M, C, D, {"BLOCK": block, "ACC": acc, "num_warps": warps}


def _next_power_of_2(n: int) -> int:
    """Smallest power of two ≥ n (at least 16, Triton's smallest useful block)."""
    return max(16, 1 << (n - 1).bit_length())


def _forward(x: torch.Tensor, rows: Rows, grad: torch.Tensor | None) -> RowStats:
    """Statistics of every row of ``x`` (compute dtype; neutral for ignored rows) and, if
    ``grad`` is given (x's shape and dtype), the gradient written into it."""
    k, M, C, D, launch = _launch_setup(x)
    cdt = compute_dtype(x.dtype)
    stats = RowStats(*(torch.empty(M, dtype=cdt, device=x.device) for _ in range(4)))
    if M == 0:
        return stats
    a = rows.a if rows.a is not None else stats.m  # any pointer: not read without HAS_A
    if grad is not None:
        assert rows.g_p is not None and rows.g_a is not None and rows.g_y is not None
        gp, ga, gy = rows.g_p, rows.g_a, rows.g_y
    else:
        gp = ga = gy = stats.m  # not read without WRITE_GRAD
    k.forward_kernel[(M,)](
        x, x if grad is None else grad, rows.y, a, rows.a0, gp, ga, gy, *stats, C, D,
        HAS_A=rows.a is not None, WRITE_GRAD=grad is not None, **launch,
    )  # fmt: skip
    return stats


def _gradient(
    x: torch.Tensor,
    grad: torch.Tensor,
    rows: Rows,
    stats: RowStats,
    go: torch.Tensor,
    per_row: bool,
) -> None:
    """Gradient of every row from saved statistics (m, s), times ``go`` (one value per row
    if ``per_row``, else a scalar), into ``grad`` (may be ``x``)."""
    k, M, C, D, launch = _launch_setup(x)
    if M == 0:
        return
    assert rows.g_p is not None and rows.g_a is not None and rows.g_y is not None
    go_flat, go_stride = _per_row(go, per_row)
    k.gradient_kernel[(M,)](
        x, grad, rows.y, rows.a if rows.a is not None else stats.m, rows.a0,
        rows.g_p, rows.g_a, rows.g_y, stats.m, stats.s, go_flat, go_stride, C, D,
        HAS_A=rows.a is not None, **launch,
    )  # fmt: skip


def _scale(grad: torch.Tensor, go: torch.Tensor, per_row: bool) -> None:
    """grad (the logits' shape) *= go (one value per row if ``per_row``, else a scalar),
    skipping factors of exactly 1 on the device."""
    k, M, C, D, launch = _launch_setup(grad)
    if M == 0:
        return
    go_flat, go_stride = _per_row(go, per_row)
    k.scale_kernel[(M,)](grad, go_flat, go_stride, C, D, **launch)


def _per_row(go: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, int]:
    """The incoming gradient as a 1-D tensor and the element stride between rows: per-row
    values in row order (any strides, an expanded one included), or one value (stride 0)."""
    flat = go.reshape(-1)  # a view when it can be one (stride 0 for an expanded scalar)
    return flat, flat.stride(0) if per_row else 0


class _TritonCrossEntropy(torch.autograd.Function):
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
        # a_k = w_k u_k; the constant 1/C (a Python float, no vector) when every row shares it
        # (float64 logits always take the vector: a kernel float argument is float32)
        if plan.a0 is not None and cdt != torch.float64:
            rows = Rows(y=plan.y, a=None, a0=plan.a0)
        else:
            rows = Rows(y=plan.y, a=plan.a.to(cdt), a0=1.0)

        need_grad = ctx.needs_input_grad[0]
        if need_grad:
            g_p, g_y, g_a = plan.grad_coefficients()
            rows.g_p, rows.g_a, rows.g_y = g_p.to(cdt), g_a.to(cdt), g_y.to(cdt)
        grad = torch.empty_like(x) if need_grad and not opt.inplace_backward else None
        stats = _forward(x, rows, grad)
        out, nll = rowmath.finish(
            stats, plan, weight, u, kl=opt.kl, reduction=opt.reduction, shape=target.shape
        )

        ctx.reduction = opt.reduction
        ctx.inplace = opt.inplace_backward
        ctx.consumed = False
        if need_grad:
            if opt.inplace_backward:
                ctx.rows = rows
                ctx.stats = stats
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
        (saved,) = begin_backward(ctx, "triton")
        per_row = ctx.reduction == "none"
        if ctx.inplace:
            # one pass: the gradient from the forward statistics, into the logits' storage
            _gradient(saved, saved, ctx.rows, ctx.stats, grad_output, per_row)
            torch.autograd.graph.increment_version(saved)
            return saved, None, None, None, None
        _scale(saved, grad_output, per_row)
        return saved, None, None, None, None


def cross_entropy_triton(
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
    """Label-smoothed cross-entropy by the Triton kernels (arguments validated; class-index
    targets). Same arguments and result as
    :func:`labelsmooth.ops.reference.cross_entropy_reference`.

    Args:
        inplace_backward: backward writes the gradient into ``input``'s storage (the logits
            are overwritten during backward; extra memory O(N)). A non-contiguous input is
            first copied, and the copy is overwritten instead.
        uniform_prior: the caller guarantees that ``u`` is uniform (no prior, no class
            mask): every row's coefficients are then the same scalars.
        return_nll: also return the per-row unsmoothed NLL ``log s − d_y`` (0 for ignored
            rows), detached, in the target's shape: ``(loss, nll)``.
    """
    opt = FusedOptions(
        ignore_index, reduction, label_smoothing, convention, kl, inplace_backward, uniform_prior
    )
    out, nll = _TritonCrossEntropy.apply(input, target, weight, u, opt)
    return (out, nll) if return_nll else out
