"""The ``torch.library`` ops: how the fused kernels meet autograd, ``torch.compile`` and
``torch.func``.

Long file: every op with its fake function, autograd formula and vmap rule, side by side.

Two ops, both opaque to the tracer (their bodies run eagerly, so they may synchronize, raise
and call C or Triton kernels), each with a fake (meta) function that gives the shapes and
dtypes of its outputs without data:

* ``labelsmooth::checked_target(target, weight, prior, class_mask, num_classes, ...)``: the
  data-dependent argument checks of ``validate_args=True`` (class-index range, finite weight
  and prior, a mask that allows a class, soft-target rows for ``kl``) with the same messages
  as in eager mode, returning a copy of ``target`` that the loss then uses (so the compiled
  graph cannot drop the check as dead code). Eager calls run the checks directly, without
  this op (:func:`labelsmooth.functional.cross_entropy`).
* ``labelsmooth::fused_cross_entropy(input, target, weight, u, ..., backend)``: the fused
  family (``impl="fused"`` and ``impl="triton"``; ``backend`` names the row backend of
  :data:`labelsmooth._dispatch.ROW_BACKENDS`). Its forward computes every row's statistics
  and, in the same pass, the gradient of the loss with respect to the logits, returned as an
  output; the autograd formula, written once here for every backend, multiplies it by the
  incoming gradient. With ``inplace_backward`` the forward computes statistics only and the
  backward runs ``labelsmooth::fused_gradient_``, which declares that it writes the gradient
  into the logits (``mutates_args``), so autograd bumps their version counter.

* ``labelsmooth::triton_cross_entropy`` and ``labelsmooth::triton_gradient_``: the Triton
  twins of the fused family's two ops (``torch.library.triton_op``, defined on first use by
  :func:`triton_ops`), not opaque: their bodies launch the kernels through
  ``torch.library.wrap_triton``, so Inductor sees them. Traced calls of impl="triton" with
  kernels compiled for CUDA run them (:func:`triton_op_ready`).

``torch.vmap`` of ``fused_cross_entropy`` runs the op once per batch entry (a loop rule);
``torch.func.grad``/``vjp`` use the autograd formula.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from labelsmooth import _validate
from labelsmooth.ops import linear, rowmath
from labelsmooth.ops.reference import compute_dtype
from labelsmooth.ops.tracing import PLAIN_TYPES, is_transformed, runs_plain_eager

__all__ = [
    "checked_target",
    "fused_cross_entropy",
    "fused_gradient_",
    "linear_cross_entropy",
    "linear_cross_entropy_backward",
    "FusedForTransforms",
    "FusedEager",
    "triton_ops",
    "triton_op_ready",
    "runs_plain_eager",
    "PLAIN_TYPES",
    "LinearForTransforms",
    "LinearBackwardForTransforms",
    "chunked_linear_cross_entropy",
    "is_transformed",
]


# ---------------------------------------------------------------------------------------------
# validate_args=True under tracing


@torch.library.custom_op("labelsmooth::checked_target", mutates_args=())
def checked_target(
    target: Tensor,
    weight: Tensor | None,
    prior: Tensor | None,
    class_mask: Tensor | None,
    num_classes: int,
    ignore_index: int,
    soft: bool,
    kl: bool,
) -> Tensor:
    """``target`` (a copy) after :func:`labelsmooth._validate.check_values` passed."""
    if soft:
        shape = tuple(target.shape)
    elif target.dim():
        shape = (target.shape[0], num_classes, *target.shape[1:])
    else:
        shape = (num_classes,)
    stand_in = torch.empty((), device=target.device).expand(shape)  # the logits' shape only
    _validate.check_values(
        stand_in, target, ignore_index, soft=soft, kl=kl, weight=weight, prior=prior,
        class_mask=class_mask,
    )  # fmt: skip
    return target.clone()


@checked_target.register_fake
def _checked_target_fake(target, *args):
    return torch.empty_like(target)


@checked_target.register_vmap
def _checked_target_vmap(info, in_dims, target, *args):
    # every check is elementwise or per row: a batched target is checked whole, its batch
    # dimension merged into the rows; batched per-class vectors are checked whole too
    if in_dims[0] is None:
        return checked_target(target, *args), None
    moved = target.movedim(in_dims[0], 0)
    soft = args[5]
    rows = moved.flatten(0, 1) if moved.dim() > (2 if soft else 1) else moved
    return checked_target(rows, *args).reshape(moved.shape), 0


# ---------------------------------------------------------------------------------------------
# The fused family


def _plan(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    u: Tensor,
    ignore_index: int,
    reduction: str,
    eps: float,
    convention: str,
    uniform_prior: bool,
    need_grad: bool,
) -> tuple[rowmath.RowPlan, rowmath.Rows]:
    if weight is None and uniform_prior and target.device.type == "cpu":
        plan = rowmath.plan_uniform_rows(
            target, u, ignore_index=ignore_index, eps=eps, convention=convention,
            reduction=reduction,
        )  # fmt: skip
    else:
        plan = rowmath.plan_rows(
            target, weight, u, ignore_index=ignore_index, eps=eps, convention=convention,
            reduction=reduction, uniform_prior=uniform_prior,
        )  # fmt: skip
    return plan, plan.rows(compute_dtype(input.dtype), need_grad)


def _row_backend(name: str):
    from labelsmooth._dispatch import ROW_BACKENDS

    return ROW_BACKENDS[name].load()


def _fused_forward(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    u: Tensor,
    ignore_index: int,
    reduction: str,
    eps: float,
    convention: str,
    kl: bool,
    uniform_prior: bool,
    backend: str,
    need_grad: bool,
    inplace: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, per-row NLL, gradient, statistics) of the fused family.

    ``loss`` is reduced (input's dtype), ``nll`` (target's shape, compute dtype) is
    −log p_y per row, ``gradient`` is ∂loss/∂input (input's shape and dtype; empty unless
    ``need_grad`` and not ``inplace``) and ``statistics`` (2, M) holds each row's max and
    sum of exponentials for the in-place backward (empty unless ``need_grad`` and
    ``inplace``). Arguments validated by the caller.
    """
    from labelsmooth.ops.cpu.runtime import empty_like_gradient

    x = input if input.is_contiguous() else input.contiguous()
    plan, rows = _plan(
        x, target, weight, u, ignore_index, reduction, eps, convention, uniform_prior, need_grad
    )
    backend_fns = _row_backend(backend)
    grad = empty_like_gradient(x) if need_grad and not inplace else None
    stats = backend_fns.statistics(x, rows, grad)
    out, nll = rowmath.loss_and_nll(
        stats, plan, weight, u, kl=kl, reduction=reduction, shape=target.shape
    )
    cdt = compute_dtype(input.dtype)
    saved = torch.stack([stats.m, stats.s]) if need_grad and inplace else x.new_empty(0, dtype=cdt)
    return (
        out.to(input.dtype),
        nll.to(cdt),
        grad if grad is not None else x.new_empty(0),
        saved,
    )


