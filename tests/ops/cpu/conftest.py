"""Fixtures of the CPU backend's tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from labelsmooth.ops.cpu import kernel as cpu_kernel

#: the kernel module's process state: what it loaded, why it failed, what it asked and said
_STATE = ("_lib", "_path", "_failure")
_CONTAINERS = ("_kernels", "_warned", "_versions", "_version_errors")


@pytest.fixture
def reset_kernel(monkeypatch) -> Callable[[], None]:
    """Make :mod:`labelsmooth.ops.cpu.kernel` forget the loaded library, the failure, the
    compiler probes and the warnings given (the next call builds or loads again); calling the
    returned function forgets them again mid-test. Everything is restored after the test (a
    loaded library stays mapped)."""
    for name in _STATE:
        monkeypatch.setattr(cpu_kernel, name, None)
    for name in _CONTAINERS:
        monkeypatch.setattr(cpu_kernel, name, type(getattr(cpu_kernel, name))())

    def reset() -> None:
        for name in _STATE:
            setattr(cpu_kernel, name, None)
        for name in _CONTAINERS:
            getattr(cpu_kernel, name).clear()

    return reset
