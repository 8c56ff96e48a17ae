"""The statistics exchange of the vocabulary-parallel losses: two all-reduces, nothing else.

Every rank holds all N rows but only its slice [start, stop) of the vocabulary. A rank's row
kernel gives, per row, the statistics of :mod:`labelsmooth.ops.rowmath` relative to the
slice's own max m_r (s_r, d_y,r, S_r). Then::

    MAX  all-reduce   m = max_r m_r                                (N values)
                      + per rank: start, stop, an error flag      (3·W values, a table)
                      + the call's option fingerprint, ± itself   (2·K values)
                      + with validate_args: t and −t per row      (2·N values)
    rebase            s_r e^{m_r−m},  [y ∈ r](d_y,r + m_r − m),  S_r + A_r (m_r − m)
    SUM  all-reduce   s, d_y, S                                    (3·N values)

and :func:`rowmath.finish` turns the global statistics into the loss, exactly as the fused
path does with the statistics of a whole row. Values travel in the statistics' dtype
(float32 for float16/bfloat16/float32 logits, float64 for float64).

Errors that depend on one rank's arguments (a ``vocab_range`` that does not match the local
width, invalid prior values) are not raised before the collectives, which would leave the
other ranks waiting in them: the rank sets its error flag in the MAX table and every rank
raises after it. The table also tells every rank all the slices (so V and the tiling are
checked exactly), and the fingerprint catches ranks called with different options. The
table is read back to the host: one device synchronization per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from labelsmooth import _validate as V
from labelsmooth.ops import rowmath
from labelsmooth.ops.reference import smoothing_prior
from labelsmooth.ops.rowmath import RowStats

__all__ = ["Options", "Setup", "Exchanged", "setup", "local_targets", "exchange", "grad_rows"]

#: Largest vocabulary whose class ids travel exactly in float32 (the MAX table and targets).
MAX_VOCAB = 1 << 24


@dataclass(frozen=True)
class Options:
    """The non-tensor arguments shared by both losses (validated)."""

    ignore_index: int
    reduction: str
    eps: float
    convention: str
    kl: bool
    validate: bool


@dataclass(frozen=True)
class Setup:
    """One call on this rank before the collectives."""

    group: dist.ProcessGroup | None
    rank: int
    world: int
    vrange: tuple[int, int] | None  # this rank's [start, stop); None if unusable
    problem: str | None  # this rank's argument error, raised on every rank after the MAX
    u_full: torch.Tensor | None  # (V,) float64 normalized prior; None: uniform, V from ranges
    fingerprint: tuple[float, ...]
    fingerprint_names: tuple[str, ...]


def _vector_hash(v: torch.Tensor | None) -> float:
    """A number that differs (almost surely) between two different per-class vectors."""
    if v is None:
        return -1.0
    x = v.detach().to(torch.float64).reshape(-1)
    k = torch.arange(x.numel(), dtype=torch.float64, device=x.device)
    return float((x * torch.cos(k)).sum() + x.sum())


def setup(
    *,
    width: int,
    rows: int,
    device: torch.device,
    group: dist.ProcessGroup | None,
    vocab_range: object,
    prior: torch.Tensor | None,
    class_mask: torch.Tensor | None,
    opt: Options,
) -> Setup:
    """Group, this rank's slice and the full-vocabulary prior; local problems are recorded,
    not raised (see the module docstring). ``prior``/``class_mask`` are already checked for
    type, dtype, device and 1-D shape."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "torch.distributed is not initialized: call torch.distributed.init_process_group "
            "(gloo or nccl) before the vocabulary-parallel loss"
        )
    rank = dist.get_rank(group)
    world = dist.get_world_size(group)
    if rank < 0:
        raise ValueError(f"this process is not a member of group={group!r}")
    problem: str | None = None
    vrange: tuple[int, int] | None = None
    if vocab_range is None:
        vrange = (rank * width, (rank + 1) * width)
    elif (
        not isinstance(vocab_range, (tuple, list))
        or len(vocab_range) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in vocab_range)
    ):
        problem = (
            f"vocab_range must be a pair of ints (start, stop), got vocab_range={vocab_range!r}"
        )
    else:
        start, stop = int(vocab_range[0]), int(vocab_range[1])
        if not 0 <= start < stop:
            problem = f"vocab_range must satisfy 0 <= start < stop, got vocab_range={vocab_range!r}"
        elif stop - start != width:
            problem = (
                f"vocab_range={vocab_range!r} holds {stop - start} classes but this rank's "
                f"logits have V_local={width} (the last dimension)"
            )
        else:
            vrange = (start, stop)
    if vrange is not None and vrange[1] > MAX_VOCAB:
        problem = (
            f"vocabularies above 2**24 = {MAX_VOCAB} classes are not supported, "
            f"got vocab_range stop={vrange[1]}"
        )
        vrange = None

    u_full = None
    full = prior if prior is not None else class_mask
    if full is not None:
        if prior is not None and class_mask is not None and prior.shape != class_mask.shape:
            raise ValueError(
                f"prior and class_mask must both have the full vocabulary's shape (V,), got "
                f"prior.shape={tuple(prior.shape)} and class_mask.shape={tuple(class_mask.shape)}"
            )
        Vp = int(full.shape[0])
        try:
            if opt.validate:
                stand_in = torch.empty((), device=device).expand(0, Vp)
                V.check_values(
                    stand_in, torch.empty(0, dtype=torch.long, device=device), opt.ignore_index,
                    soft=False, kl=False, weight=None, prior=prior, class_mask=class_mask,
                )  # fmt: skip
        except ValueError as err:
            problem = problem or str(err)
        if vrange is not None and vrange[1] > Vp and problem is None:
            problem = (
                f"vocab_range {vrange} reaches past the full vocabulary of prior/class_mask "
                f"(V={Vp} entries; they are given for the full vocabulary, not the local slice)"
            )
        u_full = smoothing_prior(Vp, prior, class_mask, dtype=torch.float64, device=device)

    names = (
        "label_smoothing", "convention", "reduction", "kl", "ignore_index", "validate_args",
        "prior", "class_mask", "number of rows",
    )  # fmt: skip
    fingerprint = (
        opt.eps,
        float(V.CONVENTIONS.index(opt.convention)),
        float(V.REDUCTIONS.index(opt.reduction)),
        float(opt.kl),
        float(opt.ignore_index),
        float(opt.validate),
        _vector_hash(prior),
        _vector_hash(class_mask),
        float(rows),
    )
    return Setup(group, rank, world, vrange, problem, u_full, fingerprint, names)


