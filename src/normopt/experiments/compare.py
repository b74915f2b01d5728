"""``normopt compare`` and ``normopt sweep``: run the grid of trainings and summarize it.

Both return a plain dict (``metrics``) holding the resolved config, the environment,
every run and the summary; :mod:`normopt.experiments.report` turns it into files. Given a
:class:`~normopt.experiments.store.RunStore`, every run is written to it as it ends and
runs already there are not trained again (``--resume``). When SIGINT or SIGTERM stops a
job (:func:`~normopt.experiments.runner.signals_interrupt`), or Ctrl-C does in Python,
:class:`JobInterrupted` carries the partial metrics: the finished runs, and the curves so
far of the runs in flight.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import normopt
from normopt.experiments.config import (
    CompareConfig,
    SweepConfig,
    TrainConfig,
    describe_basin,
    parse_basin,
    resolve,
    to_dict,
)
from normopt.experiments.report import environment
from normopt.experiments.runner import Interrupted, Runner, resolve_device
from normopt.experiments.stats import paired_difference, spread
from normopt.experiments.store import RunStore
from normopt.experiments.tasks import get_task
from normopt.experiments.train import RunResult

__all__ = [
    "JobInterrupted",
    "basin",
    "mean_curve",
    "resolve_device",
    "run_compare",
    "run_result_dict",
    "run_sweep",
    "spread",
    "time_to_target",
]


class JobInterrupted(Exception):
    """A signal (or Ctrl-C) stopped the job; ``metrics`` is the partial report's data
    (``metrics["partial"]`` is true) and ``signum`` the signal."""

    def __init__(self, metrics: dict[str, Any], signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.metrics, self.signum = metrics, signum


@contextmanager
def _job(cfg: TrainConfig, saved: TrainConfig, command: str, runner: Runner) -> Iterator[None]:
    """Turn a signal into :class:`JobInterrupted` with the partial metrics."""
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Interrupted) else int(signal.SIGINT)
        raise JobInterrupted(partial_metrics(saved, command, runner), signum) from None


def _environment(runner: Runner) -> dict[str, Any]:
    env = environment(runner.device)
    env.update(
        cpus_available=runner.cpus,
        torch_threads=runner.threads,
        load_average_max=runner.load_max,
        parallel=runner.plans,
        resumed_runs=runner.resumed,
    )
    return env


def partial_metrics(saved: TrainConfig, command: str, runner: Runner) -> dict[str, Any]:
    """What an interrupted job had: its finished runs and the unfinished runs' curves."""
    unfinished = [
        dict(run_result_dict(r), finished=False)
        for key, r in runner.live.items()
        if key not in runner.finished
    ]
    return {
        "command": command,
        "partial": True,
        "config": to_dict(saved),
        "environment": _environment(runner),
        "task": _task_info(saved.task),
        "runs": [dict(run_result_dict(r), finished=True) for r in runner.finished.values()],
        "unfinished": unfinished,
    }


# ----------------------------------------------------------------------------- statistics


def mean_curve(runs: Sequence[RunResult]) -> dict[str, list[float]]:
    """Validation curve averaged over the seeds that did not diverge (same eval steps):
    wall-clock ``time`` and CPU ``cpu`` seconds, ``val_loss`` with its ``lo`` / ``hi`` range
    over the seeds."""
    ok = [r for r in runs if not r.diverged]
    if not ok:
        return {"step": [], "time": [], "cpu": [], "val_loss": [], "lo": [], "hi": []}
    n = min(len(r.val_loss) for r in ok)
    cpu = [r.eval_cpu if len(r.eval_cpu) >= n else r.eval_time for r in ok]
    return {
        "step": [float(s) for s in ok[0].eval_step[:n]],
        "time": [statistics.fmean(r.eval_time[i] for r in ok) for i in range(n)],
        "cpu": [statistics.fmean(c[i] for c in cpu) for i in range(n)],
        "val_loss": [statistics.fmean(r.val_loss[i] for r in ok) for i in range(n)],
        "lo": [min(r.val_loss[i] for r in ok) for i in range(n)],
        "hi": [max(r.val_loss[i] for r in ok) for i in range(n)],
    }


def time_to_target(curve: dict[str, list[float]], target: float) -> tuple[float, float]:
    """(steps, seconds) at the first validation with loss <= target; (nan, nan) if never."""
    for step, t, loss in zip(curve["step"], curve["time"], curve["val_loss"]):
        if loss <= target:
            return step, t
    return math.nan, math.nan


