"""normopt.Muon's AdamW part: which default lr, and whether gains and biases are decayed.

Issue 13, item 3. ``normopt.Muon(model)`` gives embeddings, the head, gains and biases to
AdamW at ``adamw_lr``; this script trains a built-in task of the harness (the same inits,
data order, schedule and budget as ``normopt compare``) with ``normopt.Muon`` at the
task's Muon lr and, side by side in the same run, the peer users glue together
(``torch.optim.Muon`` on the hidden matrices + ``torch.optim.AdamW`` on the rest):

- ``muon-aw<X>``: ``normopt.Muon(model, lr, adamw_lr=X)`` for X in ``--adamw-lrs``
  (no weight decay, normopt's default);
- ``muon-wd-all`` / ``muon-wd-matrices``: ``weight_decay = adamw_weight_decay = --wd``
  at ``adamw_lr = --decay-adamw-lr``, decaying every tensor
  (``param_groups(model, no_decay=())``) or every tensor but gains and biases
  (``no_decay=("gain", "bias")``, HF Trainer's rule);
- ``torch-muon``: ``torch.optim.Muon`` + ``AdamW(--decay-adamw-lr)``, weight decay 0.

It prints the summary table (seed mean and sample std of the final validation loss) and
writes the report of ``normopt compare`` to ``--out``.

Examples::

    python benchmarks/muon_adamw_defaults.py --task digits --seeds 3 --jobs 2
    python benchmarks/muon_adamw_defaults.py --task shakespeare-char --seeds 2 --jobs 2
    python benchmarks/muon_adamw_defaults.py --task synthetic --steps 20 --seeds 1  # smoke
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

import normopt
from normopt.experiments.config import CompareConfig
from normopt.experiments.optimizers import OPTIMIZERS, register_optimizer
from normopt.experiments.tasks import get_task

ADAMW_LRS = (3e-4, 1e-3, 3e-3, 1e-2)
WD = 0.1
DECAY_ADAMW_LR = 3e-3


def _name(x: float) -> str:
    return f"muon-aw{x:g}"


def _register(adamw_lrs: tuple[float, ...], wd: float, decay_lr: float) -> None:
    """Registry entries for the variants; run at import so that the spawned workers of
    ``--jobs`` (which import this file as their main module) have them too."""
    for x in adamw_lrs:
        if _name(x) in OPTIMIZERS:
            continue

        def make(model: nn.Module, lr: float, cfg: Any, x: float = x) -> torch.optim.Optimizer:
            return normopt.Muon(model, lr=lr, adamw_lr=x)  # type: ignore[attr-defined]

        register_optimizer(_name(x), lr=0.02, summary=f"normopt.Muon, adamw_lr={x:g}")(make)

    for name, no_decay in (("muon-wd-all", ()), ("muon-wd-matrices", ("gain", "bias"))):
        if name in OPTIMIZERS:
            continue

        def make_wd(
            model: nn.Module, lr: float, cfg: Any, no_decay: tuple[str, ...] = no_decay
        ) -> torch.optim.Optimizer:
            groups = normopt.param_groups(model, no_decay=no_decay)  # type: ignore[attr-defined]
            return normopt.Muon(  # type: ignore[attr-defined]
                groups, lr=lr, weight_decay=wd, adamw_lr=decay_lr, adamw_weight_decay=wd
            )

        register_optimizer(name, lr=0.02, summary=f"normopt.Muon, wd {wd}, no_decay={no_decay}")(
            make_wd
        )


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="shakespeare-char")
    ap.add_argument("--steps", type=int, default=None, help="default: the task's")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--adamw-lrs", default=",".join(f"{x:g}" for x in ADAMW_LRS))
    ap.add_argument("--wd", type=float, default=WD)
    ap.add_argument("--decay-adamw-lr", type=float, default=DECAY_ADAMW_LR)
    ap.add_argument("--out", default=None, help="report folder (default: reports/...)")
    ap.add_argument("--json", default=None, help="also write the summary rows here")
    return ap.parse_known_args(argv)[0]


_ARGS = _args()
_register(tuple(float(x) for x in _ARGS.adamw_lrs.split(",")), _ARGS.wd, _ARGS.decay_adamw_lr)


def main() -> None:
    from normopt.experiments import report
    from normopt.experiments.compare import run_compare

    a = _ARGS
    task = get_task(a.task)
    muon_lr = task.lrs.get("muon", OPTIMIZERS["muon"].lr)
    names = [_name(float(x)) for x in a.adamw_lrs.split(",")]
    names += ["muon-wd-all", "muon-wd-matrices", "torch-muon"]
    cfg = CompareConfig(
        task=a.task,
        optimizers=tuple(names),
        steps=a.steps,
        seeds=a.seeds,
        lr={
            n: (task.lrs.get("torch-muon", muon_lr) if n == "torch-muon" else muon_lr)
            for n in names
        },
        adamw_lr=a.decay_adamw_lr,
        jobs=a.jobs,
        threads=1,
        reference="torch-muon",
    )
    result = run_compare(cfg, quiet=True)
    print(f"task {a.task}, {result['config']['steps']} steps, {a.seeds} seeds, muon lr {muon_lr:g}")
    print(report.compare_table(result))
    out = Path(a.out or f"reports/muon-adamw-defaults-{a.task}")
    report.write_compare_report(result, out)
    print(f"report: {out}")
    if a.json:
        rows = [
            {
                k: s[k]
                for k in ("optimizer", "lr", "final_val_loss", "best_val_loss", "train_seconds")
            }
            for s in result["summary"]
        ]
        Path(a.json).write_text(json.dumps({"config": result["config"], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
