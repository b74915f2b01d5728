"""The training loop, the statistics, and tiny end-to-end runs of compare and sweep."""

import json
import math

import pytest
import torch

from normopt.cli import main
from normopt.experiments import config as C
from normopt.experiments.compare import basin, resolve_device, time_to_target
from normopt.experiments.optimizers import OPTIMIZERS, register_optimizer
from normopt.experiments.tasks import get_task
from normopt.experiments.train import lr_factor, train

pytestmark = pytest.mark.integration  # the harness end to end: tasks, training, reports

CPU = torch.device("cpu")


def _finite_numbers(x):
    """Every number anywhere in a JSON document."""
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return []
    if isinstance(x, (int, float)):
        return [x]
    items = x.values() if isinstance(x, dict) else x
    return [v for item in items for v in _finite_numbers(item)]


def test_same_init_and_data_order_for_every_optimizer():
    problem = get_task("synthetic").setup(CPU)
    a, b = problem.train_batches(8, seed=3), problem.train_batches(8, seed=3)
    for _ in range(100):  # past an epoch boundary (512 / 8 = 64 batches)
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    cfg = C.resolve(C.CompareConfig(task="synthetic", optimizers=("adamw", "sgd"), steps=1))
    val = problem.val_batches(32)
    r1 = train(problem, "adamw", 1e-2, 0, cfg, CPU, val)
    r2 = train(problem, "sgd", 1e-1, 0, cfg, CPU, val)
    assert r1.val_loss[0] == r2.val_loss[0] and r1.train_loss[0] == r2.train_loss[0]


def test_char_lm_batches_are_shifted_windows():
    from normopt.experiments.data import CharCorpus
    from normopt.experiments.tasks import CharLMProblem

    ids = torch.arange(200, dtype=torch.uint8) % 50
    corpus = CharCorpus(ids[:150], ids[150:], "".join(chr(65 + i) for i in range(50)), ("x",))
    problem = CharLMProblem(corpus, CPU, block_size=8, n_layer=1, d=16, n_head=2, val_windows=5)
    x, y = next(problem.train_batches(4, seed=0))
    assert x.shape == y.shape == (4, 8) and torch.equal(x[:, 1:], y[:, :-1])
    assert [b[0].shape[0] for b in problem.val_batches(2)] == [2, 2, 1]
    cfg = C.resolve(C.CompareConfig(task="shakespeare-char", optimizers=("torch-muon",), steps=3))
    run = train(problem, "torch-muon", 0.02, 0, cfg, CPU, problem.val_batches(2))
    assert len(run.train_loss) == 3 and all(math.isfinite(v) for v in run.val_loss)


def test_schedule():
    assert [lr_factor(s, 10, 0.2, "constant") for s in range(3)] == [0.5, 1.0, 1.0]
    assert lr_factor(2, 10, 0.2, "cosine") == 1.0 and lr_factor(9, 10, 0.2, "linear") == 0.125
    assert 0 < lr_factor(9, 10, 0.0, "cosine") < 0.03


def test_divergence_is_detected():
    problem = get_task("synthetic").setup(CPU)
    cfg = C.resolve(C.CompareConfig(task="synthetic", optimizers=("sgd",), steps=40, warmup=0.0))
    run = train(problem, "sgd", 1e4, 0, cfg, CPU, problem.val_batches(32))
    assert run.diverged and run.final_val_loss == math.inf and len(run.train_loss) < 40


def test_basin_and_time_to_target():
    lrs = [0.01, 0.02, 0.04, 0.08, 0.16]
    b = basin(lrs, [1.0, 0.62, 0.6, 0.64, math.inf], "+0.05")
    assert (b["best_lr"], b["lo"], b["hi"], b["width"]) == (0.04, 0.02, 0.08, 4.0)
    assert b["octaves"] == 2.0 and not b["open_low"] and not b["open_high"]
    assert basin(lrs, [0.6, 0.61, 0.7, 0.6, 0.6], "5%")["hi"] == 0.02  # contiguous from the best
    assert math.isnan(basin(lrs, [math.inf] * 5, "+0.05")["width"])
    ref = basin(lrs, [1.0, 0.62, 0.6, 0.64, math.inf], threshold=0.63)
    assert (ref["lo"], ref["hi"]) == (0.02, 0.04)
    assert math.isnan(basin(lrs, [0.7] * 5, threshold=0.63)["width"])  # never gets there
    curve = {"step": [0, 10, 20], "time": [0.0, 1.0, 2.0], "val_loss": [2.0, 1.5, 1.2]}
    assert time_to_target(curve, 1.5) == (10, 1.0)
    assert all(math.isnan(v) for v in time_to_target(curve, 1.0))


