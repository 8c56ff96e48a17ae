"""labelsmooth: label-smoothed cross-entropy for PyTorch, every convention, exact and fast.

Public names only (``__all__``); nothing optional (triton, matplotlib, tqdm, transformers) and
nothing of the experiment application (:mod:`labelsmooth.experiment`) is imported here. The
submodules :mod:`~labelsmooth.parallel`, :mod:`~labelsmooth.metrics`,
:mod:`~labelsmooth.integrations` and :mod:`~labelsmooth.runtime` are loaded on first access
(PEP 562), so ``labelsmooth.metrics`` works after a plain ``import labelsmooth``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from labelsmooth._validate import CONVENTIONS
from labelsmooth.distillation import distillation_loss
from labelsmooth.functional import (
    chosen_impl,
    cross_entropy,
    linear_cross_entropy,
    smooth_labels,
)
from labelsmooth.modules import LabelSmoothingCrossEntropy, LinearCrossEntropyLoss
from labelsmooth.online import OnlineLabelSmoothing
from labelsmooth.runtime import empty_cache

__version__ = "0.1.0"

#: The public functions and classes (add a new public name here and import it above).
__all__ = [
    "cross_entropy",
    "smooth_labels",
    "distillation_loss",
    "chosen_impl",
    "LabelSmoothingCrossEntropy",
    "linear_cross_entropy",
    "LinearCrossEntropyLoss",
    "OnlineLabelSmoothing",
    "CONVENTIONS",
    "empty_cache",
    "runtime",
    "__version__",
]

#: Public submodules, imported on first attribute access (``labelsmooth.metrics``).
_LAZY_SUBMODULES = ("parallel", "metrics", "integrations", "runtime")

# Importing the names above bound their (private) submodules as attributes of this package:
# remove them so that ``dir(labelsmooth)`` is the public API. They stay importable by their
# full names (``import labelsmooth.functional``), and attribute access still finds them through
# ``__getattr__`` below (``mock.patch("labelsmooth.functional...")`` keeps working).
for _name in (
    "distillation",
    "functional",
    "modules",
    "online",
    "runtime",
    "ops",
    "_dispatch",
    "_validate",
):
    globals().pop(_name, None)
del _name


def __getattr__(name: str) -> ModuleType:
    """Load a submodule on first access (PEP 562); anything else is an AttributeError."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise  # the submodule exists but one of its own imports is missing
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return module


def __dir__() -> list[str]:
    """The public names and the lazily loaded public submodules."""
    return sorted(set(__all__) | set(_LAZY_SUBMODULES))
