"""``normopt theory``: rho, L and Kovalev's schedule under Adam's, Muon's and other norms."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# normopt.theory and normopt._checks import torch: loaded when the command runs, not when
# `normopt --help` imports this module to register it.

# The norms compared by default, with the optimizer each one's dualize map gives (SPEC A3).
_LABELS = {
    "max_entry": "max-entry (Adam/sign)",
    "linf": "l-inf (Adam/sign)",
    "frobenius": "Frobenius (NSGD)",
    "spectral": "spectral (Muon)",
    "rms_to_rms": "RMS->RMS (Muon, scaled)",
}
DEFAULT_NORMS = ("max_entry", "frobenius", "spectral", "rms_to_rms")


def table(
    shape: tuple[int, ...],
    eps: float,
    sigma: float,
    delta0: float,
    Lf: float = 1.0,
    norm_names: tuple[str, ...] = DEFAULT_NORMS,
) -> dict[str, Any]:
    """The numbers ``normopt theory`` prints, as a plain dict (the ``--json`` output)."""
    from normopt.theory import constants, kovalev_schedule

    cols: list[dict[str, Any]] = []
    for name in norm_names:
        c = constants(name, shape, Lf)
        s = kovalev_schedule(eps, c.L, c.rho, sigma, delta0)
        cols.append(
            {
                "norm": name,
                "label": _LABELS.get(name, name),
                "rho": c.rho,
                "L": c.L,
                "eta": s.eta,
                "alpha": s.alpha,
                "K": s.K,
                "bound": s.bound(),
                "K_set_by": s.K_reason,
            }
        )
    out: dict[str, Any] = {
        "shape": list(shape),
        "eps": eps,
        "sigma": sigma,
        "delta0": delta0,
        "Lf": Lf,
        "norms": cols,
    }
    by = {c["norm"]: c for c in cols}
    adam = by.get("max_entry") or by.get("linf")
    muon = by.get("spectral")
    if adam and muon:
        out["ratio_adam_over_muon"] = {
            k: adam[k] / muon[k] for k in ("rho", "L", "eta", "alpha", "K")
        }
    return out


def _fmt(x: float) -> str:
    if isinstance(x, int) and abs(x) < 10**7:
        return str(x)
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def run(args: argparse.Namespace) -> int:
    names = tuple(n.strip() for n in args.norms.split(",") if n.strip())
    if not names:
        raise ValueError("--norms: expected at least one norm name")
    res = table(args.shape, args.eps, args.sigma, args.delta0, args.Lf, names)
    if args.json:
        json.dump(res, sys.stdout, indent=2)
        print()
        return 0
    shape = "x".join(map(str, args.shape))
    print(f"normopt theory: Kovalev's Theorem 2 (SPEC A4) for one {shape} parameter")
    print(
        f"target eps = {args.eps:g} on E[min_k ||grad f(x_k)||_dual], sigma = {args.sigma:g} "
        f"(E||g - grad f||_2^2 <= sigma^2), D0 = f(x_0) - inf f = {args.delta0:g}, Lf = {args.Lf:g}"
    )
    print(
        "rho: ||x||_dual <= rho ||x||_F; L = Lf rho^2 (Frobenius Lf-smooth => L-smooth in the norm);\n"
        "eta, alpha, K: the schedule that makes the bound <= eps.\n"
    )
    cols = res["norms"]
    ratio = res.get("ratio_adam_over_muon")
    width = max(14, *(len(c["label"]) for c in cols)) + 2
    head = f"{'':8s}" + "".join(f"{c['label']:>{width}s}" for c in cols)
    if ratio:
        head += f"{'Adam/Muon':>{14}s}"
    print(head)
    print("-" * len(head))
    for key in ("rho", "L", "eta", "alpha", "K", "bound"):
        line = f"{key:8s}" + "".join(f"{_fmt(c[key]):>{width}s}" for c in cols)
        if ratio:
            line += f"{_fmt(ratio[key]):>14s}" if key in ratio else f"{'':14s}"
        print(line)
    print("\nK is set by:")
    for c in cols:
        print(f"  {c['label']:{width - 2}s} {c['K_set_by']}")
    if ratio:
        print(
            f"\nAdam/Muon: K grows like rho^4 when noise dominates; rho_Adam / rho_Muon = "
            f"{ratio['rho']:.4g} here, so K is {ratio['K']:.3g} times larger under the max-entry norm."
        )
    print(
        "Note: eps is measured in each norm's own dual norm (entrywise l1 for max-entry, nuclear for\n"
        "spectral), so the columns bound different quantities; these are worst-case constants,\n"
        "not predictions (see `benchmarks/theory_kovalev.py` for the bound against measurement)."
    )
    return 0


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(t) for t in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MxN, e.g. 768x3072, got {text!r}") from None
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected positive sizes MxN, got {text!r}")
    return dims


def _number(text: str, *, positive: bool) -> float:
    """A finite number >= 0 (> 0 when ``positive``) from the command line, for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    from normopt._checks import check_number

    try:
        return check_number("value", value, low_open=positive)
    except ValueError as e:  # argparse names the flag
        raise argparse.ArgumentTypeError(str(e).removeprefix("value: ")) from None


def _positive(text: str) -> float:
    return _number(text, positive=True)


def _nonneg(text: str) -> float:
    return _number(text, positive=False)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "theory",
        help="rho, L and Kovalev's eta, alpha, K under Adam's and Muon's norms, side by side",
        description=(
            "Constants of Kovalev's Theorem 2 (SPEC A4) for one parameter shape under several "
            "norms: rho, L = Lf rho^2, and the schedule eta, alpha, K that guarantees "
            "E[min_k ||grad f||_dual] <= eps."
        ),
    )
    p.add_argument(
        "--shape", type=_shape, default=(768, 3072), help="parameter shape MxN (default 768x3072)"
    )
    p.add_argument("--eps", type=_positive, default=0.1, help="target accuracy (default 0.1)")
    p.add_argument(
        "--sigma", type=_nonneg, default=1.0, help="gradient noise, l2 (default 1; 0 = exact)"
    )
    p.add_argument("--delta0", type=_nonneg, default=1.0, help="f(x_0) - inf f (default 1)")
    p.add_argument(
        "--Lf", type=_positive, default=1.0, help="Frobenius smoothness constant (default 1)"
    )
    p.add_argument(
        "--norms",
        default=",".join(DEFAULT_NORMS),
        help=f"comma-separated norm names (default {','.join(DEFAULT_NORMS)}); see `normopt norms`",
    )
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=run)
