"""``nn.Module`` wrappers: they store their arguments and call the functional API, no math."""

from __future__ import annotations

import torch
from torch import nn

from labelsmooth.functional import cross_entropy, linear_cross_entropy

__all__ = ["LabelSmoothingCrossEntropy", "LinearCrossEntropyLoss"]


class LabelSmoothingCrossEntropy(nn.Module):
    """Module form of :func:`labelsmooth.cross_entropy` (see it for the math and arguments).

    ``weight``, ``prior`` and ``class_mask`` are registered as buffers, so they follow
    ``.to(device)`` and are saved in the state dict.

    Example:
        >>> import torch, labelsmooth
        >>> criterion = labelsmooth.LabelSmoothingCrossEntropy(0.1, convention="others")
        >>> loss = criterion(torch.randn(4, 10), torch.tensor([1, 2, 3, 4]))
        >>> loss.shape
        torch.Size([])
    """

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
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.convention = convention
        self.kl = kl
        self.impl = impl
        self.validate_args = validate_args
        self.register_buffer("weight", weight)
        self.register_buffer("prior", prior)
        self.register_buffer("class_mask", class_mask)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = cross_entropy(
            input,
            target,
            self.weight,
            self.ignore_index,
            self.reduction,
            self.label_smoothing,
            convention=self.convention,
            prior=self.prior,
            class_mask=self.class_mask,
            kl=self.kl,
            impl=self.impl,
            validate_args=self.validate_args,
        )
        assert isinstance(loss, torch.Tensor)  # no return_nll here
        return loss

    def extra_repr(self) -> str:
        return (
            f"label_smoothing={self.label_smoothing}, convention={self.convention!r}, "
            f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, kl={self.kl}"
        )


class LinearCrossEntropyLoss(nn.Module):
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
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.convention = convention
        self.kl = kl
        self.softcap = softcap
        self.chunk_size = chunk_size
        self.return_nll = return_nll
        self.impl = impl
        self.validate_args = validate_args
        self.register_buffer("prior", prior)
        self.register_buffer("class_mask", class_mask)

    def forward(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return linear_cross_entropy(
            hidden,
            weight,
            target,
            bias,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            convention=self.convention,
            prior=self.prior,
            class_mask=self.class_mask,
            kl=self.kl,
            softcap=self.softcap,
            chunk_size=self.chunk_size,
            return_nll=self.return_nll,
            impl=self.impl,
            validate_args=self.validate_args,
        )

    def extra_repr(self) -> str:
        return (
            f"label_smoothing={self.label_smoothing}, convention={self.convention!r}, "
            f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, kl={self.kl}, "
            f"softcap={self.softcap}, chunk_size={self.chunk_size}"
        )
