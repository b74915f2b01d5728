"""Experiment 3: rho, L and sigma measured on a small transformer, against the napkin math.

    python3 benchmarks/theory_rho_L.py             # a few minutes on one CPU core

The seed's napkin math (SPEC conventions): Frobenius smoothness ``Lf`` gives
``L = Lf rho^2`` in a norm with constant ``rho``; Adam's max-entry norm has
``rho^2 = m n``, Muon's spectral norm ``rho^2 = min(m, n)``. In the
noise-dominated regime Kovalev's ``K`` grows like ``L D0 rho^2 sigma^2 / eps^4``,
so the napkin ratio ``K_Adam / K_Muon`` is ``(m n / min(m, n))^2 = max(m, n)^2``.

Here every quantity is measured per hidden matrix of a tiny causal
transformer (``theory_tinylm.py``) trained with ``normopt.Muon`` on a
synthetic order-2 Markov language, at a few checkpoints:

- ``L`` in the Frobenius, spectral and max-entry norms
  (:func:`normopt.theory.estimate_smoothness`, one layer moved at a time,
  along the extreme points of each ball, ``"dualized"``, and along the actual
  Muon step), on a fixed large batch that stands in for ``f``;
- ``sigma^2`` and the ``rho`` the gradient *noise* sees in each norm
  (:func:`normopt.theory.estimate_noise` against the large batch), which is
  what enters Lemma 3 (``E||m - grad f||_dual <= rho sigma ...``);
- the ``rho`` of the full gradient (:func:`normopt.theory.effective_rho`).

Then ``L rho^2`` per norm, measured versus napkin, and the implied
``K_Adam / K_Muon`` at equal ``eps`` and at ``eps`` proportional to each
norm's ``||grad f||_dual``. Writes a JSON and a PNG.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's normopt

import normopt
from normopt import norms as N
from normopt.theory import effective_rho, estimate_noise, estimate_smoothness
from theory_tinylm import Markov2, TinyLM, add_model_args, hidden_matrices, lm_loss, r5, run_meta

NORMS = {"frobenius": N.Frobenius(), "spectral": N.Spectral(), "max_entry": N.MaxEntry()}


def measure(model, opt, mats, full_batch, mini_batches, args, gen) -> dict:
    def f():
        return lm_loss(model, full_batch)

    out: dict = {"layers": {}}
    # L per layer, one layer moved at a time, along the extreme points of each ball
    L = {
        k: estimate_smoothness(
            mats, f, norm, directions="dualized", n_directions=args.directions,
            radius=args.radius, isolated=True, generator=gen,
        ).layer_L()
        for k, norm in NORMS.items()
    }  # fmt: skip
    # L along the actual Muon step (all layers move; on the large batch)
    saved_p = {n: p.detach().clone() for n, p in model.named_parameters()}
    saved_opt = copy.deepcopy(opt.state_dict())
    opt.zero_grad(set_to_none=True)
    lm_loss(model, mini_batches[0]).backward()
    opt.step()
    D = {n: mats[n].detach() - saved_p[n] for n in mats}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(saved_p[n])
    opt.load_state_dict(saved_opt)
    opt.zero_grad(set_to_none=True)
    L_step = {
        k: estimate_smoothness(mats, f, norm, directions=[D]).layer_L()
        for k, norm in NORMS.items()
        if k != "frobenius"
    }
    # the same step, one layer at a time: separates coupling between layers from alignment
    L_step_iso = estimate_smoothness(mats, f, NORMS["spectral"], directions=[D], isolated=True)
    # noise and its rho, per norm, against the large batch
    noise = {
        k: estimate_noise(mats, lambda b: lm_loss(model, b), mini_batches, norm, full_loss_fn=f)
        for k, norm in NORMS.items()
        if k != "frobenius"
    }
    rho_g = {
        k: effective_rho(mats, norm, loss_fn=f) for k, norm in NORMS.items() if k != "frobenius"
    }
    for n, W in mats.items():
        m_, n_ = W.shape
        lf = L["frobenius"][n]
        rs = noise["spectral"].rho_eff()[n]
        rm = noise["max_entry"].rho_eff()[n]
        gs = rho_g["spectral"].per_layer[n]
        gm = rho_g["max_entry"].per_layer[n]
        out["layers"][n] = {
            "shape": [m_, n_],
            "L_frobenius": lf,
            "L_spectral": L["spectral"][n],
            "L_max_entry": L["max_entry"][n],
            "L_spectral_over_LF": L["spectral"][n] / lf,
            "napkin_spectral": min(m_, n_),
            "L_max_entry_over_LF": L["max_entry"][n] / lf,
            "napkin_max_entry": m_ * n_,
            "L_step_spectral": L_step["spectral"].get(n, math.nan),
            "L_step_max_entry": L_step["max_entry"].get(n, math.nan),
            "L_step_spectral_isolated": L_step_iso.layer_L().get(n, math.nan),
            "sigma": math.sqrt(noise["spectral"].per_layer_sigma2[n]),
            "rho_noise_spectral": rs,
            "rho_noise_max_entry": rm,
            "rho_grad_spectral": gs,
            "rho_grad_max_entry": gm,
        }
        row = out["layers"][n]
        # K_Adam / K_Muon in the noise-dominated regime: K ~ L D0 rho^2 sigma^2 / eps^4, with
        # the same sigma (l2) and D0 under both norms. Equal eps: both runs then also
        # guarantee ||grad f||_F <= eps (both dual norms dominate Frobenius); napkin:
        # (mn)^2 / min(m,n)^2 = max(m,n)^2.
        row["K_ratio_napkin_equal_eps"] = (m_ * n_ / min(m_, n_)) ** 2
        prod_m = L["max_entry"][n] * rm**2
        prod_s = L["spectral"][n] * rs**2
        row["K_ratio_measured_equal_eps"] = prod_m / prod_s
        # eps proportional to each norm's ||grad f||_dual = rho_grad ||grad f||_F (the same
        # relative accuracy in each norm): the ratio gains (rho_grad_s / rho_grad_m)^4, and
        # the napkin ratio (every rho at its worst case) becomes exactly 1.
        row["K_ratio_napkin_relative_eps"] = 1.0
        row["K_ratio_measured_relative_eps"] = prod_m / prod_s * (gs / gm) ** 4
    out["loss_full"] = float(f().detach())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--checkpoints", default="0,40,200")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--full_batch", type=int, default=128, help="sequences standing in for f")
    p.add_argument("--noise_batches", type=int, default=16)
    p.add_argument("--directions", type=int, default=1, help="dualized directions per layer")
    p.add_argument("--radius", type=float, default=1e-2, help="relative displacement")
    add_model_args(p)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--adamw_lr", type=float, default=3e-3, help="Muon's AdamW part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/theory_rho_L")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = Markov2(args.vocab, seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    model = TinyLM(vocab=args.vocab, d=args.d, layers=args.layers, seq=args.seq)
    mats = hidden_matrices(model)
    opt = normopt.Muon(model, lr=args.lr, adamw_lr=args.adamw_lr)
    full_batch = data.sample(args.full_batch, args.seq, gen)
    checkpoints = sorted(int(v) for v in args.checkpoints.split(","))
    results = []
    t0 = time.perf_counter()
    for t in range(args.steps + 1):
        if t in checkpoints:
            minis = [data.sample(args.batch, args.seq, gen) for _ in range(args.noise_batches)]
            r = measure(model, opt, mats, full_batch, minis, args, gen)
            r["step"] = t
            results.append(r)
            print(
                f"  checkpoint step {t}: loss {r['loss_full']:.3f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        if t == args.steps:
            break
        batch = data.sample(args.batch, args.seq, gen)
        opt.zero_grad(set_to_none=True)
        lm_loss(model, batch).backward()
        opt.step()

    for r in results:
        print(
            f"\nstep {r['step']} (loss on the large batch {r['loss_full']:.3f}); per hidden matrix:"
        )
        head = (f"{'param':22s} {'shape':>7s} {'L_F':>7s} {'L_sp/L_F':>8s} {'min':>4s} {'L_max/L_F':>9s} "
                f"{'mn':>5s} {'step/dual':>9s} {'iso':>6s} {'sigma':>7s} {'rho_sp':>6s} {'sqrt min':>8s} "
                f"{'rho_max':>7s} {'sqrt mn':>7s} {'K_A/K_M: napkin':>15s} {'meas.':>9s} {'rel.eps':>7s}")  # fmt: skip
        print(head)
        print("-" * len(head))
        for n, v in r["layers"].items():
            sh = "x".join(map(str, v["shape"]))
            print(
                f"{n:22s} {sh:>7s} {v['L_frobenius']:7.3g} {v['L_spectral_over_LF']:8.3g} "
                f"{v['napkin_spectral']:4d} {v['L_max_entry_over_LF']:9.3g} {v['napkin_max_entry']:5d} "
                f"{v['L_step_spectral'] / v['L_spectral']:9.3g} "
                f"{v['L_step_spectral_isolated'] / v['L_spectral']:6.3g} {v['sigma']:7.3g} "
                f"{v['rho_noise_spectral']:6.2f} {math.sqrt(v['napkin_spectral']):8.2f} "
                f"{v['rho_noise_max_entry']:7.1f} {math.sqrt(v['napkin_max_entry']):7.1f} "
                f"{v['K_ratio_napkin_equal_eps']:15.3g} {v['K_ratio_measured_equal_eps']:9.3g} "
                f"{v['K_ratio_measured_relative_eps']:7.3g}"
            )
    print("\nmedians over hidden matrices:")
    summary = []
    for r in results:
        lay = list(r["layers"].values())

        def med(key, lay=lay):
            return statistics.median(v[key] for v in lay)

        s = {
            "step": r["step"],
            "L_spectral_over_LF_over_napkin": statistics.median(v["L_spectral_over_LF"] / v["napkin_spectral"] for v in lay),
            "L_max_entry_over_LF_over_napkin": statistics.median(v["L_max_entry_over_LF"] / v["napkin_max_entry"] for v in lay),
            "rho_noise_spectral_over_worst": statistics.median(v["rho_noise_spectral"] / math.sqrt(v["napkin_spectral"]) for v in lay),
            "rho_noise_max_entry_over_worst": statistics.median(v["rho_noise_max_entry"] / math.sqrt(v["napkin_max_entry"]) for v in lay),
            "L_step_over_L_dualized_spectral": statistics.median(v["L_step_spectral"] / v["L_spectral"] for v in lay),
            "L_step_isolated_over_L_dualized_spectral": statistics.median(v["L_step_spectral_isolated"] / v["L_spectral"] for v in lay),
            "K_ratio_napkin_equal_eps": med("K_ratio_napkin_equal_eps"),
            "K_ratio_measured_over_napkin_equal_eps": statistics.median(
                v["K_ratio_measured_equal_eps"] / v["K_ratio_napkin_equal_eps"] for v in lay
            ),
            "K_ratio_measured_equal_eps": med("K_ratio_measured_equal_eps"),
            "K_ratio_measured_relative_eps": med("K_ratio_measured_relative_eps"),
        }  # fmt: skip
        summary.append(s)
        print(
            f"  step {s['step']:4d}: (L_sp/L_F)/min(m,n) = {s['L_spectral_over_LF_over_napkin']:.3f}, "
            f"(L_max/L_F)/(mn) = {s['L_max_entry_over_LF_over_napkin']:.3f}, "
            f"rho_noise/worst: spectral {s['rho_noise_spectral_over_worst']:.3f}, "
            f"max-entry {s['rho_noise_max_entry_over_worst']:.3f};\n"
            f"             L along Muon's step / L dualized (spectral): all layers moving "
            f"{s['L_step_over_L_dualized_spectral']:.3g}, one at a time "
            f"{s['L_step_isolated_over_L_dualized_spectral']:.3g};\n"
            f"             K_Adam/K_Muon at equal eps: measured / napkin (max(m,n)^2) = "
            f"{s['K_ratio_measured_over_napkin_equal_eps']:.3g}; at eps relative to ||grad f||_dual: "
            f"napkin 1, measured {s['K_ratio_measured_relative_eps']:.3g}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = run_meta(
        "python3 benchmarks/theory_rho_L.py", vars(args), seconds=time.perf_counter() - t0
    )
    rounded = [
        {**r, "layers": {n: {k: (r5(v) if isinstance(v, float) else v) for k, v in lay.items()}
                         for n, lay in r["layers"].items()}}
        for r in results
    ]  # fmt: skip
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "summary": summary, "checkpoints": rounded}, indent=1)
    )
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results[-1]["layers"])
    x = range(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for r in results:
        lay = list(r["layers"].values())
        st = r["step"]
        axes[0].plot(
            x,
            [v["L_spectral_over_LF"] / v["napkin_spectral"] for v in lay],
            "o-",
            label=f"spectral, step {st}",
        )
        axes[0].plot(
            x,
            [v["L_max_entry_over_LF"] / v["napkin_max_entry"] for v in lay],
            "s--",
            label=f"max-entry, step {st}",
        )
        axes[1].plot(
            x,
            [v["rho_noise_spectral"] / math.sqrt(v["napkin_spectral"]) for v in lay],
            "o-",
            label=f"spectral, step {st}",
        )
        axes[1].plot(
            x,
            [v["rho_noise_max_entry"] / math.sqrt(v["napkin_max_entry"]) for v in lay],
            "s--",
            label=f"max-entry, step {st}",
        )
        axes[2].plot(
            x,
            [v["K_ratio_measured_equal_eps"] for v in lay],
            "o-",
            label=f"measured, equal eps, step {st}",
        )
        axes[2].plot(
            x,
            [v["K_ratio_measured_relative_eps"] for v in lay],
            "s--",
            label=f"measured, relative eps, step {st}",
        )
    lay = list(results[-1]["layers"].values())
    axes[2].plot(
        x,
        [v["K_ratio_napkin_equal_eps"] for v in lay],
        "k--",
        label="napkin, equal eps: max(m,n)^2",
    )
    axes[2].axhline(1.0, color="k", lw=0.6, label="napkin, relative eps: 1")
    titles = [
        "(L / L_F) / napkin rho^2 (dualized directions)",
        "rho of the gradient noise / worst case",
        "K_Adam / K_Muon (noise-dominated)",
    ]
    for ax, title in zip(axes, titles):
        ax.set_xticks(list(x))
        ax.set_xticklabels(
            [n.replace("blocks.", "b").replace(".weight", "") for n in names],
            rotation=60,
            fontsize=7,
        )
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
