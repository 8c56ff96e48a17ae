"""Test-wide settings and shared fixtures: 2 torch threads, no internet, the conventions, the
row-kernel switch, the tolerance rule, a synthetic IDX dataset writer.

Shared fixtures (use them instead of a local copy):

* ``convention`` — parametrized over every smoothing convention (:data:`CONVENTIONS`); a test
  that takes it runs once per convention. ``conventions`` is the tuple itself.
* ``row_kernel`` — parametrized "native" (the C row kernel; skipped where it cannot be built)
  and "eager" (``labelsmooth.runtime.config.native_kernel = False``: eager torch blocks). Take
  it as an argument, or run a whole module twice with
  ``pytestmark = pytest.mark.usefixtures("row_kernel")``.
* ``benchmark_script`` — a script of ``benchmarks/`` loaded as a module, and
  ``refuses_each`` — that a ``main(argv)`` refuses each bad argument list with one
  ``<prog>: error: …`` line and exit status 2.
* ``near_truth`` — the house tolerance rule, ``|impl − truth| ≤ 2·|torch_same_dtype − truth| +
  atol`` (+ ``rtol·|truth|``), the truth in higher precision:
  ``near_truth(got, truth, same_dtype, atol=1e-6)``.

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
import importlib.util
import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


#: Every smoothing convention of the library (the ``convention`` fixture's parameters;
#: ``tests/test_validate.py`` checks that it equals the library's own list).
CONVENTIONS = ("uniform", "others", "unnormalized")


@pytest.fixture(params=CONVENTIONS)
def convention(request) -> str:
    """Each smoothing convention in turn."""
    return request.param


@pytest.fixture
def conventions() -> tuple[str, ...]:
    """All the smoothing conventions, for a test that loops over them itself."""
    return CONVENTIONS


@pytest.fixture(params=["native", "eager"])
def row_kernel(request, monkeypatch) -> str:
    """Rows by the C kernel ("native", skipped where it cannot run) or by eager torch blocks."""
    if request.param == "eager":
        import labelsmooth.runtime

        monkeypatch.setattr(labelsmooth.runtime.config, "native_kernel", False)
    else:
        from labelsmooth.ops.cpu import kernel as cpu_kernel

        reason = cpu_kernel.native_unavailable(torch.device("cpu"))
        if reason is not None:
            pytest.skip(reason)
    return request.param


def check_near_truth(
    got: torch.Tensor | float,
    truth: torch.Tensor | float,
    same_dtype: torch.Tensor | float,
    *,
    atol: float = 0.0,
    rtol: float = 0.0,
    floor: float = 0.0,
    elementwise: bool = True,
) -> None:
    """House rule 2: ``|got − truth| ≤ 2·max(|same_dtype − truth|, floor) + atol + rtol·|truth|``.

    Args:
        got: the result under test (any dtype; compared in float64).
        truth: the same quantity computed in higher precision (float64).
        same_dtype: what torch's own op gives in ``got``'s dtype (its error sets the bar).
        atol: absolute slack (for results where torch happens to be exact).
        rtol: slack relative to ``|truth|`` (to its largest entry with ``elementwise=False``).
        floor: a lower bound on torch's error (for dtypes whose rounding torch hides).
        elementwise: compare entry by entry (default) or the largest errors of each.

    Raises:
        AssertionError: naming the worst entry, its errors and the bound.
    """
    g, t, r = (torch.as_tensor(v).detach().to(torch.float64) for v in (got, truth, same_dtype))
    err, ref_err = (g - t).abs(), (r - t).abs().clamp(min=floor)
    same = (g == t) | (g.isnan() & t.isnan())  # equal infinities, or NaN where the truth is NaN
    size = t.abs().nan_to_num(0.0)
    if not elementwise:
        err, ref_err, same, size = err.max(), ref_err.max(), same.all(), size.max()
    err, ref_err, same, size = torch.broadcast_tensors(err, ref_err, same, size)
    bound = 2 * ref_err + atol + rtol * size
    ok = (err <= bound) | same
    if not bool(ok.all()):
        worst = int(torch.argmax(torch.where(ok, -torch.inf, err - bound).nan_to_num(torch.inf)))
        raise AssertionError(
            f"not within 2*|same_dtype - truth| + atol of the truth: {int((~ok).sum())} "
            f"entries; worst at flat index {worst}: error {float(err.reshape(-1)[worst]):.3e} > "
            f"bound {float(bound.reshape(-1)[worst]):.3e} (same-dtype error "
            f"{float(ref_err.reshape(-1)[worst]):.3e}, atol {atol:g}, rtol {rtol:g})"
        )


@pytest.fixture
def near_truth() -> Callable[..., None]:
    """The tolerance rule as a function: ``near_truth(got, truth, same_dtype, atol=1e-6)``."""
    return check_near_truth


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
def benchmark_script() -> Callable[[str], Any]:
    """Loads a script of ``benchmarks/`` as a module: ``benchmark_script("gpu_bench")``."""

    def load(name: str) -> Any:
        path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def refuses_each(capsys) -> Callable[..., None]:
    """``refuses_each(main, prog, cases)``: for each ``(argv, message)`` of ``cases``,
    ``main(argv)`` exits with status 2 after one line ``<prog>: error: …`` naming ``message``."""

    def check(main: Callable[[list[str]], Any], prog: str, cases) -> None:
        for argv, message in cases:
            with pytest.raises(SystemExit) as e:
                main(argv)
            err = capsys.readouterr().err
            assert e.value.code == 2 and err.startswith(f"{prog}: error: "), (argv, err)
            assert message in err and err.count("\n") == 1, (argv, err)

    return check


@pytest.fixture(scope="session")
def synthetic_idx():
    """Writes a small learnable IDX dataset: ``synthetic_idx(directory, n_train, n_test)``."""
    return _write_synthetic_idx
