"""The native kernel's cache: what it refuses to load, what it rebuilds, how it fails.

A planted library (its constructor writes a marker file, its "kernels" do nothing) must never
be loaded from a folder or file another user could have written; a truncated or corrupted
cached library is rebuilt, never loaded (checked in a subprocess, where a crash fails the
test instead of killing pytest); a hanging compiler is killed within the timeout; one
warning per process. See the threat model in :mod:`labelsmooth.ops.cpu.build`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest
import torch

import labelsmooth
from labelsmooth import runtime
from labelsmooth.ops.cpu import build as cpu_build
from labelsmooth.ops.cpu import kernel as cpu_kernel

CPU = torch.device("cpu")
FOREIGN = 65534  # nobody
needs_root = pytest.mark.skipif(
    os.getuid() != 0, reason="planting a file owned by another user needs root (os.chown)"
)
pytestmark = pytest.mark.skipif(
    os.name != "posix" or cpu_build._compiler() is None, reason="needs POSIX and a C compiler"
)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """One real build, (file name, library bytes, record bytes), copied where tests need it."""
    folder = tmp_path_factory.mktemp("good")
    name = cpu_build._library_name(cpu_build._compiler())
    cpu_build._compile(cpu_build._compiler(), folder / name)
    return name, (folder / name).read_bytes(), (folder / f"{name}.sha256").read_bytes()


@pytest.fixture(scope="module")
def attacker(tmp_path_factory):
    """A library whose constructor writes ``marker``, with do-nothing kernel functions."""
    folder = tmp_path_factory.mktemp("attacker")
    marker = folder / "marker"
    src = folder / "planted.c"
    src.write_text(
        "#include <stdio.h>\n"
        "__attribute__((constructor)) static void planted(void) {\n"
        f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("ran", f); fclose(f); }}\n'
        "}\n"
        "void ls_rows_f32(void) {}\nvoid ls_rows_bf16(void) {}\n"
    )
    out = folder / "planted.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out), str(src)], check=True, timeout=60)
    return out.read_bytes(), marker


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path, reset_kernel):
    """Clean module state (restored afterwards) and a private temporary folder, so that the
    fallback ``labelsmooth-<uid>`` and one-off folders land under tmp_path."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _fallback(tmp: Path) -> Path:
    return tmp / f"labelsmooth-{os.getuid()}"


def _install(folder: Path, good, mode: int = 0o700) -> Path:
    """Put the good build and its record into ``folder`` (as ours)."""
    name, data, record = good
    folder.mkdir(mode=mode, parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    (folder / name).chmod(0o700)
    (folder / f"{name}.sha256").write_bytes(record)
    (folder / f"{name}.sha256").chmod(0o600)
    return folder / name


def _plant(folder: Path, name: str, data: bytes, owner: int | None = None, mode=0o755) -> None:
    """What an attacker does: the library under the expected name, with a matching record."""
    lib, record = folder / name, folder / f"{name}.sha256"
    lib.write_bytes(data)
    record.write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    for path in (lib, record):
        path.chmod(mode)
        if owner is not None:
            os.chown(path, owner, owner)


@contextlib.contextmanager
def _recorded():
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        yield got


def _ours(got) -> list[str]:
    return [
        str(w.message)
        for w in got
        if issubclass(w.category, RuntimeWarning) and str(w.message).startswith("labelsmooth:")
    ]


def _assert_loss_correct():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 300, generator=g)
    y = torch.randint(0, 300, (16,), generator=g)
    got = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused")
    want = torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1)
    torch.testing.assert_close(got, want)


# --- (a) a planted library is never loaded --------------------------------------------------


def _open_folder(tmp_path, name, planted):
    folder = tmp_path / "cache"
    folder.mkdir()
    folder.chmod(0o777)
    _plant(folder, name, planted)
    return folder, "writable by its group and others"


def _open_folder_foreign_file(tmp_path, name, planted):
    folder, _ = _open_folder(tmp_path, name, planted)
    _plant(folder, name, planted, owner=FOREIGN)
    return folder, "writable by its group and others"


def _foreign_file(tmp_path, name, planted):
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    _plant(folder, name, planted, owner=FOREIGN)
    return folder, f"owned by uid {FOREIGN}"


def _writable_file(tmp_path, name, planted):
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    _plant(folder, name, planted, mode=0o666)
    return folder, "writable by its group and others"