#: the fused family's op: :func:`_fused_forward` behind ``torch.library`` (a fake, an
#: autograd formula and a vmap rule below), what traced and transformed calls run
fused_cross_entropy = torch.library.custom_op("labelsmooth::fused_cross_entropy", mutates_args=())(
    _fused_forward
)


@fused_cross_entropy.register_fake
def _fused_fake(input, target, weight, u, ignore_index, reduction, *args):
    need_grad, inplace = args[-2:]
    cdt = compute_dtype(input.dtype)
    out = input.new_empty(target.shape if reduction == "none" else (), dtype=input.dtype)
    nll = input.new_empty(target.shape, dtype=cdt)
    if need_grad and not inplace:
        grad = torch.empty_like(input, memory_format=torch.contiguous_format)
    else:
        grad = input.new_empty(0)
    saved = input.new_empty((2, target.numel()) if need_grad and inplace else (0,), dtype=cdt)
    return out, nll, grad, saved


def _gradient_into(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    u: Tensor,
    stats: Tensor,
    grad_output: Tensor,
    ignore_index: int,
    reduction: str,
    eps: float,
    convention: str,
    uniform_prior: bool,
    backend: str,
) -> None:
    """``inplace_backward``: ∂loss/∂input times ``grad_output``, written into ``input``. The
    body of ``fused_gradient_`` (and of its Triton twin)."""
    _, rows = _plan(
        input, target, weight, u, ignore_index, reduction, eps, convention, uniform_prior, True
    )
    go = grad_output.reshape(-1) if reduction == "none" else grad_output.reshape(())
    rows = rows.scaled(torch.where(rows.y >= 0, go, 0) if reduction == "none" else go)
    m_s = rowmath.RowStats(stats[0], stats[1], stats[0], stats[0]) if stats.numel() else None
    _row_backend(backend).gradient_into(input, rows, m_s)


