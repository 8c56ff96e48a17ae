"""labelsmooth: label-smoothed cross-entropy for PyTorch, every convention, exact and fast.

Public names only; nothing optional (triton, matplotlib, tqdm) is imported here.
"""

from labelsmooth.functional import cross_entropy, smooth_labels
from labelsmooth.modules import LabelSmoothingCrossEntropy

__all__ = ["cross_entropy", "smooth_labels", "LabelSmoothingCrossEntropy", "__version__"]
__version__ = "0.1.0"
