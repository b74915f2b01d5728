"""The README's first command, timed: ``normopt compare`` at its defaults, on a quiet machine
and with competing CPU-bound processes, wall-clock and CPU time, and the same numbers.

    python3 benchmarks/main_job.py --out /tmp/main-job      # on an otherwise idle machine

runs ``normopt compare`` (shakespeare-char; adamw, muon, lion; 1 seed; 600 steps; threads
and parallel runs chosen by the harness) twice: first alone, then while ``--hogs`` (default
2) other processes spin one CPU each (``while True: pass``: what another user's
single-threaded job does to a shared machine). For each it records the wall-clock time of
the whole command (``time normopt compare``), the CPU time of the command and every process
it started (``getrusage(RUSAGE_CHILDREN)``, user + system), the plan the harness printed
and the final validation losses, and checks that the losses are identical (they must be:
one torch thread per run). ``--steps N`` makes a short run to check the script itself.

Prints a markdown table and writes it, with the raw numbers, to ``OUT/main_job.json``.
The timings mean something only on a machine with nothing else running: run it there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HOG = "while True: pass"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_compare(out: Path, extra: list[str], hogs: int) -> dict[str, Any]:
    """One ``normopt compare`` into ``out`` with ``hogs`` spinning processes beside it."""
    env = {**os.environ}
    spinners = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
    try:
        time.sleep(1.0 if hogs else 0.0)  # let them take their CPUs first
        cpu0, t0 = children_cpu(), time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "normopt.cli", "compare", "--out", str(out), *extra],
            capture_output=True,
            text=True,
            env=env,
        )
        wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
        load = os.getloadavg()[0]
    finally:
        for s in spinners:  # reaped after the measurement: their CPU is not counted
            s.kill()
            s.wait()
    if proc.returncode != 0:
        raise SystemExit(f"normopt compare failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    plan = [line for line in proc.stderr.splitlines() if line.startswith("normopt compare: ")]
    return {
        "hogs": hogs,
        "wall_s": wall,
        "cpu_s": cpu,
        "load_at_end": load,
        "plan": plan,
        "final_val_loss": {s["optimizer"]: s["final_val_loss"]["mean"] for s in metrics["summary"]},
        "curves": [r["eval"]["val_loss"] for r in metrics["runs"]],
        "report": str(out / "summary.md"),
    }


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the two reports and the results")
    p.add_argument("--hogs", type=int, default=2, help="competing CPU-bound processes")
    p.add_argument("--steps", type=int, default=None, help="a shorter run (checks the script)")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = ["--quiet"] + (["--steps", str(a.steps)] if a.steps else [])
    rows = [
        run_compare(out / "quiet", extra, 0),
        run_compare(out / f"with-{a.hogs}-hogs", extra, a.hogs),
    ]
    same = rows[0]["curves"] == rows[1]["curves"]
    result = {
        "command": "normopt compare" + (f" --steps {a.steps}" if a.steps else ""),
        "machine": {
            "cpu": cpu_name(),
            "cpus_available": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d"),
        "identical_losses": same,
        "runs": rows,
    }
    (out / "main_job.json").write_text(json.dumps(result, indent=2) + "\n")
    names = list(rows[0]["final_val_loss"])
    print(f"{result['command']} on {result['machine']['cpu']}, "
          f"{result['machine']['cpus_available']} CPUs, {result['date']}\n")  # fmt: skip
    print("| condition | wall | CPU (all processes) | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in rows:
        what = "quiet" if r["hogs"] == 0 else f"{r['hogs']} CPU-bound processes beside it"
        losses = " | ".join(f"{r['final_val_loss'][n]:.4f}" for n in names)
        print(f"| {what} | {minutes(r['wall_s'])} | {minutes(r['cpu_s'])} | {losses} |")
    print(f"\nidentical losses and curves in both conditions: {'yes' if same else 'NO'}")
    for r in rows:
        for line in r["plan"]:
            print(f"[{r['hogs']} hogs] {line}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
