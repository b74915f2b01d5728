"""The learning-rate search of ``compare --tune``: on synthetic loss-vs-lr functions, and a
tiny end-to-end run on the synthetic task."""

import json
import math

import pytest

from normopt.cli import main
from normopt.experiments import config as C
from normopt.experiments.tune import Trial, rung_steps, successive_halving

FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _bowl(optimum, shift_short=0.0, full=100):
    """Final loss of a run: a parabola in log2(lr) around ``optimum``, whose minimum sits
    ``shift_short`` octaves lower for runs shorter than ``full``; longer runs end lower."""

    def loss(t: Trial) -> float:
        center = math.log2(optimum) - (shift_short if t.steps < full else 0.0)
        return 1.0 + 10.0 / t.steps + 0.3 * (math.log2(t.lr) - center) ** 2 + 1e-3 * t.seed

    return loss


def _runner(losses, log=None):
    def run(trials):
        if log is not None:
            log.extend(trials)
        return [losses[t.optimizer](t) for t in trials]

    return run


def test_finds_the_minimum_of_a_synthetic_loss():
    centers = {"a": 0.01, "b": 0.01, "c": 0.01, "edge": 0.01}
    losses = {
        "a": _bowl(0.01),  # at the centre
        "b": _bowl(0.021),  # between grid points: the nearer one (0.02) wins
        "c": _bowl(0.0025),  # at the lowest grid point...
        "edge": _bowl(1e-4),  # ...and far beyond it: flagged
    }
    out = successive_halving(centers, FACTORS, [25, 100], 2.0, 2, _runner(losses))
    assert out["a"]["best_lr"] == pytest.approx(0.01)
    assert out["b"]["best_lr"] == pytest.approx(0.02)
    assert out["c"]["best_lr"] == pytest.approx(0.0025)
    # past the grid's end, the probe goes one step further, and the choice is flagged
    assert out["edge"]["best_lr"] == pytest.approx(0.00125) and out["edge"]["at_edge"]
    assert [out[k]["at_edge"] for k in "abc"] == [False, False, False]
    # the chosen loss is the seed mean of the full-budget rung
    assert out["a"]["best_loss"] == pytest.approx(1.0 + 10 / 100 + 0.0005)
    for rec in out.values():
        assert [len(r["points"]) for r in rec["rungs"]] == [5, 3]
        assert [len(r["kept"]) for r in rec["rungs"]] == [3, 1]


def test_survivors_are_the_best_of_each_rung():
    """Short runs favour a smaller lr (the optimum drifts with the budget): halving keeps
    enough survivors (eta 2: 3 of 5) to find the full-budget optimum; keeping one (eta 5)
    takes the short runs' choice (without the probe)."""
    centers = {"opt": 0.01}
    losses = {"opt": _bowl(0.02, shift_short=1.0)}  # short runs: 0.01; full runs: 0.02
    kept3 = successive_halving(centers, FACTORS, [25, 100], 2.0, 1, _runner(losses))
    assert kept3["opt"]["rungs"][0]["kept"] == pytest.approx([0.005, 0.01, 0.02])
    assert kept3["opt"]["best_lr"] == pytest.approx(0.02)
    kept1 = successive_halving(centers, FACTORS, [25, 100], 5.0, 1, _runner(losses), probe=False)
    assert kept1["opt"]["rungs"][0]["kept"] == pytest.approx([0.01])
    assert kept1["opt"]["best_lr"] == pytest.approx(0.01)
    # three rungs, 5 -> 3 -> 2: with the short-run optimum 0.9 octaves low, the second
    # short rung keeps 0.01 and 0.02 (not 0.005), and the full one picks 0.02
    losses = {"opt": _bowl(0.02, shift_short=0.9)}
    three = successive_halving(centers, FACTORS, [10, 25, 100], 2.0, 1, _runner(losses))
    assert [len(r["points"]) for r in three["opt"]["rungs"]] == [5, 3, 2]
    assert three["opt"]["rungs"][1]["kept"] == pytest.approx([0.01, 0.02])
    assert three["opt"]["best_lr"] == pytest.approx(0.02)


