"""One rank of the distributed tests (gloo, CPU). Run by tests/distributed/test_distributed.py:

    python worker.py SCENARIO[,SCENARIO...] RANK WORLD PORT OUTDIR [ARG]

Each scenario trains tiny models both ways, under torch.distributed and in this process
alone (the reference), and writes ``OUTDIR/SCENARIO.RANK.json``: the measured differences,
collective counts and FLOPs that the test then checks. Nothing here asserts: a worker
reports, and the test decides.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import normopt
from normopt.norms import LInf, Spectral

torch.set_num_threads(1)

STEPS = 3


class Tiny(nn.Module):
    """Uneven shapes: 5 and 7 rows split unevenly, a 3-class head (an empty shard at 4
    ranks), a tall matrix, a bias and a norm gain."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.fc1 = nn.Linear(6, 7)
        self.norm = nn.LayerNorm(7)
        self.fc2 = nn.Linear(7, 5, bias=False)
        self.tall = nn.Linear(5, 9, bias=False)
        self.head = nn.Linear(9, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx).mean(1)
        h = torch.tanh(self.norm(self.fc1(h)))
        return self.head(torch.tanh(self.tall(torch.tanh(self.fc2(h)))))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randint(0, 11, (8, 4), generator=g), torch.randint(0, 3, (8,), generator=g)


def model0() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


OPTIMIZERS = {
    "muon": lambda m: normopt.Muon(m, lr=0.05, weight_decay=0.1, adamw_lr=1e-2),
    "muon-foreach-off": lambda m: normopt.Muon(m, lr=0.05, adamw_lr=1e-2, foreach=False),
    "lion": lambda m: normopt.Lion(m.parameters(), lr=1e-3, weight_decay=0.1),
    "sign": lambda m: normopt.SteepestDescent(
        m.parameters(), norm=LInf(), lr=1e-3, momentum=0.9, normalized=True
    ),
    "spectral-unnormalized": lambda m: normopt.SteepestDescent(
        [p for p in m.parameters() if p.ndim == 2], norm=Spectral(), lr=1e-2, momentum=0.9
    ),
    "lionk-nuclear": lambda m: normopt.LionK(
        [p for p in m.parameters() if p.ndim == 2], K="nuclear", lr=1e-3, polar="newton_schulz"
    ),
    "trust-region": lambda m: normopt.TrustRegion(
        [p for p in m.parameters() if p.ndim == 2], norm=Spectral(), lr=1e-2, alpha=0.5
    ),
}


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for t in steps:
        x, y = batch(t)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def max_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = dict(a.named_parameters()), dict(b.named_parameters())
    return max(
        (full(sa[k]).detach().double() - sb[k].detach().double()).abs().max().item() for k in sb
    )


@contextmanager
def counting():
    """Counts the collectives issued (by name: every c10d and functional collective, as
    ``CommDebugMode`` sees them, DTensor's included) and the bytes each rank sends through
    ``torch.distributed``'s calls."""
    from torch.distributed.tensor.debug import CommDebugMode

    counts: Counter[str] = Counter()
    sent = [0]
    originals = {}
    for name in (
        "all_to_all_single",
        "all_reduce",
        "all_gather",
        "broadcast",
        "all_gather_into_tensor",
        "reduce_scatter_tensor",
    ):
        fn = getattr(dist, name)
        originals[name] = fn

        def wrapped(*args, _fn=fn, _name=name, **kwargs):
            if _name == "all_to_all_single":
                sent[0] += args[1].numel() * args[1].element_size()
            elif _name in ("all_reduce", "broadcast"):
                sent[0] += args[0].numel() * args[0].element_size()
            elif _name == "all_gather":
                sent[0] += args[1].numel() * args[1].element_size()
            return _fn(*args, **kwargs)

        setattr(dist, name, wrapped)
    try:
        with CommDebugMode() as comm:
            yield counts, sent
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
    for op, n in comm.get_comm_counts().items():
        counts[getattr(op, "__name__", str(op)).split(".")[-1]] += n


def step_flops(opt: torch.optim.Optimizer) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        opt.step()
    return int(fc.get_total_flops())


def fsdp(model: nn.Module, mesh=None) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for m in (model.fc1, model.fc2, model.tall, model.head):
        fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def scenario_fsdp(out: dict, arg: str | None) -> None:
    """Every optimizer of OPTIMIZERS under FSDP2 equals the single-process run."""
    for name, make in OPTIMIZERS.items():
        ref = model0()
        train(ref, make(ref), range(STEPS))
        m = fsdp(model0())
        opt = make(m)
        train(m, opt, range(STEPS))
        out[f"diff/{name}"] = max_diff(m, ref)
        out[f"skipped/{name}"] = int(opt.skipped_steps)
    # the collectives and FLOPs of one Muon step
    m = fsdp(model0())
    opt = OPTIMIZERS["muon"](m)
    train(m, opt, range(1))
    x, y = batch(1)
    opt.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    with counting() as (counts, sent):
        out["flops/muon"] = step_flops(opt)
    out["collectives/muon"] = dict(counts)
    out["bytes/muon"] = sent[0]
    ref = model0()
    ropt = OPTIMIZERS["muon"](ref)
    train(ref, ropt, range(1))
    ropt.zero_grad()
    nn.functional.cross_entropy(ref(x), y).backward()
    out["flops_single/muon"] = step_flops(ropt)
    # a family member whose rescale needs whole tensors is refused, with a message
    m = fsdp(model0())
    opt = normopt.NorMuon(m, lr=0.02)
    try:
        train(m, opt, range(1))
        out["normuon"] = "stepped"
    except NotImplementedError as e:
        out["normuon"] = str(e)


