"""The verdict: winner, paired differences with their 95% interval, and the warnings."""

import math
import statistics

import pytest

from normopt.experiments import parallel
from normopt.experiments.compare import to_reference, verdict
from normopt.experiments.report import verdict_text
from normopt.experiments.stats import paired_difference, t_975
from normopt.experiments.train import RunResult


def _run(opt, seed, final, curve=None, diverged=False):
    curve = curve or [2.0, 1.5, final]
    return RunResult(opt, seed, 0.1, 20, diverged=diverged, train_loss=[1.0] * 20,
                     step_time=[0.01] * 20, step_cpu=[0.005] * 20,
                     eval_step=[0, 10, 20][: len(curve)], eval_time=[0.0, 0.1, 0.2][: len(curve)],
                     eval_cpu=[0.0, 0.05, 0.1][: len(curve)], val_loss=curve,
                     val_acc=[0.5] * len(curve))  # fmt: skip


def test_t_quantiles():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 29, 30, 31, 40, 100, 1000):
        assert t_975(df) == pytest.approx(float(scipy_stats.t.ppf(0.975, df)), abs=2e-4)
    with pytest.raises(ValueError, match="df"):
        t_975(0)


def test_paired_difference_and_its_interval():
    d = paired_difference([0.3, 0.25, 0.3])
    half = 4.3027 * statistics.stdev([0.3, 0.25, 0.3]) / math.sqrt(3)
    assert d["mean"] == pytest.approx(0.85 / 3)
    assert (d["lo"], d["hi"]) == pytest.approx((0.85 / 3 - half, 0.85 / 3 + half))
    assert d["significant"]
    noisy = paired_difference([0.3, -0.2, 0.1])
    assert noisy["lo"] < 0 < noisy["hi"] and not noisy["significant"]
    one = paired_difference([0.3])
    assert one["mean"] == 0.3 and math.isnan(one["lo"]) and not one["significant"]


def test_verdict_on_a_comparison_whose_winner_is_known():
    a = [_run("a", s, f) for s, f in enumerate([1.0, 1.1, 1.2])]
    b = [_run("b", s, f) for s, f in enumerate([1.3, 1.35, 1.5])]  # worse on every seed
    c = [_run("c", s, f) for s, f in enumerate([0.5, 0.6])] + [_run("c", 2, 0.4, diverged=True)]
    v = verdict({"a": a, "b": b, "c": c})
    # c is lowest on the seeds it finished, but it diverged on one: it cannot win
    assert v["winner"] == "a" and v["seeds"] == 3 and v["diverged"] == {"c": [2]}
    pair = v["pairs"]["b"]
    half = 4.3027 * statistics.stdev([0.3, 0.25, 0.3]) / math.sqrt(3)
    assert pair["per_seed"] == pytest.approx([0.3, 0.25, 0.3])
    assert (pair["lo"], pair["hi"]) == pytest.approx((0.85 / 3 - half, 0.85 / 3 + half))
    assert pair["significant"] and v["pairs"]["c"]["diverged"] == 1

    metrics = {
        "verdict": v,
        "config": {"eval_every": 10},
        "environment": {"load_average_max": 0.5, "cpus_available": 2},
        "reference": {"optimizer": "a"},
        "summary": [
            {"optimizer": "a", "to_reference": to_reference(a, a)},
            {"optimizer": "b", "to_reference": to_reference(b, a)},
        ],
    }
    text = verdict_text(metrics)
    assert text.startswith("**Verdict.** a reached the lowest final validation loss, 1.1000 ± ")
    lo, hi = 0.85 / 3 - half, 0.85 / 3 + half
    assert f"b +0.2833 (95% interval {lo:+.4f} to {hi:+.4f}, significant)" in text
    assert "c diverged on seed(s) 2" in text
    assert "b never did" in text  # b never reaches a's final loss
    assert "load average" not in text and "One seed" not in text

    # one seed, and a loaded machine: both said
    metrics["verdict"] = verdict({"a": a[:1], "b": b[:1]})
    metrics["environment"]["load_average_max"] = 3.5
    text = verdict_text(metrics)
    assert "b +0.3000 (one seed: no interval)" in text
    assert "One seed: no interval" in text and "The load average reached 3.5 on 2 CPU(s)" in text


