"""Public functions: validate once into a spec, ask the implementation registry, call.

Long file: the public functions' docstrings are the API reference (math, arguments, examples).

The math lives in :mod:`labelsmooth.ops`; this file only checks arguments and chooses a path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ParamSpec

import torch

from labelsmooth import _dispatch, _validate
from labelsmooth.ops import library as _library  # noqa: F401  (registers the torch.library ops)
from labelsmooth.ops.pytorch_kernel import cross_entropy_builtin
from labelsmooth.ops.reference import cross_entropy_reference, smoothed_target, smoothing_prior

__all__ = ["cross_entropy", "smooth_labels", "chosen_impl", "linear_cross_entropy"]


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    convention: str = "uniform",
    prior: torch.Tensor | None = None,
    class_mask: torch.Tensor | None = None,
    kl: bool = False,
    impl: str = "auto",
    inplace_backward: bool = False,
    validate_args: bool = True,
    return_nll: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Label-smoothed cross-entropy with ``torch.nn.functional.cross_entropy``'s semantics.

    With the defaults (``convention="uniform"``, no ``prior``/``class_mask``, ``kl=False``)
    the loss and its gradient equal ``F.cross_entropy(..., label_smoothing=ε)``, except that a
    ``mean`` over a batch whose targets are all ignored is 0 (with zero gradients), not NaN.

    Each row (a sample, or a position of an N-D input) with logits :math:`x`, target
    :math:`y`, :math:`p = \mathrm{softmax}(x)` and class weights :math:`w` (ones if None) is
    trained against a smoothed target :math:`q` and contributes

    .. math::
        \ell = \sum_k w_k\, q_k\, (-\log p_k) \quad\text{or, with kl=True,}\quad
        \ell = \sum_k w_k\, q_k\, (\log (q_k / \textstyle\sum_j q_j) - \log p_k).

    With :math:`u` the smoothing prior (``prior``, uniform if None, zero where ``class_mask``
    is False, normalized to sum to 1) the conventions are

    =================  ==============================  ==================================
    convention         target class :math:`q_y`        other classes :math:`q_k`
    =================  ==============================  ==================================
    ``uniform``        :math:`1-\varepsilon+\varepsilon u_y`   :math:`\varepsilon u_k`
    ``others``         :math:`1-\varepsilon`                   :math:`\varepsilon u_k/(1-u_y)`
    ``unnormalized``   :math:`1-\varepsilon`                   :math:`\varepsilon u_k`
    =================  ==============================  ==================================

    With uniform :math:`u` these are ε/C (PyTorch, the paper, Keras, timm), ε/(C−1) (fairseq,
    "Bag of Tricks") and ε/C with a target of 1−ε (pytorch-loss). In ``others``, if no
    allowed class other than the target exists, the target keeps the whole mass (q = onehot).

    Reductions follow PyTorch: ``"none"`` returns the per-row losses in the target's shape,
    ``"sum"`` their sum, and ``"mean"`` divides the sum by :math:`\sum_i w_{y_i}` over the
    non-ignored rows (by N·d1·…·dk for soft targets). Note that with class weights the
    smoothing term of every row is weighted by all the class weights, exactly as in PyTorch
    (so weights change the effective smoothing strength, pytorch/pytorch#104776).

    Soft targets (a float tensor of the input's shape) are mixed as
    :math:`q = (1-\varepsilon)\,t + \varepsilon u` (PyTorch's rule generalized to a prior);
    only ``convention="uniform"`` is defined for them and ``ignore_index`` does not apply.

    Args:
        input: (N, C), (C,) or (N, C, d1, ..., dk) logits; float16, bfloat16, float32 or
            float64. Sums and log-sum-exp are accumulated in at least float32.
        target: class indices (N,), () or (N, d1, ..., dk) (integer dtype), or probabilities
            of the input's shape.
        weight: (C,) class weights, as in PyTorch.
        ignore_index: target value that contributes 0 and is left out of the mean.
        reduction: "none", "mean" or "sum".
        label_smoothing: ε in [0, 1].
        convention: "uniform", "others" or "unnormalized" (table above).
        prior: (C,) non-negative smoothing prior u(k), normalized internally; or (C, C),
            class-conditional: row y (restricted to ``class_mask``, normalized) is the u of
            every row whose target is y (class-index targets only; not ``impl="torch"``).
        class_mask: (C,) bool; False classes (padding, reserved tokens) get no smoothing mass.
        kl: return KL(q‖p) = CE(q, p) − H(q): zero when p = q (and ≥ 0 without weights).
            For "unnormalized" (q sums to Z = 1 − εu_y < 1) the value is
            CE(q, p) − H(q) − Z log Z = Z·KL(q/Z ‖ p), so it is still ≥ 0 and zero at the
            loss's optimum p = q/Z.
        impl: "auto" (below), "reference" (the plain dense oracle; any option), "fused"
            (class-index targets; gradient computed in the forward pass, on CPU by a small
            C kernel compiled on first use, eager torch blocks otherwise), "triton" (CUDA,
            needs triton: one Triton kernel per row, the same options as "fused") or
            "torch" (PyTorch's own kernel, for the calls it can run exactly: every
            convention with a uniform prior and no KL form, through a change of ε, see
            :mod:`labelsmooth.ops.pytorch_kernel`). An explicit impl that cannot run the
            arguments raises ``ValueError`` saying why. "auto" on CPU takes "torch" for
            inputs it covers under 2**16 elements (2**19 without the C kernel or for other
            dtypes than float32) and "fused" otherwise; on CUDA with triton installed,
            "torch" for inputs it covers under 2**28 elements and "triton" otherwise
            (without triton: "torch" where it covers the options, else "fused"); on other
            devices (no committed benchmark yet) "torch" whenever it covers the options,
            else "fused"; "reference" when none of these can run the call (soft targets
            PyTorch does not cover, gradients for ``weight`` or ``prior``).
            :func:`chosen_impl` tells which one a call gets.
        inplace_backward: ``impl="fused"`` or ``"triton"`` only: backward writes the gradient into
            ``input``'s storage, so the extra memory is O(N). The logits are overwritten
            during backward — opt-in. Uses of the logits after the loss read the logits;
            a use recorded before it whose backward runs later raises (autograd's version
            counter), never reads the gradient.
        validate_args: check the values of ``target``, ``weight``, ``prior`` and
            ``class_mask`` (one pass, one device synchronization). ``False`` skips only
            these data-dependent checks (shapes, dtypes and options are always checked),
            for an asynchronous GPU step; out-of-range targets then give undefined results.
        return_nll: also return the unsmoothed negative log-likelihood from the same pass,
            for perplexity: ``(loss, nll)``. ``nll`` is unweighted and detached, reduced
            like the loss except that "mean" divides by the number of non-ignored rows
            (tokens), as fairseq reports it; ``exp(nll)`` is the perplexity.

    Non-finite logits follow PyTorch: an ignored row contributes exactly 0 whatever it holds
    (and gets a zero gradient, where PyTorch's is NaN); a ``-inf`` logit on a class with no
    target mass (ε = 0, or excluded by ``class_mask``) adds nothing; ``+inf``/NaN in a
    counted row give inf/NaN as in PyTorch. Every path is computed relative to each row's
    max, so a common offset of the logits costs no precision.

    Under ``torch.compile`` (``fullgraph=True`` included), ``torch.export`` and
    ``torch.func`` (``grad``, ``vjp``, ``vmap``) every impl traces without a graph break:
    the fused kernels are ``torch.library`` ops (:mod:`labelsmooth.ops.library`) and the
    checks of ``validate_args=True`` run inside an op when the graph runs, raising the same
    errors as in eager mode.

    A ``DTensor`` of logits sharded on the class dimension (torchtitan, FSDP2/TP) runs the
    vocabulary-parallel loss over its mesh and returns what ``F.cross_entropy`` returns under
    ``loss_parallel()``; replicated or batch-sharded logits run on their local value
    (:mod:`labelsmooth.parallel.dtensor`, docs/parallel.md).

    Returns:
        Loss tensor in the input's dtype: the target's shape for "none", else a scalar
        (with ``return_nll``, a pair of such tensors).

    Example:
        >>> import torch, labelsmooth
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
        >>> target = torch.tensor([0, 2])
        >>> ref = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
        >>> loss = labelsmooth.cross_entropy(logits, target, label_smoothing=0.1)
        >>> torch.allclose(loss, ref)
        True
        >>> kl = labelsmooth.cross_entropy(logits, target, label_smoothing=0.1, kl=True)
        >>> bool(kl < loss)
        True
    """
    options = _validate.LossOptions(
        ignore_index, reduction, label_smoothing, convention, prior, class_mask, kl
    )
    return _cross_entropy(
        input, target, weight, options, impl, inplace_backward, validate_args, return_nll
    )