#: the in-place gradient's op: :func:`_gradient_into` behind ``torch.library``
fused_gradient_ = torch.library.custom_op("labelsmooth::fused_gradient_", mutates_args=("input",))(
    _gradient_into
)


@fused_gradient_.register_fake
def _fused_gradient_fake(*args):
    return None


_DOUBLE_BACKWARD = (
    "impl={impl!r} does not support double backward (create_graph=True): its gradient is "
    "computed without a graph; use impl='reference'"
)
_TWICE = (
    "impl={impl!r} cannot backward twice through the same loss (retain_graph=True): the "
    "gradient is produced in place; use impl='reference'"
)


def _setup_context(ctx, inputs, output) -> None:
    (input, target, weight, u, ignore_index, reduction, eps, convention, kl, uniform_prior,
     backend, need_grad, inplace) = inputs  # fmt: skip
    _, nll, grad, stats = output
    # only the loss is differentiable; no zero-filled (N, C) gradient is made for the others
    ctx.mark_non_differentiable(nll, grad, stats)
    ctx.set_materialize_grads(False)
    ctx.in_transform = False
    ctx.triton_op = False  # set by triton_cross_entropy's own setup
    ctx.impl = "triton" if backend == "triton" else "fused"
    ctx.reduction = reduction
    ctx.inplace = inplace
    ctx.consumed = False
    if inplace:
        ctx.args = (ignore_index, reduction, eps, convention, uniform_prior, backend)
        # the logits are saved version-checked: a later in-place change raises in backward
        ctx.save_for_backward(input, target, weight, u, stats)
    else:
        ctx.save_for_backward(grad, target if reduction == "none" else None)
        ctx.ignore_index = ignore_index


def _backward(ctx, grad_loss, _grad_nll, _grad_grad, _grad_stats):
    # One formula for every backend: the gradient was computed in the forward pass, so the
    # chain rule is ∂L/∂x = grad_loss · grad (per row for reduction="none"). An ignored row's
    # gradient is 0 and stays 0 whatever its incoming gradient holds (inf, NaN): selected,
    # not multiplied.
    # plain eager autograd: guards and the in-place scaling; traced or transformed: a pure
    # function of its inputs
    eager = not (torch.compiler.is_compiling() or ctx.in_transform)
    if eager and torch.is_grad_enabled():
        raise RuntimeError(_DOUBLE_BACKWARD.format(impl=ctx.impl))
    if eager and ctx.consumed:
        raise RuntimeError(_TWICE.format(impl=ctx.impl))
    ctx.consumed = True
    none = (None,) * 12
    if ctx.inplace:
        input, target, weight, u, stats = ctx.saved_tensors
        if ctx.args[-1] == "triton" and ctx.triton_op:  # traced: the kernels visible too
            _TRITON_OPS["gradient"](input, target, weight, u, stats, grad_loss, *ctx.args[:-1])
        else:
            fused_gradient_(input, target, weight, u, stats, grad_loss, *ctx.args)
        return (input, *none)
    grad, target = ctx.saved_tensors
    if ctx.reduction == "none":
        go = torch.where(target != ctx.ignore_index, grad_loss, 0).unsqueeze(1)
    else:
        go = grad_loss
    if not eager:
        return (grad * go.to(grad.dtype), *none)
    # eager: scale the saved buffer in place (no second (N, C) buffer); a scalar 1 on the
    # CPU (the usual loss.backward()) needs no pass at all
    if go.dim() or go.device.type != "cpu" or float(go) != 1.0:
        grad.mul_(go.to(grad.dtype))
    return (grad, *none)


