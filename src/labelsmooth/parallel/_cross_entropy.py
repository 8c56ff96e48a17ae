"""``vocab_parallel_cross_entropy``: the logits of each rank are a slice of the vocabulary.

Forward, per rank (N rows, V_local classes, W ranks):

1. the row kernel of the fused path (:func:`labelsmooth.ops.linear.device_row_statistics`: the C
   kernel on CPU, Triton on CUDA when installed, eager blocks otherwise) reads the local
   logits once: m_r, s_r, d_y,r, S_r relative to the slice's max;
2. :func:`labelsmooth.parallel._exchange.exchange_statistics`: all-reduce MAX of a fixed-size
   header (the checks), all-reduce MAX of the row max, rebase, all-reduce SUM;
3. :func:`labelsmooth.ops.rowmath.loss_and_nll`: the loss from the global statistics;
4. if the logits need a gradient, a second kernel pass writes it (the kernel's own
   ``g_p·exp(x − m_r)/s_r − g_a·a − g_y·onehot(y)`` with g_p rescaled to the global max and
   sum; see :func:`labelsmooth.parallel._exchange.slice_grad_rows`).

Backward only scales the saved gradient by the incoming one: no collective.
"""

from __future__ import annotations

import weakref

import torch
import torch.distributed as dist

from labelsmooth import _validate
from labelsmooth.ops import rowmath
from labelsmooth.ops.cpu import runtime as _cpu_runtime
from labelsmooth.ops.linear import device_row_statistics
from labelsmooth.ops.reference import compute_dtype
from labelsmooth.ops.rowmath import Rows, RowStats
from labelsmooth.parallel import _exchange

__all__ = ["vocab_parallel_cross_entropy", "check_common", "check_full_vector", "neutral"]


def check_full_vector(
    name: str, value: torch.Tensor | None, device: torch.device, kind: str
) -> torch.Tensor | None:
    """A full-vocabulary (V,) prior or class_mask: type, dtype, device and 1-D shape (the
    length is checked against the ranks' slices after the first collective)."""
    if value is None:
        return None
    n = value.shape[0] if isinstance(value, torch.Tensor) and value.dim() == 1 else -1
    stand_in = torch.empty((), device=device).expand(1, max(n, 0))
    if n < 0 and isinstance(value, torch.Tensor):
        raise ValueError(
            f"{name} must have shape (V,) for the full vocabulary, got {name}.shape="
            f"{tuple(value.shape)}"
        )
    return _validate.check_class_vector(name, value, stand_in, kind=kind)


def check_common(
    options: _validate.LossOptions, validate_args: bool, device: torch.device
) -> _exchange.ExchangeOptions:
    """The option checks both losses share (errors name the argument and its value)."""
    ignore_index, reduction, label_smoothing, convention, prior, class_mask, kl = options
    eps = _validate.check_loss_options(label_smoothing, reduction, convention, ignore_index)
    _validate.check_flags(kl=kl, validate_args=validate_args)
    if isinstance(prior, torch.Tensor) and prior.dim() == 2:
        raise ValueError(
            f"prior of shape {tuple(prior.shape)} (class-conditional) is not supported by the "
            "vocabulary-parallel losses (a rank holds a slice of each prior row); pass a (V,) prior"
        )
    check_full_vector("prior", prior, device, "float")
    check_full_vector("class_mask", class_mask, device, "bool")
    return _exchange.ExchangeOptions(ignore_index, reduction, eps, convention, kl, validate_args)


def neutral(n: int, dtype: torch.dtype, device: torch.device) -> RowStats:
    """The statistics of ignored rows (m = 0, s = 1, d_y = 0, S = 0), (n,) each."""
    z = torch.zeros(n, dtype=dtype, device=device)
    return RowStats(z, torch.ones_like(z), z.clone(), z.clone())


def local_a(
    st: _exchange.RankSetup, width: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, float | None, torch.Tensor | float]:
    """(a, a0, A_r) of this slice for the statistics pass: the slice of the full prior, or,
    with a uniform prior (V not known before the exchange), a_k = 1 (S is divided by V in
    :func:`~labelsmooth.parallel._exchange.exchange_statistics`)."""
    if st.u_full is None:
        return torch.ones(width, dtype=dtype, device=device), 1.0, float(width)
    assert st.vrange is not None
    a64 = st.u_full[st.vrange[0] : st.vrange[1]]
    return a64.to(dtype), None, a64.sum().to(dtype)