def _to_target(run: RunResult, target: float) -> tuple[float, float, float]:
    """(steps, wall seconds, CPU seconds) at the run's first validation at or below
    ``target``; nans if it never gets there (or diverged, or the target is not finite)."""
    if run.diverged or not math.isfinite(target):
        return math.nan, math.nan, math.nan
    cpu = run.eval_cpu if len(run.eval_cpu) == len(run.val_loss) else run.eval_time
    for step, t, c, loss in zip(run.eval_step, run.eval_time, cpu, run.val_loss):
        if loss <= target:
            return float(step), t, c
    return math.nan, math.nan, math.nan


def _finite_spread(values: Sequence[float]) -> dict[str, float]:
    """:func:`spread` of the finite values (``n``: how many), nans when there are none."""
    return spread([v for v in values if math.isfinite(v)])


def to_reference(runs: Sequence[RunResult], reference: Sequence[RunResult]) -> dict[str, Any]:
    """Per seed, the steps and seconds an optimizer's run took to reach the final validation
    loss of the reference optimizer's run on the same seed (same init and data), and their
    spread over the seeds that got there (``reached`` of ``seeds``)."""
    targets = {r.seed: r.final_val_loss for r in reference}
    per_seed = [_to_target(r, targets.get(r.seed, math.nan)) for r in runs]
    steps, wall, cpu = (list(x) for x in zip(*per_seed)) if per_seed else ([], [], [])
    return {
        "seeds": len(runs),
        "reached": sum(math.isfinite(v) for v in steps),
        "steps": _finite_spread(steps),
        "seconds": _finite_spread(wall),
        "cpu_seconds": _finite_spread(cpu),
        "per_seed": {
            "seed": [r.seed for r in runs],
            "steps": steps,
            "seconds": wall,
            "cpu_seconds": cpu,
        },  # fmt: skip
    }