def test_registry_takes_a_hybrid_in_one_entry():
    @register_optimizer("test-hybrid", lr=0.01, summary="SGD on matrices, AdamW on the rest")
    def _hybrid(model, lr, cfg):
        from normopt.experiments.optimizers import split_params

        hidden, other = split_params(model)
        return [torch.optim.SGD(hidden, lr=lr), torch.optim.AdamW(other, lr=cfg.adamw_lr)]

    try:
        problem = get_task("synthetic").setup(CPU)
        cfg = C.resolve(C.CompareConfig(task="synthetic", optimizers=("test-hybrid",), steps=5))
        run = train(problem, "test-hybrid", 0.01, 0, cfg, CPU, problem.val_batches(32))
        assert len(run.train_loss) == 5
    finally:
        del OPTIMIZERS["test-hybrid"]


def test_schedule_reaches_every_lr_of_a_hybrid_optimizer():
    """normopt.Muon's AdamW groups carry their own "lr": the schedule scales it too."""
    import normopt

    made = []

    @register_optimizer("test-capture", lr=0.02, summary="normopt.Muon, kept for inspection")
    def _capture(model, lr, cfg):
        made.append(normopt.Muon(model, lr=lr, adamw_lr=cfg.adamw_lr))
        return made[-1]

    try:
        problem = get_task("synthetic").setup(CPU)
        cfg = C.resolve(
            C.CompareConfig(task="synthetic", optimizers=("test-capture",), steps=4, warmup=0.0)
        )
        train(problem, "test-capture", 0.02, 0, cfg, CPU, problem.val_batches(32))
        factor = lr_factor(3, 4, 0.0, "cosine")
        kinds = {g["algorithm"] for g in made[0].param_groups}
        assert kinds == {"muon", "adamw"}
        for group in made[0].param_groups:
            base = 0.02 if group["algorithm"] == "muon" else cfg.adamw_lr
            assert group["lr"] == pytest.approx(base * factor)
    finally:
        del OPTIMIZERS["test-capture"]


def test_nonfinite_gradient_error_means_diverged():
    import normopt

    class Refuses(torch.optim.SGD):
        def step(self, closure=None):
            raise normopt.NonFiniteGradientError("gradient of w holds NaN")

    register_optimizer("test-refuses", lr=0.1, summary="raises")(
        lambda model, lr, cfg: Refuses(model.parameters(), lr=lr)
    )
    try:
        problem = get_task("synthetic").setup(CPU)
        cfg = C.resolve(C.CompareConfig(task="synthetic", optimizers=("test-refuses",), steps=5))
        run = train(problem, "test-refuses", 0.1, 0, cfg, CPU, problem.val_batches(32))
        assert run.diverged and run.final_val_loss == math.inf and run.train_loss == []
    finally:
        del OPTIMIZERS["test-refuses"]


def test_device_auto():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- end to end


def test_compare_end_to_end_and_rerun_from_config(tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["compare", "--task", "synthetic", "--optimizers", "adamw,torch-muon", "--steps", "12",
            "--seeds", "2", "--eval-every", "4", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "torch-muon" in printed and "final val loss" in printed and "summary.md" in printed
    for name in (
        "summary.md",
        "metrics.json",
        "config.json",
        "loss_vs_step.png",
        "loss_vs_time.png",
    ):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["runs"]) == 4 and not any(r["diverged"] for r in metrics["runs"])
    numbers = _finite_numbers(metrics["runs"]) + _finite_numbers(metrics["summary"])
    assert numbers and all(math.isfinite(v) for v in numbers)
    assert metrics["runs"][0]["eval"]["step"] == [0, 4, 8, 12]
    assert "| torch-muon |" in (out / "summary.md").read_text()

    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 12 and config["lr"] == {"adamw": 0.02, "torch-muon": 0.05}
    again = tmp_path / "again"
    assert (
        main(["compare", "--config", str(out / "config.json"), "--out", str(again), "--quiet"]) == 0
    )
    rerun = json.loads((again / "metrics.json").read_text())
    assert [r["eval"]["val_loss"] for r in rerun["runs"]] == [
        r["eval"]["val_loss"] for r in metrics["runs"]
    ]


def test_sweep_end_to_end(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--task", "synthetic", "--optimizers", "adamw,muon", "--steps", "10",
            "--lr-factors", "0.5,1,2", "--seeds", "2", "--basin", "5%", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "within 5% of the best" in capsys.readouterr().out
    for name in ("summary.md", "metrics.json", "config.json", "sweep.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["runs"]) == 2 * 3 * 2
    for s in metrics["summary"]:
        assert len(s["points"]) == 3
        b = s["basin"]
        assert all(math.isfinite(b[k]) for k in ("best_lr", "best_loss", "lo", "hi", "width"))
        assert b["lo"] <= b["best_lr"] <= b["hi"]
    assert metrics["reference"]["optimizer"] == "adamw"
    adamw = metrics["summary"][0]
    assert adamw["beats_reference"]["best_lr"] == adamw["basin"]["best_lr"]
    assert [p["lr"] for p in metrics["summary"][0]["points"]] == pytest.approx([0.01, 0.02, 0.04])