def scenario_nonfinite(out: dict, arg: str | None) -> None:
    """A NaN in one rank's shard skips the step on every rank."""
    m = fsdp(model0())
    opt = OPTIMIZERS["muon"](m)
    train(m, opt, range(1))
    before = {k: full(v).detach().clone() for k, v in m.named_parameters()}
    x, y = batch(1)
    opt.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    if dist.get_rank() == dist.get_world_size() - 1:
        g = m.fc1.weight.grad.to_local()
        if g.numel():
            g.view(-1)[0] = float("nan")
    opt.step()
    after = {k: full(v).detach() for k, v in m.named_parameters()}
    out["moved"] = max((after[k] - before[k]).abs().max().item() for k in before)
    out["skipped"] = int(opt.skipped_steps)
    out["finite"] = all(bool(torch.isfinite(v).all()) for v in after.values())
    # and raise: every rank raises
    opt2 = normopt.Muon(m, lr=0.02, nonfinite="raise")
    opt2.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    if dist.get_rank() == 0:
        m.head.weight.grad.to_local().view(-1)[0] = float("inf")
    try:
        opt2.step()
        out["raised"] = ""
    except normopt.NonFiniteGradientError as e:
        out["raised"] = str(e)


def scenario_hsdp(out: dict, arg: str | None) -> None:
    """A 2 x 2 (replicate x shard) mesh: Muon equals the single-process run."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
    ref = model0()
    train(ref, OPTIMIZERS["muon"](ref), range(STEPS))
    m = fsdp(model0(), mesh=mesh)
    opt = OPTIMIZERS["muon"](m)
    train(m, opt, range(STEPS))
    out["diff/muon"] = max_diff(m, ref)
    out["placements"] = str(m.fc1.weight.placements)


def scenario_ddp(out: dict, arg: str | None) -> None:
    """DDP with process_group: each matrix orthogonalized by one owner; equals one process."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    for name in ("muon", "normuon"):
        make = {
            "muon": lambda m, **k: normopt.Muon(m, lr=0.05, adamw_lr=1e-2, **k),
            "normuon": lambda m, **k: normopt.NorMuon(m, lr=0.05, adamw_lr=1e-2, **k),
        }[name]
        ref = model0()
        train(ref, make(ref), range(STEPS))
        inner = model0()
        ddp = DDP(inner)
        opt = make(inner, process_group=dist.group.WORLD)
        for t in range(STEPS):
            x, y = batch(t)
            opt.zero_grad()
            nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
        out[f"diff/{name}"] = max_diff(inner, ref)
    ref = model0()
    ropt = normopt.Muon(ref, lr=0.05, adamw_lr=1e-2)
    inner = model0()
    opt = normopt.Muon(inner, lr=0.05, adamw_lr=1e-2, process_group=dist.group.WORLD)
    x, y = batch(0)
    for mm in (ref, inner):
        nn.functional.cross_entropy(mm(x), y).backward()
    out["flops_single"] = step_flops(ropt)
    with counting() as (counts, _):
        out["flops"] = step_flops(opt)
    out["collectives"] = dict(counts)


def _dcp_setup(world_mesh=None):
    m = fsdp(model0(), mesh=world_mesh)
    return m, OPTIMIZERS["muon"](m)


def scenario_dcp_save(out: dict, arg: str | None) -> None:
    """Train STEPS steps, save with DCP, train 2 more (the uninterrupted run)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    m, opt = _dcp_setup()
    train(m, opt, range(STEPS))
    msd, osd = get_state_dict(m, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=arg)
    train(m, opt, range(STEPS, STEPS + 2))
    final = {k: full(v).detach().tolist() for k, v in m.named_parameters()}
    if dist.get_rank() == 0:
        Path(arg, "final.json").write_text(json.dumps(final))
    out["keys"] = sorted(osd["state"].keys())


def scenario_dcp_load(out: dict, arg: str | None) -> None:
    """Load the checkpoint at this world size, train the same 2 steps: as if uninterrupted."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    m, opt = _dcp_setup()
    msd, osd = get_state_dict(m, opt)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=arg)
    set_state_dict(m, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    train(m, opt, range(STEPS, STEPS + 2))
    final = json.loads(Path(arg, "final.json").read_text())
    out["diff"] = max(
        (full(v).detach().double() - torch.tensor(final[k], dtype=torch.float64)).abs().max().item()
        for k, v in m.named_parameters()
    )
    step = [v["step"] for v in opt.state.values() if "step" in v]
    out["steps"] = sorted({float(s) for s in step})


SCENARIOS = {
    "fsdp": scenario_fsdp,
    "nonfinite": scenario_nonfinite,
    "hsdp": scenario_hsdp,
    "ddp": scenario_ddp,
    "dcp_save": scenario_dcp_save,
    "dcp_load": scenario_dcp_load,
}


def main() -> None:
    names, rank, world, port, outdir = sys.argv[1:6]
    arg = sys.argv[6] if len(sys.argv) > 6 else None
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=int(rank), world_size=int(world))
    for name in names.split(","):  # several scenarios per launch: one torch import
        out: dict = {}
        try:
            SCENARIOS[name](out, arg)
        except Exception:
            out["error"] = traceback.format_exc()
        Path(outdir, f"{name}.{rank}.json").write_text(json.dumps(out, default=str))
        if "error" in out:
            break  # the other ranks may be stuck in a collective: stop (the test reports it)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
