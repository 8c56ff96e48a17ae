"""``vocab_parallel_linear_cross_entropy``: a column-parallel LM head fused with the loss.

Each rank holds the rows [start, stop) of the output projection (``local_weight`` (V_local,
H), Megatron's column-parallel layout) and the same hidden states (N, H). The chunk loop of
:mod:`labelsmooth.ops.linear` (``chunk_pass``) runs twice over this rank's slice, never
holding more than ``chunk_size × V_local`` logits:

1. statistics only: per chunk Z = h Wᵀ + b (softcap), the row kernel's m_r, s_r, d_y,r, S_r;
2. the three all-reduces of :func:`labelsmooth.parallel._exchange.exchange_statistics`
   (forward only);
3. the gradients: per chunk the row kernel writes ∂loss/∂Z of this slice (coefficients from
   :func:`labelsmooth.parallel._exchange.slice_grad_rows`), then grad_h += G W, grad_W += Gᵀ h,
   grad_b += Σ G, exactly as the single-process chunked head.

With ``reduction="none"`` the gradient sweep runs in backward instead (the incoming
gradient is a vector); it needs no collective either, the statistics are saved.

The hidden states' gradient of one rank is its slice's share G W_r; the true gradient is
the sum over the ranks. In Megatron that sum is the backward of the column-parallel layer's
input (``copy_to_tensor_model_parallel_region``: identity forward, all-reduce backward), so
by default this function returns the share; ``reduce_hidden_grad=True`` all-reduces it in
backward (one collective of N·H values) for a caller without such a layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.distributed as dist

from labelsmooth._validate import LossOptions
from labelsmooth.ops import rowmath
from labelsmooth.ops.linear import (
    CountedTokens,
    Head,
    LinearOptions,
    build_call,
    chunk_pass,
    times_incoming,
)
from labelsmooth.ops.reference import compute_dtype
from labelsmooth.ops.rowmath import RowCoefficients, RowStats
from labelsmooth.parallel import _exchange
from labelsmooth.parallel._cross_entropy import check_common, local_a, neutral

__all__ = ["vocab_parallel_linear_cross_entropy"]

_NO_COEF = RowCoefficients(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # the chunk loop reads y and a0 only


def _counted_tokens(
    idx: torch.Tensor | None, y: torch.Tensor, a: torch.Tensor, a0: float | None
) -> CountedTokens:
    """The chunk loop's view of the counted tokens: positions, kernel targets (n,), a."""
    valid = torch.ones_like(y, dtype=torch.bool)
    plan = rowmath.RowPlan(valid, y, _NO_COEF, None, a, a0)
    return CountedTokens(idx, plan, a)


