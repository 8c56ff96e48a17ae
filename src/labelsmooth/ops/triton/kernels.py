"""Triton kernels of label-smoothed cross-entropy (``@triton.jit`` code only; launchers in
:mod:`labelsmooth.ops.triton.launch`). Importing this module imports triton and defines the kernels,
so ``TRITON_INTERPRET=1`` must be set before its first import to run them on CPU tensors.

One program per row. A row ``i`` of the logits, (N, C) or (N, C, D) contiguous, is
``x[n, :, d]`` with ``n = i // D``, ``d = i % D``: it starts at ``n·C·D + d`` and its classes
are ``D`` elements apart (D = 1 for 2-D input; Triton then specializes the stride to 1, and
with C divisible by 16 the loads and stores are 16-byte vectors). Offsets are int64.

Per row, with ``a_k = w_k·u_k`` (the vector ``A``, or row y of the (C, C) matrix ``A`` of a
class-conditional prior when ``LDA`` = C, or the constant ``a0`` for every class when
``HAS_A`` is false), target ``y`` (-1 for an ignored row, whose logits are never read)
and the statistics of :mod:`labelsmooth.ops.rowmath`::

    m   = max_k x_k  (0 if the row is all -inf)     s = Σ_k exp(x_k − m)
    d_y = x_y − m                                   S = Σ_{a_k ≠ 0} a_k (x_k − m)
    grad_k = g_p·exp(x_k − m)/s − g_a·a_k − g_y·[k = y]

Everything is accumulated in ``ACC`` (float32 for float16/bfloat16/float32 logits, float64
for float64) and stored in the output's dtype with one rounding.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["INTERPRETED", "forward_kernel", "gradient_kernel", "scale_kernel"]


@triton.jit
def _row_statistics(
    X, base, stride_c, C, valid, A, HAS_A: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr
):
    """(r, s, S) of one row in a single streaming pass over blocks of BLOCK classes.

    Online log-sum-exp with a running maximum ``m`` shared by the whole block and a running
    reference ``r`` = m (0 while m is -inf, so that a row of -inf gives s = 0, not NaN).
    Every lane keeps partial sums relative to the current r, and ``A_seen`` counts the
    smoothing mass already summed::

        s_lane = Σ_{k in lane} exp(x_k − r)        A_seen = Σ_{k seen} a_k
        S_lane + S_shift = Σ_{k seen, a_k ≠ 0} a_k (x_k − r)   (S_lane per lane, S_shift a scalar)

    When a block raises the reference from r to r' (shift = m − r' ≤ 0; -inf while nothing
    finite was seen) the sums move with it::

        s_lane ← s_lane·exp(shift)                 S_shift ← S_shift + A_seen·shift

    (the shift is selected away while A_seen = 0: 0·(-inf) would be NaN). Terms are relative
    to the running max, never to an absolute value, so a common offset of the logits (1e4,
    1e6) costs no precision. Classes with a_k = 0 are skipped with a select, so a -inf logit on
    a masked class adds nothing to S. Without a vector A, a_k = 1 for every class (so A_seen
    is k0, the number of classes before the block) and the caller multiplies S by a0. A NaN logit
    reaches s (and S) and makes the loss NaN.
    """
    cols = tl.arange(0, BLOCK)
    n_read = tl.where(valid, C, 0)  # an ignored row reads nothing (one compare: a bool mask)
    m = tl.full([], float("-inf"), ACC)
    S_shift = tl.zeros([], ACC)
    A_seen = tl.zeros([], ACC)  # used with HAS_A only
    s_lane = tl.zeros((BLOCK,), ACC)
    S_lane = tl.zeros((BLOCK,), ACC)
    for k0 in range(0, C, BLOCK):
        k = k0 + cols
        inb = k < n_read
        v = tl.load(X + base + k.to(tl.int64) * stride_c, mask=inb, other=float("-inf")).to(ACC)
        m_new = tl.maximum(m, tl.max(v, axis=0))
        r_new = tl.where(m_new == float("-inf"), 0.0, m_new)
        shift = m - r_new
        s_lane = s_lane * tl.exp(shift) + tl.exp(v - r_new)
        # selects before the products: 0·(-inf) is never formed
        if HAS_A:
            S_shift += A_seen * tl.where(A_seen != 0.0, shift, 0.0)
            a = tl.load(A + k, mask=inb, other=0.0).to(ACC)
            S_lane += a * tl.where(a != 0.0, v - r_new, 0.0)
            A_seen += tl.sum(a, axis=0)
        else:  # A_seen = k0, the classes before this block (only the last block is partial)
            S_shift += k0 * tl.where(k0 != 0, shift, 0.0)
            S_lane += tl.where(inb, v - r_new, 0.0)
        m = m_new
    r = tl.where(m == float("-inf"), 0.0, m)
    return r, tl.sum(s_lane, axis=0), tl.sum(S_lane, axis=0) + S_shift


@triton.jit
def _store_gradient(
    X, G, base, stride_c, C, y, valid, A, a0, r, c_p, c_a, c_y,
    HAS_A: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """grad_k = c_p·exp(x_k − r) − c_a·a_k − c_y·[k = y] for one row, stored into G (which may
    be X itself: each element is read before it is written, by this program only).
    ``c_p = g_p / s``. An ignored row (valid false) is not read and gets exactly 0."""
    cols = tl.arange(0, BLOCK)
    n_read = tl.where(valid, C, 0)
    y32 = y.to(tl.int32)  # a class index (< C)
    for k0 in range(0, C, BLOCK):
        k = k0 + cols
        inb = k < C
        v = tl.load(X + base + k.to(tl.int64) * stride_c, mask=k < n_read, other=0.0).to(ACC)
        if HAS_A:
            a = tl.load(A + k, mask=inb, other=0.0).to(ACC)
        else:
            a = a0
        g = tl.exp(v - r) * c_p - c_a * a - tl.where(k == y32, c_y, 0.0)
        g = tl.where(valid, g, 0.0)
        tl.store(G + base + k.to(tl.int64) * stride_c, g.to(G.dtype.element_ty), mask=inb)


@triton.jit
def forward_kernel(
    X, G, Y, A, LDA, a0, GP, GA, GY, M_OUT, S_OUT, DY_OUT, SS_OUT, C, D,
    HAS_A: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Statistics of row ``program_id`` into M_OUT, S_OUT, DY_OUT, SS_OUT (the neutral 0, 1,
    0, 0 for an ignored row) and, with WRITE_GRAD, its gradient into G in a second pass over
    the row (a re-read that the L2 cache often serves). GP, GA, GY: per-row coefficients.
    The row's a is A + y·LDA (LDA = 0: one vector; LDA = C: row y of a (C, C) matrix)."""
    row = tl.program_id(0).to(tl.int64)  # int64 offsets: N·C can pass 2**31
    base = (row // D) * C * D + row % D
    y = tl.load(Y + row)
    valid = y >= 0
    A = A + tl.maximum(y, 0) * LDA
    r, s, S = _row_statistics(X, base, D, C, valid, A, HAS_A, BLOCK, ACC)
    x_y = tl.load(X + base + tl.maximum(y, 0) * D, mask=valid).to(ACC)
    s = tl.where(valid, s, 1.0)
    tl.store(M_OUT + row, tl.where(valid, r, 0.0))
    tl.store(S_OUT + row, s)
    tl.store(DY_OUT + row, tl.where(valid, x_y - r, 0.0))
    tl.store(SS_OUT + row, tl.where(valid, S * a0, 0.0))
    if WRITE_GRAD:
        c_p = tl.load(GP + row).to(ACC) / s
        c_a = tl.load(GA + row).to(ACC)
        c_y = tl.load(GY + row).to(ACC)
        _store_gradient(X, G, base, D, C, y, valid, A, a0, r, c_p, c_a, c_y, HAS_A, BLOCK, ACC)


@triton.jit
def gradient_kernel(
    X, G, Y, A, LDA, a0, GP, GA, GY, R, SUM, GO, go_stride, C, D,
    HAS_A: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """The gradient of row ``program_id`` from its saved statistics (R = m, SUM = s) in one
    pass, scaled by the incoming gradient GO[row·go_stride] (go_stride 0: one scalar)."""
    row = tl.program_id(0).to(tl.int64)  # int64 offsets: N·C can pass 2**31
    base = (row // D) * C * D + row % D
    y = tl.load(Y + row)
    valid = y >= 0
    A = A + tl.maximum(y, 0) * LDA  # the row's a (see forward_kernel)
    go = tl.load(GO + row * go_stride).to(ACC)
    r = tl.load(R + row).to(ACC)
    c_p = go * tl.load(GP + row).to(ACC) / tl.load(SUM + row).to(ACC)
    c_a = go * tl.load(GA + row).to(ACC)
    c_y = go * tl.load(GY + row).to(ACC)
    _store_gradient(X, G, base, D, C, y, valid, A, a0, r, c_p, c_a, c_y, HAS_A, BLOCK, ACC)


@triton.jit
def scale_kernel(G, GO, go_stride, C, D, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """G[row] *= GO[row·go_stride], skipped on the device when that factor is exactly 1 (the
    usual ``loss.backward()``): no host synchronization and no traffic in that case."""
    row = tl.program_id(0).to(tl.int64)
    go = tl.load(GO + row * go_stride).to(ACC)
    if go != 1.0:
        base = (row // D) * C * D + row % D
        cols = tl.arange(0, BLOCK)
        for k0 in range(0, C, BLOCK):
            k = k0 + cols
            inb = k < C
            g = tl.load(G + base + k.to(tl.int64) * D, mask=inb, other=0.0).to(ACC)
            tl.store(G + base + k.to(tl.int64) * D, (g * go).to(G.dtype.element_ty), mask=inb)


#: True when the kernels were defined under the Triton interpreter (they then take CPU
#: tensors, and only CPU tensors make sense).
INTERPRETED: bool = not isinstance(forward_kernel, triton.runtime.JITFunction)
if INTERPRETED == isinstance(tl.max, triton.runtime.JITFunction):
    # triton's own library functions (tl.max, tl.sum) were defined when triton was imported
    raise ImportError(
        "TRITON_INTERPRET changed after triton was imported: set TRITON_INTERPRET=1 before "
        "anything imports triton to run impl='triton' on CPU tensors, or leave it unset for "
        "the GPU"
    )