def _linked_file(tmp_path, name, planted):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _plant(elsewhere, name, planted)
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    (folder / name).symlink_to(elsewhere / name)
    (folder / f"{name}.sha256").write_bytes((elsewhere / f"{name}.sha256").read_bytes())
    return folder, "is a symbolic link"


def _open_parent(tmp_path, name, planted):
    parent = tmp_path / "open"
    parent.mkdir()
    parent.chmod(0o777)  # not sticky: anyone may rename "cache" and put their own there
    folder = parent / "cache"
    folder.mkdir(mode=0o700)
    _plant(folder, name, planted)
    return folder, "on the way to .* not sticky"


def _link_to_open_folder(tmp_path, name, planted):
    target, _ = _open_folder(tmp_path, name, planted)
    link = tmp_path / "link"
    link.symlink_to(target)
    return link, "writable by its group and others"


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(_open_folder_foreign_file, marks=needs_root),
        _open_folder,
        pytest.param(_foreign_file, marks=needs_root),
        _writable_file,
        _linked_file,
        _open_parent,
        _link_to_open_folder,
    ],
)
def test_a_planted_library_is_never_loaded(setup, good, attacker, fresh, tmp_path):
    planted, marker = attacker
    marker.unlink(missing_ok=True)
    folder, why = setup(tmp_path, good[0], planted)
    _install(_fallback(fresh), good)  # the private fallback holds a real build: no compile
    with runtime.options(kernel_cache_dir=folder), _recorded() as got:
        assert cpu_kernel.native_unavailable(CPU) is None
        _assert_loss_correct()
    assert not marker.exists(), "the planted library's constructor ran"
    assert cpu_kernel.kernel_path() == str(_fallback(fresh) / good[0])
    (message,) = _ours(got)
    assert "refused" in message and "planted" in message
    assert re.search(why, message), message


# --- (b) a pre-created fallback folder is refused too -----------------------------------------


def _fallback_foreign(fallback, good, planted):
    fallback.mkdir(mode=0o700)
    _plant(fallback, good[0], planted, owner=FOREIGN)
    os.chown(fallback, FOREIGN, FOREIGN)
    return f"owned by uid {FOREIGN}"


def _fallback_open(fallback, good, planted):
    fallback.mkdir()
    fallback.chmod(0o777)
    _plant(fallback, good[0], planted)
    return "writable by its group and others"


def _fallback_link(fallback, good, planted):
    target = fallback.parent.parent / "mine"
    _install(target, good)  # even a link to a trusted folder: the name must not lead elsewhere
    fallback.symlink_to(target)
    return "symbolic link"


@pytest.mark.parametrize(
    "setup", [pytest.param(_fallback_foreign, marks=needs_root), _fallback_open, _fallback_link]
)
def test_a_pre_created_fallback_folder_is_refused(setup, good, attacker, fresh, tmp_path):
    planted, marker = attacker
    marker.unlink(missing_ok=True)
    folder, _ = _open_folder(tmp_path, good[0], planted)
    why = setup(_fallback(fresh), good, planted)
    with runtime.options(kernel_cache_dir=folder), _recorded() as got:
        assert cpu_kernel.native_unavailable(CPU) is None
        _assert_loss_correct()
    assert not marker.exists(), "the planted library's constructor ran"
    # built in a one-off folder of this process, removed once loaded
    used = Path(cpu_kernel.kernel_path())
    assert used.parent.parent == fresh and not used.parent.exists()
    assert sorted(p.name for p in fresh.iterdir()) == [_fallback(fresh).name]
    (message,) = _ours(got)
    assert str(folder) in message and why in message and str(_fallback(fresh)) in message


# --- (c) truncated / corrupted / empty libraries are rebuilt, not loaded ----------------------

_LOAD_SCRIPT = """
import sys, torch, labelsmooth
from labelsmooth import runtime
from labelsmooth.ops.cpu import kernel as cpu_kernel
for folder in sys.argv[1:]:
    cpu_kernel._lib = cpu_kernel._path = cpu_kernel._failure = None  # load afresh
    with runtime.options(kernel_cache_dir=folder):
        reason = cpu_kernel.native_unavailable(torch.device("cpu"))
        assert reason is None, reason
        x, y = torch.randn(8, 50), torch.randint(0, 50, (8,))
        got = labelsmooth.cross_entropy(x, y, label_smoothing=0.1, impl="fused")
        want = torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1)
        torch.testing.assert_close(got, want)
        print(cpu_kernel.kernel_path())
"""


