"""Experiment 2: decoupled weight decay as a norm constraint (SPEC A9), measured in training.

    python3 benchmarks/theory_constraint.py        # a few minutes on one CPU core

SPEC A9: for any update ``W <- (1 - lr wd) W - lr D`` with ``||D|| <= s``,
``||W_t|| - s/wd <= prod_k (1 - lr wd) (||W_0|| - s/wd)``: the ratio
``||W|| wd / s`` decays to at most 1 whatever the gradients. We train a tiny
causal transformer (``theory_tinylm.py``) on a synthetic order-2 Markov
language with

- Muon (``normopt.Muon``, quintic Newton-Schulz): spectral norm,
  ``s = 1.2024 sqrt(max(1, d_out/d_in))`` (Jordan's shape scale times the
  largest singular value the quintic can output, SPEC A5);
- Muon with an exact polar factor (``polar="svd"``): ``s`` = the shape scale;
- Lion (``normopt.Lion``): max-entry norm, ``s = 1``;

each from the default initialization and from one scaled by 8 (so that the
constraint starts violated), with ``lr wd = 0.01`` for all three. Every step,
:class:`normopt.theory.ConstraintMonitor` records the exact ratio of each
hidden matrix, a :class:`SpectralNormMonitor` (two warm-started power
iterations per step) is compared with the exact spectral norm, and for Muon
an :class:`UpdateMonitor` records the singular values of the step direction.
Writes a JSON and a PNG.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's normopt

import normopt
from normopt import norms as N
from normopt.optim.muon import adjust_lr_factor
from normopt.theory import ConstraintMonitor, SpectralNormMonitor, UpdateMonitor
from theory_tinylm import (
    Markov2,
    TinyLM,
    add_model_args,
    hidden_matrices,
    lm_loss,
    r5,
    run_meta,
    subplot_grid,
)

NS_MAX = 1.2024  # largest singular value of Jordan's quintic Newton-Schulz (SPEC A5)


def build(opt_name: str, model: torch.nn.Module, args):
    """(optimizer, norm, scale function, lr, wd) for one configuration."""
    if opt_name == "muon_ns":
        opt = normopt.Muon(
            model, lr=args.muon_lr, weight_decay=args.muon_wd, adamw_lr=args.adamw_lr
        )
        return (
            opt,
            N.Spectral(),
            lambda s: NS_MAX * adjust_lr_factor("original", s[0], s[1]),
            args.muon_lr,
            args.muon_wd,
        )
    if opt_name == "muon_svd":
        opt = normopt.Muon(
            model, lr=args.muon_lr, weight_decay=args.muon_wd, adamw_lr=args.adamw_lr, polar="svd"
        )
        return (
            opt,
            N.Spectral(),
            lambda s: adjust_lr_factor("original", s[0], s[1]),
            args.muon_lr,
            args.muon_wd,
        )
    if opt_name == "lion":
        # weight decay on the hidden matrices only (as Muon): a decayed LayerNorm gain would
        # be held under 1/wd too, which is not the experiment
        mats = hidden_matrices(model)
        rest = [p for n, p in model.named_parameters() if n not in mats]
        groups = [{"params": list(mats.values()), "weight_decay": args.lion_wd},
                  {"params": rest, "weight_decay": 0.0}]  # fmt: skip
        opt = normopt.Lion(groups, lr=args.lion_lr)
        return opt, N.MaxEntry(), 1.0, args.lion_lr, args.lion_wd
    raise ValueError(opt_name)


LABELS = {"muon_ns": "Muon (NS5)", "muon_svd": "Muon (exact polar)", "lion": "Lion"}
NORM_LABEL = {"muon_ns": "spectral", "muon_svd": "spectral", "lion": "max-entry"}


def run(opt_name: str, init: float, args, data: Markov2) -> dict:
    torch.manual_seed(args.seed)
    model = TinyLM(vocab=args.vocab, d=args.d, layers=args.layers, seq=args.seq)
    mats = hidden_matrices(model)
    with torch.no_grad():
        for W in mats.values():
            W.mul_(init)
    opt, norm, scale, lr, wd = build(opt_name, model, args)
    cmon = ConstraintMonitor(mats, weight_decay=wd, scale=scale, norm=norm)
    smon = SpectralNormMonitor(mats, iters=args.power_iters) if opt_name != "lion" else None
    umon = UpdateMonitor(mats, opt) if opt_name != "lion" else None
    gen = torch.Generator().manual_seed(args.seed + 1)
    cmon(0)
    if smon:
        smon(0)
    t0 = time.perf_counter()
    losses = []
    for t in range(1, args.steps + 1):
        batch = data.sample(args.batch, args.seq, gen)
        loss = lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        cmon(t)
        if smon:
            smon(t)
    secs = time.perf_counter() - t0
    if umon:
        umon.remove()
    # SPEC A9 envelope per matrix: ratio_t <= 1 + (1 - lr wd)^t max(0, ratio_0 - 1)
    worst_excess, violations, first = -math.inf, 0, {}
    for r in cmon.rows:
        if r["step"] == 0:
            first[r["param"]] = r["ratio"]
            continue
        bound = 1 + (1 - lr * wd) ** r["step"] * max(0.0, first[r["param"]] - 1)
        worst_excess = max(worst_excess, r["ratio"] - bound)
        violations += r["ratio"] > bound * (1 + 1e-6)
    final = {r["param"]: r["ratio"] for r in cmon.rows if r["step"] == args.steps}
    out = {
        "optimizer": opt_name,
        "label": LABELS[opt_name],
        "norm": NORM_LABEL[opt_name],
        "init_scale": init,
        "lr": lr,
        "weight_decay": wd,
        "ratio_start_max": max(first.values()),
        "ratio_final_max": max(final.values()),
        "ratio_final_min": min(final.values()),
        "ratio_max_after_start": max(r["ratio"] for r in cmon.rows if r["step"] > 0),
        "worst_excess_over_a9_bound": worst_excess,
        "a9_violations": int(violations),
        "train_loss_last50": sum(losses[-50:]) / len(losses[-50:]),
        "seconds": secs,
        "ratios": {n: [r5(v) for v in cmon.series(n, "ratio")[1]] for n in mats},
    }
    if smon:
        exact = {(r["step"], r["param"]): r["norm"] for r in cmon.rows}
        errs = [abs(r["spectral_norm"] / exact[(r["step"], r["param"])] - 1) for r in smon.rows]
        out["power_iteration_max_rel_err"] = max(errs)
        out["power_iteration_median_rel_err"] = sorted(errs)[len(errs) // 2]
        out["power_iteration_max_rel_err_after_20"] = max(
            (abs(r["spectral_norm"] / exact[(r["step"], r["param"])] - 1)
             for r in smon.rows if r["step"] >= 20),
            default=math.nan,
        )  # fmt: skip
    if umon:
        # singular values of O = lr-normalized step direction, divided by each matrix's scale
        rel = [
            (r["s_min"] / adjust_lr_factor("original", *mats[r["param"]].shape),
             r["s_max"] / adjust_lr_factor("original", *mats[r["param"]].shape))
            for r in umon.rows
        ]  # fmt: skip
        out["update_s_min_range"] = [min(a for a, _ in rel), max(a for a, _ in rel)]
        out["update_s_max_range"] = [min(b for _, b in rel), max(b for _, b in rel)]
    return out


def plot(results, steps, path):
    inits = sorted({r["init_scale"] for r in results})
    opts = list(dict.fromkeys(r["optimizer"] for r in results))
    plt, fig, axes = subplot_grid(len(inits), len(opts), 4.3, 3.3)
    for i, init in enumerate(inits):
        for j, o in enumerate(opts):
            ax = axes[i][j]
            r = next(r for r in results if r["init_scale"] == init and r["optimizer"] == o)
            for vals in r["ratios"].values():
                ax.plot(range(len(vals)), vals, lw=0.7, alpha=0.7)
            t = torch.arange(steps + 1)
            env = 1 + (1 - r["lr"] * r["weight_decay"]) ** t * max(0.0, r["ratio_start_max"] - 1)
            ax.plot(t, env, "k--", lw=1, label="SPEC A9 bound (worst matrix)")
            ax.axhline(1.0, color="k", lw=0.6)
            ax.set_yscale("log")
            ax.set_title(f"{r['label']}, init x{init:g}: ||W||_{r['norm']} wd / s", fontsize=9)
            ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    add_model_args(p)
    p.add_argument("--muon_lr", type=float, default=0.02)
    p.add_argument("--muon_wd", type=float, default=0.5)
    p.add_argument("--adamw_lr", type=float, default=3e-3, help="Muon's AdamW part")
    p.add_argument("--lion_lr", type=float, default=2e-3)
    p.add_argument("--lion_wd", type=float, default=5.0)
    p.add_argument("--power_iters", type=int, default=2, help="warm power iterations per step")
    p.add_argument("--inits", default="1,8", help="scales applied to the hidden matrices at init")
    p.add_argument("--optimizers", default="muon_ns,muon_svd,lion")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/theory_constraint")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = Markov2(args.vocab, seed=args.seed)
    results = []
    for init in (float(v) for v in args.inits.split(",")):
        for o in args.optimizers.split(","):
            results.append(run(o, init, args, data))
            r = results[-1]
            print(f"  done {r['label']} init x{init:g} in {r['seconds']:.0f} s", flush=True)

    print(f"\nSPEC A9 on a tiny transformer ({args.layers} layers, d={args.d}), {args.steps} steps, "
          f"lr wd = {args.muon_lr * args.muon_wd:g} (Muon), {args.lion_lr * args.lion_wd:g} (Lion); "
          "ratio = ||W|| wd / s over the hidden matrices")  # fmt: skip
    head = (f"{'optimizer':20s} {'init':>4s} {'norm':>9s} {'start':>7s} {'max t>0':>8s} "
            f"{'final max':>9s} {'final min':>9s} {'excess':>9s} {'viol.':>5s} {'loss':>6s}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r['label']:20s} {r['init_scale']:4g} {r['norm']:>9s} {r['ratio_start_max']:7.3f} "
            f"{r['ratio_max_after_start']:8.3f} {r['ratio_final_max']:9.3f} {r['ratio_final_min']:9.3f} "
            f"{r['worst_excess_over_a9_bound']:9.2e} {r['a9_violations']:5d} {r['train_loss_last50']:6.3f}"
        )
    print("'excess': max over steps and matrices of ratio - A9 bound (<= 0: the bound holds).")
    for r in results:
        if "power_iteration_max_rel_err" in r:
            print(
                f"{r['label']:20s} init x{r['init_scale']:g}: power iteration ({args.power_iters} warm "
                f"steps) vs SVD: rel. err median {r['power_iteration_median_rel_err']:.1e}, max "
                f"{r['power_iteration_max_rel_err']:.1e}; step direction "
                f"singular values / scale: s_min in [{r['update_s_min_range'][0]:.3f}, "
                f"{r['update_s_min_range'][1]:.3f}], s_max in [{r['update_s_max_range'][0]:.3f}, "
                f"{r['update_s_max_range'][1]:.3f}]"
            )
    print(f"entropy rate of the language (loss floor, approx.): {data.entropy_rate():.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = run_meta("python3 benchmarks/theory_constraint.py", vars(args))
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "results": results}, separators=(",", ":")) + "\n"
    )  # one line: the curves make an indented file tens of thousands of lines long
    plot(results, args.steps, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