fused_cross_entropy.register_autograd(_backward, setup_context=_setup_context)


def _for_transforms(name, op, setup_context, backward):
    """The same op and the same autograd formula as an ``autograd.Function``, for calls
    inside ``torch.func`` transforms: PyTorch's functorch needs an ``autograd.Function`` with
    ``setup_context``, which ops registered with ``register_autograd`` do not provide.
    ``vmap`` of it runs the op's own vmap rule (where it has one)."""

    def _setup(ctx, inputs, output):
        setup_context(ctx, inputs, output)
        ctx.in_transform = True

    return type(
        name,
        (torch.autograd.Function,),
        {
            "generate_vmap_rule": True,
            "forward": staticmethod(lambda *args: op(*args)),
            "setup_context": staticmethod(_setup),
            "backward": staticmethod(lambda ctx, *grads: backward(ctx, *grads)),
        },
    )


#: ``fused_cross_entropy`` for torch.func transforms (see :func:`_for_transforms`).
FusedForTransforms = _for_transforms(
    "FusedForTransforms", fused_cross_entropy, _setup_context, _backward
)


class FusedEager(torch.autograd.Function):
    """``fused_cross_entropy`` for plain eager calls: the op's own body and autograd formula
    without ``torch.library``'s dispatch, whose argument handling costs tens of µs a call
    (measured at 256×1000: about a sixth of the call). Traced and transformed calls, which
    need the op, do not come here (:func:`runs_plain_eager`)."""

    @staticmethod
    def forward(*args: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return _fused_forward(*args)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        _setup_context(ctx, inputs, output)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> tuple:
        return _backward(ctx, *grads)


def _loop_vmap(op):
    """The vmap rule of a fused-family op: a loop over the batch, each entry one call of
    ``op`` (the reduction is per entry)."""

    def rule(info, in_dims, input, target, weight, u, *args):
        return _vmap_loop(op, info, in_dims, input, target, weight, u, *args)

    return rule


def _vmap_loop(op, info, in_dims, input, target, weight, u, *args):
    def pick(t: Tensor | None, d: int | None, b: int) -> Tensor | None:
        return t if t is None or d is None else t.select(d, b)

    outs = [
        op(
            pick(input, in_dims[0], b),
            pick(target, in_dims[1], b),
            pick(weight, in_dims[2], b),
            pick(u, in_dims[3], b),
            *args,
        )  # fmt: skip
        for b in range(info.batch_size)
    ]
    return tuple(torch.stack(list(o)) for o in zip(*outs)), (0, 0, 0, 0)


_fused_vmap = _loop_vmap(fused_cross_entropy)
fused_cross_entropy.register_vmap(_fused_vmap)


# ---------------------------------------------------------------------------------------------
# The fused family's Triton twins (``torch.library.triton_op``): what traced calls of
# impl="triton" on CUDA run, so that Inductor sees and schedules the kernels


def _triton_twin(body: Callable[..., Any]) -> Callable[..., Any]:
    """``body`` (an op body of the fused family) with its ``backend`` argument fixed to
    ``"triton"``: the body of that op's Triton twin. The twin's signature, which
    ``torch.library.triton_op`` reads to infer the schema, is ``body``'s without
    ``backend``; run on FakeTensors, the same function is the twin's fake."""
    signature = inspect.signature(body)
    at = list(signature.parameters).index("backend")

    def twin(*args: Any) -> Any:
        return body(*args[:at], "triton", *args[at:])

    twin.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name != "backend"]
    )
    twin.__annotations__ = {k: v for k, v in body.__annotations__.items() if k != "backend"}
    twin.__name__ = twin.__qualname__ = f"triton{body.__name__}"
    twin.__doc__ = f"{body.__name__} with the Triton rows (backend='triton')."
    return twin


