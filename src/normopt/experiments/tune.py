"""The learning-rate search of ``normopt compare --tune``: the same budget for every optimizer.

The method, for every optimizer alike (the defaults in brackets):

1. **Grid.** The optimizer's centre learning rate (``--lr``, else the task's default, else
   the registry's) times each of ``tune_factors`` [1/4, 1/2, 1, 2, 4: a x2 log grid
   spanning x16].
2. **Rungs.** Successive halving (Jamieson & Talwalkar 2016; the rung rule of Hyperband,
   Li et al. 2018): at rung ``r`` every surviving learning rate trains for
   ``round(tune_rungs[r] * steps)`` steps [1/4 of the budget, then all of it] on seeds
   ``0 .. tune_seeds-1`` [``--seeds``], from the same inits and data order as the
   comparison. A shortened run is a whole run, shorter: its warmup and cosine decay are
   compressed to its length, so its final loss is that of an annealed model. A learning
   rate scores the seed-mean of its final validation losses; a diverged seed scores inf.
3. **Halving.** After every rung but the last, the best ``ceil(n / tune_eta)`` learning
   rates go on [eta 2: 5, then 3]; ties go to the smaller learning rate.
4. **Probe.** The last rung runs the full budget. Short runs can favour another learning
   rate than full ones (the optimum drifts with the budget), so the full-budget best often
   sits at an end of the survivors; one more learning rate per optimizer then runs the
   full budget: the mirror image of the last rung's runner-up through its best (one grid
   step past the survivors, possibly past the grid), or, when the best is bracketed, the
   geometric midpoint of the best and the runner-up (a refinement of the grid).
5. **Choice.** The best full-budget learning rate (last rung or probe).

Every optimizer runs the same grid size, rungs, survivors, probe and seeds, so each one's
search costs exactly ``(sum_r n_r * steps_r + steps) * seeds`` training steps [(5 x 1/4
+ 3 + 1) x steps x seeds: 5.25 full runs per seed]: the budget is equal in steps, not in
seconds.
The comparison then runs every optimizer at its chosen learning rate; the last rung's
runs of that learning rate are exactly the comparison's runs for those seeds (same
config, seed and budget), so they are reused, not repeated. A best learning rate at
an end of the full-budget learning rates is flagged (``at_edge``): the optimum may lie
beyond it.

The search is :func:`successive_halving`, a pure function of a ``run`` callback (tested
on synthetic loss-versus-lr functions); :func:`search_lrs` plugs in the harness.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from normopt.experiments.config import CompareConfig
    from normopt.experiments.train import RunResult


@dataclass(frozen=True)
class Trial:
    """One training run the search asks for."""

    optimizer: str
    lr: float
    steps: int
    seed: int


def rung_steps(steps: int, fractions: Sequence[float]) -> list[int]:
    """Run length of each rung: ``round(f * steps)``, at least 1 step."""
    return [max(1, round(f * steps)) for f in fractions]


def _score(losses: Sequence[float]) -> float:
    """Seed-mean final loss; inf when any seed diverged (or gave a non-finite loss)."""
    if not losses or not all(math.isfinite(v) for v in losses):
        return math.inf
    return statistics.fmean(losses)


def _point(lr: float, losses: list[float]) -> dict[str, Any]:
    mean = _score(losses)
    std = statistics.stdev(losses) if len(losses) > 1 and math.isfinite(mean) else 0.0
    return {"lr": lr, "losses": losses, "mean": mean, "std": std}


def successive_halving(
    centers: Mapping[str, float],
    factors: Sequence[float],
    steps: Sequence[int],
    eta: float,
    seeds: int,
    run: Callable[[list[Trial]], list[float]],
    on_rung: Callable[[int, dict[str, dict[str, Any]]], None] | None = None,
    probe: bool = True,
) -> dict[str, dict[str, Any]]:
    """Search each optimizer's learning rate over ``center * factors``, rung by rung.

    ``steps`` are the rungs' run lengths (increasing); ``run(trials)`` trains a list of
    trials (every optimizer's survivors of one rung together, so a caller may train them
    in parallel) and returns each one's final validation loss (inf if it diverged).
    With ``probe``, one more learning rate per optimizer then runs the full budget
    (:func:`_probe`). Returns, per optimizer: ``grid``, ``rungs`` (``steps``, ``points``
    with ``lr``, ``losses`` per seed, ``mean``, ``std``; ``kept``), ``probe`` (a point),
    ``best_lr`` and ``best_loss`` (the best full-budget point), ``at_edge`` (the best is
    the smallest or largest lr that ran the full budget: the optimum may lie beyond it)
    and ``budget_steps`` (training steps spent on it).
    """
    if not steps or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"rung lengths must increase, got {list(steps)}")
    if eta <= 1:
        raise ValueError(f"eta must exceed 1, got {eta}")
    grids = {opt: sorted(c * f for f in factors) for opt, c in centers.items()}
    alive = {opt: list(g) for opt, g in grids.items()}
    out: dict[str, dict[str, Any]] = {
        opt: {"grid": grids[opt], "rungs": [], "budget_steps": 0} for opt in centers
    }
    for r, n in enumerate(steps):
        trials = [
            Trial(opt, lr, n, s) for opt in centers for lr in alive[opt] for s in range(seeds)
        ]
        losses = run(trials)
        if len(losses) != len(trials):
            raise ValueError(f"run() returned {len(losses)} losses for {len(trials)} trials")
        got: dict[tuple[str, float], list[float]] = {}
        for t, v in zip(trials, losses):
            got.setdefault((t.optimizer, t.lr), []).append(v)
        last = r == len(steps) - 1
        for opt in centers:
            points = [_point(lr, got[(opt, lr)]) for lr in alive[opt]]
            ranked = sorted(points, key=lambda p: (p["mean"], p["lr"]))
            n_keep = 1 if last else math.ceil(len(ranked) / eta)
            kept = sorted(p["lr"] for p in ranked[:n_keep])
            out[opt]["rungs"].append({"steps": n, "points": points, "kept": kept})
            out[opt]["budget_steps"] += n * seeds * len(points)
            alive[opt] = kept
        if on_rung is not None:
            on_rung(r, out)
    # One more full-budget learning rate per optimizer (the same for all): beyond the best
    # when it lies at an end of the last rung, else between it and the runner-up.
    probes = {opt: _probe(rec) for opt, rec in out.items()} if probe else {}
    if probes:
        trials = [Trial(opt, lr, steps[-1], s) for opt, lr in probes.items() for s in range(seeds)]
        losses = run(trials)
        if len(losses) != len(trials):
            raise ValueError(f"run() returned {len(losses)} losses for {len(trials)} trials")
        for opt, lr in probes.items():
            out[opt]["probe"] = _point(
                lr, [v for t, v in zip(trials, losses) if t.optimizer == opt]
            )
            out[opt]["budget_steps"] += steps[-1] * seeds
        if on_rung is not None:
            on_rung(len(steps), out)
    for rec in out.values():
        full = list(rec["rungs"][-1]["points"]) + ([rec["probe"]] if "probe" in rec else [])
        best = min(full, key=lambda p: (p["mean"], p["lr"]))
        lrs = [p["lr"] for p in full]
        rec["best_lr"] = best["lr"]
        rec["best_loss"] = best["mean"]
        rec["at_edge"] = len(set(lrs)) > 1 and best["lr"] in (min(lrs), max(lrs))
    return out


def _probe(rec: dict[str, Any]) -> float:
    """The extra full-budget lr: the mirror image of the last rung's runner-up through its
    best (one grid step on, past the end the short rungs chose), or, when that was run
    already (the best is bracketed), the geometric midpoint of the best and the runner-up.
    With a single survivor, the runner-up is the previous rung's."""
    rungs = rec["rungs"]
    last = sorted(rungs[-1]["points"], key=lambda p: (p["mean"], p["lr"]))
    best = last[0]["lr"]
    if len(last) > 1:
        second = last[1]["lr"]
    else:
        before = sorted(
            (p for p in rungs[-2]["points"] if p["lr"] != best) if len(rungs) > 1 else [],
            key=lambda p: (p["mean"], p["lr"]),
        )
        grid = rec["grid"]
        if before:
            second = before[0]["lr"]
        elif len(grid) > 1:  # one rung, one survivor: the nearest grid point
            second = min((g for g in grid if g != best), key=lambda g: abs(math.log(g / best)))
        else:
            return best * 2.0
    mirror = best * best / second
    full_lrs = [p["lr"] for p in rungs[-1]["points"]]
    if any(math.isclose(mirror, lr, rel_tol=1e-6) for lr in full_lrs):
        return _round(math.sqrt(best * second))
    # a pruned grid point keeps its exact value
    return next((g for g in rec["grid"] if math.isclose(mirror, g, rel_tol=1e-6)), _round(mirror))


