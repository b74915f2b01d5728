"""The comparison harness: built-in tasks, an optimizer registry, one training loop, reports.

``normopt compare`` trains a task with several optimizers from the same initialization and
data order and writes curves, a table and a report folder; ``normopt sweep`` measures final
loss over a learning-rate grid and the width of each optimizer's basin. From Python::

    from pathlib import Path
    from normopt.experiments import CompareConfig, run_compare, write_compare_report

    metrics = run_compare(CompareConfig(task="digits", optimizers=("adamw", "muon")))
    write_compare_report(metrics, Path("report"))

This package imports normopt; nothing in normopt imports it. Its names load on first use
(PEP 562), so that the ``normopt`` command can build its flags without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "run_compare": "normopt.experiments.compare",
    "run_sweep": "normopt.experiments.compare",
    "CompareConfig": "normopt.experiments.config",
    "SweepConfig": "normopt.experiments.config",
    "TrainConfig": "normopt.experiments.config",
    "OPTIMIZERS": "normopt.experiments.optimizers",
    "register_optimizer": "normopt.experiments.optimizers",
    "split_params": "normopt.experiments.optimizers",
    "write_compare_report": "normopt.experiments.report",
    "write_sweep_report": "normopt.experiments.report",
    "TASKS": "normopt.experiments.tasks",
    "Task": "normopt.experiments.tasks",
    "get_task": "normopt.experiments.tasks",
    "RunResult": "normopt.experiments.train",
    "train": "normopt.experiments.train",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'normopt.experiments' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from normopt.experiments.compare import run_compare, run_sweep
    from normopt.experiments.config import CompareConfig, SweepConfig, TrainConfig
    from normopt.experiments.optimizers import OPTIMIZERS, register_optimizer, split_params
    from normopt.experiments.report import write_compare_report, write_sweep_report
    from normopt.experiments.tasks import TASKS, Task, get_task
    from normopt.experiments.train import RunResult, train
