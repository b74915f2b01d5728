"""``normopt compare`` and ``normopt sweep``: run the grid of trainings and summarize it.

Both return a plain dict (``metrics``) holding the resolved config, the environment,
every run and the summary; :mod:`normopt.experiments.report` turns it into files.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import torch

import normopt
from normopt.experiments.config import (
    CompareConfig,
    SweepConfig,
    TrainConfig,
    describe_basin,
    from_dict,
    parse_basin,
    resolve,
    to_dict,
)
from normopt.experiments.progress import progress_bar
from normopt.experiments.report import environment
from normopt.experiments.tasks import Problem, get_task
from normopt.experiments.train import RunResult, train


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device: cuda was asked for, but torch sees no CUDA device")
    return device


def _progress(total: int, quiet: bool) -> Any:
    """A tqdm bar on stderr when it is a terminal, else a line per run and every 30 s
    (:mod:`normopt.experiments.progress`); silent with --quiet."""
    return progress_bar(total, quiet, sys.stderr)


def _run_all(
    cfg: TrainConfig, plan: Sequence[tuple[str, float, int]], quiet: bool
) -> tuple[list[RunResult], torch.device, Problem]:
    """Train every (optimizer, lr, seed) of ``plan`` on one loaded problem."""
    if cfg.steps is None:
        raise ValueError("cfg: resolve() it first (steps must be set)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    problem = get_task(cfg.task).setup(device)
    if cfg.jobs > 1 and len(plan) > 1:
        return _run_pool(cfg, plan, quiet), device, problem
    val_batches = problem.val_batches(cfg.batch_size or 1)
    # Warm-up, discarded: the first steps of a process pay one-time costs (lazy imports,
    # allocator, kernel selection) that would otherwise be charged to the first optimizer.
    short = dataclasses.replace(cfg, steps=2, eval_every=2)
    for optimizer in dict.fromkeys(opt for opt, _, _ in plan):
        train(problem, optimizer, cfg.lr[optimizer], 0, short, device, val_batches[:1])
    runs = []
    with _progress(len(plan) * cfg.steps, quiet) as bar:
        for optimizer, lr, seed in plan:
            bar.set_description(f"{optimizer} lr={lr:.3g} seed={seed}")

            def on_step(step: int, loss: float) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

            run = train(problem, optimizer, lr, seed, cfg, device, val_batches, on_step)
            bar.update(cfg.steps - len(run.train_loss))  # the steps a diverged run skipped
            runs.append(run)
    return runs, device, problem


# Each worker process of ``--jobs`` holds one loaded problem (set up by _worker_init).
_WORKER: dict[str, Any] = {}


def _worker_init(cls: type[TrainConfig], data: dict[str, Any]) -> None:
    cfg = from_dict(cls, data)
    torch.set_num_threads(cfg.threads or 1)
    device = resolve_device(cfg.device)
    problem = get_task(cfg.task).setup(device)
    val_batches = problem.val_batches(cfg.batch_size or 1)
    short = dataclasses.replace(cfg, steps=2, eval_every=2)  # warm-up, discarded
    for optimizer in cfg.optimizers:
        train(problem, optimizer, cfg.lr[optimizer], 0, short, device, val_batches[:1])
    _WORKER.update(cfg=cfg, device=device, problem=problem, val_batches=val_batches)


def _worker_train(item: tuple[str, float, int]) -> RunResult:
    optimizer, lr, seed = item
    w = _WORKER
    return train(w["problem"], optimizer, lr, seed, w["cfg"], w["device"], w["val_batches"])


def _run_pool(
    cfg: TrainConfig, plan: Sequence[tuple[str, float, int]], quiet: bool
) -> list[RunResult]:
    """``plan`` on ``cfg.jobs`` fresh (spawned) processes, results in plan order. Each
    process rebuilds the registry by importing normopt.experiments: only optimizers
    registered at import time can run there."""
    import concurrent.futures
    import multiprocessing

    if cfg.steps is None:
        raise ValueError("cfg: resolve() it first (steps must be set)")
    # the optimizers of the plan only, each at a learning rate it has in the plan
    lrs = {opt: lr for opt, lr, _ in plan}
    worker_cfg = dataclasses.replace(cfg, optimizers=tuple(lrs), lr={**cfg.lr, **lrs})
    with (
        concurrent.futures.ProcessPoolExecutor(
            max_workers=min(cfg.jobs, len(plan)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(type(cfg), to_dict(worker_cfg)),
        ) as pool,
        _progress(len(plan) * cfg.steps, quiet) as bar,
    ):
        futures = [pool.submit(_worker_train, item) for item in plan]
        for done in concurrent.futures.as_completed(futures):
            bar.update(cfg.steps)
            run = done.result()
            bar.set_description(f"{run.optimizer} lr={run.lr:.3g} seed={run.seed} done")
        return [f.result() for f in futures]


# ----------------------------------------------------------------------------- statistics


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max; inf if any is."""
    vals = list(values)
    if not vals:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    finite = all(math.isfinite(v) for v in vals)
    return {
        "mean": statistics.fmean(vals) if finite else math.inf,
        "std": (statistics.stdev(vals) if len(vals) > 1 else 0.0) if finite else math.nan,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def mean_curve(runs: Sequence[RunResult]) -> dict[str, list[float]]:
    """Validation curve averaged over the seeds that did not diverge (same eval steps)."""
    ok = [r for r in runs if not r.diverged]
    if not ok:
        return {"step": [], "time": [], "val_loss": []}
    n = min(len(r.val_loss) for r in ok)
    return {
        "step": [float(s) for s in ok[0].eval_step[:n]],
        "time": [statistics.fmean(r.eval_time[i] for r in ok) for i in range(n)],
        "val_loss": [statistics.fmean(r.val_loss[i] for r in ok) for i in range(n)],
    }


def time_to_target(curve: dict[str, list[float]], target: float) -> tuple[float, float]:
    """(steps, seconds) at the first validation with loss <= target; (nan, nan) if never."""
    for step, t, loss in zip(curve["step"], curve["time"], curve["val_loss"]):
        if loss <= target:
            return step, t
    return math.nan, math.nan


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
        "train_seconds": sum(r.step_time),
        "train_loss": r.train_loss,
        "step_time": r.step_time,
        "eval": {
            "step": r.eval_step,
            "time": r.eval_time,
            "val_loss": r.val_loss,
            "val_acc": r.val_acc,
        },
    }


