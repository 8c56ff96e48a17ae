"""What this folder's test modules import first: ``CUDA`` and ``DEVICE``, and the skip of the
importing module where the kernels cannot run here (triton missing, or, without CUDA, triton
imported before this folder's conftest.py could choose the interpreter)."""

from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

pytest.importorskip("triton")
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":  # set by conftest.py
    pytest.skip("triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)