#: Process groups by key, for the op below (an op takes no Python objects): filled by the
#: public function on each call, read by the op's body when it runs. Weak references: a
#: group the caller drops is not kept alive here.
_GROUPS: weakref.WeakValueDictionary[str, dist.ProcessGroup] = weakref.WeakValueDictionary()


def _group_key(group: dist.ProcessGroup | None) -> str:
    if group is None:
        return "default"
    key = f"{group.group_name}"
    _GROUPS[key] = group
    return key


def _group_of(key: str) -> dist.ProcessGroup | None:
    """The group a key stands for (None: the default group)."""
    if key == "default":
        return None
    group = _GROUPS.get(key)
    if group is None:
        raise RuntimeError(
            f"vocab_parallel_cross_entropy: process group {key!r} no longer exists (a compiled "
            "graph outlived the group it was traced with); call it with a live group"
        )
    return group


class _Repr:
    """A malformed ``vocab_range`` by its repr (the exchange reports it on every rank)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


@torch.library.custom_op("labelsmooth::vocab_parallel_cross_entropy", mutates_args=())
def vocab_parallel_op(
    x: torch.Tensor,
    target: torch.Tensor,
    prior: torch.Tensor | None,
    class_mask: torch.Tensor | None,
    group_key: str,
    vocab_range: list[int],
    vocab_range_repr: str,
    ignore_index: int,
    reduction: str,
    eps: float,
    convention: str,
    kl: bool,
    validate_args: bool,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, ∂loss/∂x of this rank's slice) — the collectives run here, when the op runs
    (eagerly, or inside a compiled graph). ``x`` (N, V_local) contiguous, ``target`` (N,)
    int64 global class ids; ``vocab_range`` [start, stop], or [] with the argument's repr
    (None: equal slices; anything else is this rank's problem, raised on every rank)."""
    opt = _exchange.ExchangeOptions(ignore_index, reduction, eps, convention, kl, validate_args)
    given: object = tuple(vocab_range) if vocab_range else _Repr(vocab_range_repr)
    if vocab_range_repr == "None":
        given = None
    st = _exchange.setup_rank(
        width=x.shape[1], rows=target.shape[0], device=x.device, group=_group_of(group_key),
        vocab_range=given, prior=prior, class_mask=class_mask, opt=opt,
    )  # fmt: skip
    # x (N, V_local) contiguous, target (N,) int64 global class ids
    cdt = compute_dtype(x.dtype)
    N, width = x.shape
    if st.problem is None:
        assert st.vrange is not None
        _, owner, y_loc = _exchange.local_targets(target, st.vrange, opt.ignore_index)
        a, a0, A_r = local_a(st, width, cdt, x.device)
        local = device_row_statistics(x, Rows(y=y_loc, a=a, a0=a0), None)  # pass 1
    else:  # every rank raises in the exchange
        local, A_r = neutral(N, cdt, x.device), 0.0
    ex = _exchange.exchange_statistics(st, local, target, A_r, opt)
    out, _ = rowmath.loss_and_nll(
        ex.stats, ex.plan, None, ex.u, kl=opt.kl, reduction=opt.reduction, shape=target.shape
    )
    if not need_grad:
        return out.to(x.dtype), x.new_empty(0)
    y2, g_p, g_y, g_a = _exchange.slice_grad_rows(ex, y_loc, owner, local.s)
    a2 = ex.plan.a[ex.start : ex.stop].to(cdt)
    rows = Rows(y=y2, a=a2, a0=ex.plan.a0, g_p=g_p.to(cdt), g_a=g_a.to(cdt), g_y=g_y.to(cdt))
    grad = _cpu_runtime.empty_like_gradient(x)
    device_row_statistics(x, rows, grad)  # pass 2: the gradient of the local slice
    return out.to(x.dtype), grad


@vocab_parallel_op.register_fake
def _vocab_parallel_fake(
    x, target, prior, class_mask, group_key, vocab_range, ignore_index, reduction, *args
):
    need_grad = args[-1]
    out = x.new_empty(target.shape if reduction == "none" else ())
    return out, (torch.empty_like(x) if need_grad else x.new_empty(0))


