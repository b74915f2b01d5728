"""normopt under torch.distributed, on the CPU with gloo: FSDP2 (uneven and empty shards),
HSDP's 2 x 2 mesh, DDP owners, one skip decision, DCP saved at 2 ranks and resumed at 1
and 4. Each launch runs several scenarios of ``worker.py`` in 2 or 4 local processes; the
worker measures, these tests decide."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normopt import distributed

WORKER = Path(__file__).with_name("worker.py")
OPTIMIZERS = (
    "muon",
    "muon-foreach-off",
    "lion",
    "sign",
    "spectral-unnormalized",
    "lionk-nuclear",
    "trust-region",
)
# float32 Newton-Schulz on the owner is the same arithmetic as on one process: the runs
# agree to rounding (seen: exactly); DDP's NorMuon batches rows differently
TOL = 1e-5

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenarios: str, world: int, out: Path, arg: str | None = None) -> dict:
    """Runs ``scenarios`` on ``world`` local ranks; returns {scenario: [per-rank result]}."""
    port = str(_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), scenarios, str(r), str(world), port, str(out)]
            + ([arg] if arg else []),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"{scenarios} at {world} ranks hung:\n" + "\n".join(logs))
    results: dict[str, list[dict]] = {}
    for name in scenarios.split(","):
        per_rank = []
        for r in range(world):
            f = out / f"{name}.{r}.json"
            if not f.exists():
                pytest.fail(f"{name} at {world} ranks wrote no result:\n" + "\n".join(logs))
            res = json.loads(f.read_text())
            if "error" in res:
                pytest.fail(f"{name} at {world} ranks, rank {r}:\n{res['error']}")
            per_rank.append(res)
        results[name] = per_rank
    return results


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dcp")


@pytest.fixture(scope="module")
def two(tmp_path_factory, checkpoint) -> dict:
    out = tmp_path_factory.mktemp("two")
    return launch("fsdp,nonfinite,ddp,dcp_save", 2, out, str(checkpoint))


@pytest.fixture(scope="module")
def four(tmp_path_factory, checkpoint, two) -> dict:  # `two` saved the checkpoint
    out = tmp_path_factory.mktemp("four")
    return launch("fsdp,hsdp,dcp_load", 4, out, str(checkpoint))


@pytest.fixture(scope="module")
def one(tmp_path_factory, checkpoint, two) -> dict:
    out = tmp_path_factory.mktemp("one")
    return launch("dcp_load", 1, out, str(checkpoint))


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("world", ["two", "four"])
def test_fsdp2_equals_one_process(request, world, name):
    # four ranks: the 3-class head and the 5-row fc2 leave a rank with an empty shard
    for res in request.getfixturevalue(world)["fsdp"]:
        assert res[f"diff/{name}"] <= TOL
        assert res[f"skipped/{name}"] == 0


@pytest.mark.parametrize("world", ["two", "four"])
def test_fsdp2_muon_step_is_three_collectives_and_splits_the_flops(request, world):
    ranks = request.getfixturevalue(world)["fsdp"]
    for res in ranks:
        # one all_reduce (the skip decision) and one all_to_all there and back
        assert res["collectives/muon"] == {"allreduce_": 1, "alltoall_base_": 2}
    single = ranks[0]["flops_single/muon"]
    flops = [res["flops/muon"] for res in ranks]
    assert sum(flops) == single  # each matrix orthogonalized once, by its owner
    assert max(flops) < 0.65 * single  # and shared: no rank does the whole step


def test_fsdp2_refuses_what_it_cannot_shard_with_a_message(two):
    for res in two["fsdp"]:
        assert res["normuon"].startswith("NorMuon: this group's step reduces over whole")


def test_a_nan_on_one_rank_skips_the_step_on_every_rank(two):
    for res in two["nonfinite"]:
        assert res["moved"] == 0.0 and res["skipped"] == 1 and res["finite"]
    raised = [res["raised"] for res in two["nonfinite"]]
    assert "'head.weight'" in raised[0]  # the rank that saw it names the parameter
    assert "on another rank" in raised[1]


def test_hsdp_2x2_mesh_equals_one_process(four):
    for res in four["hsdp"]:
        assert res["placements"] == "(Replicate(), Shard(dim=0))"
        assert res["diff/muon"] <= TOL


def test_ddp_owners_equal_one_process_and_split_the_flops(two):
    ranks = two["ddp"]
    for res in ranks:
        assert res["diff/muon"] <= TOL
        assert res["diff/normuon"] <= TOL
        assert set(res["collectives"]) == {"allgather_"}  # no all_reduce: grads agree
    flops = [res["flops"] for res in ranks]
    assert sum(flops) == ranks[0]["flops_single"]
    assert max(flops) < 0.65 * ranks[0]["flops_single"]


@pytest.mark.parametrize("world", ["one", "four"])
def test_dcp_saved_at_two_ranks_resumes_at_another_world_size(request, world, two):
    keys = {tuple(res["keys"]) for res in two["dcp_save"]}
    assert len(keys) == 1  # the same state keys on every rank
    for res in request.getfixturevalue(world)["dcp_load"]:
        assert res["diff"] <= TOL  # as if uninterrupted
        assert res["steps"] == [5.0]


# -- the planning pieces, without processes ------------------------------------------------
def test_chunks_follow_torch_chunk():
    for n in range(0, 12):
        for world in range(1, 6):
            sizes, starts = distributed._chunks(n, world)
            ref = [c.shape[0] for c in torch.arange(n).chunk(world)] if n else []
            assert list(sizes[: len(ref)]) == ref and sum(sizes) == n
            assert all(b - a == s for a, b, s in zip(starts, starts[1:], sizes))


def test_owners_balance_the_cost_deterministically():
    load = [0.0, 0.0, 0.0]
    owners = distributed.assign_owners([5.0, 1.0, 4.0, 2.0, 3.0], load)
    # the costliest first, each to the least-loaded rank (the lowest on ties)
    assert owners == [0, 1, 1, 2, 2]
    assert load == [5.0, 5.0, 5.0]
    assert distributed.assign_owners([5.0, 1.0, 4.0, 2.0, 3.0], [0.0] * 3) == owners


def test_process_group_must_be_a_group():
    import normopt

    w = torch.nn.Parameter(torch.randn(4, 3))
    with pytest.raises(TypeError, match="process_group"):
        normopt.Muon([w], process_group="world")
