"""labelsmooth: label-smoothed cross-entropy for PyTorch, every convention, exact and fast.

Public names only; nothing optional (triton, matplotlib, tqdm) is imported here.
"""

from labelsmooth import runtime
from labelsmooth.distillation import distillation_loss
from labelsmooth.functional import (
    chosen_impl,
    cross_entropy,
    linear_cross_entropy,
    smooth_labels,
)
from labelsmooth.modules import LabelSmoothingCrossEntropy, LinearCrossEntropyLoss
from labelsmooth.runtime import empty_cache

__all__ = [
    "cross_entropy",
    "smooth_labels",
    "distillation_loss",
    "chosen_impl",
    "LabelSmoothingCrossEntropy",
    "linear_cross_entropy",
    "LinearCrossEntropyLoss",
    "empty_cache",
    "runtime",
    "__version__",
]
__version__ = "0.1.0"