def test_a_damaged_library_is_rebuilt_not_loaded(good, tmp_path):
    name, data, record = good
    half = len(data) // 2
    damaged = {
        "truncated": data[:half],  # dlopen of this dies with SIGBUS
        # same size, bytes flipped where gcc puts the dynamic relocations: dlopen segfaults
        "corrupted": data[:1024] + bytes(b ^ 0xFF for b in data[1024:1536]) + data[1536:],
        "empty": b"",
    }
    folders = []
    for kind, content in damaged.items():
        lib = _install(tmp_path / kind, good)
        lib.write_bytes(content)
        assert len(lib.read_bytes()) == len(content)
        folders.append(str(tmp_path / kind))
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, *folders], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.split() == [str(Path(f) / name) for f in folders]
    for f in folders:
        rebuilt = (Path(f) / name).read_bytes()
        recorded = (Path(f) / f"{name}.sha256").read_text().split()[0]
        assert rebuilt and hashlib.sha256(rebuilt).hexdigest() == recorded
        assert not list(Path(f).glob("*.tmp"))  # renamed into place, nothing left over


def test_a_library_without_the_kernels_is_rebuilt_once_then_reported(
    good, tmp_path, monkeypatch, reset_kernel
):
    empty_c = tmp_path / "empty.c"
    empty_c.write_text("int nothing_here;\n")
    empty = tmp_path / "empty.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(empty), str(empty_c)], check=True)
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    _plant(folder, good[0], empty.read_bytes())  # ours, verified, but no kernel functions
    with runtime.options(kernel_cache_dir=folder):
        assert cpu_kernel.native_unavailable(CPU) is None  # rebuilt
        _assert_loss_correct()
    assert (folder / good[0]).read_bytes() != empty.read_bytes()

    # a compiler whose every build lacks the functions: one rebuild, then a clear reason
    cc = tmp_path / "emptycc"
    cc.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo emptycc 1.0; exit 0; fi\n'
        'prev=""; for a in "$@"; do [ "$prev" = -o ] && out="$a"; prev="$a"; done\n'
        f'echo build >> "{tmp_path}/builds"\n'
        f'exec cc -shared -fPIC -o "$out" "{empty_c}"\n'
    )
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    reset_kernel()
    with runtime.options(kernel_cache_dir=folder), _recorded() as got:
        reason = cpu_kernel.native_unavailable(CPU)
    assert reason is not None and "lacks the kernel functions" in reason
    assert "also after rebuilding it" in reason
    assert (tmp_path / "builds").read_text().split() == ["build", "build"]
    (message,) = _ours(got)
    assert "lacks the kernel functions" in message


def test_the_hash_record_is_checked_before_loading(good, tmp_path):
    lib = _install(tmp_path / "cache", good)
    record = lib.with_name(lib.name + ".sha256")
    assert cpu_build._verified(lib) == hashlib.sha256(good[1]).hexdigest()
    for bad in (b"", b"\xff\xfe not a digest\n", b"0" * 64 + b"  " + lib.name.encode()):
        record.write_bytes(bad)
        assert cpu_build._verified(lib) is None  # rebuild
    record.unlink()
    assert cpu_build._verified(lib) is None  # a library without a record: rebuild
    with pytest.raises(cpu_build.BuildError, match="changed after it was verified"):
        cpu_build._dlopen_verified(lib, "0" * 64, {"f32": "ls_rows_f32"})


# --- (d) leftovers of killed builds are removed -----------------------------------------------


def _aged(path: Path, data: bytes = b"", seconds: float = 3600) -> Path:
    path.write_bytes(data)
    old = time.time() - seconds
    os.utime(path, (old, old))
    return path


# names a user may well have in a folder LABELSMOOTH_CACHE points at: the patterns this cache
# used (and an earlier version's ``tmp*.so``), one even in the cache's current form
USERS_FILES = [
    ".cpu_kernels-abc123.tmp",
    ".cpu_kernels-4242-0123456789abcdef.tmp",
    "tmpq1w2e3.so",
    "tmp_notes.so",
]


@pytest.mark.parametrize("rebuild", [False, True], ids=["load", "build"])
def test_the_users_files_in_the_cache_folder_are_never_removed(good, tmp_path, rebuild):
    folder = tmp_path / "cache"
    lib = _install(folder, good)
    if rebuild:
        lib.write_bytes(b"damaged")  # forces a build, which holds the lock and cleans up
    users = [_aged(folder / name, b"the user's data") for name in USERS_FILES]
    # a manifest the cache did not write may name anything; only listed temporary names
    # that the cache itself could have created are ever touched
    (folder / ".cpu_kernels.tmp-files").write_text("../outside.tmp\nnotes.txt\n")
    _aged(folder / "notes.txt", b"keep")
    outside = _aged(tmp_path / "outside.tmp", b"keep")
    with runtime.options(kernel_cache_dir=folder):
        assert cpu_kernel.native_unavailable(CPU) is None
    for path in [*users, folder / "notes.txt", outside]:
        assert path.exists(), path
        assert path.read_bytes() in (b"the user's data", b"keep")
    assert cpu_build._verified(lib) is not None


