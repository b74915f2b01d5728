"""The overhead of one optimizer step: aten ops dispatched, host reads of device values, CPU ms.

Issue 11 (the step engine): a step on a model with many small tensors costs what it
dispatches and what it waits for, not what it computes. Three measures per optimizer, for
one ``step()`` after two warm-up steps (so that lazy state exists):

1. **aten ops**: every op that reaches a ``TorchDispatchMode`` around ``step()`` (a
   ``torch._foreach_*`` call over 100 tensors is one op; the profiler's
   ``record_function`` enter/exit that ``torch.optim.Optimizer`` puts around every step
   count too). Measured on the CPU; ``--verbose`` prints the top ops by name.
2. **device reads**: host reads of device values (each one a sync on a GPU):
   ``aten._local_scalar_dense`` of a non-CPU tensor (what ``.item()``, ``bool()``,
   ``float()``, ``int()`` dispatch), copies to the CPU from another device
   (``aten._to_copy`` / ``aten.copy_``), and ops whose output shape depends on the data
   (``nonzero``, ``masked_select``, ...). Counted on parameters and gradients on the
   ``meta`` device, where any host read raises ("Cannot copy out of meta tensor; no
   data!"): the counter intercepts the reads and answers them with real values, from a
   CPU twin of every meta tensor that it runs beside the meta step (random parameters
   and gradients; state as the optimizer builds it). Dummy answers (zeros) would not do:
   normopt's non-finite check reads a stack of "is finite" flags, and all-false flags
   abort the step. "meta step completes" is the plain meta step without the counter
   ("n/a": the optimizer cannot run on meta for another reason: fused AdamW's step
   rejects meta tensors, so its reads are not counted either).
3. **CPU ms per step**: the median of ``--steps`` steps, the optimizers interleaved
   step by step (load from other jobs hits every row alike), and its ratio to fused
   AdamW's on the same model (the ratios are what to publish: the machine is shared).

The model: GPT-2 small's layout at width ``d`` (``--width``, default 64) with plain
``nn`` modules: ``wte (V, d)``, ``wpe (T, d)``, 12 blocks of ``ln_1``,
``attn.c_attn`` ``Linear(d, 3d)``, ``attn.c_proj`` ``Linear(d, d)``, ``ln_2``,
``mlp.c_fc`` ``Linear(d, 4d)``, ``mlp.c_proj`` ``Linear(4d, d)`` (all with bias),
``ln_f``, and ``lm_head`` tied to ``wte``: 148 trainable tensors, 48 of them block
matrices. ``V = 257`` and ``T = 67`` (primes) so that no embedding shares a shape with
a block matrix at any width, as in GPT-2 small itself (a shared shape would join a
stack and change the op count with ``d``). Gradients are seeded ``randn``, not a
backward pass: only the step is measured. The op count must not depend on ``d``; the
run checks it at ``--check-width`` (default ``2 d``) and says so.

Rows (``--methods``, fnmatch patterns): ``normopt.Muon`` (``normopt.Muon(model)``,
defaults), ``normopt.Lion`` (``normopt.Lion(model.parameters())``),
``torch.optim.Muon+AdamW`` (``torch.optim.Muon`` on the 48 block matrices,
``torch.optim.AdamW(foreach=True)`` on the rest, both stepped),
``torch.optim.AdamW[foreach]`` and ``torch.optim.AdamW[fused]`` on everything.

The counting functions are importable (tests use them)::

    count_ops(step_fn) -> (total, Counter)          # one step after 2 warm-up steps
    count_device_reads(make_opt_on_meta) -> int     # make_opt_on_meta() -> optimizer(s)
    gpt2_small_like(d, n_layer, ...) -> nn.Module

Examples::

    python benchmarks/step_overhead.py
    python benchmarks/step_overhead.py --verbose --json step_overhead.json
    python benchmarks/step_overhead.py --methods 'normopt.*,torch.optim.AdamW*' --width 128
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.optim import Optimizer
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import normopt  # noqa: E402

aten = torch.ops.aten

N_LAYER = 12
VOCAB = 257  # prime: never the shape of a block matrix (GPT-2's own vocab is 50257)
CONTEXT = 67  # prime, for the same reason
N_TENSORS = 4 + 12 * N_LAYER  # wte, wpe, ln_f (2); 12 per block; lm_head tied to wte

Opts = Optimizer | Sequence[Optimizer]


# -- the model ----------------------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(d, 3 * d)  # weight (3d, d)
        self.c_proj = nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=-1)  # (b, t, d) each
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (b, h, t, d/h)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d)  # weight (4d, d)
        self.c_proj = nn.Linear(4 * d, d)  # weight (d, 4d)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = Attention(d, n_head)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = MLP(d)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2Like(nn.Module):
    """GPT-2's module layout and parameter names (``h.3.attn.c_attn.weight``), any width."""

    def __init__(self, d: int, n_layer: int, vocab: int, context: int, n_head: int) -> None:
        super().__init__()
        if d % n_head:
            raise ValueError(f"n_head: {n_head} does not divide the width {d}")
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(context, d)
        self.h = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one tensor, listed once

    def forward(self, idx: Tensor) -> Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (b, t, d)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (b, t, vocab)