def _cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    options: _validate.LossOptions,
    impl: str,
    inplace_backward: bool,
    validate_args: bool,
    return_nll: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """:func:`cross_entropy` with its smoothing options gathered (the module form calls this
    directly: no keyword parsing per call)."""
    if type(input) is not torch.Tensor:  # a DTensor (docs/parallel.md); plain tensors skip it
        from labelsmooth.parallel import dtensor

        if dtensor.is_dtensor(input):
            return dtensor.cross_entropy(
                cross_entropy, input, target, weight, **options._asdict(), impl=impl,
                inplace_backward=inplace_backward,
                validate_args=validate_args, return_nll=return_nll,
            )  # fmt: skip
    spec = _validate.loss_spec(input, target, weight, options, inplace_backward, return_nll)
    entry = _resolve(impl, spec)
    if spec.unbatched:  # (C,) with a () target, as torch allows
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    if not spec.soft and target.dtype != torch.int64:
        # class indices of any integer dtype, as int64 (a uint8 target compared with
        # ignore_index=-100 would otherwise wrap it to 156)
        target = target.long()
    if entry.name == "torch":
        loss, nll = _run_torch(spec, input, target, weight, options, validate_args)
    else:
        if validate_args:
            target = _checked(spec, input, target, weight, options)
        u = smoothing_prior(
            spec.num_classes, options.prior, options.class_mask, dtype=torch.float64,
            device=input.device,
        )  # fmt: skip
        if entry.rows is None:  # the reference
            out = cross_entropy_reference(
                input, target, weight, spec.ignore_index, spec.reduction, spec.eps, u,
                spec.convention, spec.kl, return_nll=return_nll,
            )  # fmt: skip
            loss, nll = out if isinstance(out, tuple) else (out, None)
        else:
            loss, nll = _run_fused(spec, entry.rows, input, target, weight, u)
    if spec.unbatched and spec.reduction == "none":
        loss = loss.squeeze(0)
    if not return_nll:
        return loss
    assert nll is not None
    return loss, _reduce_nll(
        nll, target, spec.ignore_index, spec.reduction, spec.unbatched, input.dtype
    )


