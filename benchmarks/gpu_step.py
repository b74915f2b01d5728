"""Muon's whole optimizer step on GPT-2-small's matrices, and a training step end to end.

Part 1, the step: the 48 hidden matrices of GPT-2 small (12 blocks of ``2304x768``
attention input, ``768x768`` attention output, ``3072x768`` MLP input, ``768x3072``
MLP output; ``nn.Linear`` layout), float32 with fixed random gradients; ``opt.step()``
timed alone (median of ``--repeat`` after ``--warmup``; CUDA events on CUDA). Rows:

- ``normopt.Muon``: defaults (Jordan's Newton-Schulz, bf16 on CUDA), fast paths as
  ``normopt.kernels`` chooses them (compiled or fused, merged transposed stacks);
- ``normopt.Muon[fused]``: the eager fused backend forced (no compile);
  ``normopt.Muon[reference]``: the
  plain ``normopt.linalg.polar`` and unmerged stacks (what the CPU runs);
- ``normopt.Muon[polar_express]``: the Polar Express schedule, fast paths on;
- ``torch.optim.Muon`` (torch >= 2.9): one matrix at a time;
- ``torch.optim.AdamW``: ``fused=True`` on CUDA (``foreach`` on the CPU);
- ``normopt.Muon[orthogonalize only]``: the polar iteration on the step's stacks
  alone (same backend and merging): the rest of the step is the difference.

Peak memory (CUDA): ``torch.cuda.max_memory_allocated`` during the timed steps, and
that peak minus the memory held before them (weights, gradients, optimizer state):
the step's transient memory. ``state_mb``: the optimizer's state.

Part 2, end to end: a ~10 M-parameter character transformer (6 layers, width 384,
6 heads, context 256, bytes as tokens; the data are this repository's own source
files), forward + backward + step, bf16 autocast on CUDA: Muon+AdamW hybrids
(``normopt.Muon(model)``, which routes embeddings, head, gains and biases to AdamW;
``torch.optim.Muon`` on the hidden matrices + fused AdamW on the rest) against
fused AdamW on everything, and forward + backward alone as the floor.

Examples::

    python benchmarks/gpu_step.py --device cpu --small --out step_cpu.json
    python benchmarks/gpu_step.py --device cuda --out $OUT/step.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import normopt  # noqa: E402
from gpu_polar import bench_device, time_fn  # noqa: E402
from normopt import kernels  # noqa: E402

# GPT-2 small: d_model 768, 12 blocks; nn.Linear weights are (d_out, d_in).
GPT2_BLOCK = [(2304, 768), (768, 768), (3072, 768), (768, 3072)]


def gpt2_matrices(blocks: int, scale: int) -> list[nn.Parameter]:
    """The hidden matrices of GPT-2 small (every side divided by ``scale``), with gradients,
    on the CPU (each optimizer gets its own copy on the device)."""
    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(blocks):
        for d_out, d_in in GPT2_BLOCK:
            p = nn.Parameter(torch.randn(d_out // scale, d_in // scale, generator=gen) * 0.02)
            p.grad = torch.randn(p.shape, generator=gen)
            params.append(p)
    return params


def params_with_grads(params: list[nn.Parameter], device: torch.device) -> list[nn.Parameter]:
    out = []
    for p in params:
        q = nn.Parameter(p.detach().to(device))
        q.grad = p.grad.to(device) if p.grad is not None else None
        out.append(q)
    return out


@contextmanager
def kernel_switches(
    backend: str | None = None, merge: bool | None = None, compile_on: bool = True
) -> Iterator[None]:
    kernels.set_merge_transposed(merge)
    kernels.set_compile_enabled(compile_on)
    try:
        with kernels.backend(backend):
            yield
    finally:
        kernels.set_merge_transposed(None)
        kernels.set_compile_enabled(True)


def memory_mb() -> float:
    return torch.cuda.memory_allocated() / 2**20


# -- part 1: the optimizer step on the GPT-2 matrices -----------------------------------------------
def step_rows(
    device: torch.device, blocks: int, scale: int, warmup: int, repeat: int
) -> list[dict[str, Any]]:
    cuda = device.type == "cuda"
    rows: list[dict[str, Any]] = []
    cases: list[tuple[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer], dict[str, Any]]]
    cases = [
        ("normopt.Muon", lambda ps: normopt.Muon(ps, lr=0.02), {}),
        (
            "normopt.Muon[fused]",
            lambda ps: normopt.Muon(ps, lr=0.02),
            {"backend": "fused"},
        ),
        (
            "normopt.Muon[reference]",
            lambda ps: normopt.Muon(ps, lr=0.02),
            {"backend": "reference", "merge": False},
        ),
        (
            "normopt.Muon[polar_express]",
            lambda ps: normopt.Muon(ps, lr=0.02, polar="polar_express"),
            {},
        ),
    ]
    if hasattr(torch.optim, "Muon"):
        cases.append(("torch.optim.Muon", lambda ps: torch.optim.Muon(ps, lr=0.02), {}))
    adamw_kw: dict[str, Any] = {"fused": True} if cuda else {"foreach": True}
    name = "torch.optim.AdamW[fused]" if cuda else "torch.optim.AdamW[foreach]"
    cases.append((name, lambda ps: torch.optim.AdamW(ps, lr=3e-4, **adamw_kw), {}))

    base = gpt2_matrices(blocks, scale)
    n_params = sum(p.numel() for p in base)
    rows.append(ortho_row(base, device, warmup, repeat))
    for label, make, switches in cases:
        params = params_with_grads(base, device)
        row: dict[str, Any] = {"part": "step", "optimizer": label, "matrices": len(params)}
        row["params_M"] = n_params / 1e6
        try:
            with kernel_switches(**switches):
                if cuda:
                    torch.cuda.synchronize()
                    before = memory_mb()
                opt = make(params)
                t0 = time.perf_counter()
                opt.step()  # the first step: lazy state, compiles where it compiles
                if cuda:
                    torch.cuda.synchronize()
                row["first_step_s"] = time.perf_counter() - t0
                if cuda:
                    held = memory_mb()
                    torch.cuda.reset_peak_memory_stats()
                times = time_fn(lambda _, o=opt: o.step(), [None], warmup, repeat, device)
                if cuda:
                    peak = torch.cuda.max_memory_allocated() / 2**20
                    row.update(
                        peak_mb=peak,
                        transient_mb=peak - held,
                        state_mb=held - before,
                    )
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
            continue
        row.update(ms=statistics.median(times), ms_min=min(times), ms_max=max(times))
        rows.append(row)
        del opt, params
        if cuda:
            torch.cuda.empty_cache()
    return rows


def ortho_row(
    base: list[nn.Parameter], device: torch.device, warmup: int, repeat: int
) -> dict[str, Any]:
    """The orthogonalization of normopt.Muon's stacks alone, as its step builds them: what the
    rest of the step (momentum, stacking, scatter, update, the non-finite check) adds on top."""
    grads = [p.grad.to(device) for p in base if p.grad is not None]
    merge = [kernels.merge_transposed_enabled(device)] * len(grads)
    plans = kernels.plan_stacks([tuple(g.shape) for g in grads], [None] * len(grads), merge)
    stacks = [kernels.gather(grads, plan) for plan in plans]  # (B, m, n) each
    sched = normopt.linalg.get_schedule("jordan")
    coeffs = [sched.at(i) for i in range(5)]

    def orthogonalize(_: Any) -> None:
        for st in stacks:
            kernels.quintic_polar(st, coeffs, sched.norm_scale)

    row: dict[str, Any] = {
        "part": "step",
        "optimizer": "normopt.Muon[orthogonalize only]",
        "matrices": len(grads),
        "stacks": [list(st.shape) for st in stacks],
    }
    t0 = time.perf_counter()
    orthogonalize(None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    row["first_step_s"] = time.perf_counter() - t0
    times = time_fn(orthogonalize, [None], warmup, repeat, device)
    row.update(ms=statistics.median(times), ms_min=min(times), ms_max=max(times))
    return row


# -- part 2: a training step end to end ---------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d, bias=False)
        self.fc_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)  # (b, t, d) each
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (b, h, t, d/h)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))


class CharTransformer(nn.Module):
    """A GPT on bytes: token and position embeddings, pre-norm blocks, an untied head."""

    def __init__(self, d: int, layers: int, heads: int, context: int, vocab: int = 256) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))  # (b, t, vocab)


def corpus(device: torch.device) -> torch.Tensor:
    """This repository's Python sources as bytes: real text, no download."""
    files = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    data = b"".join(f.read_bytes() for f in files)
    return torch.tensor(list(data), dtype=torch.long, device=device)


