"""A tiny causal transformer and a synthetic language for the theory experiments (2 and 3).

Not a benchmark itself: ``theory_constraint.py`` and ``theory_rho_L.py`` import it, and
the three theory benchmarks share its ``machine``, ``run_meta`` and ``subplot_grid``.
The language is an order-2 Markov chain over ``vocab`` tokens whose next-token
distributions are Dirichlet(0.1)-sparse, so there is structure to learn and a
known floor (the entropy rate) without any download.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's normopt


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.up = nn.Linear(d, 4 * d, bias=False)
        self.down = nn.Linear(4 * d, d, bias=False)
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:
        B, T, d = x.shape
        h = self.ln1(x)
        q, k, v = (
            lin(h).view(B, T, self.heads, -1).transpose(1, 2) for lin in (self.q, self.k, self.v)
        )
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, d/H)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, d))
        return x + self.down(nn.functional.gelu(self.up(self.ln2(x))))


class TinyLM(nn.Module):
    """Embedding, ``layers`` pre-LN blocks (separate q, k, v, o; 4x MLP), LayerNorm, head."""

    def __init__(
        self, vocab: int = 16, d: int = 64, layers: int = 2, heads: int = 4, seq: int = 32
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)  # an Embedding, so routing sends it to AdamW
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.embed(idx) + self.pos.weight[: idx.shape[1]]
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))  # (B, T, vocab)


class Markov2:
    """Order-2 Markov chain over ``vocab`` tokens with sparse Dirichlet rows."""

    def __init__(self, vocab: int = 16, concentration: float = 0.1, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        gamma = torch.distributions.Gamma(torch.tensor(concentration), torch.tensor(1.0))
        torch.manual_seed(seed)
        P = gamma.sample((vocab * vocab, vocab)) + 1e-12
        self.P = P / P.sum(-1, keepdim=True)  # (vocab^2, vocab)
        self.vocab = vocab
        self.gen = g

    def entropy_rate(self) -> float:
        """Mean next-token entropy under the uniform context distribution (an approximate floor)."""
        H = -(self.P * self.P.clamp_min(1e-30).log()).sum(-1)
        return float(H.mean())

    def sample(self, batch: int, seq: int, generator: torch.Generator | None = None) -> Tensor:
        g = generator or self.gen
        x = torch.randint(self.vocab, (batch, seq + 1), generator=g)
        for t in range(2, seq + 1):
            ctx = x[:, t - 2] * self.vocab + x[:, t - 1]
            x[:, t] = torch.multinomial(self.P[ctx], 1, generator=g).squeeze(1)
        return x  # (batch, seq + 1): inputs x[:, :-1], targets x[:, 1:]


def lm_loss(model: nn.Module, batch: Tensor) -> Tensor:
    logits = model(batch[:, :-1])
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
    )


def hidden_matrices(model: nn.Module) -> dict[str, Tensor]:
    """The tensors Muon's routing sends to Muon (role hidden/qkv/conv)."""
    from normopt import param_groups

    out: dict[str, Tensor] = {}
    for g in param_groups(model):
        if g.get("use_muon"):
            out.update(dict(g["params"]))
    return out


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The flags of the language and the model that both experiments train: sequence
    length, vocabulary, width and depth."""
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--vocab", type=int, default=16)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)


def run_meta(command: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What every theory benchmark saves beside its results: the command that reproduces
    them, the date, torch, the machine and the config (and ``extra``)."""
    return {
        "command": command,
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "machine": machine(),
        "config": config,
        **extra,
    }


def subplot_grid(rows: int, cols: int, width: float, height: float) -> tuple[Any, Any, Any]:
    """``(plt, fig, axes)``: ``rows x cols`` panels of ``width x height`` inches each, drawn
    off screen (matplotlib's Agg backend); ``axes[i][j]`` even for one row or column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return plt, fig, axes


def r5(x: float) -> float:
    """5 significant digits (keeps JSON small); inf and nan pass through."""
    return float(f"{x:.5g}") if math.isfinite(x) else x
