"""The models of the built-in tasks: a small GPT, an MLP and a small CNN.

Every model names its output layer ``head``: optimizer routing (``normopt.classify``)
uses it to keep the head off Muon. The GPT's head is tied to its token embedding, the
standard case that a router must handle (one tensor, two roles).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Causal multi-head self-attention; q, k, v from one fused (3d, d) matrix."""

    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        if d % n_head:
            raise ValueError(f"width {d} is not divisible by {n_head} heads")
        self.n_head = n_head
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x (B, T, d)
        q, k, v = (t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, d/H)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))  # (B, T, d)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = SelfAttention(d, n_head)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))  # (B, T, d)
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))  # (B, T, d)


class GPT(nn.Module):
    """A GPT-style character model: token and position embeddings, pre-norm blocks, final
    layer norm, and a linear head whose weight IS the token embedding (tied)."""

    def __init__(self, vocab: int, block_size: int, n_layer: int, d: int, n_head: int) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(block_size, d)
        self.blocks = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied: one (vocab, d) tensor
        # nanoGPT's init: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if self.block_size < T:
            raise ValueError(f"sequence of {T} exceeds the block size {self.block_size}")
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (B, T, vocab)


class MLP(nn.Module):
    """Flatten, then Linear-GELU layers of the given widths, then the head."""

    def __init__(self, d_in: int, widths: tuple[int, ...], classes: int) -> None:
        super().__init__()
        dims = (d_in, *widths)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, d_in)
        for layer in self.layers:
            x = F.gelu(layer(x))  # (B, width)
        return self.head(x)  # (B, classes)


class CNN(nn.Module):
    """Two 3x3 conv-ReLU-maxpool stages, one hidden linear layer, the head (28x28 inputs)."""

    def __init__(self, classes: int, c1: int = 16, c2: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(c2 * 7 * 7, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, c1, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, c2, 7, 7)
        x = F.relu(self.fc(x.flatten(1)))  # (B, hidden)
        return self.head(x)  # (B, classes)
