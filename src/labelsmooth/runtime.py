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

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RuntimeConfig", "config", "options", "empty_cache", "cached_bytes"]


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def _default_kernel_cache_dir() -> Path:
    if os.environ.get("LABELSMOOTH_CACHE"):
        return Path(os.environ["LABELSMOOTH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "labelsmooth"


@dataclasses.dataclass
class RuntimeConfig:
    """The switches of the CPU paths (see the module docstring for their defaults)."""

    #: run the fused CPU rows in the C kernel (False: eager torch blocks, same results)
    native_kernel: bool = True
    #: keep the most recent large gradient buffer for the next call (freed by empty_cache)
    gradient_cache: bool = True
    #: back large CPU gradient buffers with transparent huge pages (Linux)
    hugepages: bool = True
    #: folder of the compiled C kernel (checked for ownership and mode before use)
    kernel_cache_dir: Path = dataclasses.field(default_factory=_default_kernel_cache_dir)

    @classmethod
    def from_environment(cls) -> RuntimeConfig:
        return cls(
            native_kernel=_env_flag("LABELSMOOTH_NATIVE", True),
            gradient_cache=_env_flag("LABELSMOOTH_GRADIENT_CACHE", True),
            hugepages=_env_flag("LABELSMOOTH_HUGEPAGES", True),
            kernel_cache_dir=_default_kernel_cache_dir(),
        )


#: The process's settings (defaults from the environment at import time).
config = RuntimeConfig.from_environment()


@contextlib.contextmanager
def options(**changes: object) -> Iterator[RuntimeConfig]:
    """Temporarily change fields of :data:`config` (restored on exit, even on error)."""
    names = {f.name for f in dataclasses.fields(RuntimeConfig)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise TypeError(f"options() got unknown settings {unknown}; known: {sorted(names)}")
    old = {k: getattr(config, k) for k in changes}
    try:
        for k, v in changes.items():
            setattr(config, k, v)
        yield config
    finally:
        for k, v in old.items():
            setattr(config, k, v)


def empty_cache() -> None:
    """Release the cached gradient buffer (like ``torch.cuda.empty_cache``).

    The memory returns to the system once no tensor still uses the buffer.
    """
    from labelsmooth.ops.cpu import runtime as _cpu_runtime

    _cpu_runtime.empty_cache()


def cached_bytes() -> int:
    """Bytes held by the gradient buffer cache right now (0 after :func:`empty_cache`)."""
    from labelsmooth.ops.cpu import runtime as _cpu_runtime

    return _cpu_runtime.cached_bytes()
