"""Progress of the harness's runs on stderr: a tqdm bar on a terminal, plain lines elsewhere.

Under a job scheduler, ``nohup`` or a CI log, stderr is a file or a pipe, where a bar's
carriage returns make an unreadable log; :class:`LineProgress` writes one line when a run
ends and one every ``interval`` seconds within a run instead, so a long ``normopt
compare`` is never silent for minutes. Every line starts with the steps done of the job's
total, the time since it started and an estimate of the time left (``ETA``: the rate so far
applied to the steps left).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["LineProgress", "progress_bar"]

# seconds between two lines within one run
INTERVAL = 30.0


def progress_bar(total: int, quiet: bool, stream: TextIO | None = None) -> Any:
    """What the harness reports ``total`` steps to: nothing with ``quiet``, a tqdm bar when
    ``stream`` (default stderr) is a terminal, else a :class:`LineProgress`."""
    stream = stream if stream is not None else sys.stderr
    if quiet:
        return LineProgress(total, stream, enabled=False)
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, file=stream, unit="step", dynamic_ncols=True, leave=False)
    return LineProgress(total, stream)


class LineProgress:
    """The part of tqdm's interface the harness uses (``update``, ``set_description``,
    ``set_postfix``, a context manager), printed as lines: ``[done/total steps, elapsed,
    ETA left] description: loss L, run ended`` when a run ends (the next
    ``set_description``, or the exit), and the same with ``step k`` every ``interval``
    seconds within a run. Runs trained in parallel report through :meth:`note` (a line now)
    and :meth:`status` (what the interval lines say)."""

    def __init__(
        self, total: int, stream: TextIO, interval: float = INTERVAL, enabled: bool = True
    ) -> None:
        self.total, self.stream, self.interval, self.enabled = total, stream, interval, enabled
        self.done = 0
        self.run_steps = 0
        self.description = ""
        self.postfix = ""
        self.status_text = ""
        self.start = self.last = time.monotonic()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.description:
            self._line("run ended")
            self.description = ""

    def set_description(self, text: str) -> None:
        if self.description:
            self._line("run ended")
        self.description, self.postfix, self.run_steps = text, "", 0

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def status(self, text: str) -> None:
        """What the interval lines say while no single run is described (parallel runs)."""
        self.status_text = text

    def note(self, text: str) -> None:
        """One line now, after the usual prefix."""
        self._print(text)

    def update(self, n: int = 1) -> None:
        self.done += n
        self.run_steps += n
        if n and time.monotonic() - self.last >= self.interval:
            if self.description:
                self._line(f"step {self.run_steps}")
            elif self.status_text:
                self._print(self.status_text)

    def _line(self, what: str) -> None:
        detail = "; ".join(x for x in (self.postfix, what) if x)
        self._print(f"{self.description}: {detail}")

    def _print(self, text: str) -> None:
        now = time.monotonic()
        self.last = now
        if not self.enabled:
            return
        elapsed = now - self.start
        print(
            f"[{self.done}/{self.total} steps, {_clock(elapsed)}, ETA {self._eta(elapsed)}] {text}",
            file=self.stream,
            flush=True,
        )

    def _eta(self, elapsed: float) -> str:
        if self.done >= self.total:
            return _clock(0.0)
        if self.done <= 0:
            return "?"
        return _clock(elapsed * (self.total - self.done) / self.done)


def _clock(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"
