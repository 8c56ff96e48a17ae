"""Argument and tensor checks of the loss functions and their messages.

The checks shared by every loss live here (the CLI, the parallel losses and the framework
adapters add checks of their own arguments beside their code). Each check raises
``ValueError`` (or ``TypeError`` for a wrong kind of object) whose message names the
argument and the offending value, so a user never gets a wrong number, a crash deep inside
an op or a device-side assert instead.

Long file: the checks of every loss in one place, so that each message is written once.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from labelsmooth.ops.pytorch_kernel import torch_smoothing

__all__ = [
    "CONVENTIONS",
    "REDUCTIONS",
    "FLOAT_DTYPES",
    "check_label_smoothing",
    "check_loss_options",
    "check_flags",
    "check_fraction",
    "check_choice",
    "check_input",
    "check_target",
    "check_class_vector",
    "check_prior",
    "check_prior_tensor",
    "check_values",
    "Spec",
    "loss_spec",
    "LossOptions",
    "check_row_target",
]

CONVENTIONS = ("uniform", "others", "unnormalized")
REDUCTIONS = ("none", "mean", "sum")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {name}={value!r}")
    return value


def check_flags(**flags: object) -> None:
    """Every keyword must be a bool (``TypeError`` naming the first that is not)."""
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {flag}={value!r}")


def check_loss_options(
    label_smoothing: float, reduction: str, convention: str, ignore_index: int
) -> float:
    """The options every loss shares: ε in [0, 1] (returned as a float), a known reduction and
    convention, an int ``ignore_index``."""
    eps = check_label_smoothing(label_smoothing)
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("convention", convention, CONVENTIONS)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got ignore_index={ignore_index!r}")
    if not _INT64_MIN <= ignore_index <= _INT64_MAX:
        raise ValueError(
            f"ignore_index must fit in int64 (class indices are int64), got "
            f"ignore_index={ignore_index}"
        )
    return eps


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def check_label_smoothing(label_smoothing: float) -> float:
    """ε must be a real number in [0, 1]."""
    if isinstance(label_smoothing, torch.Tensor):
        if label_smoothing.numel() != 1:
            raise ValueError(
                f"label_smoothing must be a number, got a tensor of shape "
                f"{tuple(label_smoothing.shape)}"
            )
        label_smoothing = float(label_smoothing.item())
    return check_fraction("label_smoothing", label_smoothing, type_error=TypeError)


def check_fraction(name: str, value: object, *, type_error: type[Exception] = ValueError) -> float:
    """A real number in [0, 1] (not a bool, not NaN) as a float; a wrong type raises
    ``type_error``, a value outside the range ``ValueError``, both naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error(f"{name} must be a number in [0, 1], got {name}={value!r}")
    number = float(value)
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {name}={number!r}")
    return number


