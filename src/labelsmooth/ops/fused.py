"""The fused family's CPU and generic row driver: statistics and gradient of many rows.

The forward pass walks over the logits in blocks of rows. For each row it computes the
statistics of :mod:`labelsmooth.ops.rowmath` (max, sum of exponentials, target logit and
smoothing sum, both relative to the max), and — unless asked for statistics only — the
gradient ``g_p·p − g_a·a − g_y·onehot(y)``, written once into a buffer of the input's shape and
dtype. The loss comes from the statistics (:func:`rowmath.loss_from_stats`); nothing of size
(N, C) besides the gradient is allocated. The op that calls it, its autograd formula and
``inplace_backward`` live in :mod:`labelsmooth.ops.library`.

Rows are done by the C kernel (:mod:`labelsmooth.ops.cpu.kernel`) for CPU float32, bfloat16
and (through a float32 block buffer) float16 and N-D inputs, shared out to a pool of Python
threads (:mod:`labelsmooth.ops.cpu.runtime`); otherwise (other devices, float64, the kernel
unavailable or switched off) by a handful of eager torch ops per block: CPU rows on the same
pool, each worker's ops on its own thread (no OpenMP team), other devices in the calling thread.
"""

from __future__ import annotations

import torch

from labelsmooth.ops.cpu import kernel as cpu_kernel
from labelsmooth.ops.cpu import runtime as _cpu_runtime
from labelsmooth.ops.reference import compute_dtype
from labelsmooth.ops.rowmath import Rows, RowStats

__all__ = ["statistics", "row_statistics", "gradient_into", "BLOCK_BYTES"]

#: Target size in bytes of one block of (compute-dtype) logits: fits in a core's L2 cache.
BLOCK_BYTES = 1 << 21


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
        threads = torch.get_num_threads()
        n_units = max(1, min(4 * threads, M * C // (1 << 17)))
        # every argument checked once, here: the workers run no torch op
        launch = _launcher(x, grad, rows, stats, n_units)
        if n_units == 1:
            launch(0, M)
            return stats
        bounds = [M * k // n_units for k in range(n_units + 1)]
        _cpu_runtime.run_parallel(lambda k: launch(bounds[k], bounds[k + 1], k), n_units, threads)
        return stats

    rows_per_block = max(1, BLOCK_BYTES // (C * torch.finfo(cdt).bits // 8))
    if not native and x.dim() == 2 and dev.type == "cpu":
        _eager_on_pool(x, grad, rows, stats, rows_per_block)
        return stats
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


def _eager_on_pool(
    x: torch.Tensor, grad: torch.Tensor | None, rows: Rows, stats: RowStats, rows_per_block: int
) -> None:
    """The eager blocks of CPU rows, a few row ranges at once on the pool, whose workers run
    each torch op on their own thread: one op forking an OpenMP team per block made every
    block wait at the team's barriers, 20-50 s a step on a busy 2-core machine."""
    M, C = x.shape
    threads = torch.get_num_threads()
    n_units = max(1, min(4 * threads, -(-M // rows_per_block)))
    bounds = [M * k // n_units for k in range(n_units + 1)]
    inference = torch.is_inference_mode_enabled()  # per thread, like grad mode: passed on

    def unit(k: int) -> None:
        buf = torch.empty(min(rows_per_block, bounds[k + 1] - bounds[k]), C, dtype=stats.m.dtype)
        with torch.inference_mode(inference), torch.no_grad():
            for r0 in range(bounds[k], bounds[k + 1], rows_per_block):
                r1 = min(bounds[k + 1], r0 + rows_per_block)
                gb = None if grad is None else grad[r0:r1]
                _eager_block(x[r0:r1], gb, buf[: r1 - r0], rows, r0, r1, stats)

    _cpu_runtime.run_parallel(unit, n_units, threads, torch_ops=True)


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


def _launcher(
    x: torch.Tensor, grad: torch.Tensor | None, rows: Rows, out: RowStats, slots: int
) -> cpu_kernel.Launch:
    """The C kernel's checked launch over all rows of ``x`` (gradient into ``grad``)."""
    zeros = out.m  # any float32 vector: the coefficients are not read without a gradient
    g_p, g_a, g_y = (
        (rows.g_p, rows.g_a, rows.g_y)
        if rows.g_p is not None and rows.g_a is not None and rows.g_y is not None
        else (zeros, zeros, zeros)
    )
    return cpu_kernel.launcher(
        x, grad, rows.y, None if rows.a0 is not None else rows.a, rows.a0 or 0.0,
        g_p, g_a, g_y, *out, slots=slots,
    )  # fmt: skip


def _kernel_rows(
    xb: torch.Tensor,
    gb: torch.Tensor | None,
    rows: Rows,
    r0: int,
    r1: int,
    out: RowStats,
) -> None:
    """The C kernel on rows r0:r1 (logits ``xb``, gradient ``gb``, both (B, C))."""
    sl = slice(r0, r1)
    zeros = out.m[sl]  # any float32 vector: the coefficients are not read without a gradient
    g_p, g_a, g_y = (
        (rows.g_p[sl], rows.g_a[sl], rows.g_y[sl])
        if rows.g_p is not None and rows.g_a is not None and rows.g_y is not None
        else (zeros, zeros, zeros)
    )
    launch = cpu_kernel.launcher(
        xb, gb, rows.y[sl], None if rows.a0 is not None else rows.a, rows.a0 or 0.0,
        g_p, g_a, g_y, out.m[sl], out.s[sl], out.d_y[sl], out.S[sl],
    )  # fmt: skip
    launch(0, xb.shape[0])


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
    a = rows.a if rows.a.dim() == 1 else rows.a[ys[:, 0]]  # (C,), or (B, C): each row's a[y]
    if rows.a0 is not None:
        S = work.sum(1, keepdim=True) * rows.a0
    elif a.dim() == 1:
        S = (torch.where(a != 0, work, 0) @ a)[:, None]  # skip a_k = 0: 0 * -inf is NaN
    else:
        S = (torch.where(a != 0, work, 0) * a).sum(1, keepdim=True)
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
        work.sub_(g_a * a)
    work.scatter_add_(1, ys, -g_y)
    work.masked_fill_(~valid, 0)  # ignored rows: exactly 0, whatever their logits hold
    if work is not gb:
        gb.copy_(work)


#: The row-backend interface of labelsmooth._dispatch.ROW_BACKENDS.
statistics = row_statistics


def gradient_into(x: torch.Tensor, rows: Rows, stats: RowStats | None) -> None:
    """``inplace_backward``: the gradient (coefficients already scaled by the incoming
    gradient) written into the logits ``x`` themselves. The statistics are recomputed from the
    still intact row before it is overwritten (``stats`` is not needed)."""
    row_statistics(x, rows, x)
