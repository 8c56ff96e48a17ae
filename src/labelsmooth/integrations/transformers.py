"""Hugging Face Transformers: label smoothing as a ``Trainer(compute_loss_func=...)``.

``Trainer`` (Transformers ≥ 4.46) calls ``compute_loss_func(outputs, labels,
num_items_in_batch=...)`` with the model's outputs and the batch's labels (popped from the
inputs, so the model computes no loss of its own). :class:`LabelSmoothingLoss` is such a
callable built from labelsmooth's options; the loss itself is
:func:`labelsmooth.cross_entropy` (any convention, prior or class mask, the fused paths); this
module only does what Transformers' own losses do around it:

* ``task="causal_lm"``: position t predicts label t+1. As Transformers' ``ForCausalLMLoss``,
  the labels are padded on the right with ``ignore_index`` and shifted left by one, so the
  logits are used whole (no copy of ``logits[:, :-1]``).
* ``"masked_lm"``, ``"token_classification"``, ``"sequence_classification"``: logits
  (..., C) against labels (...), no shift.
* ``ignore_index=-100``: positions with this label (padding, prompt tokens) count nowhere.
* Normalization, exactly as Transformers' ``fixed_cross_entropy``: with
  ``num_items_in_batch`` (the Trainer's count of non-ignored labels over the whole
  gradient-accumulation step, a tensor or an int) the loss is the sum over this micro-batch
  divided by it (a tensor count is first moved to the loss's device), so that the gradients
  of the accumulated micro-batches add up to one step over the whole batch; without it, the
  mean over this micro-batch's non-ignored labels. The count is checked
  (:func:`check_count`): a ``bool``, a negative, NaN or infinite count raises a ``ValueError``
  naming ``num_items_in_batch``; a count of 0 (a step of padding only, which Transformers
  passes then) gives a loss of 0 with zero gradients, not NaN. In both cases the sum is
  accumulated and returned in float32 (``ForCausalLMLoss`` upcasts the logits to float32;
  here the per-token losses are computed from the logits as they are, with float32
  accumulation inside labelsmooth, and only the N per-token values are upcast, so no float32
  copy of bf16 logits is made).

Per token, with the uniform convention and no prior or mask, the loss is
:math:`(1-\\varepsilon)(-\\log p_y) + \\varepsilon\\,\\mathrm{mean}_k(-\\log p_k)`, the same
value as ``TrainingArguments(label_smoothing_factor=ε)`` (Transformers' ``LabelSmoother``):
tests/integrations/test_framework_parity.py checks it, and the documented differences are that
an all-ignored micro-batch without ``num_items_in_batch`` gives 0 here (labelsmooth's rule)
where ``LabelSmoother`` gives NaN, and that ``LabelSmoother`` treats every negative label as
ignored for the gather while counting only ``ignore_index`` as padding.

Example:
    >>> import torch
    >>> from labelsmooth.integrations.transformers import LabelSmoothingLoss
    >>> loss_func = LabelSmoothingLoss(0.1, task="causal_lm")
    >>> logits = torch.randn(2, 5, 11)                  # (batch, time, vocabulary)
    >>> labels = torch.randint(0, 11, (2, 5))
    >>> labels[1, 3:] = -100                            # padding
    >>> loss = loss_func({"logits": logits}, labels)    # mean over the 6 predicted tokens
    >>> summed = loss_func({"logits": logits}, labels, num_items_in_batch=torch.tensor(12))
    >>> torch.allclose(summed * 12, loss * 6)
    True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from labelsmooth import _validate
from labelsmooth.functional import cross_entropy

__all__ = [
    "TASKS",
    "LabelSmoothingLoss",
    "check_count",
    "count_divisor",
    "class_mask_from_ids",
    "class_mask_from_tokenizer",
    "nll_logging_callback",
]

#: ``task`` values: whether the labels are shifted (causal LM) or taken position by position.
TASKS = ("causal_lm", "masked_lm", "token_classification", "sequence_classification")


class LabelSmoothingLoss:
    r"""A ``compute_loss_func`` for ``transformers.Trainer`` computing labelsmooth's loss.

    Args:
        label_smoothing: ε in [0, 1].
        task: one of :data:`TASKS`. ``"causal_lm"`` shifts the labels (position t predicts
            label t+1); the others compare logits (..., C) with labels (...) position by
            position (a sequence classifier's logits (B, C) with labels (B,)).
        convention: "uniform" (PyTorch, HF, timm), "others" (fairseq) or "unnormalized";
            see :func:`labelsmooth.cross_entropy`.
        prior: (C,) smoothing prior u(k), normalized internally.
        class_mask: (C,) bool; False classes (padding, reserved tokens) get no smoothing
            mass. :func:`class_mask_from_tokenizer` builds one.
        ignore_index: label value left out of the loss and its count (-100, as HF uses it).
        impl: labelsmooth's ``impl`` ("auto", "fused", ...).
        track_nll: also accumulate the unsmoothed NLL of the tokens seen (from the same
            pass, detached, no synchronization), for perplexity: read it with
            :meth:`pop_nll` or log it with :func:`nll_logging_callback`.
        validate_args: labelsmooth's data-dependent checks (one synchronization per call).

    Call: ``loss_func(outputs, labels, num_items_in_batch=None)`` where ``outputs`` is a
    model output with ``"logits"`` (a mapping such as ``ModelOutput``), a tuple whose first
    element is the logits, or the logits tensor; ``labels`` are integer class indices of the
    logits' shape without the class dimension. Returns a float32 scalar (module docstring:
    the shift and the normalization).
    """

    def __init__(
        self,
        label_smoothing: float = 0.1,
        *,
        task: str = "causal_lm",
        convention: str = "uniform",
        prior: torch.Tensor | None = None,
        class_mask: torch.Tensor | None = None,
        ignore_index: int = -100,
        impl: str = "auto",
        track_nll: bool = False,
        validate_args: bool = True,
    ) -> None:
        self.label_smoothing = _validate.check_label_smoothing(label_smoothing)
        self.task = _validate.check_choice("task", task, TASKS)
        self.convention = _validate.check_choice("convention", convention, _validate.CONVENTIONS)
        _validate.check_loss_options(label_smoothing, "mean", convention, ignore_index)
        _validate.check_flags(track_nll=track_nll, validate_args=validate_args)
        self.prior = prior
        self.class_mask = class_mask
        self.ignore_index = ignore_index
        self.impl = impl
        self.track_nll = track_nll
        self.validate_args = validate_args
        self._nll_sum: torch.Tensor | None = None
        self._nll_count: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"LabelSmoothingLoss(label_smoothing={self.label_smoothing}, task={self.task!r}, "
            f"convention={self.convention!r}, prior={'set' if self.prior is not None else None}, "
            f"class_mask={'set' if self.class_mask is not None else None}, "
            f"ignore_index={self.ignore_index}, impl={self.impl!r}, track_nll={self.track_nll})"
        )

    def __call__(
        self,
        outputs: Any,
        labels: torch.Tensor | None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        logits = _logits_of(outputs)
        if labels is None:
            raise ValueError(
                "labels is None: the batch has no 'labels' (Trainer passes them to "
                "compute_loss_func only when the inputs contain a 'labels' key)"
            )
        if not isinstance(labels, torch.Tensor) or labels.is_floating_point():
            what = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(
                f"labels must be an integer tensor of class indices, got {what} (label "
                "smoothing is not defined for regression or multi-label targets)"
            )
        if logits.dim() < 2 or labels.shape != logits.shape[:-1]:
            raise ValueError(
                f"labels must have the logits' shape without the class dimension: logits "
                f"{tuple(logits.shape)}, labels {tuple(labels.shape)}"
            )
        num_classes = logits.shape[-1]
        if self.task == "causal_lm":
            # as ForCausalLMLoss: pad on the right, shift left: logits[t] predicts labels[t+1]
            labels = F.pad(labels, (0, 1), value=self.ignore_index)[..., 1:]
        target = labels.reshape(-1).to(logits.device)  # (N,)
        rows = logits.reshape(-1, num_classes)  # (N, C), a view when the logits are contiguous

        out = cross_entropy(
            rows,
            target,
            ignore_index=self.ignore_index,
            reduction="none",
            label_smoothing=self.label_smoothing,
            convention=self.convention,
            prior=_on(self.prior, rows.device),
            class_mask=_on(self.class_mask, rows.device),
            impl=self.impl,
            validate_args=self.validate_args,
            return_nll=self.track_nll,
        )
        per_token, nll = out if isinstance(out, tuple) else (out, None)
        total = per_token.float().sum()  # (), float32 like ForCausalLMLoss's upcast logits
        counted = target != self.ignore_index
        if nll is not None:
            self._accumulate_nll(nll.float().sum(), counted.sum())
        if num_items_in_batch is None:
            # fixed_cross_entropy's "mean"; an all-ignored batch gives 0 (labelsmooth's rule)
            return total / counted.sum().clamp_min(1)
        # fixed_cross_entropy: sum, then divide by the count of the whole accumulation step
        count = check_count("num_items_in_batch", num_items_in_batch, validate=self.validate_args)
        return total / count_divisor(count, total.device)

    def _accumulate_nll(self, nll_sum: torch.Tensor, count: torch.Tensor) -> None:
        if self._nll_sum is None or self._nll_count is None:
            self._nll_sum, self._nll_count = nll_sum.detach(), count
        else:
            self._nll_sum = self._nll_sum + nll_sum.detach()
            self._nll_count = self._nll_count + count

    def pop_nll(self) -> float | None:
        """Mean unsmoothed NLL per counted token since the last call (``track_nll=True``),
        then reset; None if no token was counted. ``math.exp`` of it is the perplexity.
        """
        if self._nll_sum is None or self._nll_count is None:
            return None
        total, count = float(self._nll_sum), int(self._nll_count)
        self._nll_sum = self._nll_count = None
        return total / count if count > 0 else None


def check_count(name: str, value: object, *, validate: bool = True) -> float | torch.Tensor:
    """Check a count that a sum of losses is divided by (a framework's count of items).

    One rule for a Python number and a tensor: a count is a finite number ≥ 0, given as an
    ``int``, a ``float`` or a one-element tensor of an integer or floating dtype. A ``bool``
    (``True`` is a flag, not a count of 1), a negative, NaN or infinite value, a string, or a
    tensor of another dtype or size raises a ``ValueError`` naming ``name`` and the value. A
    fractional value is accepted: Transformers itself divides its token count by the number of
    ranks that see the same batch (tensor, context and sequence parallelism), so a count of 7
    shared by 2 ranks arrives as 3.5.

    A count of 0 is valid: Transformers passes 0 for a gradient-accumulation step that holds
    nothing but padding. Divided by :func:`count_divisor`, the sum (0 there: every label
    ignored) gives a loss of 0 with zero gradients, never 0/0 = NaN.

    Args:
        name: the argument's name, for the message.
        value: the count.
        validate: also check a tensor's value (one synchronization); with False only its
            dtype and size are checked (a Python number is always checked).

    Returns:
        The count: a Python float, or the tensor as given.

    Example:
        >>> check_count("num_items_in_batch", 12)
        12.0
        >>> check_count("num_items_in_batch", torch.tensor(0))  # padding only: loss 0
        tensor(0)
        >>> try:
        ...     check_count("num_items_in_batch", True)
        ... except ValueError as e:
        ...     print(e)
        num_items_in_batch must be a count (a number >= 0 or a one-element tensor), got True
    """
    rule = "a count (a number >= 0 or a one-element tensor)"
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex() or value.numel() != 1:
            raise ValueError(
                f"{name} must be {rule}, got a tensor of dtype {value.dtype} and shape "
                f"{tuple(value.shape)}"
            )
        if not validate:
            return value
        number = float(value.reshape(()))  # one synchronization
        shown = f"tensor({number:g})"
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    else:
        number, shown = float(value), repr(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be {rule}, got {shown}")
    return value if isinstance(value, torch.Tensor) else number


def count_divisor(count: float | torch.Tensor, device: torch.device) -> float | torch.Tensor:
    """A checked count as a divisor: 0 divides by 1 (the sum is 0 then: padding only).

    A tensor count is moved to ``device`` and made 0-d; the select happens on the device, so
    it costs no synchronization.
    """
    if isinstance(count, torch.Tensor):
        count = count.reshape(()).to(device)
        return torch.where(count > 0, count, torch.ones_like(count))
    return count if count > 0 else 1.0


def _logits_of(outputs: Any) -> torch.Tensor:
    """The logits of a model output: ``outputs["logits"]``, ``outputs[0]`` or the tensor."""
    if isinstance(outputs, torch.Tensor):
        logits = outputs
    elif isinstance(outputs, Mapping):
        if "logits" not in outputs:
            raise ValueError(
                f"outputs has no 'logits' (keys: {list(outputs.keys())}); pass a model "
                "output with logits, a tuple whose first element is the logits, or the logits"
            )
        logits = outputs["logits"]
    elif isinstance(outputs, Sequence) and len(outputs) > 0:
        logits = outputs[0]
    else:
        raise TypeError(
            f"outputs must be a model output, a tuple or a tensor, got {type(outputs).__name__}"
        )
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        what = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"the logits must be a floating-point tensor, got {what}")
    return logits


def _on(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.to(device)


def class_mask_from_ids(
    num_classes: int, excluded: Iterable[int], *, device: torch.device | str | None = None
) -> torch.Tensor:
    """A (num_classes,) bool ``class_mask``: True everywhere except at ``excluded``.

    Example:
        >>> class_mask_from_ids(5, [0, 3])
        tensor([False,  True,  True, False,  True])
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got num_classes={num_classes!r}")
    ids = sorted({int(i) for i in excluded})
    bad = [i for i in ids if not 0 <= i < num_classes]
    if bad:
        raise ValueError(
            f"excluded ids must be in [0, {num_classes}), got {bad[:5]} (num_classes={num_classes})"
        )
    if len(ids) == num_classes:
        raise ValueError("class_mask would exclude every class: no class is left for smoothing")
    mask = torch.ones(num_classes, dtype=torch.bool, device=device)
    if ids:
        mask[torch.tensor(ids, device=mask.device)] = False
    return mask


def class_mask_from_tokenizer(
    tokenizer: Any,
    num_classes: int | None = None,
    *,
    keep: Iterable[int] = (),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A ``class_mask`` that gives no smoothing mass to a tokenizer's padding and special tokens.

    Excluded: ``tokenizer.pad_token_id``, every id of ``tokenizer.all_special_ids`` (BOS,
    EOS, UNK, PAD, added special tokens) except those in ``keep``, and, when the model's
    vocabulary ``num_classes`` is larger than ``len(tokenizer)`` (embedding matrices padded
    to a multiple of 64 or 128), the ids ≥ ``len(tokenizer)``, which no text produces. The
    target class keeps its own (1 − ε) mass either way, so an excluded token (e.g. EOS) can
    still be a label.

    Args:
        tokenizer: a Transformers tokenizer, or any object with ``pad_token_id``,
            ``all_special_ids`` and ``len()``.
        num_classes: the logits' width (``model.config.vocab_size``); ``len(tokenizer)`` if
            None. Must be ≥ ``len(tokenizer)``.
        keep: special ids to leave in the smoothing support.
        device: where to put the mask.

    Returns:
        (num_classes,) bool tensor.
    """
    size = len(tokenizer)
    if num_classes is None:
        num_classes = size
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < size:
        raise ValueError(
            f"num_classes must be an int >= len(tokenizer) = {size} (the logits' width), got "
            f"num_classes={num_classes!r}"
        )
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        special.add(pad)
    excluded = (special - {int(i) for i in keep}) | set(range(size, num_classes))
    return class_mask_from_ids(num_classes, excluded, device=device)


def nll_logging_callback(loss_func: LabelSmoothingLoss) -> Any:
    """A ``transformers.TrainerCallback`` that logs ``loss_func``'s true NLL and perplexity.

    ``loss_func`` needs ``track_nll=True``. At each training log it adds ``nll`` and
    ``perplexity`` (over the tokens since the previous log) to the logged entry, and
    ``eval_nll`` / ``eval_perplexity`` after an evaluation (the tokens of that evaluation).
    Imports transformers (needs it installed).
    """
    import math

    from transformers import TrainerCallback

    if not isinstance(loss_func, LabelSmoothingLoss) or not loss_func.track_nll:
        raise ValueError("nll_logging_callback needs a LabelSmoothingLoss with track_nll=True")

    class _NLLLogger(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not logs:
                return
            prefix = "eval_" if "eval_loss" in logs else "" if "loss" in logs else None
            if prefix is None:
                return
            nll = loss_func.pop_nll()
            if nll is None:
                return
            extra = {f"{prefix}nll": nll, f"{prefix}perplexity": math.exp(min(nll, 700.0))}
            logs.update(extra)
            if state.log_history:  # Trainer.log stored a copy before calling on_log
                state.log_history[-1].update(extra)

    return _NLLLogger()
