"""Training the runs of one job: in this process or in worker processes, with progress, a
store of finished runs, and the curves of unfinished ones when a signal stops the job.

:class:`Runner` is what ``compare``, ``sweep`` and ``compare --tune`` train through. It asks
:func:`normopt.experiments.parallel.choose` how (one intra-op thread per run; several runs at
once in spawned processes when that pays), says so on stderr, takes runs that the store
already holds instead of training them, writes each run to the store as it ends, and keeps
the curves of the runs in flight (``live``), so that an interrupted job can still report
them. :func:`signals_interrupt` turns SIGINT and SIGTERM into :class:`Interrupted`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import math
import multiprocessing
import queue as queue_module
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from normopt.experiments import parallel
from normopt.experiments.config import TrainConfig, from_dict, to_dict
from normopt.experiments.progress import LineProgress, progress_bar
from normopt.experiments.store import Key, RunStore, run_key
from normopt.experiments.tasks import Batch, Problem, get_task
from normopt.experiments.train import RunResult, train

__all__ = ["Interrupted", "Runner", "resolve_device", "signals_interrupt"]


class Interrupted(BaseException):  # noqa: N818  (a signal, like KeyboardInterrupt)
    """SIGINT or SIGTERM arrived (raised by the handlers of :func:`signals_interrupt`).

    A BaseException, as KeyboardInterrupt: ``except Exception`` clauses do not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Inside, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread, once: later
    signals are ignored until the block ends (so that the partial report gets written). The
    previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.getsignal(s) for s in names}

    def handler(signum: int, frame: Any) -> None:
        for s in names:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    for s in names:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device: cuda was asked for, but torch sees no CUDA device")
    return device


def _describe(key: Key) -> str:
    optimizer, lr, seed, _ = key
    return f"{optimizer} lr={lr:.3g} seed={seed}"


