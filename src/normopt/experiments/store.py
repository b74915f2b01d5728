"""A report folder as a store of finished runs: what makes a job kill-safe and resumable.

``DIR/config.json`` is written before the first run starts, and every run's curves go to
``DIR/runs/<optimizer>_lr<lr>_seed<seed>_steps<steps>.json`` the moment it ends (written to a
temporary file, then renamed: a kill never leaves half a file). ``normopt compare --resume
DIR`` (and ``sweep --resume``) reads the config back, takes every run found in the store
instead of training it again, and trains only the rest, so it ends with the same report as
a run that was never stopped. Each run file records the fingerprint of the config it was
trained under; a file from another config is refused, not mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from normopt.experiments.train import RunResult

__all__ = ["RunStore", "fingerprint", "run_key"]

Key = tuple[str, float, int, int]  # optimizer, lr, seed, steps

# Fields of the config that do not change any number: left out of the fingerprint.
NOT_NUMERIC = ("jobs", "out")


def run_key(optimizer: str, lr: float, seed: int, steps: int) -> Key:
    return (optimizer, float(lr), int(seed), int(steps))


def fingerprint(config: Mapping[str, Any]) -> str:
    """A short hash of the config's fields that change numbers."""
    data = {k: v for k, v in config.items() if k not in NOT_NUMERIC}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_name(key: Key) -> str:
    optimizer, lr, seed, steps = key
    # repr(float) round-trips exactly and has no path separator
    return f"{optimizer}_lr{lr!r}_seed{seed}_steps{steps}.json"


class RunStore:
    """Finished runs of one report folder, keyed by (optimizer, lr, seed, steps)."""

    def __init__(self, folder: Path, config: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.runs_dir = self.folder / "runs"
        self.fingerprint = fingerprint(config)

    def path(self, key: Key) -> Path:
        return self.runs_dir / _file_name(key)

    def get(self, key: Key) -> RunResult | None:
        """The finished run, or None when it is not in the store."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(
                f"--resume: {path} is not valid JSON ({e}); delete it to rerun"
            ) from None
        if data.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"--resume: {path} was trained under another config than "
                f"{self.folder / 'config.json'}; delete it (or the folder) to rerun"
            )
        run = RunResult.from_dict(data["run"])
        if run_key(run.optimizer, run.lr, run.seed, run.steps) != key:
            raise ValueError(f"--resume: {path} holds another run than its name says")
        return run

    def put(self, run: RunResult) -> Path:
        """Write one finished run (atomically)."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        path = self.path(run_key(run.optimizer, run.lr, run.seed, run.steps))
        tmp = path.with_name(path.name + ".tmp")
        # allow_nan: a diverged run's last training loss may be inf or nan; Python reads it back
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "run": run.to_dict()}) + "\n")
        os.replace(tmp, path)
        return path

    def count(self) -> int:
        return len(list(self.runs_dir.glob("*.json"))) if self.runs_dir.exists() else 0
