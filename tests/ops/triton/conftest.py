"""The Triton tests' set-up: without CUDA the kernels run under the Triton interpreter on CPU
tensors. The interpreter is chosen when triton and the kernels are first defined, for the
whole process (harmless on a machine without a GPU), so it is set here, before this folder's
test modules import triton; a module skips itself if triton was imported too early."""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

CUDA = torch.cuda.is_available()

if not CUDA and "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
    os.environ["TRITON_INTERPRET"] = "1"
