"""DTensor logits: what :func:`labelsmooth.cross_entropy` does with a ``DTensor``.

torchtitan and other FSDP2/TP stacks hold the LM head's output as a
``torch.distributed.tensor.DTensor`` sharded on the vocabulary (``Shard(1)`` or ``Shard(-1)``
of (N, V) logits on a 1-D tensor-parallel mesh, or on one dim of a 2-D mesh).
:func:`labelsmooth.cross_entropy` (and so ``LabelSmoothingCrossEntropy``) sends a DTensor here
from one type check at its top; plain tensors never reach this module. The class dimension
is ``F.cross_entropy``'s (and ``loss_parallel()``'s): dim 1, or dim 0 for unbatched (C,)
logits. Per mesh dim the logits' placement decides:

* ``Shard(class dim)`` on exactly one mesh dim (the TP dim): the vocabulary-parallel loss
  (:func:`labelsmooth.parallel.vocab_parallel_cross_entropy`) on the local shard over that
  mesh dim's process group, the shard's classes [start, stop) from DTensor's own layout
  (``Shard.local_shard_size_and_offset``: ``torch.chunk``'s, so uneven shards work);
* ``Replicate()``: nothing to combine;
* ``Shard(d)`` of another dim (the batch: data or context parallel): each rank's rows are
  its own; "none" and "sum" are exact (the result is sharded or ``Partial("sum")`` over that
  mesh dim), "mean" is refused in one line (a per-rank mean is not the global mean) — as
  ``loss_parallel()`` does;
* anything else (``Partial``, a strided shard, another placement): one ``ValueError``
  naming ``input`` and the placement.

Without a TP dim the single-process loss runs on the local value (every option of
:func:`labelsmooth.cross_entropy`). With one, the options of the vocabulary-parallel loss
(every convention, ``prior``, ``class_mask``, ``kl``, ``ignore_index``, reductions,
``validate_args``); ``weight``, soft targets, ``inplace_backward``, ``return_nll`` and an
``impl`` other than "auto" are refused in one line. The target is a plain tensor (the same
on every rank) or a DTensor whose placements are the logits' with the class dim's shard
replaced by ``Replicate()`` (``loss_parallel()``'s rule).

The result is what ``F.cross_entropy`` returns under ``loss_parallel()``, so the two are
swappable: a DTensor on the logits' mesh, replicated over the TP dim (its local value is
the global loss on every rank); for "none" it has the target's placements. Gradients reach
the DTensor logits through ``to_local`` / ``DTensor.from_local``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

from labelsmooth import _validate
from labelsmooth.parallel._cross_entropy import vocab_parallel_cross_entropy

__all__ = ["is_dtensor", "cross_entropy"]


def is_dtensor(x: object) -> bool:
    """Whether ``x`` is a DTensor. Imports nothing: a DTensor can only exist once
    ``torch.distributed.tensor`` has been imported."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(x, module.DTensor)


def _layout(placements: tuple[Any, ...], class_dim: int, ndim: int) -> int | None:
    """The mesh dim that shards the class dim (None if none does); every placement must be
    ``Shard`` or ``Replicate``, and at most one mesh dim may shard the class dim."""
    from torch.distributed.tensor import Replicate, Shard

    tp: int | None = None
    for i, p in enumerate(placements):
        if type(p) is Shard and p.dim % ndim == class_dim:
            if tp is not None:
                raise ValueError(
                    f"input must be sharded on the class dimension (dim {class_dim}) by one "
                    f"mesh dim only, got input.placements={placements}"
                )
            tp = i
        elif type(p) is not Shard and type(p) is not Replicate:
            raise ValueError(
                f"input must be a DTensor sharded on the class dimension (dim {class_dim}), "
                f"replicated or sharded on another dim, got input.placements={placements} "
                f"({p} on mesh dim {i})"
            )
    return tp


def _target_placements(placements: tuple[Any, ...], class_dim: int, ndim: int) -> tuple:
    """The placements of the per-row loss (and of class-index targets): the class dim's
    shard becomes ``Replicate()``, a shard of a later dim moves down by one."""
    from torch.distributed.tensor import Replicate, Shard

    out: list[Any] = []
    for p in placements:
        d = p.dim % ndim if isinstance(p, Shard) else None
        if d is None or d == class_dim:
            out.append(Replicate())
        else:
            out.append(Shard(d - 1 if d > class_dim else d))
    return tuple(out)


def _local(name: str, value: Any, placements: tuple, mesh: Any) -> Any:
    """The local value of a DTensor argument with the given placements (a plain tensor is
    taken as it is where those are all ``Replicate()``; ``None`` stays ``None``)."""
    if value is None:
        return None
    if is_dtensor(value):
        if value.device_mesh != mesh or tuple(value.placements) != placements:
            raise ValueError(
                f"{name} must be a DTensor on input's mesh with placements {placements}, got "
                f"{name}.placements={tuple(value.placements)} on {value.device_mesh}"
            )
        return value.to_local()
    if isinstance(value, torch.Tensor) and not all(p.is_replicate() for p in placements):
        raise ValueError(
            f"{name} must be a DTensor with placements {placements} when input is sharded on "
            f"a batch dimension (a plain tensor is ambiguous: global or local), got a "
            f"{type(value).__name__}"
        )
    return value