_P = ParamSpec("_P")


def _arguments_of(f: Callable[_P, Any]) -> Callable[[Callable[..., str]], Callable[_P, str]]:
    """Give the decorated function ``f``'s parameters (for ``help``, ``inspect`` and type
    checkers), so that it takes exactly ``f``'s arguments and cannot drift from them."""

    def give(g: Callable[..., str]) -> Callable[_P, str]:
        g.__signature__ = inspect.signature(f).replace(return_annotation="str")  # type: ignore[attr-defined]
        return g

    return give


_CROSS_ENTROPY = inspect.signature(cross_entropy)


def _resolve(impl: str, spec: _validate.Spec) -> _dispatch.Impl:
    if impl not in _dispatch.REGISTRY and impl != "auto":
        _validate.check_choice("impl", impl, _dispatch.IMPLS)
    entry = _dispatch.resolve(impl, spec)
    if spec.return_nll and "return_nll" not in entry.options:  # pragma: no cover (all have it)
        raise ValueError(f"impl={entry.name!r} cannot run here: it has no return_nll option")
    return entry


def _traced(input: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether a tracer (torch.compile, torch.export, make_fx or another dispatch mode) or a
    torch.func transform sees this call: then nothing may read tensor data on the host (no
    ``.item()``)."""
    return (
        not _library.runs_plain_eager(input)
        or _library.is_transformed(target)
        or type(target) not in _library.PLAIN_TYPES
    )


def _checked(
    spec: _validate.Spec,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    options: _validate.LossOptions,
) -> torch.Tensor:
    """``validate_args=True``: the data checks, with the same messages in eager and traced
    calls. Eager: one pass and one synchronization here. Traced: the op
    ``labelsmooth::checked_target`` runs them when the graph runs (and returns the target the
    loss uses, so the check cannot be dropped)."""
    prior, class_mask = options.prior, options.class_mask
    if _traced(input, target):
        return torch.ops.labelsmooth.checked_target(
            target, weight, prior, class_mask, spec.num_classes, spec.ignore_index, spec.soft,
            spec.kl,
        )  # fmt: skip
    _validate.check_values(
        input, target, spec.ignore_index, soft=spec.soft, kl=spec.kl, weight=weight,
        prior=prior, class_mask=class_mask,
    )  # fmt: skip
    return target


def _run_torch(
    spec: _validate.Spec,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    options: _validate.LossOptions,
    validate_args: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``impl="torch"``. Eager, the targets' min and max read on the host (one
    synchronization with ``validate_args``; on CPU, where a read costs nothing, without it
    too) serve the range check and tell whether any row is ignored (the selects that protect
    ignored rows are skipped when none is)."""
    checked = None
    if spec.soft or _traced(input, target):
        if validate_args:
            target = _checked(spec, input, target, weight, options)
    elif validate_args or spec.device_type == "cpu":
        if target.numel() == 0:
            checked = (spec.ignore_index, spec.ignore_index)
        else:
            lo_t, hi_t = torch.aminmax(target)
            if spec.device_type == "cpu":  # no synchronization to save: two cheap reads
                lo, hi = int(lo_t.item()), int(hi_t.item())
            else:  # one synchronization
                lo, hi = torch.stack((lo_t, hi_t)).tolist()
            if validate_args and (lo < 0 or hi >= spec.num_classes or weight is not None):
                _validate.check_values(
                    input, target, spec.ignore_index, soft=False, kl=False, weight=weight,
                    prior=None, class_mask=None,
                )  # fmt: skip
            checked = (lo, hi)
    return cross_entropy_builtin(input, target, weight, spec, checked=checked)


def _run_fused(
    spec: _validate.Spec,
    backend: str,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    u: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused family (``impl="fused"`` / ``"triton"``): one op, ``backend`` its rows."""
    uniform_prior = not (spec.prior or spec.class_mask)
    need_grad = input.requires_grad and torch.is_grad_enabled()
    args = (
        input, target, weight, u, spec.ignore_index, spec.reduction, spec.eps, spec.convention,
        spec.kl, uniform_prior, backend, need_grad, spec.inplace_backward,
    )  # fmt: skip
    if _library.runs_plain_eager(input):
        loss, nll, _, _ = _library.FusedEager.apply(*args)
    elif not torch.compiler.is_compiling() and _library.is_transformed(input):
        loss, nll, _, _ = _library.FusedForTransforms.apply(*args)
    elif backend == "triton" and _library.triton_op_ready():
        # the triton_op: its kernels visible to Inductor (no backend argument)
        loss, nll, _, _ = torch.ops.labelsmooth.triton_cross_entropy(*args[:10], *args[11:])
    else:
        loss, nll, _, _ = torch.ops.labelsmooth.fused_cross_entropy(*args)
    return loss, nll.detach()


def _reduce_nll(
    nll: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    reduction: str,
    unbatched: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The per-row NLL (0 for ignored rows) reduced like the loss, but unweighted: "mean"
    divides by the number of counted rows (tokens), as fairseq and perplexity do."""
    if reduction == "none":
        return (nll.squeeze(0) if unbatched else nll).to(dtype)
    total = nll.sum()
    if reduction == "sum":
        return total.to(dtype)
    if target.is_floating_point():
        count = torch.tensor(max(nll.numel(), 1), device=nll.device)
    else:
        count = (target != ignore_index).sum().clamp_min(1)
    return (total / count).to(dtype)


@_arguments_of(cross_entropy)
def chosen_impl(*args: Any, **kwargs: Any) -> str:
    """The implementation :func:`cross_entropy` would run for these arguments (they are
    :func:`cross_entropy`'s, bound by its signature; no loss is computed): ``impl`` itself
    if it can run them (else the same ``ValueError``), or the concrete name ``"auto"``
    resolves to.

    Example:
        >>> import torch, labelsmooth
        >>> labelsmooth.chosen_impl(torch.zeros(8, 10), torch.zeros(8, dtype=torch.long))
        'torch'
        >>> labelsmooth.chosen_impl(torch.zeros(8, 10), torch.zeros(8, dtype=torch.long),
        ...                         convention="others")
        'torch'
        >>> labelsmooth.chosen_impl(torch.zeros(8, 10), torch.zeros(8, dtype=torch.long),
        ...                         convention="others", kl=True)
        'fused'
    """
    try:
        call = _CROSS_ENTROPY.bind(*args, **kwargs)
    except TypeError as e:  # as Python words a bad call, with this function's name
        raise TypeError(f"chosen_impl() {e}") from None
    call.apply_defaults()
    a = call.arguments
    input, target, weight = a["input"], a["target"], a["weight"]
    options = _validate.LossOptions(*(a[name] for name in _validate.LossOptions._fields))
    spec = _validate.loss_spec(
        input, target, weight, options, a["inplace_backward"], a["return_nll"]
    )
    if a["validate_args"]:
        _validate.check_values(
            input, target, spec.ignore_index, soft=spec.soft, kl=spec.kl, weight=weight,
            prior=a["prior"], class_mask=a["class_mask"],
        )  # fmt: skip
    return _resolve(a["impl"], spec).name


def smooth_labels(
    target: torch.Tensor,
    num_classes: int,
    label_smoothing: float,
    *,
    convention: str = "uniform",
    prior: torch.Tensor | None = None,
    class_mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    r"""The dense smoothed target distribution :math:`q` for class indices.

    The class dimension is dimension 1, the layout ``cross_entropy`` takes for soft targets
    (for a 1-D target that is the last dimension, like ``F.one_hot``); rows of ignored
    targets are all zeros. See :func:`cross_entropy` for the conventions.

    Args:
        target: (N,) or (N, d1, ..., dk) integer class indices.
        num_classes: C.
        label_smoothing: ε in [0, 1].
        convention: "uniform", "others" or "unnormalized".
        prior: (C,) non-negative smoothing prior u(k), normalized internally; or (C, C),
            class-conditional: row y (normalized) is the prior of every target of class y.
        class_mask: (C,) bool; False classes get no smoothing mass.
        ignore_index: target value whose row is all zeros.
        dtype: floating dtype of the result.

    Returns:
        (N, C) or (N, C, d1, ..., dk) tensor of ``dtype``.

    Example:
        >>> import torch, labelsmooth
        >>> labelsmooth.smooth_labels(torch.tensor([0, 2]), 4, 0.3, convention="others")
        tensor([[0.7000, 0.1000, 0.1000, 0.1000],
                [0.1000, 0.1000, 0.7000, 0.1000]])
        >>> confusable = torch.tensor([[0., 1, 0], [1, 0, 1], [0, 1, 0]])  # row y: target y
        >>> labelsmooth.smooth_labels(torch.tensor([0, 1]), 3, 0.2, prior=confusable)
        tensor([[0.8000, 0.2000, 0.0000],
                [0.1000, 0.8000, 0.1000]])
    """
    if not isinstance(target, torch.Tensor) or target.is_floating_point():
        what = type(target).__name__ if not isinstance(target, torch.Tensor) else target.dtype
        raise ValueError(f"target must be an integer tensor of class indices, got {what}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got num_classes={num_classes!r}")
    if dtype not in _validate.FLOAT_DTYPES:
        raise ValueError(f"dtype must be a floating-point dtype, got dtype={dtype}")
    eps = _validate.check_label_smoothing(label_smoothing)
    _validate.check_choice("convention", convention, _validate.CONVENTIONS)
    # Validate target, prior and mask with the same checks as cross_entropy, against a
    # zero-size stand-in for the logits (no (N, C) allocation just to check shapes).
    shape = (target.shape[0], num_classes, *target.shape[1:]) if target.dim() else (num_classes,)
    stand_in = torch.empty((), device=target.device).expand(shape)  # no (N, C) memory
    _validate.check_target(stand_in, target, ignore_index, soft_needs_distribution=False)
    _validate.check_prior_tensor(prior, stand_in)  # (C,) or (C, C)
    _validate.check_class_vector("class_mask", class_mask, stand_in, kind="bool")
    _validate.check_values(
        stand_in, target, ignore_index, soft=False, kl=False, weight=None, prior=prior,
        class_mask=class_mask,
    )  # fmt: skip
    u = smoothing_prior(num_classes, prior, class_mask, dtype=torch.float64, device=target.device)
    q = smoothed_target(target.reshape(-1).long(), num_classes, eps, u, convention, ignore_index)
    q = q.reshape(*target.shape, num_classes)
    if target.dim() > 1:
        q = q.movedim(-1, 1)
    return q.to(dtype)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    convention: str = "uniform",
    prior: torch.Tensor | None = None,
    class_mask: torch.Tensor | None = None,
    kl: bool = False,
    softcap: float | None = None,
    chunk_size: int | None = None,
    return_nll: bool = False,
    impl: str = "auto",
    validate_args: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Label-smoothed cross-entropy of a linear head, without materializing its logits.

    Equal to ``cross_entropy(F.linear(hidden, weight, bias), target, ...)`` (see
    :func:`cross_entropy` for the conventions, ``prior``, ``class_mask``, ``kl`` and the
    reductions), but computed chunk by chunk over the tokens so that at most
    ``chunk_size × V`` logits exist at a time. The gradients of ``hidden``, ``weight`` and
    ``bias`` are produced during the forward pass (accumulated in float32 across chunks,
    returned in the parameters' dtype), and ignored tokens are dropped before the matmul, so
    they cost no compute. With ``softcap`` = c the logits are first capped,

    .. math::
        z = h W^\top + b, \qquad x = c \tanh(z / c),

    and the loss is that of :math:`x` (Gemma-2's final-logit soft-capping).

    Args:
        hidden: (..., H) hidden states; float16, bfloat16, float32 or float64.
        weight: (V, H) the head's weight, as ``nn.Linear.weight``; hidden's dtype and device.
        target: (...) integer class indices (hidden's shape without H); ``ignore_index``
            allowed. Soft targets are not supported.
        bias: (V,) the head's bias, or None.
        ignore_index: target value that contributes 0 and is left out of the mean.
        reduction: "none" (per-token losses in the target's shape), "mean" (over the counted
            tokens; 0 with zero gradients if every token is ignored) or "sum".
        label_smoothing: ε in [0, 1].
        convention: "uniform", "others" or "unnormalized" (see :func:`cross_entropy`).
        prior: (V,) non-negative smoothing prior, normalized internally; or (V, V),
            class-conditional (row y for the tokens with target y, as in
            :func:`cross_entropy`).
        class_mask: (V,) bool; False classes (padding, reserved tokens) get no smoothing mass.
        kl: return KL(q‖p) instead of CE(q, p) (see :func:`cross_entropy`).
        softcap: c > 0 caps the logits to (−c, c) as above; None: no capping.
        chunk_size: tokens per chunk; None picks ``CHUNK_BYTES // (4·V)``
            (:func:`labelsmooth.ops.linear.default_chunk_size`: a chunk of float32 logits of
            about 64 MiB, e.g. 130 tokens at V = 128256 and 524 at V = 32000). The memory
            beyond the inputs, parameters and gradients is about one chunk of logits (two
            with ``softcap``, plus a float32 copy of the chunk for half-precision weights).
        return_nll: also return the unsmoothed negative log-likelihood from the same pass
            (for perplexity), :math:`\ell^{\text{nll}}_i = \log\sum_k e^{x_{ik}} - x_{i y_i}`
            (the logits after ``softcap``), detached, unweighted and reduced like the loss
            except that "mean" is :math:`\sum_i \ell^{\text{nll}}_i / \text{count}` over the
            counted tokens (0 if there are none), as fairseq reports it next to the smoothed
            loss and as :func:`cross_entropy` does; ``exp(nll)`` is the perplexity.
        impl: "auto" ("chunked" whenever it can run, else "reference"), "chunked" (the chunk
            loop; each chunk's rows by the C kernel on CPU, the Triton kernel on CUDA when
            triton is installed, eager torch blocks otherwise; no gradient for ``prior``, no
            double backward) or "reference" (the plain composition ``F.linear`` + the
            reference loss on the dense logits; any option).
            An explicit impl that cannot run the arguments raises ``ValueError`` saying why.
        validate_args: check the values of ``target``, ``prior`` and ``class_mask`` (one
            device synchronization). Shapes, dtypes and options are always checked.

    Dropping the ignored tokens needs their count on the host: "chunked" makes one device
    synchronization per call (``nonzero``), which costs nothing on CPU. With
    ``reduction="none"`` the gradient is not known in the forward pass, so "chunked" then
    computes only the statistics forward and runs the chunk loop again in backward (twice the
    matmuls, the same memory). The "chunked" backward can run once per forward (its gradients
    are handed out, not recomputed; ``retain_graph=True`` raises on a second backward, except
    with ``reduction="none"``).

    Returns:
        The loss in hidden's dtype (the target's shape for "none", else a scalar), or
        ``(loss, nll)`` with ``return_nll=True`` (``nll`` shaped and typed like ``loss``).

    Example:
        >>> import torch, labelsmooth
        >>> head = torch.nn.Linear(16, 50)
        >>> hidden, target = torch.randn(8, 16), torch.randint(0, 50, (8,))
        >>> loss, nll = labelsmooth.linear_cross_entropy(
        ...     hidden, head.weight, target, head.bias, label_smoothing=0.1, return_nll=True)
        >>> dense = labelsmooth.cross_entropy(head(hidden), target, label_smoothing=0.1)
        >>> torch.allclose(loss, dense, rtol=1e-5)
        True
        >>> loss.backward()  # sets head.weight.grad and head.bias.grad
        >>> nll.requires_grad
        False
    """
    from labelsmooth.ops import linear as _linear

    options = _validate.LossOptions(
        ignore_index, reduction, label_smoothing, convention, prior, class_mask, kl
    )
    call = _linear.build_call(
        hidden, weight, target, bias, options, softcap=softcap, chunk_size=chunk_size,
        return_nll=return_nll, impl=impl, validate_args=validate_args,
    )  # fmt: skip
    if call.impl == "chunked":
        run = _library.chunked_linear_cross_entropy
    else:
        run = _linear.linear_cross_entropy_reference
    loss, nll = run(call.hidden, call.weight, call.bias, call.target, call.u, call.opt)
    if reduction == "none":
        loss = loss.reshape(call.out_shape)
    nll = nll.reshape(call.out_shape)
    if not return_nll:
        return loss
    flat = call.target  # (N,) int64: _reduce_nll counts its non-ignored entries
    return loss, _reduce_nll(nll, flat, ignore_index, reduction, False, call.hidden.dtype)
