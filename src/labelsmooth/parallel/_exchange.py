"""The statistics exchange of the vocabulary-parallel losses: three all-reduces, nothing else.

Every rank holds all N rows but only its slice [start, stop) of the vocabulary. A rank's row
kernel gives, per row, the statistics of :mod:`labelsmooth.ops.rowmath` relative to the
slice's own max m_r (s_r, d_y,r, S_r). Then::

    MAX  all-reduce   the header, float64, 3·W + 2·K + 2 values (a size and dtype that
                      depend on nothing but the group, so it cannot mismatch):
                      per rank: start, stop, an error flag        (3·W values, a table)
                      the call's fingerprint, ± itself             (2·K values)
                      with validate_args: max target, −min target  (2 values)
    MAX  all-reduce   m = max_r m_r                                (N values)
    rebase            s_r e^{m_r−m},  [y ∈ r](d_y,r + m_r − m),  S_r + A_r (m_r − m)
    SUM  all-reduce   s, d_y, S                                    (3·N values)

and :func:`rowmath.loss_and_nll` turns the global statistics into the loss, exactly as the fused
path does with the statistics of a whole row. The statistics travel in their dtype (float32
for float16/bfloat16/float32 logits, float64 for float64).

Errors that depend on one rank's arguments (a ``vocab_range`` that does not match the local
width, invalid prior values) are not raised before the collectives, which would leave the
other ranks waiting in them: the rank sets its error flag in the header and every rank
raises after it. The header also tells every rank all the slices (so V and the tiling are
checked exactly), and the fingerprint catches ranks called with different options, and
with anything that would change the size or dtype of the two later collectives (the number
of rows, the statistics' dtype): a collective whose size or dtype differs between ranks
kills them (gloo aborts the process), so that is checked before it runs, and every rank
raises the same ``ValueError``. With ``validate_args`` the fingerprint includes two exact
integer hashes of the targets (equal targets on every rank) and the header their range. The
header is read back to the host: one device synchronization per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from labelsmooth import _validate
from labelsmooth.ops import rowmath
from labelsmooth.ops.reference import smoothing_prior
from labelsmooth.ops.rowmath import RowStats

__all__ = [
    "ExchangeOptions",
    "Exchanged",
    "RankSetup",
    "exchange_statistics",
    "local_targets",
    "setup_rank",
    "slice_grad_rows",
]

#: Largest vocabulary whose class ids travel exactly in float32 (the MAX table and targets).
MAX_VOCAB = 1 << 24


@dataclass(frozen=True)
class ExchangeOptions:
    """The non-tensor arguments shared by both losses (validated)."""

    ignore_index: int
    reduction: str
    eps: float
    convention: str
    kl: bool
    validate: bool


@dataclass(frozen=True)
class RankSetup:
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


def _fingerprint(
    opt: ExchangeOptions, prior: torch.Tensor | None, class_mask: torch.Tensor | None, rows: int
) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """The call's options as numbers, and their names (:func:`exchange_statistics` appends the
    statistics' dtype and, validating, the targets' hashes)."""
    names = (
        "label_smoothing", "convention", "reduction", "kl", "ignore_index", "validate_args",
        "prior", "class_mask", "number of rows",
    )  # fmt: skip
    values = (
        opt.eps,
        float(_validate.CONVENTIONS.index(opt.convention)),
        float(_validate.REDUCTIONS.index(opt.reduction)),
        float(opt.kl),
        float(opt.ignore_index),
        float(opt.validate),
        _vector_hash(prior),
        _vector_hash(class_mask),
        float(rows),
    )
    return values, names


def _slice_of(
    vocab_range: object, rank: int, width: int
) -> tuple[tuple[int, int] | None, str | None]:
    """This rank's [start, stop), or None and the problem (recorded, raised after the header)."""
    if vocab_range is None:
        vrange = (rank * width, (rank + 1) * width)
    elif (
        not isinstance(vocab_range, (tuple, list))
        or len(vocab_range) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in vocab_range)
    ):
        return None, (
            f"vocab_range must be a pair of ints (start, stop), got vocab_range={vocab_range!r}"
        )
    else:
        start, stop = int(vocab_range[0]), int(vocab_range[1])
        if not 0 <= start < stop:
            return None, (
                f"vocab_range must satisfy 0 <= start < stop, got vocab_range={vocab_range!r}"
            )
        if stop - start != width:
            return None, (
                f"vocab_range={vocab_range!r} holds {stop - start} classes but this rank's "
                f"logits have V_local={width} (the last dimension)"
            )
        vrange = (start, stop)
    if vrange[1] > MAX_VOCAB:
        return None, (
            f"vocabularies above 2**24 = {MAX_VOCAB} classes are not supported, "
            f"got vocab_range stop={vrange[1]}"
        )
    return vrange, None


