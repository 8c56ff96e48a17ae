"""The Triton backend (CUDA, or CPU under ``TRITON_INTERPRET=1``): kernels and launchers.

Nothing here imports triton at import time of the package.
"""
