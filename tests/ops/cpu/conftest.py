"""Fixtures of the CPU backend's tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from labelsmooth.ops.cpu import build as cpu_build
from labelsmooth.ops.cpu import kernel as cpu_kernel

#: the CPU backend's process state: what kernel.py loaded and why it failed (set to None),
#: its kernels, and what build.py asked the compiler and warned about (emptied)
_STATE = ((cpu_kernel, "_lib"), (cpu_kernel, "_path"), (cpu_kernel, "_failure"))
_CONTAINERS = (
    (cpu_kernel, "_kernels"), (cpu_build, "_warned"), (cpu_build, "_versions"),
    (cpu_build, "_version_errors"),
)  # fmt: skip


@pytest.fixture
def reset_kernel(monkeypatch) -> Callable[[], None]:
    """Make the CPU backend forget the loaded library, the failure, the compiler probes and
    the warnings given (the next call builds or loads again); calling the returned function
    forgets them again mid-test. Everything is restored after the test (a loaded library
    stays mapped)."""
    for module, name in _STATE:
        monkeypatch.setattr(module, name, None)
    for module, name in _CONTAINERS:
        monkeypatch.setattr(module, name, type(getattr(module, name))())

    def reset() -> None:
        for module, name in _STATE:
            setattr(module, name, None)
        for module, name in _CONTAINERS:
            getattr(module, name).clear()

    return reset