def test_to_reference_is_paired_by_seed():
    ref = [_run("ref", 0, 1.0), _run("ref", 1, 1.4)]
    # seed 0 reaches 1.0 at step 20, seed 1 reaches 1.4 at step 10 (1.3 <= 1.4)
    runs = [_run("x", 0, 0.9, curve=[2.0, 1.2, 0.9]), _run("x", 1, 1.1, curve=[2.0, 1.3, 1.1])]
    reach = to_reference(runs, ref)
    assert reach["per_seed"]["steps"] == [20.0, 10.0] and reach["reached"] == 2
    assert reach["steps"]["mean"] == 15.0 and reach["cpu_seconds"]["mean"] == pytest.approx(0.075)


@pytest.mark.integration
def test_verdict_of_a_real_comparison(capsys):
    """On the synthetic task AdamW beats SGD at a learning rate far too small to move."""
    from normopt.experiments import CompareConfig, run_compare

    cfg = CompareConfig(task="synthetic", optimizers=("adamw", "sgd"), steps=30, seeds=3,
                        lr={"sgd": 1e-4}, jobs=1)  # fmt: skip
    metrics = run_compare(cfg, quiet=True)
    v = metrics["verdict"]
    assert v["winner"] == "adamw" and v["pairs"]["sgd"]["significant"]
    assert v["pairs"]["sgd"]["lo"] > 0.1
    assert verdict_text(metrics).startswith("**Verdict.** adamw reached the lowest")


def test_parallel_plan():
    kw = dict(jobs=None, threads=None, device_type="cpu", portable=True, free_memory=2**36)
    plan = parallel.choose(3, estimated_seconds=400, cpus=2, load=0.2, **kw)
    assert (plan.jobs, plan.threads) == (3, 1) and "one thread per run" in plan.reason
    assert "busy" not in plan.reason
    busy = parallel.choose(3, estimated_seconds=400, cpus=2, load=4.0, **kw)
    assert busy.jobs == 3 and "busy" in busy.reason
    assert parallel.choose(9, estimated_seconds=400, cpus=2, load=0.0, **kw).jobs == 4
    assert parallel.choose(3, estimated_seconds=5, cpus=2, load=0.0, **kw).jobs == 1
    assert parallel.choose(3, estimated_seconds=400, cpus=2, load=0.0,
                           **dict(kw, portable=False)).jobs == 1  # fmt: skip
    assert parallel.choose(3, estimated_seconds=400, cpus=2, load=0.0,
                           **dict(kw, device_type="cuda")).jobs == 1  # fmt: skip
    small = parallel.choose(3, estimated_seconds=400, cpus=8, load=0.0,
                            **dict(kw, free_memory=parallel.WORKER_BYTES * 2))  # fmt: skip
    assert small.jobs == 2 and "free memory" in small.reason
    asked = parallel.choose(3, estimated_seconds=1, cpus=2, load=0.0, **dict(kw, jobs=2))
    assert asked.jobs == 2 and asked.reason.startswith("--jobs 2")
    assert "3 run(s), 3 at once" in plan.describe(3)


@pytest.mark.integration
def test_same_losses_whatever_the_machine(monkeypatch, tmp_path):
    """Two automatic settings (a 1-CPU machine: in this process; 2 CPUs: worker processes)
    give the same numbers."""
    import json

    from normopt.cli import main

    def run(cpus, out):
        monkeypatch.setattr(parallel, "available_cpus", lambda: cpus)
        monkeypatch.setattr(parallel, "MIN_PARALLEL_SECONDS", 0.0 if cpus > 1 else math.inf)
        argv = ["compare", "--task", "synthetic", "--optimizers", "adamw,muon", "--steps", "12",
                "--eval-every", "4", "--quiet", "--out", str(out)]  # fmt: skip
        assert main(argv) == 0
        return json.loads((out / "metrics.json").read_text())

    one, two = run(1, tmp_path / "one"), run(2, tmp_path / "two")
    assert "in this process" in one["environment"]["parallel"][0]
    assert "2 at once" in two["environment"]["parallel"][0]
    key = [(r["optimizer"], r["seed"], r["train_loss"], r["eval"]["val_loss"]) for r in one["runs"]]
    assert key == [(r["optimizer"], r["seed"], r["train_loss"], r["eval"]["val_loss"])
                   for r in two["runs"]]  # fmt: skip
