"""``impl="triton"``: the launchers of the Triton row kernels (the row backend "triton").

The kernels (:mod:`labelsmooth.ops.triton.kernels`, imported on the first call, never by
``import labelsmooth``) compute the statistics of :mod:`labelsmooth.ops.rowmath` per row in one
streaming pass (online log-sum-exp), and the gradient ``g_p·p − g_a·a − g_y·onehot(y)``. The
loss is assembled from the statistics by rowmath and the op of :mod:`labelsmooth.ops.library`
(the same op and autograd formula as the CPU path), and the per-row coefficients stay on the
device: no host synchronization anywhere in a call.

* :func:`statistics`: one launch computes the statistics and, if asked, writes the gradient
  (a second pass over each row, often from the L2 cache) into a buffer of the logits' shape.
* :func:`gradient_into` (``inplace_backward=True``): the gradient from the forward's saved
  statistics straight into the logits' storage in one pass.

Every launch goes through ``torch.library.wrap_triton(kernel)[grid](...)`` when a tracer or
dispatch mode sees the call (the body of the ``triton_op`` ``labelsmooth::triton_cross_entropy``
under ``torch.compile``: Inductor then sees the kernel), and launches the kernel itself for
plain tensors (a plain eager call: no higher-order-op dispatch per launch).

CUDA tensors; CPU tensors only under the Triton interpreter (``TRITON_INTERPRET=1`` set before
the first call), which is how the tests run on machines without a GPU.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from labelsmooth.ops.reference import compute_dtype
from labelsmooth.ops.rowmath import Rows, RowStats
from labelsmooth.ops.tracing import runs_plain_eager

__all__ = ["statistics", "gradient_into", "MAX_BLOCK", "NUM_WARPS"]

#: Classes per block of the streaming loop (a power of two; smaller rows use one block of
#: their own size rounded up); None: 8192 for 4-byte logits and 4096 for 2-byte ones, with 8
#: warps the fastest settings measured on an H200 (benchmarks/results/gpu.md: 6.97 ms fp32,
#: 4.29 ms bf16 at 16384 x 131072, against 8.31 / 6.26 ms with 8192 classes and 16 warps).
#: Tests shrink it to get several blocks and a ragged last one.
MAX_BLOCK: int | None = None
#: Warps per program (one program per row); None: 8, fewer for blocks under 2048 classes.
NUM_WARPS: int | None = None


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


def _launcher(kernel: Any, x: torch.Tensor) -> Any:
    """``kernel`` for plain eager tensors, else ``torch.library.wrap_triton(kernel)`` (which is
    ``kernel`` itself under the interpreter or inside an eager ``triton_op`` call)."""
    return kernel if runs_plain_eager(x) else torch.library.wrap_triton(kernel)


def _next_power_of_2(n: int) -> int:
    """Smallest power of two ≥ n (at least 16, Triton's smallest useful block)."""
    return max(16, 1 << (n - 1).bit_length())


def _a_vector(rows: Rows, x: torch.Tensor) -> tuple[bool, float, int]:
    """(HAS_A, a0, LDA): the constant a_k is a kernel float argument (float32), so float64
    logits always take the vector; LDA = C for the (C, C) a of a class-conditional prior (a
    row reads row y), 0 for a vector."""
    if rows.a0 is not None and x.dtype != torch.float64:
        return False, rows.a0, 0
    return True, 1.0, rows.a.shape[1] if rows.a.dim() == 2 else 0


def statistics(x: torch.Tensor, rows: Rows, grad: torch.Tensor | None) -> RowStats:
    """Statistics of every row of ``x`` (compute dtype; neutral for ignored rows) and, if
    ``grad`` is given (x's shape and dtype), the gradient written into it."""
    k, M, C, D, launch = _launch_setup(x)
    cdt = compute_dtype(x.dtype)
    stats = RowStats(*(torch.empty(M, dtype=cdt, device=x.device) for _ in range(4)))
    if M == 0:
        return stats
    has_a, a0, lda = _a_vector(rows, x)
    a = rows.a if has_a else stats.m  # any pointer: not read without HAS_A
    if grad is not None:
        assert rows.g_p is not None and rows.g_a is not None and rows.g_y is not None
        gp, ga, gy = rows.g_p, rows.g_a, rows.g_y
    else:
        gp = ga = gy = stats.m  # not read without WRITE_GRAD
    _launcher(k.forward_kernel, x)[(M,)](
        x, x if grad is None else grad, rows.y, a, lda, a0, gp, ga, gy, *stats, C, D,
        HAS_A=has_a, WRITE_GRAD=grad is not None, **launch,
    )  # fmt: skip
    return stats


def gradient_into(x: torch.Tensor, rows: Rows, stats: RowStats | None) -> None:
    """``inplace_backward``: the gradient of every row (coefficients already scaled by the
    incoming gradient) from the forward's statistics (m, s), written into ``x`` itself.
    Without ``stats`` they are first recomputed (one more read of the logits)."""
    if stats is None:
        stats = statistics(x, rows, None)
    k, M, C, D, launch = _launch_setup(x)
    if M == 0:
        return
    assert rows.g_p is not None and rows.g_a is not None and rows.g_y is not None
    has_a, a0, lda = _a_vector(rows, x)
    one = torch.ones(1, dtype=rows.g_p.dtype, device=x.device)  # the factor is in the rows
    _launcher(k.gradient_kernel, x)[(M,)](
        x, x, rows.y, rows.a if has_a else stats.m, lda, a0,
        rows.g_p, rows.g_a, rows.g_y, stats.m, stats.s, one, 0, C, D,
        HAS_A=has_a, **launch,
    )  # fmt: skip