# ----------------------------------------------------------------------------- compare


def run_compare(cfg: CompareConfig, quiet: bool = False) -> dict[str, Any]:
    """Every optimizer of ``cfg`` for every seed, from the same inits and data order."""
    cfg = resolve(cfg)
    saved = cfg  # with --tune, the search's centre learning rates: a rerun searches again
    tuning: dict[str, Any] | None = None
    done: dict[tuple[str, float, int], RunResult] = {}
    if cfg.tune:
        from normopt.experiments.tune import search_lrs

        record, done = search_lrs(cfg, _run_all, quiet)
        tuning = {"seeds": cfg.tune_seeds or cfg.seeds, "optimizers": record}
        cfg = dataclasses.replace(
            cfg, lr={**cfg.lr, **{opt: rec["best_lr"] for opt, rec in record.items()}}
        )
    plan = [(opt, cfg.lr[opt], seed) for opt in cfg.optimizers for seed in range(cfg.seeds)]
    # the search's full-budget runs at the chosen learning rates are this plan's runs
    todo = [item for item in plan if item not in done]
    new, device, problem = _run_all(cfg, todo, quiet)
    done.update(zip(todo, new))
    runs = [done[item] for item in plan]

    by_opt = {opt: [r for r in runs if r.optimizer == opt] for opt in cfg.optimizers}
    summary: list[dict[str, Any]] = []
    for opt, rs in by_opt.items():
        summary.append(
            {
                "optimizer": opt,
                "lr": cfg.lr[opt],
                "runs": len(rs),
                "diverged": sum(r.diverged for r in rs),
                "final_val_loss": spread([r.final_val_loss for r in rs]),
                "best_val_loss": spread([min(r.val_loss) for r in rs]),
                "final_train_loss": spread([r.final_train_loss for r in rs]),
                "final_val_acc": spread(
                    [r.val_acc[-1] if not r.diverged else math.nan for r in rs]
                ),
                "median_step_ms": statistics.fmean(
                    1e3 * statistics.median(r.step_time) for r in rs
                ),
                "train_seconds": statistics.fmean(sum(r.step_time) for r in rs),
                "curve": mean_curve(rs),
            }
        )
    reference = next((s for s in summary if s["optimizer"] == cfg.reference), None)
    target = reference["final_val_loss"]["mean"] if reference else math.nan
    for s in summary:
        s["steps_to_reference"], s["seconds_to_reference"] = (
            time_to_target(s["curve"], target) if math.isfinite(target) else (math.nan, math.nan)
        )
    return {
        "command": "compare",
        "config": to_dict(saved),
        "tuning": tuning,
        "environment": environment(device),
        "task": _task_info(cfg.task),
        "reference": {"optimizer": cfg.reference if reference else None, "val_loss": target},
        # who gets what under normopt.Muon's routing, for the record
        "routing": normopt.describe(problem.model()),
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


def run_sweep(cfg: SweepConfig, quiet: bool = False) -> dict[str, Any]:
    """Final validation loss over each optimizer's LR grid, several seeds each; basins."""
    cfg = resolve(cfg)
    grids = {opt: sweep_grid(cfg, opt) for opt in cfg.optimizers}
    plan = [(opt, lr, s) for opt in cfg.optimizers for lr in grids[opt] for s in range(cfg.seeds)]
    runs, device, _ = _run_all(cfg, plan, quiet)

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
        "config": to_dict(cfg),
        "environment": environment(device),
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
