"""Test-wide settings: 2 torch threads, no internet, a synthetic IDX dataset writer.

``_no_internet`` (autouse, session scope, so it is in place before any other fixture and for
every test): name lookups of anything but the local host fail with ``socket.gaierror``, and
connections (``connect`` / ``connect_ex``) to anything but a loopback address fail with
``ENETUNREACH``, as on a machine without a network. Local servers (``http.server`` on
127.0.0.1), gloo on localhost and AF_UNIX sockets keep working. It guards this process only:
subprocesses (``pip``, ``apt-get``, ``mp.spawn`` workers) are not covered; the data tests stub
the package downloads (``tests/data/conftest.py``).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

_LOCAL_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost"}


def _is_local(host: object) -> bool:
    """Whether ``host`` (a name, an address, or None/"" for "this machine") stays local."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host in _LOCAL_NAMES:
        return True
    if not isinstance(host, str):
        return False
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # drop an IPv6 zone (%eth0)
    except ValueError:
        return host.lower().endswith(".localhost")
    return address.is_loopback or address.is_unspecified


@pytest.fixture(scope="session", autouse=True)
def _no_internet():
    real_getaddrinfo = socket.getaddrinfo
    real_gethostbyname = socket.gethostbyname
    real_gethostbyname_ex = socket.gethostbyname_ex
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def refuse_lookup(host: object) -> None:
        if not _is_local(host):
            raise socket.gaierror(socket.EAI_NONAME, f"tests are offline: no lookup of {host!r}")

    def refused_address(sock: socket.socket, address: object) -> str | None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None  # AF_UNIX and the like never leave the machine
        host = address[0] if isinstance(address, tuple) and address else address
        return None if _is_local(host) else f"tests are offline: no connection to {address!r}"

    def getaddrinfo(host, *args, **kwargs):
        refuse_lookup(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host):
        refuse_lookup(host)
        return real_gethostbyname(host)

    def gethostbyname_ex(host):
        refuse_lookup(host)
        return real_gethostbyname_ex(host)

    def connect(self, address):
        why = refused_address(self, address)
        if why is not None:
            raise OSError(errno.ENETUNREACH, why)
        return real_connect(self, address)

    def connect_ex(self, address):
        if refused_address(self, address) is not None:
            return errno.ENETUNREACH
        return real_connect_ex(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        mp.setattr(socket, "gethostbyname", gethostbyname)
        mp.setattr(socket, "gethostbyname_ex", gethostbyname_ex)
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        yield


def _write_synthetic_idx(directory, n_train, n_test, classes=5, seed=0):
    """28x28 noisy stripe images; the stripes' orientation (or a checkerboard) is the class."""
    from labelsmooth.experiment.data import write_idx_dir

    rng = np.random.default_rng(seed)
    i, j = np.mgrid[0:28, 0:28]
    patterns = [i, j, i + j, i - j, (i // 2) + (j // 2)]

    def gen(n):
        y = rng.permutation(np.arange(n) % classes)
        phase = rng.integers(0, 4, n)[:, None, None]
        on = ((np.stack([patterns[c] for c in y]) + phase) % 4) < 2
        x = np.where(on, 200, 30) + rng.integers(0, 50, (n, 28, 28))
        return x.astype(np.uint8), y.astype(np.uint8)

    (xtr, ytr), (xte, yte) = gen(n_train), gen(n_test)
    write_idx_dir(directory, {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte})
    return directory


@pytest.fixture(scope="session")
def synthetic_idx():
    """Writes a small learnable IDX dataset: ``synthetic_idx(directory, n_train, n_test)``."""
    return _write_synthetic_idx