def local_targets(
    y: torch.Tensor, vrange: tuple[int, int], ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(valid, owner, y_loc) for global targets ``y`` (M,) int64: ``owner`` where the target
    lies in this slice; ``y_loc`` the row kernels' target: y − start for owned rows, 0 (any
    local class; its g_y is 0) for counted rows owned elsewhere, −1 for ignored rows."""
    start, stop = vrange
    valid = y != ignore_index
    owner = valid & (y >= start) & (y < stop)
    y_loc = torch.where(owner, y - start, torch.where(valid, 0, -1))
    return valid, owner, y_loc


@dataclass
class Exchanged:
    """The result of :func:`exchange`: global statistics (relative to the global row max),
    this slice's rebased ones (for the gradient), the row plan with global coefficients."""

    stats: RowStats
    local: RowStats
    plan: rowmath.RowPlan
    u: torch.Tensor  # (V,) float64
    vocab: int
    start: int
    stop: int


def _fail_everywhere(st: Setup, bad_ranks: list[int]) -> None:
    if st.problem is not None:
        raise ValueError(
            f"{st.problem} (rank {st.rank}; every rank of the group raises with it, so that "
            f"none waits in a collective)"
        )
    raise ValueError(
        f"rank(s) {bad_ranks} of the process group were given invalid arguments (their error "
        f"says which); this rank (rank {st.rank}) stops with them instead of waiting in a "
        f"collective"
    )