def gpt2_small_like(
    d: int = 64,
    n_layer: int = N_LAYER,
    vocab: int = VOCAB,
    context: int = CONTEXT,
    n_head: int = 4,
    device: str | torch.device = "cpu",
    seed: int = 0,
    grads: bool = True,
) -> GPT2Like:
    """GPT-2 small's layout at width ``d`` (``4 + 12 n_layer`` trainable tensors), built on
    ``device`` (``"meta"`` for the device-read count), with seeded ``randn`` gradients when
    ``grads``. The global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = GPT2Like(d, n_layer, vocab, context, n_head)
    n = len(list(model.parameters()))
    if n != 4 + 12 * n_layer:
        raise AssertionError(f"expected {4 + 12 * n_layer} trainable tensors, got {n}")
    if grads:
        fill_grads(model, seed)
    return model


def fill_grads(model: nn.Module, seed: int = 0) -> None:
    """``p.grad = randn`` (seeded) for every parameter; uninitialized on meta."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.device.type == "meta":
            p.grad = torch.empty_like(p)
        else:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)


def block_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The 2-D weights inside the blocks (48 for 12 layers): what Muon is for."""
    return [p for name, p in model.named_parameters() if name.startswith("h.") and p.ndim == 2]


# -- the rows -----------------------------------------------------------------------------------------
def _torch_muon_pair(model: nn.Module) -> list[Optimizer]:
    matrices = block_matrices(model)
    ids = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if id(p) not in ids]
    # torch.optim.Muon takes 2-D parameters only; AdamW gets the rest, as its docs advise.
    return [torch.optim.Muon(matrices), torch.optim.AdamW(rest, foreach=True)]


METHODS: dict[str, Callable[[nn.Module], Opts]] = {
    "normopt.Muon": lambda m: normopt.Muon(m),
    "normopt.Lion": lambda m: normopt.Lion(m.parameters()),
    "torch.optim.Muon+AdamW": _torch_muon_pair,
    "torch.optim.AdamW[foreach]": lambda m: torch.optim.AdamW(m.parameters(), foreach=True),
    "torch.optim.AdamW[fused]": lambda m: torch.optim.AdamW(m.parameters(), fused=True),
}
REFERENCE = "torch.optim.AdamW[fused]"
# Rows that cannot run on meta for a reason other than a host read: no meta measures.
NO_META = {"torch.optim.AdamW[fused]": "fused=True rejects meta tensors (its step checks devices)"}


def as_list(opts: Opts) -> list[Optimizer]:
    return [opts] if isinstance(opts, Optimizer) else list(opts)


def stepper(opts: Opts) -> Callable[[], None]:
    """One step of every optimizer in ``opts``."""
    ops = as_list(opts)

    def step() -> None:
        for opt in ops:
            opt.step()

    return step


# -- 1. aten ops ---------------------------------------------------------------------------------------
_TORCH = str(Path(torch.__file__).parent)
_TORCH_OPTIM = str(Path(torch.__file__).parent / "optim")


def _site() -> str:
    """``file:line`` of the innermost caller that is neither torch's machinery nor this file
    (``torch/optim`` counts as a caller: it is where torch's optimizers dispatch)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if name != __file__ and (not name.startswith(_TORCH) or name.startswith(_TORCH_OPTIM)):
            try:
                name = str(Path(name).relative_to(ROOT))
            except ValueError:
                name = name.replace(_TORCH, "torch")
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


class OpCounter(TorchDispatchMode):
    """Counts every op dispatched inside it, by name and, with ``sites``, by the source line
    that dispatched it (see :func:`_site`)."""

    def __init__(self, sites: bool = False) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.sites: Counter[str] | None = Counter() if sites else None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[str(func)] += 1
        if self.sites is not None:
            self.sites[_site()] += 1
        return func(*args, **(kwargs or {}))


def count_ops(step_fn: Callable[[], Any], warmup: int = 2) -> tuple[int, Counter[str]]:
    """The ops that one ``step_fn()`` dispatches, after ``warmup`` uncounted calls:
    ``(total, Counter by op name)``."""
    for _ in range(warmup):
        step_fn()
    with OpCounter() as counter:
        step_fn()
    return sum(counter.ops.values()), counter.ops


# -- 2. device reads -----------------------------------------------------------------------------------
# Ops whose output shape depends on the data: the host waits for the device to size them.
DATA_DEPENDENT = {
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.bincount.default,
    aten.repeat_interleave.Tensor,
}


# Factories of uninitialized memory: their twins get seeded values, not garbage (NaN).
EMPTY = {
    aten.empty.memory_format,
    aten.empty_like.default,
    aten.empty_strided.default,
    aten.new_empty.default,
    aten.new_empty_strided.default,
}
# Tensors from Python data: on meta they reach no dispatch mode, so their values would be lost.
LITERALS = (torch.tensor, torch.as_tensor, torch.asarray)


def _fill(t: Tensor, gen: torch.Generator) -> None:
    if t.is_floating_point() or t.is_complex():
        t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype))
    else:
        t.zero_()