def check_input(input: torch.Tensor) -> None:
    """Logits: a floating tensor (C,), (N, C) or (N, C, d1, ..., dk) with C >= 1."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor of logits, got {type(input).__name__}")
    if input.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"input must be a floating-point tensor of logits (float16, bfloat16, float32 or "
            f"float64), got input.dtype={input.dtype}"
        )
    if input.dim() == 0:
        raise ValueError("input must have a class dimension, got a 0-dim tensor")
    num_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    if num_classes < 1:
        raise ValueError(
            f"input must have at least one class, got input.shape={tuple(input.shape)}"
        )


def check_row_target(target: torch.Tensor, input: torch.Tensor, name: str, last: str) -> None:
    """Class-index ``target`` of a (..., ``last``)-shaped tensor ``name`` (a linear head's
    hidden states, vocabulary-parallel logits): integer, ``name``'s shape without its last
    dimension, on its device."""
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(
            f"target must hold integer class indices (no soft targets), got "
            f"target.dtype={target.dtype}"
        )
    want = tuple(input.shape[:-1])
    if tuple(target.shape) != want:
        raise ValueError(
            f"target must have shape {want} ({name}'s shape without {last}), "
            f"got target.shape={tuple(target.shape)}"
        )
    if target.device != input.device:
        raise ValueError(
            f"target must be on {name}'s device, got target.device={target.device} and "
            f"{name}.device={input.device}"
        )


# long function: the soft and class-index rules side by side, each message by its condition
def check_target(
    input: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    *,
    soft_needs_distribution: bool,
    check_range: bool = False,
) -> bool:
    """Check ``target`` against ``input``; return True for soft (probability) targets.

    Class-index targets must be an integer tensor of shape (N, d1, ..., dk) (input without its
    class dimension) whose values lie in [0, C) or equal ``ignore_index``. Soft targets must be
    a floating tensor of the input's shape; when ``soft_needs_distribution`` (KL form), each
    row must be a probability distribution. The values (range, distribution) are checked only
    with ``check_range`` (they need a device synchronization; see :func:`check_values`).
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.device != input.device:
        raise ValueError(
            f"target must be on the input's device, got target.device={target.device} "
            f"and input.device={input.device}"
        )
    class_dim = 0 if input.dim() == 1 else 1
    num_classes = input.shape[class_dim]
    if target.is_floating_point():
        if target.shape != input.shape:
            raise ValueError(
                f"a floating-point (soft) target must have the input's shape "
                f"{tuple(input.shape)}, got target.shape={tuple(target.shape)}"
            )
        if check_range and soft_needs_distribution and target.numel() > 0:
            tmin = float(target.min())
            if tmin < 0 or not math.isfinite(tmin):
                raise ValueError(
                    f"soft target rows must be probability distributions for kl=True, "
                    f"found a value {tmin!r} < 0"
                )
            sums = target.double().sum(class_dim)
            worst = float((sums - 1).abs().max())
            tol = 1e-2 if target.dtype in (torch.float16, torch.bfloat16) else 1e-4
            if not worst <= tol:
                raise ValueError(
                    f"soft target rows must sum to 1 along the class dimension for kl=True, "
                    f"found a row whose sum differs from 1 by {worst:.3g}"
                )
        return True
    if target.dtype == torch.bool or target.is_complex():
        raise ValueError(
            f"target must hold int64 class indices or float probabilities, "
            f"got target.dtype={target.dtype}"
        )
    expected = tuple(input.shape[:1]) + tuple(input.shape[2:]) if input.dim() > 1 else ()
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target of class indices must have shape {expected} for input of shape "
            f"{tuple(input.shape)}, got target.shape={tuple(target.shape)}"
        )
    if check_range and target.numel() > 0:
        # compare as int64: in uint8, ignore_index=-100 would wrap to 156
        target = target.long()
        lo, hi = torch.stack(torch.aminmax(target)).tolist()  # one pass, one sync
        if 0 <= lo and hi < num_classes:
            return False
        bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
        if bool(bad.any()):
            value = int(target[bad].flatten()[0])
            raise ValueError(
                f"target holds class index {value}, outside [0, {num_classes}) for input with "
                f"C={num_classes} classes (and not ignore_index={ignore_index})"
            )
    return False


def check_class_vector(
    name: str,
    value: torch.Tensor | None,
    input: torch.Tensor,
    *,
    kind: str,
    check_values: bool = False,
) -> torch.Tensor | None:
    """Check a per-class vector (weight, prior or class_mask) against the input.

    ``kind`` is "float" (weight, prior) or "bool" (class_mask). Shape, dtype and device are
    always checked; the values (finite, a mask that allows a class) with ``check_values``.
    """
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (C,), got {type(value).__name__}")
    num_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    if value.dim() != 1 or value.shape[0] != num_classes:
        raise ValueError(
            f"{name} must have shape ({num_classes},) (one entry per class), "
            f"got {name}.shape={tuple(value.shape)}"
        )
    if value.device != input.device:
        raise ValueError(
            f"{name} must be on the input's device, got {name}.device={value.device} "
            f"and input.device={input.device}"
        )
    if kind == "bool":
        if value.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor, got {name}.dtype={value.dtype}")
        if check_values and not bool(value.any()):
            raise ValueError(
                f"{name} allows no class (all entries False): label smoothing needs at least one"
            )
    else:
        if not value.is_floating_point():
            raise ValueError(
                f"{name} must be a floating-point tensor, got {name}.dtype={value.dtype}"
            )
        if check_values and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite, got {name}={value.tolist()!r}"[:300])
    return value


def check_prior_tensor(
    prior: torch.Tensor | None,
    input: torch.Tensor,
    *,
    soft: bool = False,
    check_values: bool = False,
) -> torch.Tensor | None:
    """Check ``prior`` against the input: a (C,) smoothing distribution, or a (C, C) matrix
    whose row y is the smoothing distribution of target class y (class-index targets only).
    Shape, dtype and device are always checked; finiteness with ``check_values``."""
    if prior is None:
        return None
    C = input.shape[0] if input.dim() == 1 else input.shape[1]
    if not isinstance(prior, torch.Tensor) or (prior.dim() == 1 and prior.shape[0] == C):
        return check_class_vector("prior", prior, input, kind="float", check_values=check_values)
    if tuple(prior.shape) != (C, C):
        raise ValueError(
            f"prior must have shape ({C},) or ({C}, {C}) (row y: the smoothing distribution "
            f"of target class y), got prior.shape={tuple(prior.shape)}"
        )
    if prior.device != input.device:
        raise ValueError(
            f"prior must be on the input's device, got prior.device={prior.device} "
            f"and input.device={input.device}"
        )
    if not prior.is_floating_point():
        raise ValueError(f"prior must be a floating-point tensor, got prior.dtype={prior.dtype}")
    if soft:
        raise ValueError(
            f"a prior of shape ({C}, {C}) needs class-index targets (row y is the prior of "
            "target class y); soft (probability) targets take a (C,) prior"
        )
    if check_values and not bool(torch.isfinite(prior).all()):
        row = int(torch.nonzero(~torch.isfinite(prior))[0, 0])
        raise ValueError(f"prior must be finite, got prior[{row}]={prior[row].tolist()!r}"[:300])
    return prior