def _check_tiling(starts: list[int], stops: list[int], st: Setup) -> int:
    """V, if the slices of the ranks tile [0, V) without gaps or overlaps."""
    ranges = sorted(zip(starts, stops))
    ok = ranges[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    if not ok:
        table = [(int(a), int(b)) for a, b in zip(starts, stops)]
        hint = (
            " (vocab_range=None assumes equal slices in rank order; pass vocab_range=(start, "
            "stop) for uneven ones)"
        )
        raise ValueError(
            f"the ranks' vocabulary slices must tile [0, V) without gaps or overlaps, got "
            f"(start, stop) per rank {table}; this is rank {st.rank}{hint}"
        )
    return int(ranges[-1][1])


def exchange(
    st: Setup,
    local: RowStats,
    target: torch.Tensor,
    A_local: torch.Tensor | float,
    opt: Options,
) -> Exchanged:
    """Run the two all-reduces and check what they reveal (see the module docstring).

    Args:
        st: :func:`setup`'s result.
        local: (N,) statistics of this slice relative to its own row max (neutral for
            ignored rows). With a uniform prior (``st.u_full`` is None) ``S`` is taken with
            a_k = 1 (V is not known yet): it is divided by V here.
        target: (N,) int64 global class ids.
        A_local: Σ a_k over this slice's classes, as used for ``local.S``.
        opt: the options.
    """
    N = target.shape[0]
    W = st.world
    cdt, dev = local.m.dtype, local.m.device
    valid = target != opt.ignore_index
    parts = [local.m]
    if opt.validate:
        t = torch.where(valid, target, -1).to(cdt)
        parts += [t, -t]
    table = torch.full((3, W), -1.0, dtype=cdt, device=dev)
    if st.vrange is not None:
        table[0, st.rank], table[1, st.rank] = st.vrange
    table[2, st.rank] = 1.0 if st.problem is not None else 0.0
    fp = torch.tensor(st.fingerprint, dtype=torch.float64).to(cdt).to(dev)
    parts += [table.reshape(-1), fp, -fp]
    buf = torch.cat(parts)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX, group=st.group)  # collective 1

    k = 3 if opt.validate else 1
    head = buf[k * N :]
    stops_dev = head[W : 2 * W]
    extra = []
    if opt.validate:
        tmax, tmin = buf[N : 2 * N], -buf[2 * N : 3 * N]
        vocab_dev = stops_dev.amax()
        y = target.to(cdt)
        out_of_range = valid & ((y < 0) | (y >= vocab_dev))
        extra = [(tmax != tmin).any().to(cdt)[None], out_of_range.any().to(cdt)[None]]
    host = torch.cat([head, *extra]).tolist()  # the one device synchronization
    starts, stops, flags = host[:W], host[W : 2 * W], host[2 * W : 3 * W]
    K = len(st.fingerprint)
    fmax, fneg = host[3 * W : 3 * W + K], host[3 * W + K : 3 * W + 2 * K]
    bad = [r for r in range(W) if flags[r] > 0]
    if bad:
        _fail_everywhere(st, bad)
    differ = [name for name, a, b in zip(st.fingerprint_names, fmax, fneg) if a != -b]
    if differ:
        raise ValueError(
            f"the ranks were called with different {', '.join(differ)}: every rank of the "
            f"group must pass the same options, prior, class_mask and (global) target"
        )
    vocab = _check_tiling([int(v) for v in starts], [int(v) for v in stops], st)
    if st.u_full is not None and st.u_full.shape[0] != vocab:
        raise ValueError(
            f"prior/class_mask have {st.u_full.shape[0]} entries but the ranks' slices cover "
            f"V={vocab} classes: give them for the full vocabulary"
        )
    if opt.validate:
        mismatch, out_of_range_any = host[-2], host[-1]
        if mismatch:
            raise ValueError(
                "target differs between the ranks of the group: every rank must pass the same "
                "(global) class ids; check the data loader's sharding (the tensor-parallel "
                "ranks must read the same batch)"
            )
        if out_of_range_any:
            bad_t = target[valid & ((target < 0) | (target >= vocab))]
            raise ValueError(
                f"target holds class index {int(bad_t[0])}, outside [0, {vocab}) for the full "
                f"vocabulary (and not ignore_index={opt.ignore_index})"
            )
    assert st.vrange is not None  # no problem was flagged
    start, stop = st.vrange

    uniform = st.u_full is None
    u = (
        torch.full((vocab,), 1 / vocab, dtype=torch.float64, device=dev)
        if st.u_full is None
        else st.u_full
    )
    plan = rowmath.plan_rows(
        target, None, u, ignore_index=opt.ignore_index, eps=opt.eps, convention=opt.convention,
        reduction=opt.reduction, uniform_prior=uniform,
    )  # fmt: skip

    m = buf[:N]
    owner = valid & (target >= start) & (target < stop)
    reb = rowmath.rebase(local, m, owner, A_local)
    sums = torch.stack([reb.s, reb.d_y, reb.S])  # (3, N)
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=st.group)  # collective 2
    S = sums[2] / vocab if uniform else sums[2]
    stats = RowStats(m, sums[0], sums[1], S)
    return Exchanged(stats, reb, plan, u, vocab, start, stop)


def grad_rows(
    ex: Exchanged, y_loc: torch.Tensor, owner: torch.Tensor, local_s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, g_p, g_y, g_a) per row (float64 coefficients, the reduction's scale included) for
    the row kernels' gradient pass over this slice.

    The kernels compute ``g_p·exp(x − m_r)/s_r − g_a·a − g_y·onehot(y)`` with the slice's own
    m_r and s_r; the global gradient is ``G_p·exp(x − m)/s − G_a·a − G_y·onehot(y)``, so the
    slice gets g_p = G_p·s_r e^{m_r − m}/s (its rebased s over the global s), g_y = G_y
    where it holds the target and 0 elsewhere, g_a = G_a. A row whose slice has no
    probability mass (s_r = 0: all its local logits are −inf) is handed to the kernel as
    ignored (exactly 0; its true gradient −G_a·a_k − G_y[k = y] is 0 unless the loss is
    infinite anyway), which avoids the kernel's 0/0.
    """
    G_p, G_y, G_a = ex.plan.grad_coefficients()
    g_p = G_p * (ex.local.s.double() / ex.stats.s.double())
    g_y = torch.where(owner, G_y, 0)
    y = torch.where(local_s > 0, y_loc, -1)
    return y, g_p, g_y, G_a