def test_probe_steps_past_the_survivors_or_refines_between_them():
    """Short runs favour a 4x larger lr: the full-budget best is the smallest survivor, and
    the probe (the runner-up mirrored through it) finds the pruned true optimum."""
    centers = {"opt": 0.01}
    losses = {"opt": _bowl(0.005, shift_short=-2.0)}  # short runs: 0.02; full runs: 0.005
    out = successive_halving(centers, FACTORS, [25, 100], 2.0, 1, _runner(losses))
    assert out["opt"]["rungs"][0]["kept"] == pytest.approx([0.01, 0.02, 0.04])
    assert out["opt"]["probe"]["lr"] == 0.005 and out["opt"]["best_lr"] == 0.005
    off = successive_halving(centers, FACTORS, [25, 100], 2.0, 1, _runner(losses), probe=False)
    assert off["opt"]["best_lr"] == pytest.approx(0.01) and "probe" not in off["opt"]
    # beyond the grid: flagged at the edge
    losses = {"opt": _bowl(0.1, shift_short=1.0)}
    out = successive_halving(centers, FACTORS, [25, 100], 2.0, 1, _runner(losses))
    assert out["opt"]["rungs"][0]["kept"] == pytest.approx([0.01, 0.02, 0.04])
    assert out["opt"]["probe"]["lr"] == 0.08 and out["opt"]["best_lr"] == 0.08
    assert out["opt"]["at_edge"]
    # bracketed: the midpoint of the best and the runner-up
    losses = {"opt": _bowl(0.012)}
    out = successive_halving(centers, FACTORS, [25, 100], 2.0, 1, _runner(losses))
    assert out["opt"]["probe"]["lr"] == 0.0141  # sqrt(0.01 * 0.02), 3 digits
    assert out["opt"]["best_lr"] == 0.0141 and not out["opt"]["at_edge"]


def test_budgets_are_equal_across_optimizers():
    """Every optimizer trains the same runs' worth of steps, whatever its losses: diverged
    (inf) and NaN points included."""

    def diverges_high(t):
        return math.inf if t.lr > 0.01 else _bowl(0.01)(t)

    def nan_sometimes(t):
        return math.nan if t.seed == 1 and t.lr < 0.01 else _bowl(0.05)(t)

    centers = {"plain": 0.01, "diverges": 0.01, "nan": 0.02, "flat": 1e-3}
    losses = {"plain": _bowl(0.01), "diverges": diverges_high, "nan": nan_sometimes,
              "flat": lambda t: 2.0}  # fmt: skip
    log: list[Trial] = []
    steps = rung_steps(600, (0.25, 1.0))
    assert steps == [150, 600]
    out = successive_halving(centers, FACTORS, steps, 2.0, 3, _runner(losses, log))
    spent = {opt: sum(t.steps for t in log if t.optimizer == opt) for opt in centers}
    expected = (5 * 150 + 3 * 600 + 600) * 3  # 5 short runs, 3 full ones, 1 full probe
    assert set(spent.values()) == {expected}
    assert all(out[opt]["budget_steps"] == expected for opt in centers)
    # a diverged or NaN seed makes the point inf, and inf is never chosen over a finite loss
    assert out["diverges"]["best_lr"] <= 0.01
    first = [p["mean"] for p in out["nan"]["rungs"][0]["points"]]  # lrs 0.005 ... 0.08
    assert first[0] == math.inf and all(math.isfinite(v) for v in first[1:])
    assert math.isfinite(out["nan"]["best_loss"])
    assert out["flat"]["best_lr"] == pytest.approx(0.125e-3)  # ties: the smaller (the probe)


def test_search_arguments_are_checked():
    run = _runner({"a": _bowl(0.01)})
    with pytest.raises(ValueError, match="increase"):
        successive_halving({"a": 0.01}, FACTORS, [100, 100], 2.0, 1, run)
    with pytest.raises(ValueError, match="eta"):
        successive_halving({"a": 0.01}, FACTORS, [25, 100], 1.0, 1, run)
    with pytest.raises(ValueError, match="--tune-rungs"):
        C.CompareConfig(tune_rungs=(0.5, 0.25))
    with pytest.raises(ValueError, match="--tune-rungs"):
        C.CompareConfig(tune_rungs=(0.25, 0.5))  # the last rung is the full budget
    with pytest.raises(ValueError, match="--tune-factors"):
        C.CompareConfig(tune_factors=(1.0, 1.0))
    with pytest.raises(ValueError, match="--tune-eta"):
        C.CompareConfig(tune_eta=1.0)


# ----------------------------------------------------------------------------- end to end