def _tensors(tree: Any) -> list[Tensor]:
    return [x for x in tree_flatten(tree)[0] if isinstance(x, Tensor)]


def _off_cpu(t: Tensor) -> bool:
    return t.device.type != "cpu"


class _MetaLiterals(TorchFunctionMode):
    """``torch.tensor(data, device="meta")`` and its kin, made on the CPU and moved to meta
    with ``.to`` (which dispatches), so that the counter's twin holds the data."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if (
            func in LITERALS
            and device is not None
            and torch.device(device).type == "meta"
            and not _tensors(args)
        ):
            grad = kwargs.get("requires_grad", False)
            cpu = func(*args, **{**kwargs, "device": "cpu", "requires_grad": False})
            return cpu.to("meta").requires_grad_(grad)
        return func(*args, **kwargs)


class DeviceReadCounter(TorchDispatchMode):
    """Counts host reads of device values and answers the ones of meta tensors for real.

    Every meta tensor gets a CPU twin: one CPU storage per meta storage, viewed with the
    meta tensor's size, strides and offset (so views, ``.data`` and in-place ops stay
    consistent). Each op on meta tensors runs on meta and on the twins; a read of a meta
    value is counted and answered from its twin. A storage first seen here (parameters,
    gradients, state made before the counter) gets seeded ``randn`` (floats) or zeros, and
    so does the twin of uninitialized memory (``torch.empty``); ``torch.tensor(data,
    device="meta")`` keeps its data.
    Reads are counted only while ``counting`` is true; ``by_op`` and ``sites`` (the
    innermost frame outside torch, ``file:line``) say where they come from.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.counting = False
        self.reads = 0
        self.by_op: Counter[str] = Counter()
        self.sites: Counter[str] = Counter()
        self._gen = torch.Generator().manual_seed(seed)
        # meta storage pointer -> (a weak reference to it, its CPU twin). The weak reference
        # keeps the pointer from being reused and says when the twin can go.
        self._twins: dict[int, tuple[StorageWeakRef, torch.UntypedStorage]] = {}
        self._purged_at = 1024

    # twins
    def _add_twin(self, meta: torch.UntypedStorage, cpu: torch.UntypedStorage) -> None:
        if len(self._twins) >= 2 * self._purged_at:  # drop the twins of freed storages
            self._twins = {k: v for k, v in self._twins.items() if not v[0].expired()}
            self._purged_at = max(1024, len(self._twins))
        self._twins[meta._cdata] = (StorageWeakRef(meta), cpu)

    def _storage(self, t: Tensor) -> torch.UntypedStorage:
        meta = t.untyped_storage()
        entry = self._twins.get(meta._cdata)
        if entry is None:
            cpu = torch.UntypedStorage(meta.nbytes())
            n = meta.nbytes() // t.element_size()
            flat = torch.empty(0, dtype=t.dtype).set_(cpu, 0, (n,), (1,))
            _fill(flat, self._gen)
            self._add_twin(meta, cpu)
            return cpu
        return entry[1]

    def __enter__(self) -> DeviceReadCounter:
        super().__enter__()
        self._literals = _MetaLiterals()
        self._literals.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._literals.__exit__(*exc)
        super().__exit__(*exc)

    def twin(self, t: Tensor) -> Tensor:
        """The CPU twin of a meta tensor (a view of its storage's twin); others as they are."""
        if t.device.type != "meta":
            return t
        return torch.empty(0, dtype=t.dtype).set_(
            self._storage(t), t.storage_offset(), t.size(), t.stride()
        )

    def _bind(self, meta: Tensor, cpu: Tensor) -> None:
        """After an op: make ``cpu`` (the op's result on the twins) the twin of ``meta``."""
        key = meta.untyped_storage()._cdata
        if key not in self._twins and (
            cpu.untyped_storage().nbytes() == meta.untyped_storage().nbytes()
            and cpu.storage_offset() == meta.storage_offset()
            and cpu.stride() == meta.stride()
            and cpu.dtype == meta.dtype
        ):
            self._add_twin(meta.untyped_storage(), cpu.untyped_storage())
            return
        twin = self.twin(meta)
        if twin.untyped_storage()._cdata != cpu.untyped_storage()._cdata:
            twin.copy_(cpu)

    def _read(self, func: Any) -> None:
        if not self.counting:
            return
        self.reads += 1
        self.by_op[str(func)] += 1
        self.sites[_site()] += 1

    def _cpu_args(self, args: Any, kwargs: Any) -> tuple[Any, Any]:
        def convert(x: Any) -> Any:
            if isinstance(x, Tensor):
                return self.twin(x)
            if isinstance(x, torch.device) and x.type == "meta":
                return torch.device("cpu")
            return x

        return tree_map(convert, args), tree_map(convert, kwargs)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        inputs = _tensors((args, kwargs))
        meta_in = any(t.device.type == "meta" for t in inputs)
        meta_out = (
            kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "meta"
        )
        if func is aten._local_scalar_dense.default and _off_cpu(args[0]):
            self._read(func)
            if meta_in:
                return func(self.twin(args[0]))
            return func(*args, **kwargs)
        if func in (aten._to_copy.default, aten.copy_.default):
            dst = kwargs.get("device") if func is aten._to_copy.default else args[0].device
            to_cpu = (dst.type if isinstance(dst, torch.device) else dst) == "cpu"
            src = args[0] if func is aten._to_copy.default else args[1]
            if to_cpu and isinstance(src, Tensor) and _off_cpu(src):
                self._read(func)
                if src.device.type == "meta":
                    cpu_args, cpu_kwargs = self._cpu_args(args, kwargs)
                    return func(*cpu_args, **cpu_kwargs)
                return func(*args, **kwargs)
        if not (meta_in or meta_out):
            if func in DATA_DEPENDENT and any(_off_cpu(t) for t in inputs):
                self._read(func)
            return func(*args, **kwargs)
        cpu_args, cpu_kwargs = self._cpu_args(args, kwargs)
        cpu_result = func(*cpu_args, **cpu_kwargs)
        if func in EMPTY:
            _fill(cpu_result, self._gen)
        if func in DATA_DEPENDENT:
            self._read(func)
            # meta cannot size it; the twin did: a meta tensor of the twin's layout
            result = tree_map(
                lambda c: (
                    torch.empty_strided(c.shape, c.stride(), dtype=c.dtype, device="meta")
                    if isinstance(c, Tensor)
                    else c
                ),
                cpu_result,
            )
        else:
            result = func(*args, **kwargs)
        metas, cpus = tree_flatten(result)[0], tree_flatten(cpu_result)[0]
        for m, c in zip(metas, cpus):
            if isinstance(m, Tensor) and isinstance(c, Tensor) and m.device.type == "meta":
                self._bind(m, c)
        return result


