"""One pinned file over HTTP from a real local server: resume, retries, mirrors, checksums."""

from __future__ import annotations

import hashlib
import os
import sys

import pytest

from labelsmooth.experiment.data._download import DownloadError, download

DATA = bytes(range(256)) * 400  # 102,400 bytes: several read chunks
SHA = hashlib.sha256(DATA).hexdigest()


def _get(urls, dest, **kw):
    kw.setdefault("progress", False)
    return download(urls, dest, sha256=SHA, size=len(DATA), **kw)


def test_good_download(server, tmp_path):
    url = server.route("f.gz", DATA)
    dest = tmp_path / "sub" / "f.gz"
    assert _get([url], dest) == url
    assert dest.read_bytes() == DATA
    assert not (tmp_path / "sub" / "f.gz.part").exists()
    assert server.ranges("f.gz") == [None]


def test_truncated_transfer_is_resumed_with_range(server, tmp_path):
    url = server.route("f.gz", DATA, mode="cut-once", cut_at=30_000)
    messages = []
    assert _get([url], tmp_path / "f.gz", log=messages.append) == url
    assert (tmp_path / "f.gz").read_bytes() == DATA
    assert server.ranges("f.gz") == [None, "bytes=30000-"]
    assert any("closed after 30000 of 102400 bytes" in m and "retrying" in m for m in messages)


def test_partial_file_of_an_earlier_run_is_resumed(server, tmp_path):
    url = server.route("f.gz", DATA)
    (tmp_path / "f.gz.part").write_bytes(DATA[:5000])
    _get([url], tmp_path / "f.gz")
    assert (tmp_path / "f.gz").read_bytes() == DATA
    assert server.ranges("f.gz") == ["bytes=5000-"]


def test_server_without_range_support_restarts_the_file(server, tmp_path):
    url = server.route("f.gz", DATA, mode="no-range")
    (tmp_path / "f.gz.part").write_bytes(DATA[:5000])
    _get([url], tmp_path / "f.gz")
    assert (tmp_path / "f.gz").read_bytes() == DATA


def test_stale_partial_with_wrong_bytes_is_downloaded_again(server, tmp_path):
    url = server.route("f.gz", DATA)
    (tmp_path / "f.gz.part").write_bytes(b"\0" * 5000)  # not a prefix of the real file
    _get([url], tmp_path / "f.gz")
    assert (tmp_path / "f.gz").read_bytes() == DATA
    assert server.ranges("f.gz") == ["bytes=5000-", None]


def test_always_truncated_mirror_gives_up_then_next_mirror(server, tmp_path):
    bad = server.route("bad/f.gz", DATA, mode="cut", cut_at=1000)
    good = server.route("good/f.gz", DATA)
    assert _get([bad, good], tmp_path / "f.gz", attempts=2) == good
    assert len(server.ranges("bad/f.gz")) == 2  # retried, resuming at 1000, then gave up


def test_truncated_everywhere_is_a_clear_error(server, tmp_path):
    url = server.route("f.gz", DATA, mode="cut", cut_at=1000)
    with pytest.raises(DownloadError) as info:
        _get([url], tmp_path / "f.gz", attempts=2)
    assert "gave up after 2 attempts" in str(info.value) and url in str(info.value)
    assert not (tmp_path / "f.gz").exists()


def test_wrong_checksum_moves_to_the_next_mirror(server, tmp_path):
    wrong = server.route("wrong/f.gz", DATA[::-1])  # right size, wrong bytes
    good = server.route("good/f.gz", DATA)
    assert _get([wrong, good], tmp_path / "f.gz") == good
    with pytest.raises(DownloadError, match="does not match the pinned " + SHA):
        _get([wrong], tmp_path / "g.gz")
    assert not (tmp_path / "g.gz").exists() and not (tmp_path / "g.gz.part").exists()


def test_longer_than_pinned_is_refused(server, tmp_path):
    url = server.route("f.gz", DATA + b"extra")
    with pytest.raises(DownloadError, match="more than the pinned 102400 bytes"):
        _get([url], tmp_path / "f.gz")


def test_failing_mirrors_then_one_that_works(server, refused_base, tmp_path):
    good = server.route("good/f.gz", DATA)
    urls = [refused_base + "f.gz", server.base + "missing/f.gz", good]
    messages = []
    assert _get(urls, tmp_path / "f.gz", log=messages.append) == good
    assert any("refused" in m.lower() for m in messages)
    assert any("HTTP 404" in m for m in messages)


def test_unreachable_everywhere_lists_every_url(refused_base, tmp_path):
    urls = [refused_base + "f.gz", "https://no-such-host.invalid/f.gz"]
    with pytest.raises(DownloadError) as info:
        _get(urls, tmp_path / "f.gz")
    assert [u for u, _ in info.value.attempts] == urls
    assert all(u in str(info.value) for u in urls)


def test_plain_progress_line_without_tqdm(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    url = server.route("f.gz", DATA)
    _get([url], tmp_path / "f.gz", progress=True)
    err = capsys.readouterr().err
    assert "\rf.gz:" in err and "(100%)" in err and err.endswith("\n")


def test_tqdm_progress_bar(server, tmp_path, capsys):
    pytest.importorskip("tqdm")
    url = server.route("f.gz", DATA)
    _get([url], tmp_path / "f.gz", progress=True)
    assert "100%" in capsys.readouterr().err


def test_no_progress_output_when_off(server, tmp_path, capsys):
    url = server.route("f.gz", DATA)
    _get([url], tmp_path / "f.gz", progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_partial_file_another_process_is_writing_is_left_alone(server, tmp_path):
    """Two fetches of one file into one cache: the second never writes into the first's
    ``.part`` (it downloads into its own uniquely named file and renames only that)."""
    import fcntl

    url = server.route("f.gz", DATA)
    part = tmp_path / "f.gz.part"
    part.write_bytes(DATA[:1000])
    with open(part, "r+b") as other:  # what a concurrent download holds
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        inode = os.stat(part).st_ino
        assert _get([url], tmp_path / "f.gz") == url
        assert (tmp_path / "f.gz").read_bytes() == DATA
        assert part.read_bytes() == DATA[:1000] and os.stat(part).st_ino == inode
    assert server.ranges("f.gz") == [None]  # the other's bytes were not resumed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.gz", "f.gz.part"]


def test_failed_download_leaves_no_unique_partial_file(server, tmp_path):
    import fcntl

    url = server.route("f.gz", b"x" * len(DATA))  # wrong bytes: refused
    part = tmp_path / "f.gz.part"
    part.write_bytes(b"")
    with open(part, "r+b") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DownloadError, match="does not match"):
            _get([url], tmp_path / "f.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.gz.part"]