def _pick(v: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    return v if idx is None else v.index_select(0, idx)


def _local_pass(
    head: Head,
    target: torch.Tensor,
    st: _exchange.RankSetup,
    opt: _exchange.ExchangeOptions,
    lopt: LinearOptions,
) -> tuple[RowStats, torch.Tensor | float, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Pass 1 over this slice: (local statistics (N,), A_r, the counted rows' indices (None:
    all), owner, y_loc), the statistics neutral on ignored rows."""
    weight = head.weight
    cdt, dev = compute_dtype(weight.dtype), weight.device
    N, width = head.hidden.shape[0], weight.shape[0]
    assert st.vrange is not None
    valid, owner, y_loc = _exchange.local_targets(target, st.vrange, opt.ignore_index)
    idx: torch.Tensor | None = valid.nonzero().squeeze(1)  # host synchronization (free on CPU)
    if idx is not None and idx.numel() == N:
        idx = None
    a, a0, A_r = local_a(st, width, cdt, dev)
    tok = _counted_tokens(idx, _pick(y_loc, idx), a, a0)
    res = chunk_pass(head, tok, None, (False,) * 3, lopt)
    local = neutral(N, cdt, dev)
    for whole, part in zip(local, res.stats):
        if idx is None:
            whole.copy_(part)
        else:
            whole.index_copy_(0, idx, part)
    return local, A_r, idx, owner, y_loc


class _VocabParallelLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        target: torch.Tensor,
        st: _exchange.RankSetup,
        opt: _exchange.ExchangeOptions,
        lopt: LinearOptions,
        reduce_hidden_grad: bool,
    ) -> torch.Tensor:
        # hidden (N, H), weight (V_local, H), bias (V_local,) or None, target (N,) int64
        head = Head(hidden, weight, bias)
        cdt = compute_dtype(weight.dtype)
        dev = weight.device
        N = hidden.shape[0]
        need = (
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            bias is not None and ctx.needs_input_grad[2],
        )
        if st.problem is None:
            local, A_r, idx, owner, y_loc = _local_pass(head, target, st, opt, lopt)
        else:  # every rank raises in the exchange
            local, A_r = neutral(N, cdt, dev), 0.0
        ex = _exchange.exchange_statistics(st, local, target, A_r, opt)
        out, _ = rowmath.loss_and_nll(
            ex.stats, ex.plan, None, ex.u, kl=opt.kl, reduction=opt.reduction,
            shape=target.shape,
        )  # fmt: skip

        ctx.lopt, ctx.need, ctx.consumed = lopt, need, False
        ctx.group, ctx.reduce_hidden_grad = st.group, reduce_hidden_grad
        if any(need):
            y2, g_p, g_y, g_a = _exchange.slice_grad_rows(ex, y_loc, owner, local.s)
            a2 = ex.plan.a[ex.start : ex.stop].to(cdt)
            tok2 = _counted_tokens(idx, _pick(y2, idx), a2, ex.plan.a0)
            coef = (_pick(g_p, idx), _pick(g_y, idx), _pick(g_a, idx))
            if opt.reduction != "none":  # pass 2 now; backward only scales
                ctx.grads = chunk_pass(head, tok2, coef, need, lopt).grads(head)
            else:  # backward runs pass 2 with each row's coefficients times its gradient
                ctx.tok, ctx.coef = tok2, coef
                ctx.save_for_backward(*head)
        ctx.reduction = opt.reduction
        return out.to(hidden.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "vocab_parallel_linear_cross_entropy does not support double backward "
                "(create_graph=True): its gradients are computed without a graph"
            )
        if ctx.consumed:
            raise RuntimeError(
                "vocab_parallel_linear_cross_entropy cannot backward twice through the same "
                "loss (retain_graph=True): its gradients are handed out once"
            )
        ctx.consumed = True
        if ctx.reduction != "none":
            grads = ctx.grads
            ctx.grads = None
            if grad_output.device.type != "cpu" or float(grad_output) != 1.0:
                for gr in grads:
                    if gr is not None:
                        gr.mul_(grad_output.to(gr.dtype))
            gh, gw, gb = grads
        else:
            head = Head(*ctx.saved_tensors)
            coef = times_incoming(ctx.coef, ctx.tok, grad_output)
            gh, gw, gb = chunk_pass(head, ctx.tok, coef, ctx.need, ctx.lopt).grads(head)
        if gh is not None and ctx.reduce_hidden_grad:
            dist.all_reduce(gh, op=dist.ReduceOp.SUM, group=ctx.group)
        return gh, gw, gb, None, None, None, None, None


def vocab_parallel_linear_cross_entropy(
    hidden: torch.Tensor,
    local_weight: torch.Tensor,
    target: torch.Tensor,
    local_bias: torch.Tensor | None = None,
    *,
    group: dist.ProcessGroup | None = None,
    vocab_range: tuple[int, int] | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    convention: str = "uniform",
    prior: torch.Tensor | None = None,
    class_mask: torch.Tensor | None = None,
    kl: bool = False,
    softcap: float | None = None,
    chunk_size: int | None = None,
    reduce_hidden_grad: bool = False,
    validate_args: bool = True,
) -> torch.Tensor:
    r"""Column-parallel linear head + label-smoothed cross-entropy, logits never materialized.

    Equals :func:`labelsmooth.linear_cross_entropy` with the gathered weight
    ``cat([local_weight of every rank])`` (V, H) and bias: the loss on every rank, the
    gradient of every rank's ``local_weight`` / ``local_bias`` slice, and (summed over the
    ranks, or with ``reduce_hidden_grad=True``) the gradient of ``hidden``. At most
    ``chunk_size × V_local`` logits exist at a time (the chunk loop of
    :mod:`labelsmooth.ops.linear`); the forward pass sweeps the chunks twice (statistics,
    then gradients once the global statistics are known), so it costs two matmuls of
    h Wᵀ per chunk plus the gradient matmuls.

    Collectives: the same three all-reduces in forward as
    :func:`~labelsmooth.parallel.vocab_parallel_cross_entropy` (MAX of a float64 header of
    3W + 26 values, MAX of N values, SUM of 3N values: 16 bytes per row in float32, plus the
    header). None in backward unless ``reduce_hidden_grad=True``: then one all-reduce SUM of
    the (N, H) hidden gradient (H·4 bytes per row in float32).

    Args:
        hidden: (N, H) or (..., H) hidden states, the same on every rank.
        local_weight: (V_local, H) this rank's rows of the output projection (``hidden``'s
            dtype and device).
        target: (N,) or (...) integer global class ids, the same on every rank.
        local_bias: (V_local,) this rank's slice of the bias, or None.
        group, vocab_range, ignore_index, reduction, label_smoothing, convention, prior,
            class_mask, kl, validate_args: as in
            :func:`~labelsmooth.parallel.vocab_parallel_cross_entropy` (``prior`` and
            ``class_mask`` for the full vocabulary).
        softcap: c > 0 applies c·tanh(z / c) to the logits (Gemma 2).
        chunk_size: tokens per chunk (default: about 64 MiB of float32 logits of the local
            slice, :func:`labelsmooth.ops.linear.default_chunk_size` of V_local).
        reduce_hidden_grad: all-reduce ``hidden``'s gradient over ``group`` in backward.
            False (default): each rank gets its slice's share G·W_r, for a caller whose
            column-parallel layer sums it (Megatron's ``copy_to_tensor_model_parallel_region``).

    Returns:
        The loss in ``hidden``'s dtype: a scalar, or the target's shape for "none".
    """
    options = LossOptions(
        ignore_index, reduction, label_smoothing, convention, prior, class_mask, kl
    )
    # the local slice's checks (its prior and mask are checked for the full vocabulary below)
    call = build_call(
        hidden, local_weight, target, local_bias, options._replace(prior=None, class_mask=None),
        softcap=softcap, chunk_size=chunk_size, return_nll=False, impl="chunked",
        validate_args=False,
    )  # fmt: skip
    if not isinstance(reduce_hidden_grad, bool):
        raise TypeError(
            f"reduce_hidden_grad must be a bool, got reduce_hidden_grad={reduce_hidden_grad!r}"
        )
    opt = check_common(options, validate_args, call.hidden.device)
    width = call.weight.shape[0]
    st = _exchange.setup_rank(
        width=width, rows=call.target.shape[0], device=call.hidden.device, group=group,
        vocab_range=vocab_range, prior=prior, class_mask=class_mask, opt=opt,
    )  # fmt: skip
    lopt = dataclasses.replace(call.opt, uniform_prior=st.u_full is None)
    loss = _VocabParallelLinear.apply(
        call.hidden, call.weight, call.bias, call.target, st, opt, lopt, reduce_hidden_grad
    )
    return loss.reshape(call.out_shape) if reduction == "none" else loss