def check_prior(prior: torch.Tensor | None, class_mask: torch.Tensor | None) -> None:
    """A prior must be non-negative with positive mass on the classes the mask allows (for
    a (C, C) prior: every row)."""
    if prior is None:
        return
    if bool((prior < 0).any()):
        neg = float(prior[prior < 0][0])
        raise ValueError(f"prior must be non-negative, found prior value {neg!r}")
    where = "" if class_mask is None else " on the classes class_mask allows"
    if prior.dim() == 2:
        allowed = prior if class_mask is None else torch.where(class_mask, prior, 0)
        empty = torch.nonzero(~(allowed.sum(-1) > 0))
        if empty.numel():
            row = int(empty[0, 0])
            raise ValueError(
                f"prior row {row} (the smoothing distribution of target class {row}) must "
                f"have positive total mass{where}, got a sum of 0"
            )
        return
    allowed = prior if class_mask is None else prior[class_mask]
    if not float(allowed.sum()) > 0:
        raise ValueError(f"prior must have positive total mass{where}, got a sum of 0")


def check_values(
    input: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    *,
    soft: bool,
    kl: bool,
    weight: torch.Tensor | None,
    prior: torch.Tensor | None,
    class_mask: torch.Tensor | None,
) -> None:
    """The data-dependent checks (target range, soft-target rows for KL, finite weight and
    prior, non-negative prior with mass, a mask that allows a class) in one pass with one
    device synchronization. Only when one fails are the detailed checks run for the message.

    ``cross_entropy(validate_args=False)`` skips this function (and only this one).
    """
    if (
        not soft
        and weight is None
        and prior is None
        and class_mask is None
        and target.device.type == "cpu"  # two host reads, free on CPU
        and target.numel() > 0
    ):
        lo, hi = torch.aminmax(target)
        C = input.shape[0] if input.dim() == 1 else input.shape[1]
        if 0 <= int(lo.item()) and int(hi.item()) < C:  # every target a class: nothing to do
            return
    flags: list[torch.Tensor] = []  # each True when its check fails
    if not soft and target.numel() > 0:
        C = input.shape[0] if input.dim() == 1 else input.shape[1]
        t = target.long()  # compare as int64: in uint8, -100 would wrap to 156
        flags.append(((t != ignore_index) & ((t < 0) | (t >= C))).any())
    if soft and kl and target.numel() > 0:
        class_dim = 0 if input.dim() == 1 else 1
        tol = 1e-2 if target.dtype in (torch.float16, torch.bfloat16) else 1e-4
        sums = target.double().sum(class_dim)
        flags.append(~(target.min() >= 0) | ~((sums - 1).abs().max() <= tol))
    if weight is not None:
        flags.append(~torch.isfinite(weight).all())
    if prior is not None:
        # finite and non-negative in one pass (min and max propagate NaN): a (C, C) prior
        # has C² entries, where isfinite + a comparison cost ~20x more
        lo, hi = torch.aminmax(prior)
        allowed = prior if class_mask is None else torch.where(class_mask, prior, 0)
        # (C, C): every row needs mass (sum(-1) of a (C,) prior is its total)
        flags.append(~(lo >= 0) | ~torch.isfinite(hi) | ~(allowed.sum(-1) > 0).all())
    if class_mask is not None:
        flags.append(~class_mask.any())
    if not flags or not any(torch.stack(flags).tolist()):  # the one synchronization
        return
    # something failed: the detailed checks raise with the argument and the value
    check_target(input, target, ignore_index, soft_needs_distribution=kl, check_range=True)
    check_class_vector("weight", weight, input, kind="float", check_values=True)
    check_prior_tensor(prior, input, check_values=True)
    check_class_vector("class_mask", class_mask, input, kind="bool", check_values=True)
    check_prior(prior, class_mask)
    raise AssertionError("check_values: a check failed without a message")  # pragma: no cover


class LossOptions(NamedTuple):
    """The smoothing options every loss takes (``cross_entropy``, ``linear_cross_entropy``,
    the vocabulary-parallel losses), as the caller passed them: the public functions gather
    them once and the checks below read them from here."""

    ignore_index: int = -100
    reduction: str = "mean"
    label_smoothing: float = 0.0
    convention: str = "uniform"
    prior: torch.Tensor | None = None
    class_mask: torch.Tensor | None = None
    kl: bool = False