class DeviceReads(NamedTuple):
    """What :func:`measure_device_reads` found: the count, by op, by source line."""

    reads: int
    by_op: Counter[str]
    sites: Counter[str]


def measure_device_reads(
    make_opt_on_meta: Callable[[], Opts], warmup: int = 2, seed: int = 0
) -> DeviceReads:
    """Host reads of device values in one step of the optimizer(s) that
    ``make_opt_on_meta()`` builds on meta parameters with gradients, after ``warmup``
    uncounted steps; built and stepped inside a :class:`DeviceReadCounter`."""
    with DeviceReadCounter(seed) as counter:
        step = stepper(make_opt_on_meta())
        for _ in range(warmup):
            step()
        counter.counting = True
        step()
        counter.counting = False
    return DeviceReads(counter.reads, counter.by_op, counter.sites)


def count_device_reads(make_opt_on_meta: Callable[[], Opts], warmup: int = 2) -> int:
    """The number of host reads of device values in one step (see
    :func:`measure_device_reads`)."""
    return measure_device_reads(make_opt_on_meta, warmup).reads


def meta_step_completes(make_opt_on_meta: Callable[[], Opts], steps: int = 3) -> str | None:
    """``None`` when ``steps`` plain steps on meta parameters complete, else the error (with
    the prefix ``"build: "`` when the optimizer cannot even be built on meta)."""
    try:
        opts = make_opt_on_meta()
    except Exception as exc:
        return "build: " + f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    try:
        step = stepper(opts)
        for _ in range(steps):
            step()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return None


