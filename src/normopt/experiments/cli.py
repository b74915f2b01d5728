"""``normopt compare`` and ``normopt sweep``: flags are the fields of the config dataclasses.

Precedence: the dataclass defaults, then ``--config FILE`` (JSON), then the flags given.
``--resume DIR`` continues a job in its report folder (see
:mod:`normopt.experiments.store`). SIGINT or SIGTERM writes the partial report and exits
with 128 + the signal's number (130, 143). Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import shutil
import signal
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from normopt.experiments import config as C


def _comma_list(item: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(item(t.strip()) for t in text.split(",") if t.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list, got {text!r}"
            ) from None

    return parse


def _name_values(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected NAME=LR pairs such as adamw=3e-3,muon=0.05, got {text!r}"
            ) from None
    return out


def _arg_type(hint: Any) -> tuple[Callable[[str], Any], str]:
    """argparse ``type`` and metavar for a field's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return _comma_list(args[0]), "A,B,..."
    if origin is Mapping or origin is dict:
        return _name_values, "NAME=LR,..."
    return hint, {int: "N", float: "X", str: "TEXT"}[hint]


def add_config_flags(parser: argparse.ArgumentParser, cls: type[C.TrainConfig]) -> None:
    """One flag per field; absent flags stay absent (argparse.SUPPRESS), so the config
    file's values are not overwritten by defaults."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        if hints[f.name] is bool:  # a switch: --tune
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                action="store_true",
                default=argparse.SUPPRESS,
                help=f.metadata.get("help", ""),
            )
            continue
        kind, metavar = _arg_type(hints[f.name])
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        suffix = "" if default in (None, ()) else f" [default: {shown}]"
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind,
            metavar=metavar,
            default=argparse.SUPPRESS,
            help=f.metadata.get("help", "") + suffix,
        )


def config_from_args(cls: type[C.C], args: argparse.Namespace) -> C.C:
    base = C.load(cls, args.config) if args.config else cls()
    given = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    return dataclasses.replace(base, **given)


# what --resume accepts beside it: nothing that changes a number
_RESUME_FLAGS = ("jobs",)


def resume_config(cls: type[C.C], args: argparse.Namespace) -> tuple[C.C, Path]:
    """The config of the job in ``args.resume`` (its config.json) and the folder; only
    --jobs may be given beside it."""
    folder = Path(args.resume)
    if args.config:
        raise ValueError("--resume: takes the config from DIR/config.json; drop --config")
    others = [
        "--" + f.name.replace("_", "-")
        for f in dataclasses.fields(cls)
        if hasattr(args, f.name) and f.name not in _RESUME_FLAGS
    ]
    if others:
        raise ValueError(
            f"--resume: {', '.join(others)} would change the job; a resumed job keeps its "
            "config (only --jobs may change)"
        )
    path = folder / "config.json"
    if not path.exists():
        raise ValueError(f"--resume: no {path}: not a report folder of normopt compare/sweep")
    cfg = C.load(cls, path)
    if hasattr(args, "jobs"):
        cfg = dataclasses.replace(cfg, jobs=args.jobs)
    return cfg, folder


def _list(stream: Any = None) -> int:
    from normopt.experiments.optimizers import OPTIMIZERS
    from normopt.experiments.tasks import TASKS

    out = stream or sys.stdout
    print("tasks (default steps / batch; sweep steps):", file=out)
    for t in TASKS.values():
        print(f"  {t.name:17s} {t.summary}", file=out)
        print(f"  {'':17s} {t.size}", file=out)
        lrs = ", ".join(f"{k} {v:g}" for k, v in t.lrs.items())
        if t.adamw_lr is not None:
            lrs += f"; AdamW part of hybrids {t.adamw_lr:g}"
        print(
            f"  {'':17s} {t.steps} steps of {t.batch_size}; sweep {t.sweep_steps}; lr: {lrs}",
            file=out,
        )
    print("\noptimizers:", file=out)
    for o in OPTIMIZERS.values():
        print(f"  {o.name:12s} {o.summary}", file=out)
    return 0


def _out(cfg: C.TrainConfig, command: str) -> Path:
    from normopt.experiments import report

    return Path(cfg.out) if cfg.out else report.default_out(command, cfg.task)


# The experiments extra (pyproject.toml): plots, the progress bar, the digits data set;
# module -> the package that installs it
EXTRA_MODULES = {"matplotlib": "matplotlib", "tqdm": "tqdm", "sklearn": "scikit-learn"}
# the ones every compare and sweep needs (sklearn only the digits task), checked before it
# trains for minutes
_ALWAYS_NEEDED = ("matplotlib", "tqdm")


def _missing_extra(command: str, modules: list[str]) -> int:
    print(
        f"normopt {command}: needs {', '.join(EXTRA_MODULES[m] for m in modules)}, which "
        "this Python does not have; "
        'install the experiments extra: pip install "normopt[experiments]"',
        file=sys.stderr,
    )
    return 1


def _run(command: str, args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    missing = []
    for name in _ALWAYS_NEEDED:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            missing.append(name)
    if missing:
        return _missing_extra(command, missing)
    try:
        return _run_checked(command, args)
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top in EXTRA_MODULES:
            return _missing_extra(command, [top])
        raise


def _discard(out: Path, created: bool) -> None:
    """Remove a report folder that this call made and nothing ran into."""
    if created and out.exists() and [f.name for f in out.iterdir()] == ["config.json"]:
        shutil.rmtree(out)


def _run_checked(command: str, args: argparse.Namespace) -> int:
    from normopt.experiments import report
    from normopt.experiments.compare import JobInterrupted, run_compare, run_sweep
    from normopt.experiments.data import DataUnavailable
    from normopt.experiments.runner import signals_interrupt
    from normopt.experiments.store import RunStore

    cls: type[C.TrainConfig] = C.CompareConfig if command == "compare" else C.SweepConfig
    if args.resume:
        cfg, out = resume_config(cls, args)
    else:
        cfg = config_from_args(cls, args)
        out = _out(cfg, command)
    resolved = C.resolve(cfg)
    # the folder's config first: a killed job can be resumed from it
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    saved = dict(C.to_dict(resolved), out=None)
    (out / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
    store = RunStore(out, saved)
    with signals_interrupt():
        try:
            if command == "compare":
                metrics = run_compare(resolved, quiet=args.quiet, store=store)  # type: ignore[arg-type]
                report.write_compare_report(metrics, out)
                if metrics["tuning"]:
                    print(report.tuning_table(metrics) + "\n")
                print(report.compare_table(metrics))
                print("\n" + report.verdict_text(metrics))
            else:
                metrics = run_sweep(resolved, quiet=args.quiet, store=store)  # type: ignore[arg-type]
                report.write_sweep_report(metrics, out)
                print(f"basin: {metrics['basin_rule']}")
                print(report.sweep_table(metrics))
        except DataUnavailable as e:
            _discard(out, created)
            print(f"normopt {command}: {e}", file=sys.stderr)
            return 1
        except ModuleNotFoundError:  # an extra's module: _run says which
            _discard(out, created)
            raise
        except JobInterrupted as e:
            name = signal.Signals(e.signum).name
            e.metrics["signal"] = name
            report.write_partial_report(e.metrics, out)
            finished, unfinished = len(e.metrics["runs"]), len(e.metrics["unfinished"])
            print(
                f"\nnormopt {command}: {name}: stopped with {finished} run(s) finished and "
                f"{unfinished} unfinished; partial report: {out / 'summary.md'}\n"
                f"resume with: normopt {command} --resume {out}",
                file=sys.stderr,
            )
            return 128 + e.signum
    print(f"\nreport: {out / 'summary.md'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    for command, cls, text in (
        (
            "compare",
            C.CompareConfig,
            "train a task with several optimizers from the same init; curves, table, report",
        ),
        (
            "sweep",
            C.SweepConfig,
            "learning-rate sweep per optimizer over seeds; loss vs lr and basin widths",
        ),
    ):
        p = sub.add_parser(command, help=text, description=text)
        p.add_argument(
            "--config", metavar="FILE", help="a JSON config (e.g. a report's config.json)"
        )
        p.add_argument(
            "--resume",
            metavar="DIR",
            help="continue the job whose report folder is DIR (after a kill): runs only what "
            "is missing; --jobs may change, nothing else",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument(
            "--list", action="store_true", help="list the tasks and optimizers, then exit"
        )
        add_config_flags(p, cls)
        p.set_defaults(func=lambda args, command=command: _run(command, args))
