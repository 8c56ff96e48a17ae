"""Process-level settings of labelsmooth's CPU paths, read once from the environment.

Everything that outlives a single call lives here, behind a small documented API:

* :data:`config` — the switches. Each field's default comes from an environment variable
  read **once**, when this module is first imported; afterwards change the field (or use
  :func:`options` for a temporary change). Nothing reads the environment per call.

  =====================  ==============================  ====================================
  field                  environment variable (default)  effect
  =====================  ==============================  ====================================
  ``native_kernel``      ``LABELSMOOTH_NATIVE`` (1)      C row kernel for the fused CPU path
  ``gradient_cache``     ``LABELSMOOTH_GRADIENT_CACHE``  keep one gradient buffer for reuse
                         (1)
  ``hugepages``          ``LABELSMOOTH_HUGEPAGES`` (1)   2 MiB pages for large CPU gradients
  ``kernel_cache_dir``   ``LABELSMOOTH_CACHE``           where the compiled kernel is kept
                         (``$XDG_CACHE_HOME/labelsmooth``
                         or ``~/.cache/labelsmooth``)
  =====================  ==============================  ====================================

* :func:`empty_cache` and :func:`cached_bytes` — the gradient buffer cache, which behaves like
  a caching allocator holding at most one buffer (see :mod:`labelsmooth.ops.cpu.runtime`).

Example:
    >>> import labelsmooth
    >>> with labelsmooth.runtime.options(gradient_cache=False):
    ...     labelsmooth.runtime.config.gradient_cache
    False
    >>> labelsmooth.empty_cache()
    >>> labelsmooth.runtime.cached_bytes()
    0
"""

from __future__ import annotations

from labelsmooth._config import RuntimeConfig, config, options
from labelsmooth.ops.cpu import runtime as _cpu_runtime

__all__ = ["RuntimeConfig", "config", "options", "empty_cache", "cached_bytes"]


def empty_cache() -> None:
    """Release the cached gradient buffer (like ``torch.cuda.empty_cache``).

    The memory returns to the system once no tensor still uses the buffer.
    """
    _cpu_runtime.empty_cache()


def cached_bytes() -> int:
    """Bytes held by the gradient buffer cache right now (0 after :func:`empty_cache`)."""
    return _cpu_runtime.cached_bytes()
