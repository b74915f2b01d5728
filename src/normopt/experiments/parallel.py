"""How many runs the harness trains at once, and on how many threads each.

The rule, chosen so that the numbers do not depend on the load, the core count or ``--jobs``:

* **One intra-op thread per run** (unless ``--threads`` says otherwise). A matrix product
  split over more threads sums in another order, and the rounding differences grow over
  hundreds of steps into different losses (digits' AdamW: 0.0862 at 2 threads, 0.0688 at 1).
  One thread also degrades gracefully on shared cores: a multi-threaded op waits for its
  slowest thread, so a thread descheduled by other work stalls all of them (the default
  ``normopt compare`` ran 0.28 steps/s at torch's two threads on a loaded 2-core machine).
* **Parallelism across runs**, each in its own process (``--jobs``; results identical to
  one process). By default (``jobs`` unset) as many processes as there are runs, up to
  two per CPU that this process may run on (``os.sched_getaffinity``) and as many as free
  memory holds: runs differ in length, so with more processes than CPUs the short ones do not
  wait for a long one, and a single-threaded process loses nothing by sharing a core. When
  the machine's load average says other work holds the CPUs, this also gives the job its
  share of them. A job too small to pay for starting processes (under
  :data:`MIN_PARALLEL_SECONDS` of estimated compute), a GPU, or an optimizer registered
  outside ``normopt`` (a fresh process would not know it) runs in this process.

:func:`choose` returns the decision with its reason, which the harness prints.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

__all__ = ["Plan", "available_cpus", "choose", "load_average"]

# Below this much estimated single-thread compute, the runs go in this process: starting a
# worker (spawn, import torch, load the data, warm up) costs a few seconds of CPU.
MIN_PARALLEL_SECONDS = 30.0
# At most this many processes per CPU.
PER_CPU = 2
# Resident memory of one worker (torch, the task's data, one model): a generous guess.
WORKER_BYTES = 700 * 2**20


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where the
    platform has none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float:
    """The 1-minute load average (runnable processes, all users), nan where unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return math.nan


def _free_memory() -> int | None:
    """Memory available to new processes: MemAvailable (free plus reclaimable cache) where
    the kernel says, else the free pages; None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            lines = f.read().splitlines()
        for line in lines:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


@dataclass(frozen=True)
class Plan:
    """How the runs are trained: ``jobs`` processes (1: in this process), ``threads``
    torch threads each, and why."""

    jobs: int
    threads: int
    cpus: int
    load: float
    reason: str

    def describe(self, runs: int) -> str:
        where = (
            "in this process" if self.jobs == 1 else f"{self.jobs} at once, each in its own process"
        )
        load = "unknown" if math.isnan(self.load) else f"{self.load:.1f}"
        return (
            f"{runs} run(s), {where}, {self.threads} torch thread(s) per run "
            f"({self.cpus} CPU(s) available, load average {load}): {self.reason}"
        )


def choose(
    runs: int,
    *,
    jobs: int | None,
    threads: int | None,
    device_type: str,
    estimated_seconds: float,
    portable: bool,
    cpus: int | None = None,
    load: float | None = None,
    free_memory: int | None = None,
) -> Plan:
    """The plan for ``runs`` runs. ``jobs`` / ``threads``: what the user asked (None: choose);
    ``estimated_seconds``: the runs' single-thread compute, roughly; ``portable``: every
    optimizer of the plan exists in a fresh process. ``cpus``, ``load`` and
    ``free_memory`` default to this machine's (tests pass their own)."""
    cpus = available_cpus() if cpus is None else cpus
    load = load_average() if load is None else load
    free_memory = _free_memory() if free_memory is None else free_memory
    n_threads = threads or 1
    thread_note = (
        "one thread per run, so the numbers do not depend on the load, the CPUs or --jobs"
        if threads is None or threads == 1
        else f"--threads {threads}: the numbers differ in rounding from those at 1 thread"
    )
    if jobs is not None:
        n = min(jobs, max(1, runs))
        return Plan(n, n_threads, cpus, load, f"--jobs {jobs}; {thread_note}")
    if runs <= 1:
        return Plan(1, n_threads, cpus, load, f"one run; {thread_note}")
    if device_type != "cpu":
        return Plan(1, n_threads, cpus, load, f"runs share the {device_type} device one at a time")
    if not portable:
        return Plan(
            1,
            n_threads,
            cpus,
            load,
            "an optimizer of the plan is registered outside normopt, so a fresh process "
            f"would not know it; {thread_note}",
        )
    if estimated_seconds < MIN_PARALLEL_SECONDS:
        return Plan(
            1,
            n_threads,
            cpus,
            load,
            f"about {estimated_seconds:.0f} s of compute, less than starting processes "
            f"would pay back; {thread_note}",
        )
    per_thread = max(1, cpus // n_threads)
    n = min(runs, PER_CPU * per_thread)
    by_memory = ""
    if free_memory is not None and n * WORKER_BYTES > free_memory:
        n = max(1, min(n, free_memory // WORKER_BYTES))
        by_memory = f", {free_memory / 2**30:.1f} GiB of free memory"
    busy = not math.isnan(load) and load > cpus - 0.5
    why = (
        f"one process per run, up to {PER_CPU} per CPU{by_memory}: runs of unequal length "
        "finish together, and a single-threaded run loses little by sharing a core"
    )
    if busy:
        why += "; the machine is busy, and this claims the job's share of it"
    return Plan(max(1, n), n_threads, cpus, load, f"{why}; {thread_note}")