def _vp_setup_context(ctx, inputs, output) -> None:
    ctx.reduction = inputs[8]
    ctx.consumed = False
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(output[1])


def _vp_backward(ctx, grad_output, _grad_grad):
    # the gradient of the slice was computed in the forward pass: ∂L/∂x = grad_output · grad
    eager = not torch.compiler.is_compiling()
    if eager and torch.is_grad_enabled():
        raise RuntimeError(
            "vocab_parallel_cross_entropy does not support double backward "
            "(create_graph=True): its gradient is computed without a graph"
        )
    if eager and ctx.consumed:
        raise RuntimeError(
            "vocab_parallel_cross_entropy cannot backward twice through the same loss "
            "(retain_graph=True): its gradient is scaled in place"
        )
    ctx.consumed = True
    (grad,) = ctx.saved_tensors
    go = grad_output.reshape(-1, 1) if ctx.reduction == "none" else grad_output
    if not eager:
        grad = grad * go.to(grad.dtype)
    elif go.dim() or go.device.type != "cpu" or float(go) != 1.0:
        grad.mul_(go.to(grad.dtype))
    return (grad, *(None,) * 13)


vocab_parallel_op.register_autograd(_vp_backward, setup_context=_vp_setup_context)


def vocab_parallel_cross_entropy(
    local_logits: torch.Tensor,
    target: torch.Tensor,
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
    validate_args: bool = True,
) -> torch.Tensor:
    r"""Label-smoothed cross-entropy of logits split by vocabulary across a process group.

    Each rank of ``group`` holds the same N rows but only the columns [start, stop) of the
    vocabulary (a column-parallel LM head, Megatron-style). The result on every rank, and the
    gradient of every rank's slice, equal what :func:`labelsmooth.cross_entropy` gives on the
    gathered (N, V) logits with the same arguments (every ``convention``, ``prior``,
    ``class_mask``, ``ignore_index``, ``reduction``, ``kl``).

    Each rank reduces its slice to per-row statistics relative to the slice's max
    :math:`m_r` (:mod:`labelsmooth.ops.rowmath`), then

    .. math::
        m = \max_r m_r,\quad s = \sum_r s_r e^{m_r - m},\quad
        d_y = \sum_r [y \in r](d_{y,r} + m_r - m),\quad
        S = \sum_r \big(S_r + A_r (m_r - m)\big)

    and the loss is :math:`\alpha w_y(\log s - d_y) + \beta(A\log s - S)` per row: the
    log-sum-exp is :math:`m + \log s` with :math:`s \ge 1`, never the log of a normalized
    probability, so logit gaps of 1000 or more stay finite.

    Collectives (forward only; backward has none): one all-reduce MAX of a float64 header of
    3W + 26 values, whose size and dtype depend on the group only (a per-rank table of
    slices and error flags; a fingerprint of the options, the number of rows, the
    statistics' dtype and, with ``validate_args``, two exact hashes of the targets; the
    targets' range), then one all-reduce MAX of the N row maxima and one all-reduce SUM of
    3N values (s, d_y, S). Values are float32 for float16/bfloat16/float32 logits (float64
    for float64): **16 bytes per row**, plus the header. One device synchronization per
    call reads the header back (for V and the checks) before the row collectives run.

    Args:
        local_logits: (N, V_local) or (..., V_local) logits of this rank's slice (vocabulary
            last, as Megatron lays them out); float16, bfloat16, float32 or float64.
        target: (N,) or (...) integer **global** class ids in [0, V), or ``ignore_index``;
            the same on every rank.
        group: the tensor-parallel process group (None: the default group).
        vocab_range: (start, stop) of this rank's slice. None: equal slices in rank order,
            start = rank·V_local (uneven slices need it; the ranks' slices must tile [0, V)).
        ignore_index: target value that contributes 0 and is left out of the mean.
        reduction: "none" (the target's shape), "mean" or "sum".
        label_smoothing: ε in [0, 1].
        convention: "uniform", "others" or "unnormalized" (see
            :func:`labelsmooth.cross_entropy`).
        prior: (V,) smoothing prior for the **full** vocabulary (every rank passes the same
            vector), normalized over the full vocabulary. The full vector is needed anyway:
            u_y of a target in another rank's slice sets this rank's coefficients (convention
            "others"), and the normalization spans every slice; it costs V values per rank
            and no communication.
        class_mask: (V,) bool for the **full** vocabulary, as ``prior``.
        kl: return KL(q‖p) (see :func:`labelsmooth.cross_entropy`).
        validate_args: check the targets' range and that every rank got the same targets
            (two hashes and the range in the header: no cost per row), and the prior's
            values.
            Slices, options and ranks' argument errors are always checked (they cost a
            constant).

    Errors: an argument problem of one rank (a ``vocab_range`` that does not match the
    local width, slices with gaps or overlaps, a prior of another length, ranks with
    different options or targets, a target outside [0, V)) raises ``ValueError`` on
    **every** rank after the first collective, instead of leaving the others waiting. So do
    the differences that would change a later collective's size or dtype (a different
    number of rows, float64 logits on some ranks and lower precision on others,
    ``validate_args`` on some ranks only): a collective that mismatches between ranks
    cannot be checked inside it (gloo aborts a process, NCCL may wait until its timeout),
    so the header, which cannot mismatch, checks them first. Type, dtype and shape errors
    are raised at once (every rank runs the same code).

    Returns:
        The loss in the logits' dtype: a scalar, or the target's shape for "none".

    Example:
        >>> import os, tempfile, torch, torch.distributed as dist
        >>> import labelsmooth
        >>> from labelsmooth.parallel import vocab_parallel_cross_entropy
        >>> path = os.path.join(tempfile.mkdtemp(), "init")
        >>> dist.init_process_group("gloo", init_method=f"file://{path}", rank=0, world_size=1)
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> target = torch.tensor([0, 2])
        >>> loss = vocab_parallel_cross_entropy(logits, target, label_smoothing=0.1)
        >>> torch.allclose(loss, labelsmooth.cross_entropy(logits, target, label_smoothing=0.1))
        True
        >>> dist.destroy_process_group()
    """
    if not isinstance(local_logits, torch.Tensor):
        raise TypeError(f"local_logits must be a torch.Tensor, got {type(local_logits).__name__}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if local_logits.dtype not in _validate.FLOAT_DTYPES:
        raise ValueError(
            f"local_logits must be a floating-point tensor (float16, bfloat16, float32 or "
            f"float64), got local_logits.dtype={local_logits.dtype}"
        )
    if local_logits.dim() == 0 or local_logits.shape[-1] < 1:
        raise ValueError(
            f"local_logits must have shape (..., V_local) with V_local >= 1, got "
            f"local_logits.shape={tuple(local_logits.shape)}"
        )
    _validate.check_row_target(target, local_logits, "local_logits", "V_local")
    options = _validate.LossOptions(
        ignore_index, reduction, label_smoothing, convention, prior, class_mask, kl
    )
    opt = check_common(options, validate_args, local_logits.device)
    width = local_logits.shape[-1]
    x = local_logits.reshape(-1, width)
    if not x.is_contiguous():
        x = x.contiguous()
    y = target.reshape(-1).long()
    need_grad = local_logits.requires_grad and torch.is_grad_enabled()
    loss, _ = vocab_parallel_op(
        x, y, prior, class_mask, _group_key(group), _range_list(vocab_range), repr(vocab_range),
        opt.ignore_index, opt.reduction, opt.eps, opt.convention, opt.kl, opt.validate, need_grad,
    )  # fmt: skip
    return loss.reshape(target.shape) if reduction == "none" else loss


def _range_list(vocab_range: object) -> list[int]:
    """``vocab_range`` as the op's list argument: [] for None; anything that is not a pair
    of ints is handed over as it is checked later (every rank raises in the exchange)."""
    if vocab_range is None:
        return []
    if (
        isinstance(vocab_range, (tuple, list))
        and len(vocab_range) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in vocab_range)
    ):
        return [int(vocab_range[0]), int(vocab_range[1])]
    raise ValueError(
        f"vocab_range must be a pair of ints (start, stop) or None, got vocab_range={vocab_range!r}"
    )