def _round(lr: float) -> float:
    """Three significant digits: a learning rate one can type."""
    return float(f"{lr:.3g}")


# ----------------------------------------------------------------------------- harness


def search_lrs(
    cfg: CompareConfig,
    train_plan: Callable[[CompareConfig, list[tuple[str, float, int]]], list[RunResult]],
    quiet: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run the search on ``cfg`` (resolved), training with ``train_plan(cfg, [(optimizer,
    lr, seed), ...])`` (the job's :meth:`normopt.experiments.runner.Runner.train`: passed in,
    so that this module does not import the harness). Returns the record per optimizer; the
    runner keeps the last rung's full-budget runs, which the comparison then reuses."""
    if cfg.steps is None or cfg.eval_every is None:
        raise ValueError("cfg: resolve() it first (steps and eval_every must be set)")
    seeds = cfg.tune_seeds or cfg.seeds
    lengths = rung_steps(cfg.steps, cfg.tune_rungs)

    def run(trials: list[Trial]) -> list[float]:
        n = trials[0].steps
        # shortened runs validate only at their end; full ones as the comparison does
        every = cfg.eval_every if n == cfg.steps else n
        rung = dataclasses.replace(cfg, steps=n, eval_every=every)
        runs = train_plan(rung, [(t.optimizer, t.lr, t.seed) for t in trials])
        return [r.final_val_loss for r in runs]

    def report(r: int, record: dict[str, dict[str, Any]]) -> None:
        if quiet:
            return
        what = f"rung {r + 1}/{len(lengths)}" if r < len(lengths) else "probe"
        print(
            f"lr search: {what} ({lengths[min(r, len(lengths) - 1)]} steps, {seeds} seed(s))",
            file=sys.stderr,
        )
        for opt, rec in record.items():
            if r == len(lengths):
                p = rec["probe"]
                print(f"  {opt}: probe {p['lr']:.3g}: {p['mean']:.4f}", file=sys.stderr)
                continue
            rung = rec["rungs"][r]
            points = ", ".join(f"{p['lr']:.3g}: {p['mean']:.4f}" for p in rung["points"])
            kept = ", ".join(f"{lr:.3g}" for lr in rung["kept"])
            print(f"  {opt}: {points}; kept {kept}", file=sys.stderr)

    return successive_halving(
        {opt: cfg.lr[opt] for opt in cfg.optimizers},
        cfg.tune_factors,
        lengths,
        cfg.tune_eta,
        seeds,
        run,
        report,
    )