def _portable(optimizers: Sequence[str]) -> bool:
    """Every optimizer is registered by a normopt module, so a spawned process has it."""
    from normopt.experiments.optimizers import OPTIMIZERS

    return all(
        getattr(OPTIMIZERS[o].factory, "__module__", "").startswith("normopt.") for o in optimizers
    )


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Runner:
    """Trains (optimizer, lr, seed) plans of one job (``cfg`` resolved): see the module doc.

    ``finished``: every run this job has, trained or taken from ``store``; ``live``: the
    runs in flight, their curves so far; ``load_max``: the largest 1-minute load average
    seen while training; ``plans``: how each batch of runs was trained.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        quiet: bool = False,
        store: RunStore | None = None,
        command: str = "compare",
    ) -> None:
        self.cfg, self.quiet, self.store, self.command = cfg, quiet, store, command
        self.device = resolve_device(cfg.device)
        self.threads = cfg.threads or 1
        self.finished: dict[Key, RunResult] = {}
        self.live: dict[Key, RunResult] = {}
        self.resumed = 0
        self.cpus = parallel.available_cpus()
        self.load_max = parallel.load_average()
        self.plans: list[str] = []
        self._problem: Problem | None = None
        self._val: dict[int, list[Batch]] = {}
        self._step_cpu: dict[str, float] = {}  # warm step's CPU seconds, per optimizer
        self._last_load = 0.0

    # ------------------------------------------------------------------ public

    @property
    def problem(self) -> Problem:
        if self._problem is None:
            self._problem = get_task(self.cfg.task).setup(self.device)
        return self._problem

    def train(self, cfg: TrainConfig, items: Sequence[tuple[str, float, int]]) -> list[RunResult]:
        """The runs of ``items`` (optimizer, lr, seed) at ``cfg.steps``, in order: those
        this job has already, the rest trained now."""
        if cfg.steps is None or cfg.batch_size is None:
            raise ValueError("cfg: resolve() it first (steps must be set)")
        keys = [run_key(o, lr, s, cfg.steps) for o, lr, s in items]
        todo: list[Key] = []
        for key in dict.fromkeys(keys):
            if key in self.finished:
                continue
            stored = self.store.get(key) if self.store is not None else None
            if stored is not None:
                self.finished[key] = stored
                self.resumed += 1
                continue
            todo.append(key)
        if todo:
            with _torch_threads(self.threads):
                self._train(cfg, todo)
        return [self.finished[k] for k in keys]

    def sample_load(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_load >= 2.0:
            self._last_load = now
            load = parallel.load_average()
            if not math.isnan(load):
                self.load_max = load if math.isnan(self.load_max) else max(self.load_max, load)

    # ------------------------------------------------------------------ training

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(f"normopt {self.command}: {text}", file=sys.stderr, flush=True)

    def _finish(self, key: Key, run: RunResult) -> None:
        self.live.pop(key, None)
        self.finished[key] = run
        if self.store is not None:
            self.store.put(run)

    def _val_batches(self, batch_size: int) -> list[Batch]:
        if batch_size not in self._val:
            self._val[batch_size] = self.problem.val_batches(batch_size)
        return self._val[batch_size]

    def _warm_up(self, cfg: TrainConfig, optimizers: Sequence[str]) -> None:
        """Two discarded steps per optimizer: the first steps of a process pay one-time costs
        (lazy imports, allocator, kernel selection) that would otherwise be charged to the
        first optimizer. The second step's CPU time estimates the job's size."""
        short = dataclasses.replace(cfg, steps=2, eval_every=2)
        val = self._val_batches(cfg.batch_size or 1)[:1]
        for opt in optimizers:
            if opt not in self._step_cpu:
                run = train(self.problem, opt, cfg.lr[opt], 0, short, self.device, val)
                self._step_cpu[opt] = run.step_cpu[-1] if run.step_cpu else 0.0

    def _train(self, cfg: TrainConfig, todo: list[Key]) -> None:
        assert cfg.steps is not None  # checked by train()
        optimizers = list(dict.fromkeys(k[0] for k in todo))
        if cfg.jobs is None or cfg.jobs == 1:
            self._warm_up(cfg, optimizers)
        estimate = sum(self._step_cpu.get(k[0], 0.0) * k[3] for k in todo)
        plan = parallel.choose(
            len(todo),
            jobs=cfg.jobs,
            threads=cfg.threads,
            device_type=self.device.type,
            estimated_seconds=estimate,
            portable=_portable(optimizers),
            cpus=self.cpus,
        )
        self.plans.append(plan.describe(len(todo)))
        if self.resumed:
            self._say(f"{self.resumed} run(s) taken from {self.store and self.store.folder}")
        self._say(plan.describe(len(todo)))
        total = sum(k[3] for k in todo)
        with progress_bar(total, self.quiet, sys.stderr) as bar:
            if plan.jobs == 1:
                self._in_process(cfg, todo, bar)
            else:
                self._in_pool(cfg, todo, plan, bar)
        self.sample_load(force=True)

    def _in_process(self, cfg: TrainConfig, todo: list[Key], bar: Any) -> None:
        val = self._val_batches(cfg.batch_size or 1)
        for key in todo:
            optimizer, lr, seed, steps = key
            bar.set_description(_describe(key))

            def on_step(step: int, loss: float) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                self.sample_load()

            def on_eval(result: RunResult, key: Key = key) -> None:
                self.live[key] = result

            run = train(self.problem, optimizer, lr, seed, cfg, self.device, val, on_step, on_eval)
            bar.update(steps - len(run.train_loss))  # the steps a diverged run skipped
            self._finish(key, run)

    def _in_pool(self, cfg: TrainConfig, todo: list[Key], plan: parallel.Plan, bar: Any) -> None:
        """``todo`` on ``plan.jobs`` fresh (spawned) processes. Each rebuilds the registry by
        importing normopt.experiments, so only optimizers registered by normopt run there
        (parallel.choose checks it; an explicit --jobs with others fails in the worker)."""
        self.problem  # noqa: B018  (load the data here first: a missing data set says so here)
        lrs = {k[0]: k[1] for k in todo}  # every optimizer of the batch, at an lr it has here
        worker_cfg = dataclasses.replace(cfg, optimizers=tuple(lrs), lr=lrs)
        ctx = multiprocessing.get_context("spawn")
        messages: Any = ctx.Queue()
        done = {k: 0 for k in todo}
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=plan.jobs,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(type(cfg), to_dict(worker_cfg), plan.threads, messages),
        )
        try:
            pending = {pool.submit(_worker_train, k): k for k in todo}
            while pending:
                self._drain(messages, done, bar)
                for future in [f for f in pending if f.done()]:
                    key = pending.pop(future)
                    run = RunResult.from_dict(future.result())  # a worker's error, raised here
                    bar.update(key[3] - done[key])
                    done[key] = key[3]
                    self._finish(key, run)
                    _note(bar, f"{_describe(key)}: {_final(run)}, run ended")
                self.sample_load()
                running = [k for k in pending.values() if done[k] > 0]
                _status(bar, "; ".join(f"{_describe(k)} {done[k]}/{k[3]}" for k in running))
        except BaseException:
            _stop_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            messages.close()
            messages.cancel_join_thread()

    def _drain(self, messages: Any, done: dict[Key, int], bar: Any) -> None:
        try:
            msg = messages.get(timeout=0.25)
        except queue_module.Empty:
            return
        while True:
            kind, key, payload = msg
            if key not in self.finished:
                if kind == "eval":
                    self.live[key] = RunResult.from_dict(payload)
                    steps = len(self.live[key].train_loss)
                else:
                    steps = payload
                if steps > done[key]:
                    bar.update(steps - done[key])
                    done[key] = steps
            try:
                msg = messages.get_nowait()
            except queue_module.Empty:
                return


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """End the workers now (SIGTERM), running runs included: the job was interrupted or
    failed, and waiting for their runs to finish could take minutes."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14
    if terminate is not None:
        terminate()
    else:
        for process in processes:
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=10)


