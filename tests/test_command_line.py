"""The ``normopt`` command answers ``--help`` without importing torch, and ``import normopt``
loads its public names on first use."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import normopt

SRC = Path(__file__).resolve().parents[1] / "src"

PROBE = textwrap.dedent(
    """
    import contextlib, io, sys
    from normopt.cli import main
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(sys.argv[1:])
        except SystemExit:
            pass
    assert "usage: normopt" in out.getvalue(), out.getvalue()
    print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
    """
)


@pytest.mark.parametrize("argv", [["--help"], ["compare", "--help"], ["sweep", "--help"],
                                  ["norms", "--help"], ["theory", "--help"], []])  # fmt: skip
def test_help_does_not_import_torch(argv):
    """Every command module must be cheap to import: `normopt --help` imports all of them
    (cli._COMMAND_MODULES) to list the commands."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"torch imported by normopt {' '.join(argv)}"


def test_every_public_name_resolves():
    for name in normopt.__all__:
        assert getattr(normopt, name) is not None, name
    assert set(normopt.__all__) <= set(dir(normopt))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = normopt.nope