def verdict(by_opt: dict[str, list[RunResult]]) -> dict[str, Any]:
    """The optimizer with the lowest seed-mean final validation loss (a diverged seed counts
    as inf, so one that diverged cannot win while another did not), and every other
    optimizer's difference to it paired by seed, with its 95% interval."""
    finals = {o: spread([r.final_val_loss for r in rs]) for o, rs in by_opt.items()}
    candidates = [o for o in by_opt if math.isfinite(finals[o]["mean"])]
    seeds = max((len(rs) for rs in by_opt.values()), default=0)
    diverged = {o: [r.seed for r in rs if r.diverged] for o, rs in by_opt.items()}
    out: dict[str, Any] = {
        "winner": None,
        "seeds": seeds,
        "pairs": {},
        "diverged": {o: s for o, s in diverged.items() if s},
    }
    if not candidates:
        return out
    winner = min(candidates, key=lambda o: (finals[o]["mean"], o))
    out["winner"] = winner
    out["winner_loss"] = finals[winner]
    best = {r.seed: r.final_val_loss for r in by_opt[winner]}
    for o, rs in by_opt.items():
        if o == winner:
            continue
        pairs = [(r.final_val_loss, best[r.seed]) for r in rs if r.seed in best]
        diffs = [a - b for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
        out["pairs"][o] = dict(paired_difference(diffs), diverged=len(diverged[o]))
    return out


def run_result_dict(r: RunResult) -> dict[str, Any]:
    return {
        "optimizer": r.optimizer,
        "seed": r.seed,
        "lr": r.lr,
        "steps": r.steps,
        "steps_done": len(r.train_loss),
        "diverged": r.diverged,
        "final_val_loss": r.final_val_loss,
        "final_train_loss": r.final_train_loss,
        "final_val_acc": r.val_acc[-1] if r.val_acc and not r.diverged else math.nan,
        "median_step_ms": 1e3 * statistics.median(r.step_time) if r.step_time else math.nan,
        "median_step_cpu_ms": 1e3 * statistics.median(r.step_cpu) if r.step_cpu else math.nan,
        "train_seconds": sum(r.step_time),
        "train_cpu_seconds": sum(r.step_cpu),
        "train_loss": r.train_loss,
        "step_time": r.step_time,
        "step_cpu": r.step_cpu,
        "eval": {
            "step": r.eval_step,
            "time": r.eval_time,
            "cpu": r.eval_cpu,
            "val_loss": r.val_loss,
            "val_acc": r.val_acc,
        },
    }


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return statistics.fmean(vals) if vals else math.nan


# ----------------------------------------------------------------------------- compare


def run_compare(
    cfg: CompareConfig, quiet: bool = False, store: RunStore | None = None
) -> dict[str, Any]:
    """Every optimizer of ``cfg`` for every seed, from the same inits and data order.

    With ``store``, runs found there are reused and every new run is written there as it
    ends. Raises :class:`JobInterrupted` (with the partial metrics) on SIGINT/SIGTERM under
    :func:`~normopt.experiments.runner.signals_interrupt`, and on Ctrl-C.
    """
    cfg = resolve(cfg)
    saved = cfg  # with --tune, the search's centre learning rates: a rerun searches again
    runner = Runner(cfg, quiet, store, "compare")
    with _job(cfg, saved, "compare", runner):
        return _compare(cfg, saved, runner, quiet)


def _compare(
    cfg: CompareConfig, saved: CompareConfig, runner: Runner, quiet: bool
) -> dict[str, Any]:
    tuning: dict[str, Any] | None = None
    if cfg.tune:
        from normopt.experiments.tune import search_lrs

        record = search_lrs(cfg, runner.train, quiet)
        tuning = {"seeds": cfg.tune_seeds or cfg.seeds, "optimizers": record}
        cfg = dataclasses.replace(
            cfg, lr={**cfg.lr, **{opt: rec["best_lr"] for opt, rec in record.items()}}
        )
    plan = [(opt, cfg.lr[opt], seed) for opt in cfg.optimizers for seed in range(cfg.seeds)]
    # the search's full-budget runs at the chosen learning rates are this plan's runs: the
    # runner has them already and does not train them again
    runs = runner.train(cfg, plan)

    by_opt = {opt: [r for r in runs if r.optimizer == opt] for opt in cfg.optimizers}
    reference_runs = by_opt.get(cfg.reference)
    summary: list[dict[str, Any]] = []
    for opt, rs in by_opt.items():
        entry: dict[str, Any] = {
            "optimizer": opt,
            "lr": cfg.lr[opt],
            "runs": len(rs),
            "diverged": sum(r.diverged for r in rs),
            "final_val_loss": spread([r.final_val_loss for r in rs]),
            "best_val_loss": spread([min(r.val_loss) for r in rs]),
            "final_train_loss": spread([r.final_train_loss for r in rs]),
            "final_val_acc": spread([r.val_acc[-1] if not r.diverged else math.nan for r in rs]),
            "median_step_ms": _mean(
                [1e3 * statistics.median(r.step_time) for r in rs if r.step_time]
            ),
            "median_step_cpu_ms": _mean(
                [1e3 * statistics.median(r.step_cpu) for r in rs if r.step_cpu]
            ),
            "train_seconds": statistics.fmean(sum(r.step_time) for r in rs),
            "train_cpu_seconds": statistics.fmean(sum(r.step_cpu) for r in rs),
            "curve": mean_curve(rs),
        }
        if reference_runs is not None:
            reach = to_reference(rs, reference_runs)
            entry["to_reference"] = reach
            entry["steps_to_reference"] = reach["steps"]["mean"]
            entry["seconds_to_reference"] = reach["seconds"]["mean"]
            entry["cpu_seconds_to_reference"] = reach["cpu_seconds"]["mean"]
        else:
            entry["steps_to_reference"] = entry["seconds_to_reference"] = math.nan
            entry["cpu_seconds_to_reference"] = math.nan
        summary.append(entry)
    reference = next((s for s in summary if s["optimizer"] == cfg.reference), None)
    target = reference["final_val_loss"]["mean"] if reference else math.nan
    return {
        "command": "compare",
        "partial": False,
        "config": to_dict(saved),
        "tuning": tuning,
        "environment": _environment(runner),
        "task": _task_info(cfg.task),
        "reference": {"optimizer": cfg.reference if reference else None, "val_loss": target},
        "verdict": verdict(by_opt),
        # who gets what under normopt.Muon's routing, for the record
        "routing": normopt.describe(runner.problem.model()),
        "summary": summary,
        "runs": [run_result_dict(r) for r in runs],
    }


# ----------------------------------------------------------------------------- sweep


def sweep_grid(cfg: SweepConfig, optimizer: str) -> list[float]:
    """The learning rates one optimizer is swept over (``cfg`` resolved)."""
    if cfg.lrs:
        return sorted(cfg.lrs)
    return sorted(cfg.lr[optimizer] * f for f in cfg.lr_factors)


def basin(
    lrs: Sequence[float],
    losses: Sequence[float],
    margin: str | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """The contiguous run of grid LRs around the best whose loss is within ``margin`` of the
    best (``"+0.05"`` nats or ``"5%"``), or at most ``threshold`` when that is given.

    ``width`` is hi / lo (1.0 for a single point; nan when no LR qualifies);
    ``open_low`` / ``open_high`` say the run reaches the end of the grid, so the true width
    is at least ``width``.
    """
    finite = [i for i, v in enumerate(losses) if math.isfinite(v)]
    i_best = min(finite, key=lambda i: losses[i]) if finite else None
    best = losses[i_best] if i_best is not None else math.inf
    if threshold is None:
        value, relative = parse_basin(margin or "+0")
        threshold = best * (1 + value) if relative else best + value
    out = {"best_lr": math.nan, "best_loss": best, "threshold": threshold, "lo": math.nan,
           "hi": math.nan, "width": math.nan, "octaves": math.nan, "open_low": False,
           "open_high": False}  # fmt: skip
    if i_best is None:
        return out
    out["best_lr"] = lrs[i_best]
    if not best <= threshold:
        return out
    lo = hi = i_best
    while lo > 0 and losses[lo - 1] <= threshold:
        lo -= 1
    while hi < len(lrs) - 1 and losses[hi + 1] <= threshold:
        hi += 1
    width = lrs[hi] / lrs[lo]
    out.update(lo=lrs[lo], hi=lrs[hi], width=width, octaves=math.log2(width))
    out.update(open_low=lo == 0, open_high=hi == len(lrs) - 1)
    return out


def run_sweep(
    cfg: SweepConfig, quiet: bool = False, store: RunStore | None = None
) -> dict[str, Any]:
    """Final validation loss over each optimizer's LR grid, several seeds each; basins.
    ``store`` and interruption as in :func:`run_compare`."""
    cfg = resolve(cfg)
    runner = Runner(cfg, quiet, store, "sweep")
    with _job(cfg, cfg, "sweep", runner):
        return _sweep(cfg, runner)


def _sweep(cfg: SweepConfig, runner: Runner) -> dict[str, Any]:
    grids = {opt: sweep_grid(cfg, opt) for opt in cfg.optimizers}
    plan = [(opt, lr, s) for opt in cfg.optimizers for lr in grids[opt] for s in range(cfg.seeds)]
    runs = runner.train(cfg, plan)

    summary: list[dict[str, Any]] = []
    for opt in cfg.optimizers:
        points: list[dict[str, Any]] = []
        for lr in grids[opt]:
            rs = [r for r in runs if r.optimizer == opt and r.lr == lr]
            points.append(
                {
                    "lr": lr,
                    "final_val_loss": spread([r.final_val_loss for r in rs]),
                    "diverged": sum(r.diverged for r in rs),
                }
            )
        losses = [p["final_val_loss"]["mean"] for p in points]
        summary.append(
            {"optimizer": opt, "points": points, "basin": basin(grids[opt], losses, cfg.basin)}
        )
    # A second, reference-relative width: the LRs at which an optimizer ends at or below the
    # best final loss the reference (AdamW) reached anywhere on its own grid.
    reference = next((s for s in summary if s["optimizer"] == cfg.reference), None)
    ref_best = reference["basin"]["best_loss"] if reference else math.nan
    for s in summary:
        losses = [p["final_val_loss"]["mean"] for p in s["points"]]
        s["beats_reference"] = (
            basin(grids[s["optimizer"]], losses, threshold=ref_best)
            if math.isfinite(ref_best)
            else None
        )
    return {
        "command": "sweep",
        "partial": False,
        "config": to_dict(cfg),
        "environment": _environment(runner),
        "task": _task_info(cfg.task),
        "basin_rule": describe_basin(cfg.basin),
        "reference": {"optimizer": cfg.reference if reference else None, "best_loss": ref_best},
        "initial_val_loss": statistics.fmean(r.val_loss[0] for r in runs),
        "summary": summary,
        "runs": [run_result_dict(r) for r in runs],
    }


def _task_info(name: str) -> dict[str, Any]:
    task = get_task(name)
    return {"name": task.name, "summary": task.summary, "size": task.size}
