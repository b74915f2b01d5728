"""The ``normopt`` command: ``normopt norms``, ``normopt theory``, ``normopt compare``, ..."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each entry names a module with ``register(subparsers)``, which adds its
# subcommands and sets ``func`` (args -> exit code) on them. A new command is
# one line here. Every one is imported to build the parser, `normopt --help` too, so a
# command module must be cheap to import: torch and the rest of normopt are imported inside
# its ``func`` (tests/test_command_line.py checks that `--help` loads no torch).
_COMMAND_MODULES = (
    "normopt.commands.norms",
    "normopt.commands.theory",
    "normopt.experiments.cli",
)


def build_parser() -> argparse.ArgumentParser:
    from normopt import __version__

    parser = argparse.ArgumentParser(
        prog="normopt",
        description="Norm-based optimizers for PyTorch: catalog, theory and comparisons.",
    )
    parser.add_argument("--version", action="version", version=f"normopt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError) as e:
        # Bad user input: one clear line, not a traceback.
        print(f"normopt {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
