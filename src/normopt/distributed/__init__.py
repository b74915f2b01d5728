"""torch.distributed for normopt: whole matrices where a direction needs them, shards elsewhere.

The step engine (:mod:`normopt.optim.base`) calls this package; nothing here knows an
optimizer. Three pieces, each planned once (when a group's blocks are built) and then run
every step with a fixed number of collectives:

- **FSDP2 / DTensor** (automatic). Entrywise moves (momentum, AdamW, Lion, sign, weight
  decay) run on the local shards, with no communication. A direction that needs whole
  matrices (the polar factor, spectral/nuclear/Frobenius/Schatten/Ky Fan dualize maps)
  goes through an :class:`OwnerExchange`: every parameter of the block has one owner rank
  (balanced by FLOPs, :func:`assign_owners`); one ``all_to_all`` sends each rank's shard
  to the owner, the owner computes the direction of the whole matrix, and a second
  ``all_to_all`` sends each rank its shard of the result (the design of microsoft/dion
  and torchtitan's distributed Muon). State stays sharded like the parameters; no rank
  ever holds more than its own share of whole matrices.
- **DDP** (opt-in, ``process_group=``). Parameters are replicated: a
  :class:`ReplicatedExchange` gives each matrix of a stack one owner, orthogonalizes it
  only there, and all-gathers the results.
- **One decision per step.** :func:`agree` turns each rank's "this step is bad" flag into
  the same flag on every rank (one ``all_reduce`` of one number), so that ranks never
  diverge or hang on a skipped step.

Meshes. A DTensor parameter is split along one tensor dim over one mesh dim (``Shard(d)``,
FSDP2's layout), with any other mesh dims ``Replicate()`` (HSDP's 2-D ``replicate x shard``
mesh: the exchange runs inside the shard group, and the replicas repeat it). Other layouts
(``Partial``, two sharded mesh dims as in FSDP x tensor parallel, strided shards) are
refused with an error naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor

try:  # torch >= 2.4 has the public module
    from torch.distributed.tensor import DTensor, Replicate, Shard
except ImportError:  # pragma: no cover - an older torch without DTensor
    DTensor = None  # type: ignore[assignment,misc]
    Replicate = Shard = None  # type: ignore[assignment,misc]

__all__ = [
    "OwnerExchange",
    "ReplicatedExchange",
    "ShardLayout",
    "agree",
    "assign_owners",
    "consensus_group",
    "element_cost",
    "is_dtensor",
    "layout_of",
    "local",
    "wrap_like",
]


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a :class:`torch.distributed.tensor.DTensor`."""
    return DTensor is not None and isinstance(t, DTensor)


def local(t: Tensor) -> Tensor:
    """The local tensor of a DTensor (a view of its storage: writing it writes the DTensor);
    any other tensor as is."""
    return t.to_local() if is_dtensor(t) else t  # type: ignore[attr-defined]


def wrap_like(p: Tensor, v: Tensor) -> Tensor:
    """``v`` (a local tensor shaped like ``p``'s local shard) as a DTensor laid out like ``p``
    and sharing ``v``'s storage: optimizer state that ``torch.distributed.checkpoint`` saves
    sharded and reshards on load. ``p`` not a DTensor: ``v`` itself."""
    if not is_dtensor(p):
        return v
    d: Any = p  # a DTensor
    return DTensor.from_local(
        v, d.device_mesh, d.placements, run_check=False, shape=p.shape, stride=p.stride()
    )


@dataclass(frozen=True)
class ShardLayout:
    """How a parameter is split across ranks: along tensor dim ``dim`` over ``group``
    (``world`` ranks; this one is ``rank``), rank ``s`` holding ``sizes[s]`` slices from
    ``starts[s]`` (``torch.chunk``'s rule, as DTensor's ``Shard``). ``dim`` is None when
    every rank holds the whole tensor."""

    dim: int | None
    group: Any
    world: int
    rank: int
    sizes: tuple[int, ...]
    starts: tuple[int, ...]

    def shard_shape(self, shape: Sequence[int], s: int) -> tuple[int, ...]:
        """The shape of rank ``s``'s shard of a tensor of global ``shape``."""
        out = list(shape)
        if self.dim is not None:
            out[self.dim] = self.sizes[s]
        return tuple(out)