def _triton_setup_context(ctx, inputs, output) -> None:
    *head, need_grad, inplace = inputs
    _setup_context(ctx, (*head, "triton", need_grad, inplace), output)
    ctx.triton_op = True


def _triton_backward(ctx, *grads):
    return _backward(ctx, *grads)[:-1]  # one argument (backend) fewer


#: the Triton twins once defined: "forward" (``labelsmooth::triton_cross_entropy``) and
#: "gradient" (``labelsmooth::triton_gradient_``); see :func:`triton_ops`
_TRITON_OPS: dict[str, Any] = {}


def triton_ops() -> dict[str, Any]:
    """Define (on the first call: ``torch.library.triton_op`` imports triton, which ``import
    labelsmooth`` must not) and return the Triton twins of the fused family's ops:
    ``"forward"``, ``labelsmooth::triton_cross_entropy`` (``fused_cross_entropy``'s
    arguments without ``backend``, the same autograd formula and vmap rule) and
    ``"gradient"``, ``labelsmooth::triton_gradient_`` (``fused_gradient_``'s, mutating
    ``input``). Their bodies launch the kernels through ``torch.library.wrap_triton``."""
    if not _TRITON_OPS:
        fwd = torch.library.triton_op("labelsmooth::triton_cross_entropy", mutates_args=())(
            _triton_twin(_fused_forward)
        )
        grad = torch.library.triton_op("labelsmooth::triton_gradient_", mutates_args={"input"})(
            _triton_twin(_gradient_into)
        )
        fwd.register_autograd(_triton_backward, setup_context=_triton_setup_context)
        fwd.register_vmap(_loop_vmap(fwd))
        _TRITON_OPS.update(forward=fwd, gradient=grad)
    return _TRITON_OPS


def triton_op_ready() -> bool:
    """Whether traced calls of impl="triton" run ``labelsmooth::triton_cross_entropy``
    (defined here if needed): kernels compiled for CUDA. Under the interpreter
    (``TRITON_INTERPRET=1``) a traced call keeps the opaque ``fused_cross_entropy``: an
    interpreted kernel cannot run on FakeTensors. Marked as a constant for Dynamo (as
    ``torch.compiler.assume_constant_result`` does, without importing torch._dynamo here):
    Dynamo calls it while tracing, so the op exists before the graph names it."""
    from labelsmooth.ops.triton import kernels  # imports triton

    if kernels.INTERPRETED:
        return False
    triton_ops()
    return True


triton_op_ready._dynamo_marked_constant = True  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# The chunked linear head


#: The schema of both linear-head ops' arguments: the call's tensors, then (after the
#: backward's incoming gradient) the scalars: the fields of
#: :class:`~labelsmooth.ops.linear.LinearOptions` in order and which gradients to compute,
#: typed as :func:`torch.library.infer_schema` types annotations (an int is a SymInt).
_LINEAR_TENSORS = "Tensor hidden, Tensor weight, Tensor? bias, Tensor target, Tensor u"
_LINEAR_SCALARS = (
    "SymInt ignore_index, str reduction, float eps, str convention, bool kl, float? softcap, "
    "SymInt chunk_size, bool uniform_prior, bool need_hidden, bool need_weight, bool need_bias"
)


def _linear_scalars(opt: linear.LinearOptions, need: tuple[bool, ...]) -> tuple[Any, ...]:
    """The ops' scalar arguments (:data:`_LINEAR_SCALARS`) for ``opt`` and ``need``."""
    return (*(getattr(opt, f.name) for f in dataclasses.fields(opt)), *need)


def _linear_options(
    bias: Tensor | None, scalars: tuple[Any, ...]
) -> tuple[linear.LinearOptions, tuple[bool, bool, bool]]:
    """``opt`` and ``need`` (hidden, weight, bias) back from the ops' scalar arguments; no
    bias, no bias gradient."""
    *values, need_hidden, need_weight, need_bias = scalars
    return linear.LinearOptions(*values), (need_hidden, need_weight, need_bias and bias is not None)


