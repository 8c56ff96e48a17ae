"""``nn.Module`` wrappers: they store their arguments and call the functional API, no math."""

from __future__ import annotations

import torch
from torch import nn

from labelsmooth._validate import LossOptions
from labelsmooth.functional import _cross_entropy, linear_cross_entropy

__all__ = ["LabelSmoothingCrossEntropy", "LinearCrossEntropyLoss"]


class _LossModule(nn.Module):
    """Keeps a loss's options as plain attributes (set them between calls, e.g. for an ε
    schedule) and its per-class tensors as buffers (they follow ``.to(device)`` and are saved
    in the state dict); :meth:`_options` hands all of them to the functional call."""

    #: the functional call's keyword arguments stored as attributes / as buffers
    _OPTIONS: tuple[str, ...] = ()
    _BUFFERS: tuple[str, ...] = ()

    def _store(self, arguments: dict[str, object]) -> None:
        """From ``__init__``'s ``locals()``: every name of ``_OPTIONS`` and ``_BUFFERS``."""
        for name in self._OPTIONS:
            setattr(self, name, arguments[name])
        for name in self._BUFFERS:
            self.register_buffer(name, arguments[name])  # type: ignore[arg-type]

    def _options(self) -> dict:
        # read from the instance and buffer dicts directly: nn.Module.__getattr__, the path
        # of a buffer's attribute read, costs about a microsecond per name on every call
        attributes, buffers = self.__dict__, self._buffers
        options = {name: attributes[name] for name in self._OPTIONS}
        for name in self._BUFFERS:
            options[name] = buffers[name]
        return options

    def extra_repr(self) -> str:
        return ", ".join(
            f"{name}={getattr(self, name)!r}" for name in self._OPTIONS if name != "validate_args"
        )


class LabelSmoothingCrossEntropy(_LossModule):
    """Module form of :func:`labelsmooth.cross_entropy` (see it for the math and arguments).

    ``weight``, ``prior`` and ``class_mask`` are registered as buffers, so they follow
    ``.to(device)`` and are saved in the state dict; the other options are attributes that
    may be changed between calls (``criterion.label_smoothing = 0.05``).

    Example:
        >>> import torch, labelsmooth
        >>> criterion = labelsmooth.LabelSmoothingCrossEntropy(0.1, convention="others")
        >>> loss = criterion(torch.randn(4, 10), torch.tensor([1, 2, 3, 4]))
        >>> loss.shape
        torch.Size([])
    """

    _OPTIONS = (
        "label_smoothing", "ignore_index", "reduction", "convention", "kl", "impl",
        "validate_args",
    )  # fmt: skip
    _BUFFERS = ("weight", "prior", "class_mask")
    label_smoothing: float
    ignore_index: int
    reduction: str
    convention: str
    kl: bool
    impl: str
    validate_args: bool
    weight: torch.Tensor | None
    prior: torch.Tensor | None
    class_mask: torch.Tensor | None

    def __init__(
        self,
        label_smoothing: float = 0.1,
        *,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        convention: str = "uniform",
        prior: torch.Tensor | None = None,
        class_mask: torch.Tensor | None = None,
        kl: bool = False,
        impl: str = "auto",
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        self._store(locals())

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # the options read from the instance and buffer dicts and passed positionally (this
        # runs on every step: see _LossModule._options)
        a, b = self.__dict__, self._buffers
        options = LossOptions(
            a["ignore_index"], a["reduction"], a["label_smoothing"], a["convention"],
            b["prior"], b["class_mask"], a["kl"],
        )  # fmt: skip
        loss = _cross_entropy(
            input, target, b["weight"], options, a["impl"], False, a["validate_args"], False
        )
        assert isinstance(loss, torch.Tensor)  # no return_nll here
        return loss


class LinearCrossEntropyLoss(_LossModule):
    """Module form of :func:`labelsmooth.linear_cross_entropy` (see it for the math and
    arguments): label-smoothed cross-entropy of a linear head, computed in chunks of tokens.

    The head's parameters stay in the model; pass them to each call. ``prior`` and
    ``class_mask`` are registered as buffers, so they follow ``.to(device)`` and are saved in
    the state dict. With ``return_nll=True`` a call returns ``(loss, nll)``.

    Example:
        >>> import torch, labelsmooth
        >>> head = torch.nn.Linear(16, 50, bias=False)
        >>> criterion = labelsmooth.LinearCrossEntropyLoss(0.1, chunk_size=4)
        >>> loss = criterion(torch.randn(2, 5, 16), head.weight, torch.randint(0, 50, (2, 5)))
        >>> loss.shape
        torch.Size([])
    """

    _OPTIONS = (
        "label_smoothing", "ignore_index", "reduction", "convention", "kl", "softcap",
        "chunk_size", "return_nll", "impl", "validate_args",
    )  # fmt: skip
    _BUFFERS = ("prior", "class_mask")
    label_smoothing: float
    ignore_index: int
    reduction: str
    convention: str
    kl: bool
    softcap: float | None
    chunk_size: int | None
    return_nll: bool
    impl: str
    validate_args: bool
    prior: torch.Tensor | None
    class_mask: torch.Tensor | None

    def __init__(
        self,
        label_smoothing: float = 0.1,
        *,
        ignore_index: int = -100,
        reduction: str = "mean",
        convention: str = "uniform",
        prior: torch.Tensor | None = None,
        class_mask: torch.Tensor | None = None,
        kl: bool = False,
        softcap: float | None = None,
        chunk_size: int | None = None,
        return_nll: bool = False,
        impl: str = "auto",
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        self._store(locals())

    def forward(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return linear_cross_entropy(hidden, weight, target, bias, **self._options())