def _chunks(n: int, world: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    # torch.chunk: ceil(n / world) slices per rank, the last ranks get fewer or none
    c = -(-n // world) if n else 0
    sizes = tuple(max(0, min(c, n - s * c)) for s in range(world))
    starts = tuple(min(n, s * c) for s in range(world))
    return sizes, starts


def layout_of(p: Tensor, name: str) -> ShardLayout:
    """The :class:`ShardLayout` of a DTensor parameter ``p`` (``name`` for errors)."""
    placements = tuple(p.placements)  # type: ignore[attr-defined]  # a DTensor
    mesh = p.device_mesh  # type: ignore[attr-defined]
    sharded = [(k, pl) for k, pl in enumerate(placements) if not isinstance(pl, Replicate)]
    if not sharded:
        return ShardLayout(None, None, 1, 0, (), ())
    if len(sharded) > 1 or type(sharded[0][1]) is not Shard:
        raise NotImplementedError(
            f"params: {name} has placements {placements}; normopt's optimizers take "
            "parameters sharded along one mesh dim (FSDP2's Shard(d), HSDP's "
            "(Replicate(), Shard(d))), not Partial, strided or two-dim shards"
        )
    k, pl = sharded[0]
    dim = pl.dim % p.ndim
    world = mesh.size(k)
    sizes, starts = _chunks(p.shape[dim], world)
    rank = mesh.get_local_rank(k)
    if tuple(local(p).shape) != ShardLayout(dim, None, world, rank, sizes, starts).shard_shape(
        p.shape, rank
    ):
        raise NotImplementedError(
            f"params: {name}: local shard of shape {tuple(local(p).shape)} is not the "
            f"torch.chunk share of {tuple(p.shape)} along dim {dim} over {world} ranks"
        )
    return ShardLayout(dim, mesh.get_group(k), world, rank, sizes, starts)


def consensus_group(params: Sequence[Tensor]) -> Any:
    """The process group over which the ranks holding ``params`` must agree on a step
    (skip it or not): the whole mesh of their DTensors, or None when none is a DTensor."""
    meshes = {id(m): m for m in (getattr(p, "device_mesh", None) for p in params) if m is not None}
    if not meshes:
        return None
    sizes = {m.size() for m in meshes.values()}
    if len(meshes) == 1 and next(iter(meshes.values())).ndim == 1:
        return next(iter(meshes.values())).get_group(0)
    if sizes == {dist.get_world_size()}:
        return dist.group.WORLD
    raise NotImplementedError(
        "params: DTensor parameters on several device meshes that do not cover the world; "
        "normopt needs one mesh (or meshes over every rank) to agree on skipped steps"
    )


def agree(bad: Tensor, group: Any) -> Tensor:
    """``bad`` (a 0-d bool tensor) OR-ed over the ranks of ``group``: one ``all_reduce``,
    nothing read back to the host."""
    flag = bad.to(torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    return flag.bool()


def element_cost(shape: Sequence[int]) -> float:
    """FLOPs-like cost of the direction of one element ``(*batch, m, n)``: a Newton-Schulz
    step costs ``O(m n min(m, n))`` per matrix; a vector, its size."""
    if len(shape) < 2:
        return float(max(1, math.prod(shape)))
    m, n = shape[-2], shape[-1]
    return float(math.prod(shape[:-2]) * m * n * max(1, min(m, n)))


def assign_owners(costs: Sequence[float], load: list[float]) -> list[int]:
    """One owner rank per item, balanced greedily: the costliest item first, each to the
    least-loaded rank (the lowest on ties). ``load`` (one entry per rank) carries the load
    of earlier blocks and is updated; the same inputs give the same owners on every rank."""
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    owners = [0] * len(costs)
    for i in order:
        r = min(range(len(load)), key=lambda s: (load[s], s))
        owners[i] = r
        load[r] += costs[i]
    return owners


class OwnerExchange:
    """Whole matrices for sharded parameters: parameter ``j`` (split by ``layouts[j]``, all
    over one process group) is owned by rank ``owners[j]`` of that group. :meth:`direct`
    takes the local shards of the buffers and returns the local shards of their
    directions: two ``all_to_all_single`` per call, whatever the number of parameters."""

    def __init__(
        self,
        layouts: Sequence[ShardLayout],
        shapes: Sequence[tuple[int, ...]],
        owners: Sequence[int],
    ) -> None:
        first = layouts[0]
        if any(lay.dim is None or lay.group is not first.group for lay in layouts):
            raise ValueError("layouts: expected shards over one process group")
        self.layouts = list(layouts)
        self.dims = [cast(int, lay.dim) for lay in layouts]  # each sharded along one dim
        self.group, self.world, self.rank = first.group, first.world, first.rank
        self.shapes = [tuple(s) for s in shapes]
        self.owners = list(owners)
        self.mine = [j for j, o in enumerate(self.owners) if o == self.rank]

    def _shape(self, j: int, s: int) -> tuple[int, ...]:
        return self.layouts[j].shard_shape(self.shapes[j], s)

    def _numel(self, j: int, s: int) -> int:
        return math.prod(self._shape(j, s))

    def direct(
        self, shards: Sequence[Tensor], fn: Callable[[list[Tensor]], list[Tensor]]
    ) -> list[Tensor]:
        """``shards[j]``: this rank's shard of buffer ``j``; ``fn`` maps the whole buffers this
        rank owns (a list, in parameter order) to their directions. Returns this rank's shard
        of every direction."""
        W, me = self.world, self.rank
        # 1. every rank's shard to its owner
        send = [
            torch.cat(
                [shards[j].reshape(-1) for j, o in enumerate(self.owners) if o == q]
                or [shards[0].new_empty(0)]
            )
            for q in range(W)
        ]
        recv = _all_to_all(
            send, [sum(self._numel(j, s) for j in self.mine) for s in range(W)], self.group
        )
        whole = []
        offsets = [0] * W
        for j in self.mine:
            pieces = []
            for s in range(W):
                n = self._numel(j, s)
                pieces.append(recv[s][offsets[s] : offsets[s] + n].view(self._shape(j, s)))
                offsets[s] += n
            whole.append(torch.cat(pieces, self.dims[j]))  # (shapes[j])
        # 2. the directions, where the matrices are whole
        directions = fn(whole) if whole else []
        # 3. each rank its shard of the results
        back = []
        for s in range(W):
            parts = []
            for j, d in zip(self.mine, directions):
                lay = self.layouts[j]
                parts.append(d.narrow(self.dims[j], lay.starts[s], lay.sizes[s]).reshape(-1))
            back.append(torch.cat(parts) if parts else shards[0].new_empty(0))
        got = _all_to_all(
            back,
            [
                sum(self._numel(j, me) for j, o in enumerate(self.owners) if o == q)
                for q in range(W)
            ],
            self.group,
        )
        out: list[Tensor] = []
        offsets = [0] * W
        for j, o in enumerate(self.owners):
            n = self._numel(j, me)
            out.append(got[o][offsets[o] : offsets[o] + n].view(self._shape(j, me)))
            offsets[o] += n
        return out


def _all_to_all(send: list[Tensor], sizes: list[int], group: Any) -> list[Tensor]:
    """``send[q]`` (1-D) to rank ``q``; returns what each rank sent here (``sizes[s]``
    entries from rank ``s``). One ``all_to_all_single`` with split sizes: gloo's list form
    needs equal sizes, and uneven shards make them unequal."""
    flat = torch.cat(send)
    out = flat.new_empty(sum(sizes))
    dist.all_to_all_single(
        out,
        flat,
        output_split_sizes=sizes,
        input_split_sizes=[t.numel() for t in send],
        group=group,
    )
    return list(out.split(sizes))


class ReplicatedExchange:
    """Owners for the rows of a replicated stack ``(B, *element)`` (DDP): rank ``owners[i]``
    of ``group`` computes row ``i``'s direction, and one ``all_gather`` gives every rank all
    of them."""

    def __init__(self, group: Any, owners: Sequence[int]) -> None:
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.owners = list(owners)
        self.rows = [[i for i, o in enumerate(self.owners) if o == r] for r in range(self.world)]
        self.width = max(len(r) for r in self.rows)
        self._index: dict[Any, Tensor] = {}

    def direct(self, M: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """The directions of every row of ``M`` (identical on every rank), each computed by
        its owner only: ``fn`` maps a ``(k, *element)`` stack to its directions."""
        mine = self.rows[self.rank]
        out = M.new_zeros((self.width, *M.shape[1:]))
        if mine:
            idx = self._rows(M.device, self.rank)
            out[: len(mine)] = fn(M.index_select(0, idx))
        gathered = [torch.empty_like(out) for _ in range(self.world)]
        dist.all_gather(gathered, out, group=self.group)
        D = torch.empty_like(M)
        for r, rows in enumerate(self.rows):
            if rows:
                D.index_copy_(0, self._rows(M.device, r), gathered[r][: len(rows)])
        return D

    def _rows(self, device: torch.device, r: int) -> Tensor:
        key = (device, r)
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = torch.tensor(self.rows[r], dtype=torch.long, device=device)
        return idx