# -- 3. CPU time ---------------------------------------------------------------------------------------
def time_steps(
    steps: dict[str, Callable[[], Any]], repeat: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Milliseconds per call of each ``steps`` entry, ``repeat`` times, interleaved."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeat):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


# -- the run -------------------------------------------------------------------------------------------
def routing_summary(model: nn.Module) -> dict[str, Any]:
    routes = normopt.classify(model)
    groups = normopt.param_groups(model)
    return {
        "tensors": len(routes),
        "roles": dict(Counter(r.role for r in routes)),
        "muon": sum(len(g["params"]) for g in groups if g.get("use_muon")),
        "adamw": sum(len(g["params"]) for g in groups if not g.get("use_muon")),
        "tied": {r.name: r.tied for r in routes if r.tied},
    }


def measure_row(name: str, width: int, check_width: int | None, n_layer: int) -> dict[str, Any]:
    make = METHODS[name]
    row: dict[str, Any] = {"optimizer": name}
    try:
        step = stepper(make(gpt2_small_like(width, n_layer)))
        for _ in range(2):
            step()
        with OpCounter(sites=True) as counter:
            step()
        assert counter.sites is not None
        row.update(
            ops=sum(counter.ops.values()),
            ops_by_name=dict(counter.ops.most_common()),
            ops_by_site=dict(counter.sites.most_common()),
        )
        if check_width is not None:
            row["ops_check_width"] = count_ops(
                stepper(make(gpt2_small_like(check_width, n_layer)))
            )[0]
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        return row

    def on_meta() -> Opts:
        return make(gpt2_small_like(width, n_layer, device="meta"))

    if name in NO_META:
        row.update(meta_completes=None, meta_error=NO_META[name], reads=None)
        row["reads_error"] = NO_META[name]
        return row
    error = meta_step_completes(on_meta)
    # None: the optimizer cannot be built on meta (fused AdamW), so there is nothing to say
    row["meta_completes"] = None if error and error.startswith("build: ") else error is None
    row["meta_error"] = error
    try:
        reads = measure_device_reads(on_meta)
        row.update(reads=reads.reads, reads_by_op=dict(reads.by_op), read_sites=dict(reads.sites))
    except Exception as exc:
        row["reads"] = None
        row["reads_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return row


def markdown(rows: list[dict[str, Any]], ref_ms: float | None) -> str:
    lines = [
        "| optimizer | aten ops/step | device reads/step | meta step completes "
        "| CPU ms/step | ms ratio to fused AdamW |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['optimizer']} | error: {r['error']} | | | | |")
            continue
        reads = "n/a" if r.get("reads") is None else f"{r['reads']:,}"
        meta = {True: "yes", False: "no", None: "n/a"}[r["meta_completes"]]
        ms = r.get("ms")
        ratio = f"{ms / ref_ms:.1f}" if ms is not None and ref_ms else "-"
        ms_s = f"{ms:.2f}" if ms is not None else "-"
        lines.append(f"| {r['optimizer']} | {r['ops']:,} | {reads} | {meta} | {ms_s} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--methods", default="*", help="comma list of fnmatch patterns of row names")
    ap.add_argument("--width", type=int, default=64, help="model width d (default 64)")
    ap.add_argument(
        "--check-width",
        type=int,
        default=None,
        help="second width for the op-count check (default 2 d; 0 to skip)",
    )
    ap.add_argument("--layers", type=int, default=N_LAYER, help="blocks (default 12)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per optimizer")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    ap.add_argument("--verbose", action="store_true", help="routing, top ops, read sites")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    check = 2 * args.width if args.check_width is None else (args.check_width or None)
    patterns = [p.strip() for p in args.methods.split(",") if p.strip()]
    names = [n for n in METHODS if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not names:
        ap.error(f"--methods {args.methods!r} matches none of {list(METHODS)}")
    t_start = time.perf_counter()
    model = gpt2_small_like(args.width, args.layers, grads=False)
    meta: dict[str, Any] = {
        "script": "benchmarks/step_overhead.py",
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "width": args.width,
        "check_width": check,
        "layers": args.layers,
        "vocab": VOCAB,
        "context": CONTEXT,
        "steps": args.steps,
        "routing": routing_summary(model),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(
        f"# torch {meta['torch']}, {meta['threads']} thread(s); GPT-2-small layout, d={args.width}, "
        f"{args.layers} blocks, {meta['routing']['tensors']} tensors",
        flush=True,
    )
    if args.verbose:
        summary = normopt.describe(model).rsplit("\n", 1)[-1]
        routing = meta["routing"]
        print(
            f"## normopt.describe: {summary}\n   roles {routing['roles']}; "
            f"{routing['muon']} to Muon, {routing['adamw']} to AdamW; tied {routing['tied']}"
        )

    rows = [measure_row(name, args.width, check, args.layers) for name in names]
    # timing: one model per row, the reference always among them, interleaved
    timed = [r["optimizer"] for r in rows if "error" not in r]
    if REFERENCE not in timed:
        timed.append(REFERENCE)
    steps = {
        name: stepper(METHODS[name](gpt2_small_like(args.width, args.layers))) for name in timed
    }
    times = time_steps(steps, args.steps)
    ref_ms = statistics.median(times[REFERENCE])
    for r in rows:
        if r["optimizer"] in times:
            t = times[r["optimizer"]]
            r.update(ms=statistics.median(t), ms_min=min(t), ms_max=max(t))
            r["ms_ratio"] = r["ms"] / ref_ms
    meta["reference_ms"] = ref_ms
    meta["seconds"] = time.perf_counter() - t_start

    print(markdown(rows, ref_ms))
    if check is not None:
        same = [r for r in rows if "error" not in r and r["ops"] == r["ops_check_width"]]
        differ = [r for r in rows if "error" not in r and r["ops"] != r["ops_check_width"]]
        print(
            f"\nOp counts at d={args.width} and d={check}: "
            + ("the same for every row." if not differ else "")
            + (f"the same for {len(same)} rows; " if differ else "")
            + "; ".join(f"{r['optimizer']} {r['ops']} vs {r['ops_check_width']}" for r in differ)
        )
    for r in rows:
        if r.get("meta_error"):
            print(f"meta step, {r['optimizer']}: {r['meta_error']}")
        if r.get("reads_error") and r["reads_error"] != r.get("meta_error"):
            print(f"device reads, {r['optimizer']}: n/a ({r['reads_error']})")
    if args.verbose:
        for r in rows:
            if "error" in r:
                continue
            top = ", ".join(f"{k} {v}" for k, v in list(r["ops_by_name"].items())[:10])
            where = ", ".join(f"{k} {v}" for k, v in list(r["ops_by_site"].items())[:10])
            print(f"\n## {r['optimizer']}: {r['ops']:,} ops\n   top 10 ops: {top}")
            print(f"   top 10 lines: {where}")
            if r.get("read_sites"):
                print(f"   reads by op {r['reads_by_op']}; at {r['read_sites']}")
    print(f"\n({meta['seconds']:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
