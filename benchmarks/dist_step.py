"""One optimizer step under FSDP2 and DDP: collectives, bytes sent, FLOPs per rank.

Issue 12 (torch.distributed): a step under ``fully_shard`` should orthogonalize each matrix
once (on its owner) instead of once per rank, and issue a fixed, small number of
collectives. Measured per rank for one ``step()`` after two warm-up steps, on ``--world``
local CPU processes with gloo (``torchrun`` is not needed: the script launches itself):

- **collectives**: every c10d and functional collective the step issues, counted by
  ``torch.distributed.tensor.debug.CommDebugMode`` (DTensor's own redistributions
  included);
- **bytes sent**: normopt's own collectives (its all-to-all, all-reduce and all-gather
  calls, counted at ``torch.distributed``); the peer's are DTensor's functional
  collectives, which that counter does not see: "n/m" (not measured);
- **step FLOPs per rank / one process**: ``FlopCounterMode`` around the step on each rank,
  divided by the same step of the same optimizer on the whole model in one process
  (1.00 means every rank repeats the whole step);
- **CPU ms per step**: the median of ``--steps`` steps (gloo on a shared CPU: a rough
  figure, not a GPU one).

The model: ``--layers`` transformer-shaped blocks at width ``--width`` (q, k, v, o
``(d, d)``, fc ``(4d, d)``, proj ``(d, 4d)``, two LayerNorms), an embedding ``(V, d)`` and
a head ``(V, d)``, each block ``fully_shard``-ed (or the whole model wrapped in DDP). Rows:
``normopt.Muon`` (``normopt.Muon(model)``; DDP: ``process_group=WORLD``), and
``torch.optim.Muon+AdamW`` (torch's Muon on the block matrices, ``AdamW(foreach=True)``
on the rest). Widths must divide by the world size for the peer (its Newton-Schulz runs
on DTensors).

Examples::

    python benchmarks/dist_step.py                       # FSDP2 and DDP at 2 and 4 ranks
    python benchmarks/dist_step.py --world 2 --width 128 --json dist.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import normopt


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.fc, self.proj = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        a = torch.softmax(self.q(h) @ self.k(h).mT / h.shape[-1] ** 0.5, -1) @ self.v(h)
        x = x + self.o(a)
        return x + self.proj(torch.relu(self.fc(self.ln_2(x))))


class Model(nn.Module):
    def __init__(self, d: int, layers: int, vocab: int = 256) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def make(method: str, model: nn.Module, ddp: bool) -> list[torch.optim.Optimizer]:
    if method == "normopt.Muon":
        group = dist.group.WORLD if ddp and dist.is_initialized() else None
        return [normopt.Muon(model, lr=0.02, adamw_lr=3e-3, process_group=group)]
    hidden = [p for n, p in model.named_parameters() if p.ndim == 2 and "blocks" in n]
    ids = {id(p) for p in hidden}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [torch.optim.Muon(hidden, lr=0.02), torch.optim.AdamW(rest, lr=3e-3, foreach=True)]


METHODS = ("normopt.Muon", "torch.optim.Muon+AdamW")


@contextmanager
def bytes_sent():
    sent = [0]
    saved = {}

    def count(name, fn):
        def wrapped(*args, **kwargs):
            t = args[1] if name in ("all_to_all_single", "all_gather") else args[0]
            sent[0] += t.numel() * t.element_size()
            return fn(*args, **kwargs)

        return wrapped

    for name in ("all_to_all_single", "all_reduce", "all_gather"):
        saved[name] = getattr(dist, name)
        setattr(dist, name, count(name, saved[name]))
    try:
        yield sent
    finally:
        for name, fn in saved.items():
            setattr(dist, name, fn)


def loss_backward(model: nn.Module, step: int, vocab: int = 256) -> None:
    g = torch.Generator().manual_seed(step)
    idx = torch.randint(0, vocab, (4, 16), generator=g)
    out = model(idx)
    nn.functional.cross_entropy(out.reshape(-1, vocab), idx.roll(-1, 1).reshape(-1)).backward()


def flops_of(opts: list[torch.optim.Optimizer]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        for o in opts:
            o.step()
    return int(fc.get_total_flops())


def measure(method: str, mode: str, args: argparse.Namespace) -> dict:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.debug import CommDebugMode
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    single = Model(args.width, args.layers)
    sopts = make(method, single, ddp=False)
    torch.manual_seed(0)
    model = Model(args.width, args.layers)
    if mode == "fsdp":
        for b in model.blocks:
            fully_shard(b)
        fully_shard(model)
        wrapped = model
    else:
        wrapped = DDP(model)
    opts = make(method, model, ddp=mode == "ddp")
    for t in range(2):  # warm-up: lazy state, planned blocks
        for m, os_ in ((wrapped, opts), (single, sopts)):
            for o in os_:
                o.zero_grad()
            loss_backward(m, t)
            for o in os_:
                o.step()
    for o in sopts:
        o.zero_grad()
    loss_backward(single, 2)
    one = flops_of(sopts)
    for o in opts:
        o.zero_grad()
    loss_backward(wrapped, 2)
    with CommDebugMode() as comm, bytes_sent() as sent:
        mine = flops_of(opts)
    counts = Counter(
        {
            str(k).split("'")[1] if "'" in str(k) else str(k): v
            for k, v in comm.get_comm_counts().items()
        }
    )
    times = []
    for t in range(args.steps):
        for o in opts:
            o.zero_grad()
        loss_backward(wrapped, 3 + t)
        dist.barrier()
        t0 = time.perf_counter()
        for o in opts:
            o.step()
        dist.barrier()
        times.append(1e3 * (time.perf_counter() - t0))
    return {
        "collectives": sum(counts.values()),
        "by_name": dict(counts),
        "bytes": sent[0] if method.startswith("normopt") else None,
        "flops_ratio": mine / one,
        "ms": statistics.median(times),
    }


def worker(rank: int, world: int, port: str, out: str, args: argparse.Namespace) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    rows = []
    for mode in args.modes.split(","):
        for method in METHODS:
            try:
                res = measure(method, mode, args)
            except Exception as e:  # a peer that cannot run here: say so in the table
                res = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
            rows.append({"mode": mode, "method": method, "world": world, **res})
            dist.barrier()
    Path(out, f"rank{rank}.json").write_text(json.dumps(rows))
    dist.destroy_process_group()


def launch(world: int, args: argparse.Namespace, out: Path) -> list[list[dict]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    argv = [
        "--modes",
        args.modes,
        "--width",
        str(args.width),
        "--layers",
        str(args.layers),
        "--steps",
        str(args.steps),
    ]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--_rank",
                str(r),
                "--_world",
                str(world),
                "--_port",
                port,
                "--_out",
                str(out),
                *argv,
            ]
        )
        for r in range(world)
    ]
    for p in procs:
        p.wait()
    return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="2,4", help="comma-separated world sizes")
    ap.add_argument("--modes", default="fsdp,ddp", help="fsdp, ddp")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", default=None)
    for hidden in ("--_rank", "--_world", "--_port", "--_out"):
        ap.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._rank is not None:
        worker(int(args._rank), int(args._world), args._port, args._out, args)
        return
    import tempfile

    table = []
    for world in (int(w) for w in args.world.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            ranks = launch(world, args, Path(tmp))
        for i, row in enumerate(ranks[0]):
            per = [r[i] for r in ranks]
            if any("error" in r for r in per):
                err = next(r["error"] for r in per if "error" in r)
                table.append({**row, "error": err})
                continue
            table.append(
                {
                    "mode": row["mode"],
                    "method": row["method"],
                    "world": world,
                    "collectives": max(r["collectives"] for r in per),
                    "by_name": row["by_name"],
                    "bytes": None if row["bytes"] is None else max(r["bytes"] for r in per),
                    "flops_max": max(r["flops_ratio"] for r in per),
                    "flops_sum": sum(r["flops_ratio"] for r in per),
                    "ms": max(r["ms"] for r in per),
                }
            )
    print(f"width {args.width}, {args.layers} blocks, torch {torch.__version__}, gloo on the CPU")
    print(
        "| mode | ranks | optimizer | collectives/step | bytes sent/rank | step FLOPs: max rank / "
        "one process | all ranks / one process | CPU ms/step |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        if "error" in r:
            print(f"| {r['mode']} | {r['world']} | {r['method']} | fails: {r['error']} | | | | |")
            continue
        b = "n/m" if r["bytes"] is None else f"{r['bytes']:,}"
        print(
            f"| {r['mode']} | {r['world']} | {r['method']} | {r['collectives']} | {b} | "
            f"{r['flops_max']:.2f} | {r['flops_sum']:.2f} | {r['ms']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