@pytest.mark.timeout(60)  # the failure this guards against is a build that blocks forever
@pytest.mark.parametrize("kind", ["fifo", "folder", "link"])
def test_a_manifest_that_is_not_a_regular_file_never_blocks_a_build(good, tmp_path, kind):
    folder = tmp_path / "cache"
    lib = _install(folder, good)
    lib.write_bytes(b"damaged")  # forces a build, which writes the manifest
    manifest = folder / ".cpu_kernels.tmp-files"
    if kind == "fifo":
        os.mkfifo(manifest)
    elif kind == "folder":
        manifest.mkdir()
    else:
        (tmp_path / "elsewhere").write_text("")
        manifest.symlink_to(tmp_path / "elsewhere")
    with runtime.options(kernel_cache_dir=folder), _recorded():
        cpu_kernel.native_unavailable(CPU)  # returns (built elsewhere or reported), no hang
    assert os.path.lexists(manifest)  # left as it was
    assert (tmp_path / "elsewhere").read_text() == "" if kind == "link" else True


def test_the_caches_own_stale_leftovers_are_removed(good, tmp_path):
    folder = tmp_path / "cache"
    lib = _install(folder, good)
    stamp = lib.stat().st_mtime_ns
    # leftovers of killed builds: created by the cache, so listed in its manifest
    fd, stale = cpu_build._new_temp(folder)
    os.close(fd)
    _aged(stale)
    fd, recent = cpu_build._new_temp(folder)  # maybe a build in progress: kept
    os.close(fd)
    fd, gone = cpu_build._new_temp(folder)  # renamed into place: its entry is dropped
    os.close(fd)
    gone.unlink()
    user = _aged(folder / ".cpu_kernels-abc123.tmp", b"the user's data")
    with runtime.options(kernel_cache_dir=folder):
        assert cpu_kernel.native_unavailable(CPU) is None
    assert not stale.exists() and recent.exists() and user.exists()
    listed = (folder / cpu_build._MANIFEST_NAME).read_text().split()
    assert listed == [recent.name]
    assert lib.stat().st_mtime_ns == stamp  # the verified build was loaded, not rebuilt
    _aged(recent)
    cpu_build._remove_stale_temps(folder)
    assert not recent.exists() and not (folder / cpu_build._MANIFEST_NAME).exists()