class Spec(NamedTuple):
    """One call of :func:`labelsmooth.cross_entropy`, validated: every non-tensor fact the
    registry and the implementations need (no tensors). A tuple: cheap to build per call."""

    device_type: str
    dtype: torch.dtype
    numel: int
    num_classes: int
    soft: bool
    convention: str
    prior: bool
    class_mask: bool
    kl: bool
    weight: bool
    inplace_backward: bool
    #: names of the per-class arguments ("weight", "prior") whose gradient is needed
    param_grads: tuple[str, ...]
    eps: float = 0.0
    ignore_index: int = -100
    reduction: str = "mean"
    #: a (C,) input with a () target
    unbatched: bool = False
    return_nll: bool = False

    @property
    def torch_smoothing(self) -> tuple[float, float] | None:
        """(ε', factor) with which PyTorch's uniform smoothing gives this convention's loss
        (uniform prior), or None (:func:`labelsmooth.ops.pytorch_kernel.torch_smoothing`)."""
        return torch_smoothing(self.eps, self.convention, self.num_classes)


#: class-index dtypes the common case of :func:`loss_spec` takes (the full checks take more)
_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


# long function: the common case first in a few cheap comparisons, then the full checks
def loss_spec(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    options: LossOptions,
    inplace_backward: bool,
    return_nll: bool,
) -> Spec:
    """Every check of :func:`labelsmooth.cross_entropy` that needs no tensor data (types,
    shapes, dtypes, devices, options), into a :class:`Spec`. The data checks are
    :func:`check_values`."""
    # The common case is checked with a few cheap comparisons (this runs on every call, so
    # each tensor attribute is read once); anything unusual goes through the full checks,
    # which raise the messages.
    ignore_index, reduction, label_smoothing, convention, prior, class_mask, kl = options
    if (
        weight is None
        and prior is None
        and class_mask is None
        and kl is False
        and inplace_backward is False
        and type(input) is torch.Tensor
        and type(target) is torch.Tensor
        and type(label_smoothing) is float
        and 0.0 <= label_smoothing <= 1.0
        and reduction in REDUCTIONS
        and convention in CONVENTIONS
        and type(ignore_index) is int
        and _INT64_MIN <= ignore_index <= _INT64_MAX
        and type(return_nll) is bool
    ):
        xs, ts, dtype = input.shape, target.shape, input.dtype
        if (
            len(xs) >= 2
            and len(ts) == len(xs) - 1
            and xs[1] >= 1
            and ts[0] == xs[0]
            and (len(ts) == 1 or ts[1:] == xs[2:])
            and dtype in FLOAT_DTYPES
            and target.dtype in _INDEX_DTYPES
            and (device := input.device) == target.device
        ):
            return Spec(
                device.type, dtype, input.numel(), xs[1], False, convention, False, False,
                False, False, False, (), label_smoothing, ignore_index, reduction, False,
                return_nll,
            )  # fmt: skip
    # anything else: each argument through its full check
    check_input(input)
    eps = check_loss_options(label_smoothing, reduction, convention, ignore_index)
    check_flags(kl=kl, inplace_backward=inplace_backward, return_nll=return_nll)
    soft = check_target(input, target, ignore_index, soft_needs_distribution=kl)
    if soft and convention != "uniform":
        raise ValueError(
            f"soft (probability) targets are defined only for convention='uniform', got "
            f"convention={convention!r}; pass class indices to use {convention!r}"
        )
    if weight is not None:
        check_class_vector("weight", weight, input, kind="float")
    check_prior_tensor(prior, input, soft=soft)  # (C,) or (C, C)
    if class_mask is not None:
        check_class_vector("class_mask", class_mask, input, kind="bool")
    grad_on = torch.is_grad_enabled()
    param_grads = tuple(
        name
        for name, t in (("weight", weight), ("prior", prior))
        if t is not None and grad_on and t.requires_grad
    )
    unbatched = input.dim() == 1
    num_classes = input.shape[0] if unbatched else input.shape[1]
    return Spec(
        device_type=input.device.type,
        dtype=input.dtype,
        numel=input.numel(),
        num_classes=num_classes,
        soft=soft,
        convention=convention,
        prior=prior is not None,
        class_mask=class_mask is not None,
        kl=kl,
        weight=weight is not None,
        inplace_backward=inplace_backward,
        param_grads=param_grads,
        eps=eps,
        ignore_index=ignore_index,
        reduction=reduction,
        unbatched=unbatched,
        return_nll=return_nll,
    )
