"""`normopt compare` without the experiments extra, and its progress when stderr is a file."""

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cli_runs import compare_one_step

from normopt.experiments import CompareConfig, run_compare
from normopt.experiments.progress import LineProgress

SRC = Path(__file__).resolve().parents[2] / "src"

# A Python without the experiments extra: a meta-path finder that refuses its modules,
# installed before normopt is imported.
BLOCKER = textwrap.dedent(
    """
    import sys

    class Missing:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"matplotlib", "sklearn", "tqdm"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    for name in list(sys.modules):
        if name.split(".")[0] in {"matplotlib", "sklearn", "tqdm"}:
            del sys.modules[name]
    from normopt.cli import main
    raise SystemExit(main(sys.argv[1:]))
    """
)


def test_compare_without_the_extra_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, "compare", "--task", "synthetic", "--steps", "2",
         "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert 'pip install "normopt[experiments]"' in lines[0]
    assert "matplotlib" in lines[0] and "tqdm" in lines[0]
    assert not out.exists()


def test_a_task_that_needs_scikit_learn_says_so(monkeypatch, tmp_path, capsys):
    from normopt.experiments import data as D

    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn: ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    code = compare_one_step("digits", D.load_digits, tmp_path / "r")
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "scikit-learn" in err
    assert 'pip install "normopt[experiments]"' in err and "Traceback" not in err


def test_compare_prints_a_line_per_run_when_stderr_is_not_a_terminal(capsys):
    cfg = CompareConfig(task="synthetic", optimizers=("adamw", "muon"), steps=6, eval_every=3)
    run_compare(cfg)
    plan, *lines = capsys.readouterr().err.strip().splitlines()
    # first what was chosen and why (parallel.choose), then a line per run, each with an ETA
    assert plan.startswith("normopt compare: 2 run(s), in this process, 1 torch thread(s)")
    assert "less than starting processes would pay back" in plan
    assert len(lines) == 2, lines
    assert all(", ETA " in line for line in lines)
    assert lines[0].startswith("[6/12 steps, ") and "adamw lr=" in lines[0]
    assert lines[1].startswith("[12/12 steps, ") and "muon lr=" in lines[1]
    assert all("loss " in line and line.endswith("run ended") for line in lines)

    run_compare(cfg, quiet=True)
    assert capsys.readouterr().err == ""


def test_line_progress_speaks_every_interval_within_a_run():
    stream = io.StringIO()
    with LineProgress(total=6, stream=stream, interval=0.0) as bar:
        bar.set_description("sgd lr=0.1 seed=0")
        for _ in range(3):
            bar.set_postfix(loss="1.500", refresh=False)
            bar.update(1)
        bar.set_description("sgd lr=0.1 seed=1")
        bar.update(3)
    lines = stream.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "sgd lr=0.1 seed=0: loss 1.500; step 1",
        "sgd lr=0.1 seed=0: loss 1.500; step 2",
        "sgd lr=0.1 seed=0: loss 1.500; step 3",
        "sgd lr=0.1 seed=0: loss 1.500; run ended",
        "sgd lr=0.1 seed=1: step 3",
        "sgd lr=0.1 seed=1: run ended",
    ]
    assert lines[-1].startswith("[6/6 steps, 0m0")

    quiet = io.StringIO()
    with LineProgress(total=2, stream=quiet, interval=0.0, enabled=False) as bar:
        bar.set_description("x")
        bar.update(2)
    assert quiet.getvalue() == ""


def test_line_progress_estimates_the_time_left(monkeypatch):
    from normopt.experiments import progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    bar = LineProgress(total=100, stream=stream, interval=0.0)
    bar.note("start")
    now[0] += 30.0
    bar.update(25)  # 25 steps in 30 s: 75 left take 90 s
    bar.status("a 25/50; b 0/50")
    bar.update(0)
    now[0] += 30.0
    bar.update(25)
    now[0] += 3600.0
    bar.update(49)
    bar.note("a: final val loss 1.0, run ended")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[0/100 steps, 0m00s, ETA ?] start"
    assert lines[1] == "[50/100 steps, 1m00s, ETA 1m00s] a 25/50; b 0/50"
    assert lines[2] == "[99/100 steps, 1h01m, ETA 0m36s] a 25/50; b 0/50"
    assert lines[3].endswith("a: final val loss 1.0, run ended")