def _loss_placements(placements: tuple, tp: int | None, reduction: str, rows: tuple) -> tuple:
    """The result's placements, as ``loss_parallel()`` gives them: "none" has the rows'
    placements; a sum is replicated over the TP dim and partial over batch shards."""
    from torch.distributed.tensor import Partial, Replicate

    if reduction == "none":
        return rows
    batch = [i for i, p in enumerate(placements) if p.is_shard() and i != tp]
    if reduction == "mean" and batch:
        raise ValueError(
            f"reduction='mean' needs the global number of counted targets, but input is "
            f"sharded on a batch dimension (input.placements={placements}): each rank would "
            f"get its own mean; use reduction='sum' and divide by the global count"
        )
    return tuple(Partial("sum") if i in batch else Replicate() for i in range(len(placements)))


def _vocab_range(input: Any, tp: int, class_dim: int) -> tuple[int, int]:
    """[start, stop) of this rank's classes in the DTensor's layout (``torch.chunk``'s);
    every rank checks every shard, so an empty one is refused on all of them at once."""
    from torch.distributed.tensor import Shard

    mesh, V_ = input.device_mesh, input.shape[class_dim]
    size = mesh.size(tp)
    widths = [Shard.local_shard_size_and_offset(V_, size, r)[0] for r in range(size)]
    if min(widths) < 1:
        raise ValueError(
            f"input's {V_} classes in {size} shards (mesh dim {tp}) leave a shard empty "
            f"(torch.chunk's layout: widths {widths}); the vocabulary-parallel loss needs "
            f"at least one class per rank"
        )
    width, start = Shard.local_shard_size_and_offset(V_, size, mesh.get_local_rank(tp))
    local = input.to_local().shape[class_dim]
    if local != width:
        raise ValueError(
            f"input's local shard has {local} classes where its layout says {width} "
            f"(input.shape={tuple(input.shape)}); create it with DTensor.from_local(..., "
            f"shape=, stride=) for uneven shards"
        )
    return int(start), int(start + width)


def _refuse_for_vocab(weight: Any, target: Any, impl: str, **flags: bool) -> None:
    """The options the vocabulary-parallel loss does not have, refused in one line."""
    why = None
    if weight is not None:
        why = "weight (class weights) is not supported"
    elif isinstance(target, torch.Tensor) and target.is_floating_point():
        why = f"soft targets are not supported (target.dtype={target.dtype})"
    elif impl != "auto":
        why = f"impl={impl!r} cannot run it (it uses the device's row kernel: impl='auto')"
    for name, value in flags.items():
        if why is None and value:
            why = f"{name}=True is not supported"
    if why is not None:
        raise ValueError(
            f"input is a DTensor sharded on the vocabulary (the vocabulary-parallel loss): {why}"
        )


def cross_entropy(
    plain: Callable[..., Any],
    input: Any,
    target: Any,
    weight: Any,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    **options: Any,
) -> Any:
    """:func:`labelsmooth.cross_entropy` of DTensor logits (the module header says how).
    ``plain`` is the single-process function, for the local value when no mesh dim shards
    the vocabulary; ``options`` are its keyword-only arguments."""
    from torch.distributed.tensor import DTensor, Replicate

    _validate.check_loss_options(label_smoothing, reduction, options["convention"], ignore_index)
    mesh, placements, ndim = input.device_mesh, tuple(input.placements), input.dim()
    class_dim = 1 if ndim >= 2 else 0
    tp = _layout(placements, class_dim, ndim)
    rows = _target_placements(placements, class_dim, ndim)
    out = _loss_placements(placements, tp, reduction, rows)
    replicated = (Replicate(),) * mesh.ndim
    prior, mask = (_local(k, options.pop(k), replicated, mesh) for k in ("prior", "class_mask"))
    if tp is None:
        soft = isinstance(target, torch.Tensor) and target.is_floating_point()
        y = _local("target", target, placements if soft else rows, mesh)
        w = _local("weight", weight, replicated, mesh)
        res = plain(input.to_local(), y, w, ignore_index, reduction, label_smoothing,
                    prior=prior, class_mask=mask, **options)  # fmt: skip
    else:
        _refuse_for_vocab(weight, target, options.pop("impl"),
                          inplace_backward=options.pop("inplace_backward"),
                          return_nll=options.pop("return_nll"))  # fmt: skip
        y = _local("target", target, rows, mesh)
        start, stop = _vocab_range(input, tp, class_dim)
        local = input.to_local()
        if class_dim == 1 and ndim > 2:  # (N, V_local, d1, ...) -> (N, d1, ..., V_local)
            local = local.movedim(1, -1)
        res = vocab_parallel_cross_entropy(
            local, y, group=mesh.get_group(tp), vocab_range=(start, stop),
            ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
            prior=prior, class_mask=mask, **options,
        )  # fmt: skip
    shape = torch.Size(input.shape[:class_dim] + input.shape[class_dim + 1 :])
    shape = shape if reduction == "none" else torch.Size(())

    def wrap(t: torch.Tensor) -> Any:
        return DTensor.from_local(t, mesh, out, run_check=False, shape=shape,
                                  stride=_contiguous_stride(shape))  # fmt: skip

    return tuple(wrap(t) for t in res) if isinstance(res, tuple) else wrap(res)


def _contiguous_stride(shape: torch.Size) -> tuple[int, ...]:
    stride, acc = [], 1
    for n in reversed(shape):
        stride.append(acc)
        acc *= n
    return tuple(reversed(stride))