def _final(run: RunResult) -> str:
    if run.diverged:
        return f"diverged after {len(run.train_loss)} steps"
    return f"final val loss {run.final_val_loss:.4f}"


def _note(bar: Any, text: str) -> None:
    if isinstance(bar, LineProgress):
        bar.note(text)
    else:  # tqdm: above the bar
        bar.write(text)


def _status(bar: Any, text: str) -> None:
    if isinstance(bar, LineProgress):
        bar.status(text)
    else:
        bar.set_description_str(text[:80], refresh=False)


# ----------------------------------------------------------------------------- workers

# Each worker process holds one loaded problem (set up by _worker_init).
_WORKER: dict[str, Any] = {}


def _worker_init(cls: type[TrainConfig], data: dict[str, Any], threads: int, messages: Any) -> None:
    # Ctrl-C reaches the whole process group: the main process handles it and ends the
    # workers (SIGTERM, left at its default), so they ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    cfg = from_dict(cls, data)
    device = resolve_device(cfg.device)
    problem = get_task(cfg.task).setup(device)
    val = problem.val_batches(cfg.batch_size or 1)
    short = dataclasses.replace(cfg, steps=2, eval_every=2)  # warm-up, discarded
    for optimizer in cfg.optimizers:
        train(problem, optimizer, cfg.lr[optimizer], 0, short, device, val[:1])
    _WORKER.update(cfg=cfg, device=device, problem=problem, val=val, messages=messages)


def _worker_train(key: Key) -> dict[str, Any]:
    optimizer, lr, seed, steps = key
    w = _WORKER
    cfg = w["cfg"]
    if cfg.steps != steps:
        raise ValueError(f"worker: run of {steps} steps in a pool set up for {cfg.steps}")
    messages = w["messages"]
    last = [time.monotonic()]

    def on_step(step: int, loss: float) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            messages.put(("step", key, step + 1))

    def on_eval(result: RunResult) -> None:
        messages.put(("eval", key, result.to_dict()))

    run = train(w["problem"], optimizer, lr, seed, cfg, w["device"], w["val"], on_step, on_eval)
    return run.to_dict()
