"""Whether a call runs plainly in eager mode or is seen by a tracer: what the ops layer
(``ops/library.py``) and the Triton launches (``ops/triton/launch.py``) both ask. It imports
nothing of the library, so any module may use it."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils import _python_dispatch

__all__ = ["PLAIN_TYPES", "is_transformed", "runs_plain_eager"]

#: tensor types of plain eager calls (not a tracer's tensor subclass: fake, functional)
PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def is_transformed(t: Tensor) -> bool:
    """A tensor of a torch.func transform (grad, vjp, vmap)."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))


def runs_plain_eager(input: Tensor) -> bool:
    """Whether a call sees a plain tensor with no tracer, torch.func transform or dispatch
    mode (make_fx, FakeTensorMode, non-strict export) around it: then an op's body may run
    directly, without ``torch.library``'s dispatch."""
    return (
        type(input) in PLAIN_TYPES
        and not torch.compiler.is_compiling()
        and not is_transformed(input)
        and _python_dispatch._get_current_dispatch_mode() is None
    )
