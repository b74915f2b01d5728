"""A small character-level transformer as a Lightning module, with ``normopt.Muon`` in
``configure_optimizers``, checkpointed and resumed with ``ckpt_path``.

``configure_optimizers`` hands the module itself to ``normopt.Muon``, which routes every
tensor (Muon on the attention and MLP matrices, ``nn.MultiheadAttention``'s fused
``in_proj_weight`` split into q, k, v; AdamW on the embeddings, head, gains and biases),
and returns it with a per-step scheduler::

    def configure_optimizers(self):
        optimizer = normopt.Muon(self, lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

Resuming from an epoch's checkpoint repeats the uninterrupted run exactly: the sampler
reshuffles from ``(seed, epoch)`` (Lightning calls its ``set_epoch``), and the checkpoint
holds the model, the optimizer's state (momentum, AdamW moments, step counts) and the
scheduler's.

    python3 examples/lightning_module.py --out /tmp/pl-muon --epochs 3
    # interrupted? the same command, from the last checkpoint written:
    python3 examples/lightning_module.py --out /tmp/pl-muon --epochs 3 --resume /tmp/pl-muon/epoch=0.ckpt

On a terminal Lightning's progress bar shows the training; elsewhere (a log file, a job
scheduler, CI), where a bar's carriage returns make an unreadable log, :class:`LineProgress`
prints a line every 30 seconds and one per validation instead.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import normopt

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chardata, beside this file
from chardata import DATA, CharWindows, load_text  # noqa: E402


class EpochShuffle(torch.utils.data.Sampler[int]):
    """A permutation drawn from ``(seed, epoch)``: the same order after a resume."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())


class LineProgress(L.Callback):
    """Progress as plain lines on stderr: ``epoch E, step S/N: train_loss L`` every
    ``interval`` seconds, and the validation loss after every validation."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self.last = time.monotonic()

    def _say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        self.last = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if time.monotonic() - self.last >= self.interval:
            loss = trainer.callback_metrics.get("train_loss")
            shown = f": train_loss {float(loss):.4f}" if loss is not None else ""
            self._say(
                f"epoch {trainer.current_epoch}, step {trainer.global_step}/"
                f"{trainer.estimated_stepping_batches}{shown}"
            )

    def on_validation_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None:
            self._say(
                f"epoch {trainer.current_epoch}, step {trainer.global_step}: "
                f"val_loss {float(loss):.4f}"
            )


class CharTransformer(L.LightningModule):
    """Embedding + learned positions, ``layers`` pre-norm ``nn.TransformerEncoderLayer``s
    (causal), a final LayerNorm and a linear head; cross-entropy per character."""

    def __init__(
        self,
        vocab_size: int,
        block: int = 32,
        d: int = 64,
        heads: int = 4,
        layers: int = 2,
        lr: float = 0.02,
        warmup: int = 10,
        total_steps: int = 200,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tok = nn.Embedding(vocab_size, d)
        self.pos = nn.Embedding(block, d)
        layer = nn.TransformerEncoderLayer(
            d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab_size, bias=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(block))

    def forward(self, ids: Tensor) -> Tensor:
        t = ids.shape[1]
        x = self.tok(ids) + self.pos.weight[:t]  # (B, T, d)
        x = self.blocks(x, mask=self.mask[:t, :t], is_causal=True)  # (B, T, d)
        return self.head(self.ln(x))  # (B, T, V)

    def _loss(self, batch: dict[str, Tensor]) -> Tensor:
        ids = batch["input_ids"]  # (B, T)
        logits = self(ids[:, :-1])  # predict character t + 1 from 0..t
        return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = normopt.Muon(self, lr=self.hparams.lr)
        warmup, total = self.hparams.warmup, self.hparams.total_steps

        def factor(step: int) -> float:  # linear warmup, then cosine to 0
            if step < warmup:
                return (step + 1) / warmup
            p = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * p))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def train(
    out: str | Path,
    epochs: int = 2,
    resume: str | Path | None = None,
    data: str = "shakespeare",
    block: int = 32,
    batch_size: int = 32,
    train_windows: int = 2048,
    val_windows: int = 256,
    lr: float = 0.02,
    warmup: int = 10,
    seed: int = 0,
    progress_every: float = 30.0,
) -> dict[str, Any]:
    """Fit for ``epochs`` epochs (``resume``: from that checkpoint, up to ``epochs`` in all),
    saving a checkpoint ``out/epoch=N.ckpt`` after every epoch (N from 0). The schedule
    spans ``epochs``: resume with the arguments of the interrupted run. Progress: Lightning's
    bar when stderr is a terminal, else a :class:`LineProgress` line every
    ``progress_every`` seconds. Returns the final ``val_loss``, the ``module`` and the
    ``trainer``."""
    if epochs < 1:
        raise ValueError(f"epochs: expected a positive int, got {epochs!r}")
    train_ids, val_ids, vocab = load_text(data)
    train_set = CharWindows(train_ids, block, train_windows, seed=seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, sampler=EpochShuffle(len(train_set), seed)
    )
    val_loader = torch.utils.data.DataLoader(
        CharWindows(val_ids, block, val_windows, seed=1234), batch_size=128
    )
    L.seed_everything(seed, verbose=False)
    module = CharTransformer(
        vocab, block=block, lr=lr, warmup=warmup, total_steps=epochs * len(loader)
    )
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out, filename="{epoch}", every_n_epochs=1, save_top_k=-1
    )
    bar = sys.stderr.isatty()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[checkpoints] if bar else [checkpoints, LineProgress(progress_every)],
        enable_progress_bar=bar,
        enable_model_summary=False,
    )
    trainer.fit(module, loader, val_loader, ckpt_path=str(resume) if resume else None)
    return {"val_loss": float(trainer.callback_metrics["val_loss"]), "module": module,
            "trainer": trainer}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the checkpoint folder")
    p.add_argument("--epochs", type=int, default=2, help="epochs in all (the same when resuming)")
    p.add_argument("--resume", default=None, help="a checkpoint to continue from")
    p.add_argument("--data", choices=DATA, default="shakespeare")
    p.add_argument("--lr", type=float, default=0.02, help="Muon's learning rate")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    result = train(a.out, epochs=a.epochs, resume=a.resume, data=a.data, lr=a.lr, seed=a.seed)
    print(json.dumps({"epochs": a.epochs, "val_loss": result["val_loss"]}))
    return 0 if math.isfinite(result["val_loss"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