def test_compare_tune_end_to_end(tmp_path, capsys):
    out = tmp_path / "tuned"
    argv = ["compare", "--task", "synthetic", "--optimizers", "adamw,muon,lion", "--tune",
            "--steps", "16", "--eval-every", "4", "--tune-factors", "0.5,1,2",
            "--tune-rungs", "0.5,1", "--seeds", "2", "--tune-seeds", "1", "--out", str(out),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "search steps" in printed and "lr (searched)" in printed
    for name in ("summary.md", "metrics.json", "config.json", "lr_search.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    tuning = metrics["tuning"]
    assert tuning["seeds"] == 1
    budgets = {rec["budget_steps"] for rec in tuning["optimizers"].values()}
    assert budgets == {3 * 8 + 2 * 16 + 16}  # 3 lrs x 8 steps, 2 survivors x 16, a probe
    for s in metrics["summary"]:
        rec = tuning["optimizers"][s["optimizer"]]
        assert s["lr"] == rec["best_lr"] in [*rec["grid"], rec["probe"]["lr"]]
        assert all(r["lr"] == s["lr"] for r in metrics["runs"] if r["optimizer"] == s["optimizer"])
        # seed 0 of the comparison is the search's own full-budget run of the chosen lr
        seed0 = next(r for r in metrics["runs"] if r["optimizer"] == s["optimizer"])
        assert seed0["final_val_loss"] == pytest.approx(rec["best_loss"])
    assert len(metrics["runs"]) == 3 * 2
    summary = (out / "summary.md").read_text()
    assert "![lr search](lr_search.png)" in summary and "Every point of the lr search" in summary
    assert json.loads((out / "config.json").read_text())["tune"] is True
    # the saved config searches again (from the same centres) and lands on the same lrs
    again = tmp_path / "again"
    assert (
        main(["compare", "--config", str(out / "config.json"), "--out", str(again), "--quiet"]) == 0
    )
    rerun = json.loads((again / "metrics.json").read_text())
    assert [s["lr"] for s in rerun["summary"]] == [s["lr"] for s in metrics["summary"]]

    # The comparison at the chosen lrs alone gives the same runs: reuse changed nothing.
    lrs = ",".join(f"{s['optimizer']}={s['lr']!r}" for s in metrics["summary"])
    plain = tmp_path / "plain"
    # --adamw-lr: the hybrids' AdamW part stays where the search held it (else --lr adamw=...)
    argv = ["compare", "--task", "synthetic", "--optimizers", "adamw,muon,lion", "--lr", lrs,
            "--adamw-lr", str(metrics["config"]["adamw_lr"]), "--steps", "16", "--eval-every", "4", "--seeds", "2", "--out", str(plain), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    again = json.loads((plain / "metrics.json").read_text())
    assert again["tuning"] is None
    assert [r["eval"]["val_loss"] for r in again["runs"]] == [
        r["eval"]["val_loss"] for r in metrics["runs"]
    ]


def test_jobs_do_not_change_results(tmp_path):
    """--jobs 2 trains in two spawned processes: the same numbers, in the same order."""
    base = ["compare", "--task", "synthetic", "--optimizers", "adamw,sgd", "--steps", "10",
            "--eval-every", "5", "--seeds", "2", "--threads", "1", "--quiet"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "one")]) == 0
    assert main([*base, "--jobs", "2", "--out", str(tmp_path / "two")]) == 0
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    key = [(r["optimizer"], r["seed"], r["eval"]["val_loss"], r["train_loss"]) for r in one["runs"]]
    assert key == [
        (r["optimizer"], r["seed"], r["eval"]["val_loss"], r["train_loss"]) for r in two["runs"]
    ]


def test_hybrids_keep_the_adamw_part_they_were_searched_with():
    """digits' AdamW searched to 0.04, but muon & co. were searched with their AdamW part at
    0.02: the task says so (Task.adamw_lr), and --lr adamw / --adamw-lr still override it."""
    cfg = C.resolve(C.CompareConfig(task="digits", optimizers=("adamw", "muon")))
    assert cfg.lr["adamw"] == 0.04 and cfg.adamw_lr == 0.02
    assert C.resolve(C.CompareConfig(task="digits", lr={"adamw": 0.01})).adamw_lr == 0.01
    assert C.resolve(C.CompareConfig(task="digits", adamw_lr=0.03)).adamw_lr == 0.03
