"""Running ``normopt compare`` in-process against a data loader the test has broken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from normopt.cli import main


def compare_one_step(task: str, loader: Any, out: Path) -> int:
    """The exit code of ``normopt compare`` on ``task`` (AdamW, one step, quiet, to
    ``out``), with the cache of ``loader`` (an ``lru_cache``d data loader) cleared before, so
    that the run reads the source the test set up, and after, so that later tests do not see
    what it cached."""
    loader.cache_clear()
    try:
        return main(["compare", "--task", task, "--optimizers", "adamw", "--steps", "1",
                     "--quiet", "--out", str(out)])  # fmt: skip
    finally:
        loader.cache_clear()
