"""The switches of the CPU paths: :class:`RuntimeConfig`, :data:`config` and :func:`options`.

Their own home, below everything that reads them: the public front is :mod:`labelsmooth.runtime`
(which re-exports these names and documents the fields and their environment variables), and
the CPU backend (:mod:`labelsmooth.ops.cpu`) reads :data:`config` from here, so neither imports
the other in a circle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RuntimeConfig", "config", "options"]


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
    """The switches of the CPU paths (fields, defaults, variables: :mod:`labelsmooth.runtime`)."""

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
