"""Chunked linear head + label-smoothed cross-entropy: the N × V logits never exist at once.

Long file: the chunk loop, its two passes and the argument checks of one public function.

``linear_cross_entropy(hidden, weight, target, bias)`` equals
``cross_entropy(F.linear(hidden, weight, bias), target, ...)``; this module computes it over
chunks of tokens, so that at most ``chunk × V`` logits (one buffer, reused) exist at a time.

Per chunk of counted tokens (ignored tokens are dropped before the matmul)::

    Z = h_c Wᵀ + b                       # (k, V) logits, in the parameters' dtype
    X = c·tanh(Z / c)                    # only with softcap = c; T = tanh(Z / c) kept
    statistics and G_X = ∂loss/∂X        # rowmath: g_p·p − g_a·a − g_y·onehot(y), written
                                         # over X in place (the row kernel, below)
    G = G_X ⊙ (1 − T²)                   # softcap's chain rule: ∂X/∂Z = 1 − tanh²(Z / c)
    grad_h[c]  = G W                     # (k, H)
    grad_W    += Gᵀ h_c                  # (V, H), accumulated in float32 (float64 for float64)
    grad_b    += Σ_rows G                # (V,)

The per-row coefficients come from :func:`labelsmooth.ops.rowmath.plan_rows` (over the
counted tokens) and the statistics (max m, Σ exp(x − m), d_y = x_y − m, S = Σ a_k (x_k − m))
become the loss and the unsmoothed NLL (log s − d_y) in :func:`rowmath.loss_and_nll`, exactly as in
the fused path: every convention, prior, class mask and the KL form come for free, and a
common offset of the logits (a large bias) costs no precision.

Gradients are produced in the forward pass (the loss is a sum or a mean, so backward only
scales them by the incoming scalar). With ``reduction="none"`` the incoming gradient is a
vector, unknown during the forward pass: the forward pass then computes statistics only and
backward runs the chunk loop a second time with each row's coefficients multiplied by its
incoming gradient (twice the matmuls, the same memory bound).

The rows of a chunk go to the same row kernels as ``cross_entropy``: the C kernel on CPU
(:func:`labelsmooth.ops.fused.row_statistics`; eager torch blocks where it cannot run), the
Triton kernel on CUDA when triton is installed (eager blocks otherwise).

Dropping ignored tokens needs their count on the host (``nonzero``, one device
synchronization per call; free on CPU). When no token is ignored the hidden states are used
in place; otherwise each chunk gathers its rows with ``index_select``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from labelsmooth import _validate
from labelsmooth._dispatch import row_backend_for
from labelsmooth.ops import rowmath
from labelsmooth.ops.reference import compute_dtype, cross_entropy_reference, smoothing_prior
from labelsmooth.ops.rowmath import Rows, RowStats

__all__ = [
    "LINEAR_IMPLS",
    "CHUNK_BYTES",
    "LinearOptions",
    "LinearCall",
    "Head",
    "default_chunk_size",
    "build_call",
    "forward",
    "backward_none",
    "linear_cross_entropy_reference",
    # the chunk machinery labelsmooth.parallel reuses
    "CountedTokens",
    "chunk_pass",
    "times_incoming",
    "device_row_statistics",
]

#: Every name ``linear_cross_entropy(impl=)`` accepts.
LINEAR_IMPLS = ("auto", "chunked", "reference")

#: Size in bytes of one chunk of float32 logits that the default chunk size aims at.
CHUNK_BYTES = 1 << 26


def default_chunk_size(num_classes: int) -> int:
    """Tokens per chunk when ``chunk_size`` is None: ``CHUNK_BYTES // (4·V)`` (a chunk of
    float32 logits of about 64 MiB, whatever the parameters' dtype), at least 1."""
    return max(1, CHUNK_BYTES // (4 * max(1, num_classes)))


@dataclass(frozen=True)
class LinearOptions:
    """The non-tensor arguments of one call (validated)."""

    ignore_index: int
    reduction: str
    eps: float
    convention: str
    kl: bool
    softcap: float | None
    chunk_size: int
    uniform_prior: bool  # no prior, no class mask: u_k = 1/V, scalar coefficients


class Head(NamedTuple):
    """The linear head's tensors, as the chunk loop reads them: ``hidden`` (N, H), ``weight``
    (V, H) and ``bias`` (V,) or None."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None


# ---------------------------------------------------------------------------------------------
# The row kernel of a chunk


def device_row_statistics(x: torch.Tensor, rows: Rows, grad: torch.Tensor | None) -> RowStats:
    """Statistics of every row of the chunk ``x`` (k, V) and, if ``grad`` is given (may be
    ``x``), the gradient g_p·p − g_a·a − g_y·onehot(y) written into it, by the registry's row
    backend for the chunk's device (:func:`labelsmooth._dispatch.row_backend_for`)."""
    stats: RowStats = row_backend_for(x.device).load().statistics(x, rows, grad)
    return stats


# ---------------------------------------------------------------------------------------------
# The chunk loop


@dataclass
class CountedTokens:
    """The counted tokens of one call: where they are, and their row plan (coefficients,
    targets, the mean's scale) from :func:`rowmath.plan_rows`, over the counted tokens only."""

    idx: torch.Tensor | None  # (n,) positions of the counted tokens; None: all of them
    plan: rowmath.RowPlan
    a: torch.Tensor  # (V,) a_k = u_k in the compute dtype ((V, V) for a (V, V) prior)

    @property
    def count(self) -> int:
        return int(self.plan.y.shape[0])


def _counted_tokens(
    target: torch.Tensor, u: torch.Tensor, cdt: torch.dtype, opt: LinearOptions
) -> CountedTokens:
    valid = target != opt.ignore_index
    idx: torch.Tensor | None = valid.nonzero().squeeze(1)  # the one host synchronization
    assert idx is not None
    if idx.numel() == target.shape[0]:
        idx, y = None, target
    else:
        y = target.index_select(0, idx)
    plan = rowmath.plan_rows(
        y, None, u, ignore_index=opt.ignore_index, eps=opt.eps, convention=opt.convention,
        reduction=opt.reduction, uniform_prior=opt.uniform_prior,
    )  # fmt: skip
    return CountedTokens(idx, plan, plan.a.to(cdt))


@dataclass
class PassResult:
    stats: RowStats
    grad_hidden: torch.Tensor | None
    grad_weight: torch.Tensor | None  # float32 (float64) accumulator
    grad_bias: torch.Tensor | None

    def grads(self, head: Head) -> list[torch.Tensor | None]:
        """[grad_hidden, grad_weight, grad_bias] in the parameters' dtypes (None: not
        computed)."""
        gw = None if self.grad_weight is None else self.grad_weight.to(head.weight.dtype)
        b = head.bias
        gb = None if (self.grad_bias is None or b is None) else self.grad_bias.to(b.dtype)
        return [self.grad_hidden, gw, gb]


# long function: one chunk loop (matmul, softcap, row kernel, three gradients), top to bottom
def chunk_pass(
    head: Head,
    tok: CountedTokens,
    coef: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    need: tuple[bool, bool, bool],
    opt: LinearOptions,
) -> PassResult:
    """One sweep over the counted tokens, ``opt.chunk_size`` at a time: the statistics of every
    counted row and, when ``coef`` = (g_p, g_y, g_a) is given, the gradients flagged in
    ``need`` (hidden, weight, bias)."""
    hidden, weight, bias = head
    N, H = hidden.shape
    Vc = weight.shape[0]
    dt, dev = weight.dtype, weight.device
    cdt = compute_dtype(dt)
    acc = torch.float64 if dt == torch.float64 else torch.float32
    n = tok.count
    stats = RowStats(*(torch.empty(n, dtype=cdt, device=dev) for _ in range(4)))
    with_grad = coef is not None and any(need)
    need_h, need_w, need_b = need if with_grad else (False, False, False)
    grad_h = None
    if need_h:  # rows of ignored tokens stay 0
        make = torch.empty if tok.idx is None else torch.zeros
        grad_h = make(N, H, dtype=hidden.dtype, device=dev)
    grad_w = torch.zeros(Vc, H, dtype=acc, device=dev) if need_w else None
    grad_b = torch.zeros(Vc, dtype=acc, device=dev) if need_b else None
    if n == 0:
        return PassResult(stats, grad_h, grad_w, grad_b)

    rows_max = min(opt.chunk_size, n)
    z_buf = torch.empty(rows_max, Vc, dtype=dt, device=dev)  # logits, then their gradient
    t_buf = torch.empty(rows_max, Vc, dtype=cdt, device=dev) if opt.softcap else None
    up_buf = torch.empty(rows_max, Vc, dtype=acc, device=dev) if need_w and dt != acc else None
    g_p = g_y = g_a = None
    if with_grad:
        assert coef is not None
        g_p, g_y, g_a = (c.to(cdt) for c in coef)
    wt = weight.t()
    for c0 in range(0, n, rows_max):
        c1 = min(n, c0 + rows_max)
        k = c1 - c0
        idx_c = None if tok.idx is None else tok.idx[c0:c1]
        h_c = hidden[c0:c1] if idx_c is None else hidden.index_select(0, idx_c)  # (k, H)
        z = z_buf[:k]  # (k, V)
        if bias is None:
            torch.mm(h_c, wt, out=z)
        else:
            torch.addmm(bias, h_c, wt, out=z)
        t = None
        if opt.softcap is not None:
            assert t_buf is not None
            t = t_buf[:k]
            torch.div(z, opt.softcap, out=t).tanh_()  # T = tanh(Z / c), compute dtype
            torch.mul(t, opt.softcap, out=z)  # X = c·T
        rows = Rows(y=tok.plan.y[c0:c1], a=tok.a, a0=tok.plan.a0)
        if with_grad:
            assert g_p is not None and g_y is not None and g_a is not None
            rows.g_p, rows.g_a, rows.g_y = g_p[c0:c1], g_a[c0:c1], g_y[c0:c1]
        st = device_row_statistics(z, rows, z if with_grad else None)  # z becomes ∂loss/∂X
        for whole, part in zip(stats, st):
            whole[c0:c1] = part
        if not with_grad:
            continue
        if t is not None:
            z.mul_(t.square_().neg_().add_(1))  # ∂X/∂Z = 1 − T²
        if grad_h is not None:
            if idx_c is None:
                torch.mm(z, weight, out=grad_h[c0:c1])
            else:
                grad_h.index_copy_(0, idx_c, z @ weight)
        if grad_w is not None:
            if up_buf is None:
                grad_w.addmm_(z.t(), h_c)
            else:  # half parameters: the chunk in float32, so every chunk adds in float32
                up = up_buf[:k].copy_(z)
                grad_w.addmm_(up.t(), h_c.to(acc))
        if grad_b is not None:
            grad_b.add_(z.sum(0, dtype=acc))
    return PassResult(stats, grad_h, grad_w, grad_b)


def _scatter(values: torch.Tensor, tok: CountedTokens, N: int) -> torch.Tensor:
    """Per counted row (n,) -> per token (N,), exactly 0 for ignored tokens."""
    if tok.idx is None:
        return values
    return values.new_zeros(N).index_copy_(0, tok.idx, values)


def times_incoming(
    coef: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    tok: CountedTokens,
    grad_output: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``reduction="none"``: the counted rows' coefficients (g_p, g_y, g_a) times each row's
    incoming gradient (float64; an ignored token's incoming gradient is never read)."""
    go = grad_output.reshape(-1)
    if tok.idx is not None:
        go = go.index_select(0, tok.idx)
    go = go.to(torch.float64)
    g_p, g_y, g_a = coef
    return g_p * go, g_y * go, g_a * go


def forward(
    head: Head,
    target: torch.Tensor,
    u: torch.Tensor,
    opt: LinearOptions,
    need: tuple[bool, bool, bool],
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
    """(loss, nll, [grad_hidden, grad_weight, grad_bias]) of the chunk loop, the gradients
    flagged in ``need`` computed in the same pass (none for ``reduction="none"``: they need
    the incoming gradient, see :func:`backward_none`). The body of the op
    ``labelsmooth::linear_cross_entropy`` (:mod:`labelsmooth.ops.library`)."""
    # target (N,) int64, u (V,) float64
    cdt = compute_dtype(head.weight.dtype)
    tok = _counted_tokens(target, u, cdt, opt)
    now = any(need) and opt.reduction != "none"  # gradients in this pass
    coef = tok.plan.grad_coefficients() if now else None
    res = chunk_pass(head, tok, coef, need, opt)  # no coefficients: no gradients
    N = head.hidden.shape[0]
    out, nll = rowmath.loss_and_nll(
        res.stats, tok.plan, None, u, kl=opt.kl, reduction=opt.reduction,
        shape=torch.Size([tok.count]),
    )  # fmt: skip
    if opt.reduction == "none":
        out = _scatter(out, tok, N)
    nll = _scatter(nll, tok, N).to(cdt)  # −log p_y per token, 0 for ignored tokens
    return out.to(head.hidden.dtype), nll, res.grads(head)


def backward_none(
    head: Head,
    target: torch.Tensor,
    u: torch.Tensor,
    opt: LinearOptions,
    need: tuple[bool, bool, bool],
    grad_output: torch.Tensor,
) -> list[torch.Tensor | None]:
    """``reduction="none"``: the chunk loop again, each row's coefficients times its incoming
    gradient (:func:`times_incoming`)."""
    tok = _counted_tokens(target, u, compute_dtype(head.weight.dtype), opt)
    coef = tok.plan.grad_coefficients()  # no scale: the reduction is "none"
    return chunk_pass(head, tok, times_incoming(coef, tok, grad_output), need, opt).grads(head)


def linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    u: torch.Tensor,
    opt: LinearOptions,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, nll) by the plain composition: ``F.linear``, softcap, the reference loss on the
    dense (N, V) logits (autograd does the rest; any option, double backward included).
    Same outputs as the chunked op
    (:func:`labelsmooth.ops.library.chunked_linear_cross_entropy`)."""
    logits = F.linear(hidden, weight, bias)  # (N, V)
    if opt.softcap is not None:
        logits = opt.softcap * torch.tanh(logits / opt.softcap)
    out = cross_entropy_reference(
        logits, target, None, opt.ignore_index, opt.reduction, opt.eps, u, opt.convention,
        opt.kl, return_nll=True,
    )  # fmt: skip
    assert isinstance(out, tuple)
    return out


# ---------------------------------------------------------------------------------------------
# Arguments and dispatch (called by labelsmooth.functional.linear_cross_entropy)


@dataclass(frozen=True)
class LinearCall:
    """One validated call: 2-D views of the tensors, the options and the resolved impl."""

    hidden: torch.Tensor  # (N, H)
    weight: torch.Tensor  # (V, H)
    bias: torch.Tensor | None  # (V,)
    target: torch.Tensor  # (N,) int64
    u: torch.Tensor  # (V,) float64 normalized smoothing prior
    opt: LinearOptions
    impl: str  # "chunked" or "reference"
    out_shape: tuple[int, ...]  # target's shape, for reduction="none"


def _check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _chunked_unsupported(prior: torch.Tensor | None) -> str | None:
    if prior is not None and prior.requires_grad and torch.is_grad_enabled():
        return (
            "it computes no gradient for prior (prior.requires_grad=True); use "
            "impl='reference', or detach prior"
        )
    return None


def resolve_impl(impl: str, prior: torch.Tensor | None) -> str:
    """``impl`` itself if it can run (else ``ValueError`` saying why), or what "auto" runs:
    "chunked" whenever it can, else "reference"."""
    reason = _chunked_unsupported(prior)
    if impl == "auto":
        return "chunked" if reason is None else "reference"
    if impl == "chunked" and reason is not None:
        raise ValueError(f"impl='chunked' cannot run here: {reason}")
    return impl


# long function: one check per tensor property, each with the message that names it
def _check_tensors(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Types, shapes, dtypes and devices of the tensors (errors name the argument)."""
    hidden = _check_tensor("hidden", hidden)
    weight = _check_tensor("weight", weight)
    target = _check_tensor("target", target)
    if hidden.dtype not in _validate.FLOAT_DTYPES:
        raise ValueError(
            f"hidden must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got hidden.dtype={hidden.dtype}"
        )
    if hidden.dim() == 0:
        raise ValueError("hidden must have shape (..., H), got a 0-dim tensor")
    H = hidden.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != H or weight.shape[0] < 1:
        raise ValueError(
            f"weight must have shape (V, H) with V >= 1 and H = hidden.shape[-1] = {H} "
            f"(as nn.Linear's weight), got weight.shape={tuple(weight.shape)}"
        )
    num_classes = weight.shape[0]
    if weight.dtype != hidden.dtype:
        raise ValueError(
            f"weight must have hidden's dtype {hidden.dtype} (as F.linear requires), got "
            f"weight.dtype={weight.dtype}"
        )
    if weight.device != hidden.device:
        raise ValueError(
            f"weight must be on hidden's device, got weight.device={weight.device} and "
            f"hidden.device={hidden.device}"
        )
    if bias is not None:
        bias = _check_tensor("bias", bias)
        if tuple(bias.shape) != (num_classes,):
            raise ValueError(
                f"bias must have shape ({num_classes},) (V = weight.shape[0]), "
                f"got bias.shape={tuple(bias.shape)}"
            )
        if bias.dtype != hidden.dtype:
            raise ValueError(
                f"bias must have hidden's dtype {hidden.dtype}, got bias.dtype={bias.dtype}"
            )
        if bias.device != hidden.device:
            raise ValueError(
                f"bias must be on hidden's device, got bias.device={bias.device} and "
                f"hidden.device={hidden.device}"
            )
    _validate.check_row_target(target, hidden, "hidden", "H")
    return hidden, weight, target, bias


def _check_softcap_and_chunk(softcap: float | None, chunk_size: int | None) -> float | None:
    """``softcap`` as a float (or None) and ``chunk_size`` a positive int or None."""
    if softcap is not None:
        if isinstance(softcap, bool) or not isinstance(softcap, (int, float)):
            raise TypeError(f"softcap must be a positive float or None, got softcap={softcap!r}")
        if not (math.isfinite(softcap) and softcap > 0):
            raise ValueError(f"softcap must be a positive finite number, got softcap={softcap!r}")
        softcap = float(softcap)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(
            f"chunk_size must be a positive int (tokens per chunk) or None, "
            f"got chunk_size={chunk_size!r}"
        )

    return softcap


# long function: the checks in the order a reader meets the arguments, then the call's plan
def build_call(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None,
    options: _validate.LossOptions,
    *,
    softcap: float | None,
    chunk_size: int | None,
    return_nll: bool,
    impl: str,
    validate_args: bool,
) -> LinearCall:
    """Check every argument (errors name the argument and its value) and resolve ``impl``."""
    ignore_index, reduction, label_smoothing, convention, prior, class_mask, kl = options
    hidden, weight, target, bias = _check_tensors(hidden, weight, target, bias)
    num_classes, H = weight.shape
    eps = _validate.check_loss_options(label_smoothing, reduction, convention, ignore_index)
    _validate.check_choice("impl", impl, LINEAR_IMPLS)
    _validate.check_flags(kl=kl, return_nll=return_nll, validate_args=validate_args)
    softcap = _check_softcap_and_chunk(softcap, chunk_size)
    N = target.numel()
    # a zero-stride (N, V) stand-in for the logits: the shared checks read only its shape
    stand_in = hidden.new_empty(()).expand(N, num_classes)
    _validate.check_prior_tensor(prior, stand_in)  # (V,) or class-conditional (V, V)
    _validate.check_class_vector("class_mask", class_mask, stand_in, kind="bool")
    flat_target = target.reshape(-1)
    if validate_args:
        if torch.compiler.is_compiling():  # the same checks, run by an op when the graph runs
            flat_target = torch.ops.labelsmooth.checked_target(
                flat_target, None, prior, class_mask, num_classes, ignore_index, False, kl
            )
        else:
            _validate.check_values(
                stand_in, flat_target, ignore_index, soft=False, kl=kl, weight=None,
                prior=prior, class_mask=class_mask,
            )  # fmt: skip
    resolved = resolve_impl(impl, prior)
    u = smoothing_prior(num_classes, prior, class_mask, dtype=torch.float64, device=hidden.device)
    opt = LinearOptions(
        ignore_index=ignore_index,
        reduction=reduction,
        eps=eps,
        convention=convention,
        kl=kl,
        softcap=softcap,
        chunk_size=chunk_size if chunk_size is not None else default_chunk_size(num_classes),
        uniform_prior=prior is None and class_mask is None,
    )
    return LinearCall(
        hidden=hidden.reshape(N, H),
        weight=weight,
        bias=bias,
        target=flat_target.long(),
        u=u,
        opt=opt,
        impl=resolved,
        out_shape=tuple(target.shape),
    )