def _linear_grads(hidden: Tensor, grads: Sequence[Tensor | None]) -> tuple[Tensor, Tensor, Tensor]:
    """The ops' three gradient outputs: an empty tensor for a gradient not computed."""
    gh, gw, gb = (g if g is not None else hidden.new_empty(0) for g in grads)
    return gh, gw, gb


@torch.library.custom_op(
    "labelsmooth::linear_cross_entropy",
    mutates_args=(),
    schema=f"({_LINEAR_TENSORS}, {_LINEAR_SCALARS}) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, u: Tensor, *scalars: Any
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss, per-token NLL, ∂loss/∂hidden, ∂loss/∂weight, ∂loss/∂bias) of the chunked head
    (:mod:`labelsmooth.ops.linear`); ``hidden`` (N, H), ``target`` (N,) int64, validated.
    The gradients are computed in the same pass (empty when not asked for, and always empty
    for ``reduction="none"``, whose backward runs the chunk loop again)."""
    opt, need = _linear_options(bias, scalars)
    head = linear.Head(hidden, weight, bias)
    loss, nll, grads = linear.forward(head, target, u, opt, need)
    return loss, nll, *_linear_grads(hidden, grads)


def _fake_grads(hidden, weight, bias, need):
    """The fake gradient outputs of both ops for ``need`` (hidden, weight, bias)."""
    need_h, need_w, need_b = need
    return (
        torch.empty_like(hidden) if need_h else hidden.new_empty(0),
        torch.empty_like(weight) if need_w else hidden.new_empty(0),
        torch.empty_like(bias) if need_b else hidden.new_empty(0),
    )


@linear_cross_entropy.register_fake
def _linear_fake(hidden, weight, bias, target, u, *scalars):
    opt, need = _linear_options(bias, scalars)
    none = opt.reduction == "none"
    N = hidden.shape[0]
    return (
        hidden.new_empty((N,) if none else ()),
        hidden.new_empty((N,), dtype=compute_dtype(weight.dtype)),
        *_fake_grads(hidden, weight, bias, (False,) * 3 if none else need),
    )


@torch.library.custom_op(
    "labelsmooth::linear_cross_entropy_backward",
    mutates_args=(),
    schema=f"({_LINEAR_TENSORS}, Tensor grad_loss, {_LINEAR_SCALARS}) -> (Tensor, Tensor, Tensor)",
)
def linear_cross_entropy_backward(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    u: Tensor,
    grad_loss: Tensor,
    *scalars: Any,
) -> tuple[Tensor, Tensor, Tensor]:
    """``reduction="none"``: the gradients for one incoming gradient per token, by the chunk
    loop again (each row's coefficients times its incoming gradient). Takes the forward op's
    scalar arguments."""
    opt, need = _linear_options(bias, scalars)
    head = linear.Head(hidden, weight, bias)
    return _linear_grads(hidden, linear.backward_none(head, target, u, opt, need, grad_loss))


@linear_cross_entropy_backward.register_fake
def _linear_backward_fake(hidden, weight, bias, target, u, grad_loss, *scalars):
    return _fake_grads(hidden, weight, bias, _linear_options(bias, scalars)[1])


_LINEAR = "linear_cross_entropy(impl='chunked')"
_LINEAR_DOUBLE_BACKWARD = (
    f"{_LINEAR} does not support double backward (create_graph=True): its gradients are "
    "computed without a graph; use impl='reference'"
)


def _linear_setup_context(ctx, inputs, output) -> None:
    hidden, weight, bias, target, u, *scalars = inputs
    opt, need = _linear_options(bias, scalars)
    _, nll, gh, gw, gb = output
    ctx.mark_non_differentiable(nll, gh, gw, gb)
    ctx.set_materialize_grads(False)
    ctx.in_transform = False
    ctx.consumed = False
    ctx.reduction = opt.reduction
    ctx.need = need
    if opt.reduction != "none":
        ctx.save_for_backward(gh, gw, gb)
    else:
        ctx.scalars = scalars
        ctx.save_for_backward(hidden, weight, bias, target, u)


def _linear_backward(ctx, grad_loss, *_):
    # the chain rule with the gradients computed in the forward pass: ∂L/∂θ = grad_loss · g
    eager = not (torch.compiler.is_compiling() or ctx.in_transform)
    if eager and torch.is_grad_enabled():
        raise RuntimeError(_LINEAR_DOUBLE_BACKWARD)
    if ctx.reduction == "none":
        args = (*ctx.saved_tensors, grad_loss, *ctx.scalars)
        if ctx.in_transform and torch.is_grad_enabled():
            # torch.func.grad runs this backward inside its transform with grad mode on: the
            # backward op's own autograd.Function (no setup_context) would be refused there
            grads = LinearBackwardForTransforms.apply(*args)
        else:
            grads = linear_cross_entropy_backward(*args)
    else:
        if eager and ctx.consumed:
            raise RuntimeError(
                f"{_LINEAR} cannot backward twice through the same loss (retain_graph=True): "
                "its gradients are computed in the forward pass and handed out once; use "
                "impl='reference'"
            )
        ctx.consumed = True
        grads = ctx.saved_tensors
        if not eager:
            grads = tuple(g * grad_loss.to(g.dtype) for g in grads)
        elif grad_loss.device.type != "cpu" or float(grad_loss) != 1.0:
            for g in grads:
                g.mul_(grad_loss.to(g.dtype))
    gh, gw, gb = grads
    need_h, need_w, need_b = ctx.need
    none = (None,) * 13
    return (gh if need_h else None, gw if need_w else None, gb if need_b else None, *none)


linear_cross_entropy.register_autograd(_linear_backward, setup_context=_linear_setup_context)

#: ``linear_cross_entropy`` for torch.func transforms (see :func:`_for_transforms`).
LinearForTransforms = _for_transforms(
    "LinearForTransforms", linear_cross_entropy, _linear_setup_context, _linear_backward
)


def _linear_backward_setup_context(ctx, inputs, output) -> None:
    """Nothing to save: the gradients of ``linear_cross_entropy_backward`` have no formula."""
    ctx.set_materialize_grads(False)


def _linear_backward_backward(ctx, *grads):
    """Differentiating the gradients of ``reduction="none"`` (e.g. ``jacrev(grad(f))``)
    raises, as ``create_graph=True`` does in eager mode."""
    raise RuntimeError(_LINEAR_DOUBLE_BACKWARD)


#: ``linear_cross_entropy_backward`` for the backward of :data:`LinearForTransforms` when
#: ``torch.func.grad`` runs it with grad mode on (see :func:`_for_transforms`); ``vmap`` of
#: it runs the op once per batch entry (PyTorch's fallback).
LinearBackwardForTransforms = _for_transforms(
    "LinearBackwardForTransforms",
    linear_cross_entropy_backward,
    _linear_backward_setup_context,
    _linear_backward_backward,
)


def chunked_linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    u: Tensor,
    opt: linear.LinearOptions,
) -> tuple[Tensor, Tensor]:
    """(loss, nll) by the chunk loop (``impl="chunked"``); ``hidden`` (N, H), ``target`` (N,)
    int64, validated. The loss is (N,) for ``reduction="none"``, else a scalar; ``nll`` is
    the unsmoothed negative log-likelihood of every token (N,), 0 for ignored ones, detached."""
    grad_on = torch.is_grad_enabled()
    need = (
        grad_on and hidden.requires_grad,
        grad_on and weight.requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    args = (hidden, weight, bias, target, u, *_linear_scalars(opt, need))
    if not torch.compiler.is_compiling() and is_transformed(hidden):
        loss, nll, *_ = LinearForTransforms.apply(*args)
    else:
        loss, nll, *_ = linear_cross_entropy(*args)
    return loss, nll.detach()
