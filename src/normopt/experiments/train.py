"""The training loop of the harness: one run = one task, one optimizer, one lr, one seed."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from normopt import NonFiniteGradientError
from normopt.experiments.config import TrainConfig
from normopt.experiments.optimizers import build_optimizers
from normopt.experiments.tasks import Batch, Problem

# A run whose training loss exceeds this multiple of its first loss (or is not finite) is
# stopped and marked diverged.
DIVERGENCE_FACTOR = 3.0


@dataclass
class RunResult:
    """Everything one run measured. Times are training seconds (validation excluded):
    ``step_time`` and ``eval_time`` wall-clock, ``step_cpu`` and ``eval_cpu`` the CPU time of
    the process that trained it (:func:`time.process_time`: unlike wall time, it does not grow
    while the process waits for a CPU that other work holds)."""

    optimizer: str
    seed: int
    lr: float
    steps: int  # steps planned
    diverged: bool = False
    train_loss: list[float] = field(default_factory=list)  # one per completed step
    step_time: list[float] = field(default_factory=list)  # seconds per step: fwd, bwd, update
    eval_step: list[int] = field(default_factory=list)  # steps completed at each validation
    eval_time: list[float] = field(default_factory=list)  # training seconds at each validation
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)  # top-1 (per character for a LM)
    step_cpu: list[float] = field(default_factory=list)  # CPU seconds per step
    eval_cpu: list[float] = field(default_factory=list)  # training CPU seconds at each validation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields (lists are copied); :meth:`from_dict` inverts it exactly."""
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _copy(v) for k, v in data.items() if k in names})

    @property
    def final_val_loss(self) -> float:
        return math.inf if self.diverged or not self.val_loss else self.val_loss[-1]

    @property
    def final_train_loss(self) -> float:
        """Mean of the last 5% of the training losses (at least one), inf if diverged."""
        if self.diverged or not self.train_loss:
            return math.inf
        tail = self.train_loss[-max(1, len(self.train_loss) // 20) :]
        return sum(tail) / len(tail)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def lr_factor(step: int, steps: int, warmup: float, schedule: str) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warmup, then the schedule to 0."""
    n_warm = round(warmup * steps)
    if step < n_warm:
        return (step + 1) / n_warm
    p = (step - n_warm) / max(1, steps - n_warm)  # progress in [0, 1)
    if schedule == "linear":
        return 1.0 - p
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classifiers (B, C) and language models (B, T, V) alike."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten())


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[Batch]) -> tuple[float, float]:
    """Mean loss and accuracy over the fixed validation batches, per target."""
    model.eval()
    total, correct, count = 0.0, 0, 0
    for x, y in batches:
        logits = model(x)  # (B, C) or (B, T, V)
        total += float(F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        count += y.numel()
    model.train()
    return total / count, correct / count


def train(
    problem: Problem,
    optimizer: str,
    lr: float,
    seed: int,
    cfg: TrainConfig,
    device: torch.device,
    val_batches: list[Batch],
    on_step: Callable[[int, float], None] | None = None,
    on_eval: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """Train a fresh model and record its curves. ``cfg`` must be resolved (config.resolve).

    The model's initialization and the data order depend on ``seed`` only, so every
    optimizer given the same seed starts from the same weights and sees the same batches.
    ``on_step(step, loss)`` is called after every step, ``on_eval(result)`` after every
    validation (the first before any step) with the result so far: the curves of a run
    that is stopped midway.
    """
    if not (cfg.steps and cfg.batch_size and cfg.eval_every):
        raise ValueError("train() needs a resolved config: pass it through config.resolve()")
    steps = cfg.steps
    torch.manual_seed(seed)
    model = problem.model().to(device)  # built on the CPU: the same init on any device
    optimizers = build_optimizers(optimizer, model, lr, cfg)
    # Every group's "lr" follows the schedule, as a torch scheduler would set it (each group
    # of normopt.Muon, the AdamW ones included, carries its own).
    base_lrs = [[g["lr"] for g in opt.param_groups] for opt in optimizers]
    batches = problem.train_batches(cfg.batch_size, seed)
    result = RunResult(optimizer, seed, lr, steps)

    def validate(step: int) -> None:
        loss, acc = evaluate(model, val_batches)
        result.eval_step.append(step)
        result.eval_time.append(sum(result.step_time))
        result.eval_cpu.append(sum(result.step_cpu))
        result.val_loss.append(loss)
        result.val_acc.append(acc)
        if on_eval is not None:
            on_eval(result)

    validate(0)
    for step in range(steps):
        factor = lr_factor(step, steps, cfg.warmup, cfg.schedule)
        for opt, lrs in zip(optimizers, base_lrs):
            for group, base in zip(opt.param_groups, lrs):
                group["lr"] = base * factor
        x, y = next(batches)  # (B, ...) inputs, (B,) or (B, T) targets

        t0, c0 = time.perf_counter(), time.process_time()
        loss = loss_fn(model(x), y)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        try:
            for opt in optimizers:
                opt.step()
        except NonFiniteGradientError:  # normopt's optimizers refuse NaN/Inf gradients
            result.diverged = True
            break
        value = loss.item()  # waits for the device: the step time includes the update
        result.step_time.append(time.perf_counter() - t0)
        result.step_cpu.append(time.process_time() - c0)
        result.train_loss.append(value)

        if on_step is not None:
            on_step(step, value)
        if not math.isfinite(value) or value > DIVERGENCE_FACTOR * result.train_loss[0]:
            result.diverged = True
            break
        if (step + 1) % cfg.eval_every == 0 or step + 1 == steps:
            validate(step + 1)
    return result
