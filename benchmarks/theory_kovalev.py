"""Experiment 1: Kovalev's Theorem 2 against measurement on a noisy quadratic.

    python3 benchmarks/theory_kovalev.py            # about two minutes on one CPU core

Problem: ``f(X) = (Lf/2) ||X - X*||_F^2`` on ``m x n`` matrices, stochastic
gradients ``g = Lf (X - X*) + xi`` with ``xi`` Gaussian, ``E||xi||_F^2 = sigma^2``,
and ``X_0`` at distance ``sqrt(2 D0 / Lf)`` from ``X*`` (so ``f(X_0) - inf f = D0``
exactly). In a norm with constant ``rho`` this ``f`` is ``L = Lf rho^2``-smooth,
and that ``L`` is exact (attained), so the theorem's constants are known.

Method: Kovalev's Algorithm 1 (SPEC A3) written out directly with
``norm.dualize``::

    m_0 = g(x_0; xi_-1)
    for k = 0..K-1:  m <- (1 - alpha) m + alpha g(x_k; xi_k);  x <- x - eta dualize(m)

(``m_0`` uses its own noise sample, so that the first step does not average a
sample with itself). For each norm (max-entry = sign descent, Adam's geometry;
Frobenius = normalized SGD; spectral = Muon), ``eps`` is the smallest target
whose schedule ``K`` fits the step budget (bisection on ``eps``), so the run
uses exactly the schedule's ``eta``, ``alpha`` and ``K`` and the bound is
evaluated at that ``K`` with no capping. Seeds run as one batch.

Measured: ``min_{k<K} ||grad f(x_k)||_dual`` (exact gradient, in the norm's
dual: entrywise l1, Frobenius, nuclear), its mean over seeds (the theorem
bounds the expectation), and Lemma 3's momentum error
``||m_k - grad f(x_k)||_dual`` against its bound. Writes a JSON with every
number and a PNG of the curves.
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

from normopt import norms as N
from normopt.theory import (
    constants,
    kovalev_bound_terms,
    kovalev_schedule,
    lemma3_bound,
)
from theory_tinylm import run_meta, subplot_grid  # noqa: E402  (beside this script)

LABELS = {"max_entry": "max-entry (sign/Adam)", "frobenius": "Frobenius (NSGD)",
          "spectral": "spectral (Muon)", "linf": "l-inf (sign/Adam)"}  # fmt: skip


def _r(x: float) -> float:
    return float(f"{x:.5g}")


def _kfrac(r: dict) -> str:
    ks = sorted(r["first_k_below_eps"])
    if any(k < 0 for k in ks):
        return f"{sum(k < 0 for k in ks)} never"
    return f"{ks[len(ks) // 2] / r['K']:.3f}"


def eps_for_budget(L: float, rho: float, sigma: float, delta0: float, budget: int) -> float:
    """The smallest ``eps`` whose schedule has ``K <= budget`` (K decreases with eps)."""
    lo, hi = -12.0, 12.0  # log10 eps
    if budget < kovalev_schedule(10**hi, L, rho, sigma, delta0).K:
        raise ValueError("budget: too small for any eps")
    for _ in range(80):
        mid = (lo + hi) / 2
        if budget >= kovalev_schedule(10**mid, L, rho, sigma, delta0).K:
            hi = mid
        else:
            lo = mid
    return 10**hi


def run_one(name, shape, sigma, delta0, Lf, budget, seeds, seed0, n_points=200):
    norm = N.get(name)
    c = constants(norm, shape, Lf)
    eps = eps_for_budget(c.L, c.rho, sigma, delta0, budget)
    s = kovalev_schedule(eps, c.L, c.rho, sigma, delta0)
    eta, alpha, K = s.eta, s.alpha, s.K
    m, n = shape
    gen = torch.Generator().manual_seed(seed0)
    dt = torch.float64
    Xs = torch.randn(seeds, m, n, generator=gen, dtype=dt)  # (S, m, n)
    Delta = torch.randn(seeds, m, n, generator=gen, dtype=dt)
    Delta *= math.sqrt(2 * delta0 / Lf) / Delta.flatten(1).norm(dim=1).view(-1, 1, 1)
    X = Xs + Delta  # f(X_0) - inf f = delta0 exactly
    noise = sigma / math.sqrt(m * n)  # per entry: E||xi||_F^2 = sigma^2

    def stoch_grad(X):
        return Lf * (X - Xs) + noise * torch.randn(X.shape, generator=gen, dtype=dt)

    grid = torch.logspace(0, math.log10(K), n_points).round().long().tolist()
    record = sorted({0, K - 1, *(v for v in grid if v < K)})  # log-spaced steps to keep
    rec = set(record)
    mom = stoch_grad(X)  # m_0
    best = torch.full((seeds,), math.inf, dtype=dt)
    first_below = torch.full((seeds,), -1, dtype=torch.long)  # first k with ||grad f||_dual <= eps
    g0 = None
    curve_min, curve_lemma = [], []
    t0 = time.perf_counter()
    for k in range(K):
        grad = Lf * (X - Xs)  # exact gradient at x_k
        gnorm = norm.dual_norm(grad)  # (S,)
        if g0 is None:
            g0 = gnorm
        best = torch.minimum(best, gnorm)
        first_below = torch.where((first_below < 0) & (gnorm <= eps), k, first_below)
        if k in rec:
            curve_min.append(best.tolist())
            curve_lemma.append(norm.dual_norm(mom - grad).tolist())  # ||m_k - grad f(x_k)||_dual
        mom = (1 - alpha) * mom + alpha * stoch_grad(X)  # m_{k+1}
        X = X - eta * norm.dualize(mom)  # x_{k+1}
    secs = time.perf_counter() - t0
    final = norm.dual_norm(Lf * (X - Xs))
    lemma_obs = [sum(v) / seeds for v in curve_lemma]
    lemma_bnd = [lemma3_bound(k, alpha, eta, c.L, c.rho, sigma) for k in record]
    bound = s.bound()
    mean_min = float(best.mean())
    return {
        "norm": name,
        "label": LABELS.get(name, name),
        "rho": c.rho,
        "L": c.L,
        "eps": eps,
        "eta": eta,
        "alpha": alpha,
        "K": K,
        "K_set_by": s.K_reason,
        "bound": bound,
        "bound_terms": kovalev_bound_terms(eta, alpha, K, c.L, c.rho, sigma, delta0),
        "grad0_dual_mean": float(g0.mean()),
        "min_grad_dual_mean": mean_min,
        "min_grad_dual_std": float(best.std()) if seeds > 1 else 0.0,
        "min_grad_dual_max": float(best.max()),
        "final_grad_dual_mean": float(final.mean()),
        "seeds_below_bound": int((best <= bound).sum()),
        "first_k_below_eps": first_below.tolist(),  # -1: never within K
        "bound_over_observed": bound / mean_min if mean_min > 0 else math.inf,
        "lemma3_max_ratio": max(o / b for o, b in zip(lemma_obs, lemma_bnd)),
        "seconds": secs,
        "curves": {  # 5 significant digits keep the file small
            "k": record,
            "min_grad_dual": [[_r(v) for v in row] for row in curve_min],
            "lemma3_observed_mean": [_r(v) for v in lemma_obs],
            "lemma3_bound": [_r(v) for v in lemma_bnd],
        },
    }


def plot(results, path):
    configs = sorted({r["sigma"] for r in results})
    names = list(dict.fromkeys(r["norm"] for r in results))
    plt, fig, axes = subplot_grid(len(configs), len(names), 4.2, 3.4)
    for i, sig in enumerate(configs):
        for j, name in enumerate(names):
            ax = axes[i][j]
            r = next(r for r in results if r["sigma"] == sig and r["norm"] == name)
            cv = r["curves"]
            k = [v + 1 for v in cv["k"]]
            mins = torch.tensor(cv["min_grad_dual"])  # (points, S)
            ax.fill_between(k, mins.min(1).values, mins.max(1).values, alpha=0.25, color="C0")
            ax.plot(k, mins.mean(1), color="C0", label="min_{j<=k} ||grad f||_dual (mean)")
            ax.axhline(r["bound"], color="C0", ls="--", label="Theorem 2 bound at K")
            ax.plot(
                k,
                cv["lemma3_observed_mean"],
                color="C1",
                lw=0.8,
                label="||m_k - grad f||_dual (mean)",
            )
            ax.plot(k, cv["lemma3_bound"], color="C1", ls="-.", label="Lemma 3 bound")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{r['label']}, sigma={sig:g}\nK={r['K']}, eps={r['eps']:.3g}", fontsize=9)
            ax.set_xlabel("step k + 1")
            if j == 0:
                ax.set_ylabel("dual norm")
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="16x32")
    p.add_argument("--sigmas", default="1,0", help="noise levels to run (comma-separated)")
    p.add_argument("--delta0", type=float, default=1.0)
    p.add_argument("--Lf", type=float, default=1.0)
    p.add_argument("--budget", type=int, default=20000, help="largest K to run")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--norms", default="max_entry,frobenius,spectral")
    p.add_argument("--out", default="benchmarks/results/theory_kovalev", help="path stem")
    args = p.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    sigmas = [float(v) for v in args.sigmas.split(",")]
    torch.set_num_threads(1)  # small batched SVDs: threads only contend

    results = []
    for sig in sigmas:
        for name in args.norms.split(","):
            r = run_one(name, shape, sig, args.delta0, args.Lf, args.budget, args.seeds, args.seed)
            r["sigma"] = sig
            results.append(r)

    print(f"Kovalev's Theorem 2 on f = (Lf/2)||X - X*||_F^2, X {args.shape}, Lf={args.Lf:g}, "
          f"D0={args.delta0:g}, {args.seeds} seeds, K <= {args.budget}")  # fmt: skip
    head = (f"{'sigma':>5s} {'norm':22s} {'rho':>6s} {'L':>7s} {'eps':>8s} {'eta':>9s} "
            f"{'alpha':>8s} {'K':>6s} {'||g0||*':>8s} {'bound':>8s} {'min||g||*':>10s} "
            f"{'+-std':>8s} {'bnd/obs':>8s} {'<=bnd':>5s} {'L3 max':>7s} {'k(eps)/K':>8s}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r['sigma']:5g} {r['label']:22s} {r['rho']:6.3g} {r['L']:7.4g} {r['eps']:8.3g} "
            f"{r['eta']:9.3g} {r['alpha']:8.3g} {r['K']:6d} {r['grad0_dual_mean']:8.3g} "
            f"{r['bound']:8.3g} {r['min_grad_dual_mean']:10.3g} {r['min_grad_dual_std']:8.2g} "
            f"{r['bound_over_observed']:8.3g} {r['seeds_below_bound']:2d}/{args.seeds:<2d} "
            f"{r['lemma3_max_ratio']:7.3f} {_kfrac(r):>8s}"
        )
    print("\nbound terms at K (the largest first):")
    for r in results:
        terms = sorted(r["bound_terms"].items(), key=lambda kv: -kv[1])
        print(
            f"  sigma={r['sigma']:g} {r['label']:22s} "
            + ", ".join(f"{k} = {v:.3g}" for k, v in terms[:3])
        )
    print(
        "\n'L3 max': max over k of mean ||m_k - grad f(x_k)||_dual / Lemma 3's bound (<= 1 agrees)."
    )
    print("'k(eps)/K': median over seeds of the first k with ||grad f(x_k)||_dual <= eps, over K.")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python3 benchmarks/theory_kovalev.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k != "out"
    )
    meta = run_meta(command, vars(args))
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "results": results}, separators=(",", ":")) + "\n"
    )  # one line: the curves make an indented file tens of thousands of lines long
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