def setup_rank(
    *,
    width: int,
    rows: int,
    device: torch.device,
    group: dist.ProcessGroup | None,
    vocab_range: object,
    prior: torch.Tensor | None,
    class_mask: torch.Tensor | None,
    opt: ExchangeOptions,
) -> RankSetup:
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
    vrange, problem = _slice_of(vocab_range, rank, width)
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
                _validate.check_values(
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

    fingerprint, names = _fingerprint(opt, prior, class_mask, rows)
    return RankSetup(group, rank, world, vrange, problem, u_full, fingerprint, names)


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
    """The result of :func:`exchange_statistics`: global statistics (relative to the global
    row max), this slice's rebased ones (for the gradient), the row plan with global
    coefficients."""

    stats: RowStats
    local: RowStats
    plan: rowmath.RowPlan
    u: torch.Tensor  # (V,) float64
    vocab: int
    start: int
    stop: int


def _fail_everywhere(st: RankSetup, bad_ranks: list[int]) -> None:
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


def _check_tiling(starts: list[int], stops: list[int], st: RankSetup) -> int:
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


#: Codes of the statistics' dtypes in the fingerprint.
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
#: The targets' hash: Σ_k (t_k + 1)·c_k mod P with c_k = (A·k + B) mod (P − 1) + 1, exact in
#: int64 (t_k < 2**24 + 2, c_k < 2**31, N < 2**32 rows). Two targets that differ in one row
#: always differ in it (P is prime); with the plain sum as a second hash, a difference in
#: several rows that cancels in both is a 1-in-2**31 accident.
_P, _A, _B = 2_147_483_647, 1_103_515_245, 12_345


def _target_summary(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(hash, sum, max, min) of the targets (ignored rows as −1), float64 on the device."""
    if target.shape[0] == 0:
        return torch.zeros(4, dtype=torch.float64, device=target.device)
    t = torch.where(valid, target, -1)
    shifted = t.clamp(-1, MAX_VOCAB) + 1  # an out-of-range target is refused by its range
    k = torch.arange(t.shape[0], dtype=torch.int64, device=t.device)
    c = (k * _A + _B) % (_P - 1) + 1
    h = ((shifted * c) % _P).sum() % _P
    lo = torch.where(valid, target, 0).amin()
    return torch.stack([h, shifted.sum(), t.amax(), lo]).to(torch.float64)


def _header(
    st: RankSetup, target: torch.Tensor, valid: torch.Tensor, cdt: torch.dtype, opt: ExchangeOptions
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The first collective's buffer (float64, 3·W + 2·K + 2) and the fingerprint's names."""
    dev = target.device
    table = torch.full((3, st.world), -1.0, dtype=torch.float64, device=dev)
    if st.vrange is not None:
        table[0, st.rank], table[1, st.rank] = st.vrange
    table[2, st.rank] = 1.0 if st.problem is not None else 0.0
    names = (*st.fingerprint_names, "dtype of the statistics (float64 or lower-precision logits)")
    fixed = torch.tensor([*st.fingerprint, float(_DTYPES.index(cdt))], dtype=torch.float64)
    fp = fixed.to(dev)
    span = torch.zeros(2, dtype=torch.float64, device=dev)
    if opt.validate:
        summary = _target_summary(target, valid)  # (hash, sum, max, min)
        fp = torch.cat([fp, summary[:2]])
        names += ("target", "target")
        span = torch.stack([summary[2], -summary[3]])
    else:  # not compared (0 on every rank that does not validate)
        fp = torch.cat([fp, torch.zeros(2, dtype=torch.float64, device=dev)])
        names += ("target", "target")
    return torch.cat([table.reshape(-1), fp, -fp, span]), names


def _check_header(
    st: RankSetup, host: list[float], names: tuple[str, ...]
) -> tuple[int, float, float]:
    """Raise what the header reveals (on every rank alike); return V and the targets' range."""
    W, K = st.world, len(names)
    starts, stops, flags = host[:W], host[W : 2 * W], host[2 * W : 3 * W]
    fmax, fneg = host[3 * W : 3 * W + K], host[3 * W + K : 3 * W + 2 * K]
    bad = [r for r in range(W) if flags[r] > 0]
    if bad:
        _fail_everywhere(st, bad)
    differ = list(dict.fromkeys(n for n, a, b in zip(names, fmax, fneg) if a != -b))
    if differ:
        if differ == ["target"]:
            raise ValueError(
                "target differs between the ranks of the group: every rank must pass the same "
                "(global) class ids; check the data loader's sharding (the tensor-parallel "
                f"ranks must read the same batch); this is rank {st.rank}"
            )
        raise ValueError(
            f"the ranks were called with different {', '.join(differ)}: every rank of the "
            f"group must pass the same options, prior, class_mask, logits dtype and (global) "
            f"target; this is rank {st.rank}"
        )
    vocab = _check_tiling([int(v) for v in starts], [int(v) for v in stops], st)
    if st.u_full is not None and st.u_full.shape[0] != vocab:
        raise ValueError(
            f"prior/class_mask have {st.u_full.shape[0]} entries but the ranks' slices cover "
            f"V={vocab} classes: give them for the full vocabulary"
        )
    return vocab, host[-2], -host[-1]


def exchange_statistics(
    st: RankSetup,
    local: RowStats,
    target: torch.Tensor,
    A_local: torch.Tensor | float,
    opt: ExchangeOptions,
) -> Exchanged:
    """Run the three all-reduces and check what they reveal (see the module docstring).

    Args:
        st: :func:`setup_rank`'s result.
        local: (N,) statistics of this slice relative to its own row max (neutral for
            ignored rows). With a uniform prior (``st.u_full`` is None) ``S`` is taken with
            a_k = 1 (V is not known yet): it is divided by V here.
        target: (N,) int64 global class ids.
        A_local: Σ a_k over this slice's classes, as used for ``local.S``.
        opt: the options.
    """
    cdt, dev = local.m.dtype, local.m.device
    valid = target != opt.ignore_index
    header, names = _header(st, target, valid, cdt, opt)
    dist.all_reduce(header, op=dist.ReduceOp.MAX, group=st.group)  # collective 1
    host = header.tolist()  # the one device synchronization
    vocab, t_max, t_min = _check_header(st, host, names)
    if opt.validate and (t_min < 0 or t_max >= vocab):
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

    m = local.m.clone()
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=st.group)  # collective 2: same N, dtype
    owner = valid & (target >= start) & (target < stop)
    reb = rowmath.rebase(local, m, owner, A_local)
    sums = torch.stack([reb.s, reb.d_y, reb.S])  # (3, N)
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=st.group)  # collective 3
    S = sums[2] / vocab if uniform else sums[2]
    stats = RowStats(m, sums[0], sums[1], S)
    return Exchanged(stats, reb, plan, u, vocab, start, stop)


def slice_grad_rows(
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