def hybrid_torch_muon(model: nn.Module, fused: bool) -> list[torch.optim.Optimizer]:
    hidden = [p for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2]
    ids = {id(p) for p in hidden}
    rest = [p for p in model.parameters() if id(p) not in ids]
    kw: dict[str, Any] = {"fused": True} if fused else {}
    return [
        torch.optim.Muon(hidden, lr=0.02, adjust_lr_fn="original"),
        torch.optim.AdamW(rest, lr=3e-4, betas=(0.9, 0.95), **kw),
    ]


def train_rows(device: torch.device, small: bool, warmup: int, repeat: int) -> list[dict[str, Any]]:
    cuda = device.type == "cuda"
    cfg = (
        {"d": 64, "layers": 2, "heads": 2, "context": 64, "batch": 4}
        if small
        else {"d": 384, "layers": 6, "heads": 6, "context": 256, "batch": 64}
    )
    data = corpus(device)
    gen = torch.Generator().manual_seed(0)
    ctx, batch = cfg["context"], cfg["batch"]

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(data) - ctx - 1, (batch,), generator=gen).to(device)
        offs = torch.arange(ctx, device=device)
        return data[ix[:, None] + offs], data[ix[:, None] + offs + 1]

    cases: list[tuple[str, Callable[[nn.Module], list[torch.optim.Optimizer]]]] = [
        ("fwd+bwd only", lambda m: []),
        ("normopt.Muon+AdamW", lambda m: [normopt.Muon(m, lr=0.02)]),
        (
            "AdamW" + ("[fused]" if cuda else ""),
            lambda m: [torch.optim.AdamW(m.parameters(), lr=3e-4, fused=cuda or None)],
        ),
    ]
    if hasattr(torch.optim, "Muon"):
        cases.append(("torch.optim.Muon+AdamW", lambda m: hybrid_torch_muon(m, cuda)))
    rows = []
    for label, make in cases:
        torch.manual_seed(0)
        model = CharTransformer(cfg["d"], cfg["layers"], cfg["heads"], ctx).to(device)
        n_params = sum(p.numel() for p in model.parameters())
        opts = make(model)
        losses: list[float] = []

        def train_step(
            _: Any, model: nn.Module = model, opts: Any = opts, losses: list[Any] = losses
        ) -> None:
            x, y = get_batch()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = model(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1))
            loss.backward()
            for o in opts:
                o.step()
            model.zero_grad(set_to_none=True)
            losses.append(loss.detach())

        row: dict[str, Any] = {"part": "train", "optimizer": label, "params_M": n_params / 1e6}
        row.update({k: v for k, v in cfg.items()})
        try:
            t0 = time.perf_counter()
            train_step(None)
            if cuda:
                torch.cuda.synchronize()
            row["first_step_s"] = time.perf_counter() - t0
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            times = time_fn(train_step, [None], warmup, repeat, device)
            if cuda:
                row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
            continue
        ms = statistics.median(times)
        final = float(torch.stack([torch.as_tensor(v) for v in losses[-5:]]).mean())
        row.update(
            ms=ms,
            ms_min=min(times),
            ms_max=max(times),
            tokens_per_s=batch * ctx / (ms * 1e-3),
            loss_first=float(losses[0]),
            loss_last5=final,
            steps=len(losses),
        )
        if not math.isfinite(final):
            row["error"] = "non-finite loss"
        rows.append(row)
        del model, opts
        if cuda:
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="matrices /16, 2 blocks, a tiny model")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--parts", default="step,train", help="step, train or both")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (CPU default: 1)")
    args = ap.parse_args(argv)

    device = bench_device(args.device, args.threads, tf32=True)  # as a training run would
    cuda = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    repeat = args.repeat if args.repeat is not None else (30 if cuda else 3)
    blocks, scale = (2, 16) if args.small else (12, 1)
    parts = {p.strip() for p in args.parts.split(",")}
    meta = {
        "script": "benchmarks/gpu_step.py",
        "argv": sys.argv[1:] if argv is None else argv,
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "warmup": warmup,
        "repeat": repeat,
        "blocks": blocks,
        "scale": scale,
        "auto_backend": kernels.select_backend(device),
        "merge_transposed": kernels.merge_transposed_enabled(device),
        "env": {k: v for k, v in os.environ.items() if k.startswith("NORMOPT_")},
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"# {meta['device']}, torch {meta['torch']}, auto backend {meta['auto_backend']}")
    rows: list[dict[str, Any]] = []

    def dump() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps({"meta": meta, "results": rows}, indent=1))

    def mb(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:9.1f}" if row.get(key) is not None else f"{'-':>9}"

    if "step" in parts:
        print(
            f"## optimizer step, GPT-2-small matrices ({blocks} blocks, sides /{scale})\n"
            f"{'optimizer':<34} {'ms':>9} {'min':>9} {'first s':>8} {'peak MB':>9} "
            f"{'trans MB':>9} {'state MB':>9}",
            flush=True,
        )
        for row in step_rows(device, blocks, scale, warmup, repeat):
            rows.append(row)
            if "error" in row:
                print(f"{row['optimizer']:<34} ERROR {row['error']}", flush=True)
                continue
            print(
                f"{row['optimizer']:<34} {row['ms']:9.3f} {row['ms_min']:9.3f} "
                f"{row['first_step_s']:8.2f} {mb(row, 'peak_mb')} {mb(row, 'transient_mb')} "
                f"{mb(row, 'state_mb')}",
                flush=True,
            )
        dump()
    if "train" in parts:
        print(
            f"## training step, char transformer\n{'optimizer':<34} {'ms':>9} {'tok/s':>10} "
            f"{'peak MB':>9} {'loss0':>7} {'loss':>7}",
            flush=True,
        )
        for row in train_rows(device, args.small, warmup, repeat):
            rows.append(row)
            if "ms" not in row:
                print(f"{row['optimizer']:<34} ERROR {row.get('error')}", flush=True)
                continue
            print(
                f"{row['optimizer']:<34} {row['ms']:9.3f} {row['tokens_per_s']:10.0f} "
                f"{mb(row, 'peak_mb')} {row['loss_first']:7.3f} {row['loss_last5']:7.3f}"
                + (f"  ERROR {row['error']}" if "error" in row else ""),
                flush=True,
            )
        dump()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