def test_a_build_lists_only_its_own_temporaries_and_leaves_none(good, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    user = _aged(folder / ".cpu_kernels-abc123.tmp", b"the user's data")
    created: list[str] = []
    new_temp = cpu_build._new_temp

    def spy(where: Path):
        fd, path = new_temp(where)
        listed = (where / cpu_build._MANIFEST_NAME).read_text().split()
        assert listed[-1] == path.name  # listed before it was created
        created.append(path.name)
        return fd, path

    monkeypatch.setattr(cpu_build, "_new_temp", spy)
    name = cpu_build._library_name(cpu_build._compiler())
    cpu_build._compile(cpu_build._compiler(), folder / name)
    assert len(created) == 2 and user.name not in created  # the library's and the record's
    assert all(re.fullmatch(r"\.cpu_kernels-\d+-[0-9a-f]{16}\.tmp", n) for n in created)
    # renamed into place; the manifest is gone with its last entry; the user's file stays
    assert sorted(p.name for p in folder.iterdir()) == sorted([user.name, name, f"{name}.sha256"])


# --- (e) a hanging compiler is killed ---------------------------------------------------------


def _dead(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        if "\nState:\tZ" in status:  # killed, waiting to be reaped by init
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("hangs_in", ["probe", "compile"])
def test_a_hanging_compiler_is_killed_with_a_clear_reason(hangs_in, tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    cc = tmp_path / "hangcc"
    answer = 'if [ "$1" = --version ]; then echo hangcc 1.0; exit 0; fi\n'
    cc.write_text(
        "#!/bin/sh\n"
        + (answer if hangs_in == "compile" else "")
        + f'sleep 60 & echo $! > "{pidfile}"; wait\n'
    )
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setattr(cpu_build, "_PROBE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(cpu_build, "_COMPILE_TIMEOUT_S", 0.5)
    folder = tmp_path / "cache"
    start = time.monotonic()
    with runtime.options(kernel_cache_dir=folder), _recorded() as got:
        reason = cpu_kernel.native_unavailable(CPU)
    assert time.monotonic() - start < 30  # not the 60 s of the sleep
    what = "--version" if hangs_in == "probe" else "compiling kernels.c"
    assert reason is not None and what in reason, reason
    assert "did not finish within 0.5 s and was killed" in reason
    assert _dead(int(pidfile.read_text())), "the compiler's child is still running"
    if hangs_in == "compile":  # the killed build's temporary file is gone
        assert [p.name for p in folder.iterdir()] == [".cpu_kernels.lock"]
    (message,) = _ours(got)
    assert "did not finish" in message and "eager" in message


# --- (f) one warning per process, none when disabled on purpose ------------------------------


def test_one_warning_when_the_kernel_is_unavailable(monkeypatch):
    monkeypatch.setattr(cpu_build, "_compiler", lambda: None)
    with _recorded() as got:
        reason = cpu_kernel.native_unavailable(CPU)
        assert cpu_kernel.native_dtypes() == ()
        monkeypatch.setattr(cpu_kernel, "_failure", None)  # a second attempt, same process
        assert cpu_kernel.native_unavailable(CPU) == reason
    (message,) = _ours(got)
    assert "no C compiler" in message and "native_kernel = False" in message


def test_no_warning_and_no_build_when_disabled_on_purpose(monkeypatch):
    def must_not_build(*args):
        raise AssertionError("built although disabled")

    monkeypatch.setattr(cpu_build, "open_library", must_not_build)
    with runtime.options(native_kernel=False), _recorded() as got:
        reason = cpu_kernel.native_unavailable(CPU)
        assert cpu_kernel.native_dtypes() == ()
        _assert_loss_correct()  # the eager blocks
    assert "labelsmooth.runtime.config.native_kernel is False" in reason
    assert _ours(got) == []


def test_one_warning_for_a_refused_cache(good, tmp_path, fresh, monkeypatch):
    folder = _install(tmp_path / "cache", good).parent
    folder.chmod(0o777)
    _install(_fallback(fresh), good)
    with runtime.options(kernel_cache_dir=folder), _recorded() as got:
        for _ in range(2):  # two loads in one process
            monkeypatch.setattr(cpu_kernel, "_lib", None)
            assert cpu_kernel.native_unavailable(CPU) is None
    assert len(_ours(got)) == 1


def test_an_unwritable_configured_folder_falls_back_without_warning(good, tmp_path, fresh):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _install(_fallback(fresh), good)
    with runtime.options(kernel_cache_dir=blocker / "cache"), _recorded() as got:
        assert cpu_kernel.native_unavailable(CPU) is None
    assert cpu_kernel.kernel_path() == str(_fallback(fresh) / good[0])
    assert _ours(got) == []


def test_the_fallback_folder_is_created_private(good, tmp_path, fresh):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with runtime.options(kernel_cache_dir=blocker / "cache"):
        assert cpu_kernel.native_unavailable(CPU) is None  # compiles into the new fallback
    assert _fallback(fresh).stat().st_mode & 0o777 == 0o700
    lib = _fallback(fresh) / good[0]
    assert lib.stat().st_mode & 0o077 == 0 and (lib.parent / f"{good[0]}.sha256").exists()
    shutil.rmtree(_fallback(fresh))


def test_the_warning_comes_only_when_the_eager_blocks_run(fresh, monkeypatch):
    """Without a compiler, impl="auto" may ask whether the kernel is there (between its two
    size thresholds) and then run PyTorch's kernel: no warning for that. The warning comes
    with the first call that runs the eager blocks instead of the kernel."""
    monkeypatch.setattr(cpu_build, "_compiler", lambda: None)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1000, generator=g)  # 2e5 elements: auto consults the C kernel
    y = torch.randint(0, 1000, (200,), generator=g)
    with _recorded() as got:
        assert labelsmooth.chosen_impl(x, y, label_smoothing=0.1) == "torch"
        labelsmooth.cross_entropy(x, y, label_smoothing=0.1)
    assert _ours(got) == []
    with _recorded() as got:
        _assert_loss_correct()  # impl="fused": the eager blocks
    (message,) = _ours(got)
    assert "no C compiler" in message
