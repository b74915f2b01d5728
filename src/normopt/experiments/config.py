"""Configuration of ``normopt compare`` and ``normopt sweep``: frozen dataclasses.

Every field is a flag (``steps`` is ``--steps``, ``batch_size`` is ``--batch-size``)
and a key of the JSON config file (``--config``); unknown keys are rejected. ``None``
means "the task's default"; :func:`resolve` fills those in, and the resolved config is
what a report saves, so ``normopt compare --config REPORT/config.json`` repeats a run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# The registries (optimizers, tasks) and the checks import torch: they are imported where a
# config is built or resolved, not here, so that `normopt compare --help` (which reads the
# fields below) starts without torch.

SCHEDULES = ("constant", "linear", "cosine")
C = TypeVar("C", bound="TrainConfig")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    """What every run of the harness shares: task, optimizers, budget, schedule, device."""

    task: str = field(default="shakespeare-char", metadata=_help("the task (see --list)"))
    optimizers: tuple[str, ...] = field(
        default=("adamw", "muon", "lion"),
        metadata=_help("comma-separated names from the optimizer registry (see --list)"),
    )
    steps: int | None = field(default=None, metadata=_help("training steps per run (task default)"))
    seeds: int = field(
        default=1, metadata=_help("seeds 0..S-1; each seed fixes the init and the data order")
    )
    lr: Mapping[str, float] = field(
        default_factory=dict,
        metadata=_help("learning rates, e.g. adamw=3e-3,muon=0.05 (default: tuned per task)"),
    )
    adamw_lr: float | None = field(
        default=None,
        metadata=_help(
            "lr of the AdamW half of hybrids such as muon (default: the task's adamw lr)"
        ),
    )
    batch_size: int | None = field(default=None, metadata=_help("batch size (task default)"))
    eval_every: int | None = field(
        default=None, metadata=_help("validation every N steps (task default)")
    )
    schedule: str = field(
        default="cosine", metadata=_help(f"lr schedule after warmup: {', '.join(SCHEDULES)}")
    )
    warmup: float = field(default=0.05, metadata=_help("fraction of steps of linear warmup"))
    weight_decay: float = field(
        default=0.0, metadata=_help("decoupled weight decay, on matrices only")
    )
    threads: int | None = field(
        default=None,
        metadata=_help(
            "torch CPU threads per run (default 1: then the numbers do not depend on the "
            "machine or on --jobs; more threads change the float rounding, and so the losses)"
        ),
    )
    device: str = field(
        default="auto", metadata=_help("auto (a GPU when present), cpu, cuda, cuda:N")
    )
    jobs: int | None = field(
        default=None,
        metadata=_help(
            "runs trained at once, each in its own process (default: chosen from the CPUs "
            "available and the job's size, and printed); results do not depend on it"
        ),
    )
    reference: str = field(
        default="adamw",
        metadata=_help(
            "compare: the optimizer whose final val loss the others race to; sweep: whose best "
            "final val loss the others' LR ranges are measured against (if listed)"
        ),
    )
    out: str | None = field(
        default=None,
        metadata=_help("report folder (default reports/<command>-<task>-<time>)"),
    )

    def __post_init__(self) -> None:
        from normopt._checks import check_int, check_number
        from normopt.experiments.optimizers import OPTIMIZERS
        from normopt.experiments.tasks import TASKS

        # Stored as plain immutable values, whatever sequence or mapping came in.
        object.__setattr__(self, "optimizers", tuple(self.optimizers))
        object.__setattr__(self, "lr", types.MappingProxyType(dict(self.lr)))
        if self.task not in TASKS:
            raise ValueError(f"--task: unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if not self.optimizers:
            raise ValueError("--optimizers: give at least one optimizer")
        for name in (*self.optimizers, *self.lr):
            if name not in OPTIMIZERS:
                flag = "--optimizers" if name in self.optimizers else "--lr"
                raise ValueError(
                    f"{flag}: unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}"
                )
        if len(set(self.optimizers)) != len(self.optimizers):
            raise ValueError(f"--optimizers: a name appears twice in {','.join(self.optimizers)}")
        idle = [name for name in self.lr if name not in self.optimizers]
        if idle:
            hint = (
                "; the AdamW part of hybrids is --adamw-lr"
                if "adamw" in idle and "adamw" not in self.optimizers
                else ""
            )
            raise ValueError(
                f"--lr: {', '.join(idle)} is not among --optimizers "
                f"({','.join(self.optimizers)}){hint}"
            )
        for name in ("steps", "batch_size", "eval_every", "seeds", "threads", "jobs"):
            if getattr(self, name) is not None:
                check_int(_flag(name), getattr(self, name), 1)
        for name, v in self.lr.items():
            check_number(f"--lr {name}", v, low_open=True)
        if self.adamw_lr is not None:
            check_number("--adamw-lr", self.adamw_lr, low_open=True)
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"--schedule: expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        check_number("--warmup", self.warmup, 0.0, 1.0, high_open=True)  # a fraction of the steps
        check_number("--weight-decay", self.weight_decay)
        if self.reference not in OPTIMIZERS:
            raise ValueError(
                f"--reference: unknown optimizer {self.reference!r}; known: {', '.join(OPTIMIZERS)}"
            )
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(
                f"--device: expected auto, cpu, cuda, cuda:N or mps, got {self.device!r}"
            )


@dataclass(frozen=True)
class CompareConfig(TrainConfig):
    """``normopt compare``: every optimizer on the same inits and data, curves and a table.

    With ``tune``, each optimizer's learning rate is first searched with the same budget
    (:mod:`normopt.experiments.tune`: successive halving over a log grid), and the
    comparison runs at each one's best.
    """

    tune: bool = field(
        default=False,
        metadata=_help(
            "search every optimizer's lr first, with the same budget (successive halving over "
            "--tune-factors x its default lr, rungs at --tune-rungs of --steps), then compare "
            "at each one's best"
        ),
    )
    tune_factors: tuple[float, ...] = field(
        default=(0.25, 0.5, 1.0, 2.0, 4.0),
        metadata=_help("the search grid: multiples of each optimizer's default (or --lr) lr"),
    )
    tune_rungs: tuple[float, ...] = field(
        default=(0.25, 1.0),
        metadata=_help(
            "successive-halving rungs: run lengths as fractions of --steps, increasing, the "
            "last 1 (the full budget)"
        ),
    )
    tune_eta: float = field(
        default=2.0,
        metadata=_help("after each rung but the last, keep the best ceil(n / eta) lrs"),
    )
    tune_seeds: int | None = field(
        default=None,
        metadata=_help("seeds 0..S-1 of every search run (default: --seeds)"),
    )

    def __post_init__(self) -> None:
        from normopt._checks import check_int, check_number

        object.__setattr__(self, "tune_factors", tuple(self.tune_factors))
        object.__setattr__(self, "tune_rungs", tuple(self.tune_rungs))
        super().__post_init__()
        if not self.tune_factors:
            raise ValueError("--tune-factors: give at least one factor")
        for v in self.tune_factors:
            check_number("--tune-factors", v, low_open=True)
        if len(set(self.tune_factors)) != len(self.tune_factors):
            raise ValueError("--tune-factors: a factor appears twice")
        rungs = self.tune_rungs
        if not rungs or rungs[-1] != 1.0 or any(not 0 < a < b for a, b in zip(rungs, rungs[1:])):
            raise ValueError(
                f"--tune-rungs: expected increasing fractions in (0, 1] ending at 1, got {rungs}"
            )
        check_number("--tune-rungs", rungs[0], low_open=True)
        check_number("--tune-eta", self.tune_eta, 1.0, low_open=True)
        if self.tune_seeds is not None:
            check_int("--tune-seeds", self.tune_seeds, 1)


@dataclass(frozen=True)
class SweepConfig(TrainConfig):
    """``normopt sweep``: final validation loss over a grid of learning rates."""

    optimizers: tuple[str, ...] = field(
        default=("adamw", "muon"),
        metadata=_help("comma-separated names from the optimizer registry (see --list)"),
    )
    seeds: int = field(default=2, metadata=_help("seeds per learning rate"))
    lrs: tuple[float, ...] = field(
        default=(),
        metadata=_help("absolute learning rates for every optimizer (overrides --lr-factors)"),
    )
    lr_factors: tuple[float, ...] = field(
        default=(0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
        metadata=_help("multiples of each optimizer's default (or --lr) learning rate"),
    )
    basin: str = field(
        default="+0.05",
        metadata=_help("the basin: LRs whose final val loss is within +X nats or X%% of the best"),
    )

    def __post_init__(self) -> None:
        from normopt._checks import check_number

        object.__setattr__(self, "lrs", tuple(self.lrs))
        object.__setattr__(self, "lr_factors", tuple(self.lr_factors))
        super().__post_init__()
        for name in ("lrs", "lr_factors"):
            for v in getattr(self, name):
                check_number(_flag(name), v, low_open=True)
        if not (self.lrs or self.lr_factors):
            raise ValueError("--lr-factors: give --lrs or at least one factor")
        parse_basin(self.basin)


def parse_basin(text: str) -> tuple[float, bool]:
    """``"+0.05"`` -> (0.05, False): absolute nats; ``"5%"`` -> (0.05, True): relative."""
    m = re.fullmatch(r"\s*\+?\s*([0-9.eE+-]+)\s*(%?)\s*", text)
    try:
        value = float(m.group(1)) if m else math.nan
    except ValueError:
        value = math.nan
    if not (m and math.isfinite(value) and value >= 0):
        raise ValueError(
            f"--basin: expected +NATS (e.g. +0.05) or PERCENT% (e.g. 5%), got {text!r}"
        )
    return (value / 100, True) if m.group(2) else (value, False)


def describe_basin(text: str) -> str:
    value, relative = parse_basin(text)
    return (
        f"within {100 * value:g}% of the best"
        if relative
        else f"within +{value:g} nats of the best"
    )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------- resolve


def resolve(cfg: C) -> C:
    """Fill task defaults (steps, batch, eval, learning rates) and check the optimizers exist."""
    from normopt.experiments.optimizers import OPTIMIZERS, check_optimizer
    from normopt.experiments.tasks import get_task

    task = get_task(cfg.task)
    for name in cfg.optimizers:
        try:
            check_optimizer(name)
        except ValueError as e:
            raise ValueError(f"--optimizers: {e}") from None
    lr = {n: cfg.lr.get(n, task.lrs.get(n, OPTIMIZERS[n].lr)) for n in cfg.optimizers}
    lr.update(cfg.lr)
    adamw_lr = (
        cfg.adamw_lr
        or cfg.lr.get("adamw")
        or task.adamw_lr
        or task.lrs.get("adamw", OPTIMIZERS["adamw"].lr)
    )
    steps = cfg.steps or (task.sweep_steps if isinstance(cfg, SweepConfig) else task.steps)
    return dataclasses.replace(
        cfg,
        steps=steps,
        batch_size=cfg.batch_size or task.batch_size,
        eval_every=min(cfg.eval_every or task.eval_every, steps),
        lr=lr,
        adamw_lr=adamw_lr,
    )


# ----------------------------------------------------------------------------- (de)serialize


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain JSON-ready values: tuples become lists, mappings dicts."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v
    return out


def from_dict(cls: type[C], data: Mapping[str, Any], source: str = "config") -> C:
    """Build ``cls`` from JSON-like data; unknown keys and wrong types are ValueErrors."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(names)}"
        )
    return cls(**{k: _coerce(k, v, hints[k], source) for k, v in data.items()})


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    def bad() -> ValueError:
        return ValueError(
            f"{source}: key {name!r} ({_flag(name)}): {value!r} is not of type {hint}"
        )

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):  # X | None
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        return tuple(_coerce(name, v, args[0], source) for v in value)
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise bad()
        return {str(k): _coerce(name, v, args[1], source) for k, v in value.items()}
    if hint is bool and isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str) and isinstance(value, hint) and not isinstance(value, bool):
        return value
    raise bad()


def save(cfg: TrainConfig, path: Path) -> None:
    path.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def load(cls: type[C], path: str | Path) -> C:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--config: no such file: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--config: {path} is not valid JSON: {e}") from None
    return from_dict(cls, data, source=str(path))
