"""The comparison harness: built-in tasks, an optimizer registry, one training loop, reports.

``normopt compare`` trains a task with several optimizers from the same initialization and
data order and writes curves, a table and a report folder; ``normopt sweep`` measures final
loss over a learning-rate grid and the width of each optimizer's basin. From Python::

    from pathlib import Path
    from normopt.experiments import CompareConfig, run_compare, write_compare_report

    metrics = run_compare(CompareConfig(task="digits", optimizers=("adamw", "muon")))
    write_compare_report(metrics, Path("report"))

This package imports normopt; nothing in normopt imports it.
"""

from normopt.experiments.compare import run_compare, run_sweep
from normopt.experiments.config import CompareConfig, SweepConfig, TrainConfig
from normopt.experiments.optimizers import OPTIMIZERS, register_optimizer, split_params
from normopt.experiments.report import write_compare_report, write_sweep_report
from normopt.experiments.tasks import TASKS, Task, get_task
from normopt.experiments.train import RunResult, train

__all__ = [
    "OPTIMIZERS",
    "TASKS",
    "CompareConfig",
    "RunResult",
    "SweepConfig",
    "Task",
    "TrainConfig",
    "get_task",
    "register_optimizer",
    "run_compare",
    "run_sweep",
    "split_params",
    "train",
    "write_compare_report",
    "write_sweep_report",
]
