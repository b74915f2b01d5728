"""Kill-safe and resumable: every run is in the report folder when it ends, a signal writes
the partial report, and --resume ends with the report of an uninterrupted job."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from normopt.cli import main

pytestmark = pytest.mark.integration  # subprocesses and the harness end to end

SRC = Path(__file__).resolve().parents[2] / "src"


def _losses(metrics):
    """Everything a run computed (not its timings): per run, then per optimizer."""
    runs = [
        (r["optimizer"], r["lr"], r["seed"], r["train_loss"], r["eval"]["val_loss"])
        for r in metrics["runs"]
    ]
    summary = [(s["optimizer"], s.get("lr"), s.get("final_val_loss")) for s in metrics["summary"]]
    return runs, summary


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_sigterm_after_the_first_run_then_resume_gives_the_uninterrupted_report(tmp_path):
    args = ["compare", "--task", "synthetic", "--optimizers", "adamw,sgd", "--seeds", "2",
            "--steps", "300", "--eval-every", "50", "--jobs", "1"]  # fmt: skip
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "normopt.cli", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    runs = out / "runs"
    deadline = time.monotonic() + 120
    while not (runs.exists() and any(runs.glob("*.json"))):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no run finished in 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and f"--resume {out}" in err

    # the partial report: the finished run, and the run in flight so far, marked
    partial = _metrics(out)
    assert partial["partial"] and len(partial["runs"]) >= 1
    first = partial["runs"][0]
    assert (first["optimizer"], first["seed"], first["steps_done"]) == ("adamw", 0, 300)
    assert len(partial["runs"]) + len(partial["unfinished"]) <= 4
    if partial["unfinished"]:  # the next run had passed its first validation
        assert partial["unfinished"][0]["steps_done"] < 300
    summary = (out / "summary.md").read_text()
    assert "**Interrupted** (SIGTERM)" in summary and "Unfinished runs" in summary
    done = sorted(p.name for p in runs.glob("*.json"))
    assert len(done) == len(partial["runs"])

    # resume: only the missing runs are trained
    assert main(["compare", "--resume", str(out), "--quiet"]) == 0
    resumed = _metrics(out)
    assert not resumed["partial"]
    assert resumed["environment"]["resumed_runs"] == len(done)
    assert len(list(runs.glob("*.json"))) == 4

    whole = tmp_path / "whole"
    assert main([*args, "--out", str(whole), "--quiet"]) == 0
    assert _losses(resumed) == _losses(_metrics(whole))
    assert resumed["verdict"] == _metrics(whole)["verdict"]


def _drop_runs(folder, keep):
    """Delete all but ``keep`` run files: what a kill at that point leaves."""
    files = sorted((folder / "runs").glob("*.json"))
    for f in files[keep:]:
        f.unlink()
    return len(files)


def test_sweep_and_tune_resume_from_a_folder_missing_runs(tmp_path, capsys):
    sweep = ["sweep", "--task", "synthetic", "--optimizers", "adamw,sgd", "--steps", "8",
             "--lr-factors", "0.5,1,2", "--seeds", "2", "--quiet"]  # fmt: skip
    out = tmp_path / "sweep"
    assert main([*sweep, "--out", str(out)]) == 0
    before = _metrics(out)
    assert _drop_runs(out, keep=5) == 12
    assert main(["sweep", "--resume", str(out), "--quiet"]) == 0
    after = _metrics(out)
    assert after["environment"]["resumed_runs"] == 5
    assert _losses(after) == _losses(before)
    assert [s["basin"] for s in after["summary"]] == [s["basin"] for s in before["summary"]]

    tune = ["compare", "--task", "synthetic", "--optimizers", "adamw,sgd", "--tune",
            "--steps", "8", "--eval-every", "4", "--seeds", "1", "--quiet"]  # fmt: skip
    out = tmp_path / "tune"
    assert main([*tune, "--out", str(out)]) == 0
    before = _metrics(out)
    total = _drop_runs(out, keep=3)
    assert main(["compare", "--resume", str(out), "--quiet"]) == 0
    after = _metrics(out)
    assert after["environment"]["resumed_runs"] == 3
    assert len(list((out / "runs").glob("*.json"))) == total
    assert after["tuning"] == before["tuning"] and _losses(after) == _losses(before)


def test_resume_refuses_flags_that_change_the_job_and_runs_of_another_config(tmp_path, capsys):
    out = tmp_path / "r"
    base = ["compare", "--task", "synthetic", "--optimizers", "adamw", "--steps", "4", "--quiet"]
    assert main([*base, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", "--resume", str(out), "--steps", "5"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["compare", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "config.json" in capsys.readouterr().err
    # a run file from another config is refused, not mixed in
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(dict(config, weight_decay=0.1)))
    assert main(["compare", "--resume", str(out), "--quiet"]) == 2
    assert "another config" in capsys.readouterr().err
    # --jobs may change
    (out / "config.json").write_text(json.dumps(config))
    assert main(["compare", "--resume", str(out), "--jobs", "1", "--quiet"]) == 0


def test_ctrl_c_in_python_raises_job_interrupted_with_the_partial_metrics(tmp_path):
    """run_compare from Python: Ctrl-C (KeyboardInterrupt) mid-run gives JobInterrupted
    holding the finished runs and the interrupted run's curve so far."""
    import torch

    from normopt.experiments import CompareConfig, report, run_compare
    from normopt.experiments.compare import JobInterrupted
    from normopt.experiments.optimizers import OPTIMIZERS, register_optimizer

    class Stops(torch.optim.SGD):
        def step(self, closure=None):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 25:
                raise KeyboardInterrupt
            return super().step(closure)

    register_optimizer("test-ctrl-c", lr=0.1, summary="SGD that is interrupted at step 25")(
        lambda model, lr, cfg: Stops(model.parameters(), lr=lr)
    )
    try:
        cfg = CompareConfig(task="synthetic", optimizers=("adamw", "test-ctrl-c"), steps=40,
                            eval_every=10)  # fmt: skip
        with pytest.raises(JobInterrupted) as caught:
            run_compare(cfg, quiet=True)
    finally:
        del OPTIMIZERS["test-ctrl-c"]
    metrics = caught.value.metrics
    assert caught.value.signum == signal.SIGINT and metrics["partial"]
    assert [(r["optimizer"], r["steps_done"]) for r in metrics["runs"]] == [("adamw", 40)]
    (live,) = metrics["unfinished"]
    assert live["optimizer"] == "test-ctrl-c" and live["eval"]["step"] == [0, 10, 20]
    report.write_partial_report(dict(metrics, signal="SIGINT"), tmp_path)
    assert "| test-ctrl-c | 0.1 | 0 | 24/40 |" in (tmp_path / "summary.md").read_text()
