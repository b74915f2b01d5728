"""``normopt norms``: the catalog, with a live check of every dualize map and polar method.

The check runs on one torch thread: its tensors are small, where more threads only add
synchronization (on a shared 2-core machine the default two threads made the command take
~50 s of CPU instead of ~4), and one thread gives the same digits on every machine. torch
is imported when the command runs, not when ``normopt --help`` registers it.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from normopt import norms as N

# Arguments for the registered norms that need some (the rest are built with none).
EXAMPLE_ARGS: dict[str, dict[str, Any]] = {
    "schatten": {"p": 3.0},
    "ky_fan": {"k": 2},
    "ky_fan_dual": {"k": 2},
    "transposed": {"inner": "column_rms"},
    "modular": {"norms": ["spectral", "column_rms", "l2"], "scales": [1.0, 2.0, 0.5]},
    "modular_sum": {"norms": ["nuclear", "linf", "rms_to_rms"], "scales": [0.5, 1.0, 3.0]},
}


def catalog() -> list[N.AnyNorm]:
    """One norm per registered name, in name order."""
    from normopt import norms as N

    return [N.get(name, **EXAMPLE_ARGS.get(name, {})) for name in N.names()]


def _element_shape(norm: N.Norm, m: int, n: int) -> tuple[int, ...]:
    return (m, n, 3, 3) if norm.ndim == 4 else ((m * n,) if norm.ndim == 1 else (m, n))


def check(norm: N.AnyNorm, m: int, n: int, trials: int, gen: torch.Generator) -> dict[str, Any]:
    """The live check of one norm on random float64 elements: ``||dualize(G)||`` (1),
    ``<G, dualize(G)> - ||G||_*`` (0), and whether random unit directions stay below the dual
    norm. A product norm gets one tensor per block."""
    import torch

    from normopt import norms as N

    product = isinstance(norm, N.ProductNorm)
    blocks = norm.norms if isinstance(norm, N.ProductNorm) else [norm]
    shapes = [_element_shape(b, m, n) for b in blocks]

    def one(xs: list[Tensor]) -> Any:  # what the norm's methods take
        return xs if product else xs[0]

    G = [torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes]
    dirs = norm.dualize(one(G))
    D = list(dirs) if isinstance(dirs, list) else [dirs]
    dual = float(norm.dual_norm(one(G)))
    unit = float(norm.norm(one(D)))
    gap = sum(float((g * d).sum()) for g, d in zip(G, D)) - dual
    # brute force: random unit-norm directions never beat the dual norm
    T = [torch.randn((trials, *s), dtype=torch.float64, generator=gen) for s in shapes]
    size = norm.norm(one(T))  # (trials,)
    aligned = sum((t * g).flatten(start_dim=1).sum(dim=1) for t, g in zip(T, G))
    best = float((aligned / size).max())
    rho = norm.rho(shapes) if isinstance(norm, N.ProductNorm) else norm.rho(shapes[0])
    return {"unit": unit, "gap": gap, "ok": best <= dual * (1 + 1e-12), "rho": float(rho)}


def _cell(text: str, width: int) -> str:
    """``text`` in a column of ``width``, cut with an ellipsis when longer."""
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


# the widest a norm's name column gets (the product norms' reprs run to 100 characters)
NAME_WIDTH = 44


def run(args: argparse.Namespace) -> int:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(before)


def _run(args: argparse.Namespace) -> int:
    import torch

    from normopt import linalg

    m, n = args.shape
    gen = torch.Generator().manual_seed(args.seed)
    print(f"normopt norm catalog: live check on random float64 tensors (seed {args.seed})")
    print(f"matrices {m}x{n}; vectors of {m * n}; conv kernels {m}x{n}x3x3; product norms")
    print("take one of these per block\n")
    norms = catalog()
    names = [repr(norm) for norm in norms]
    duals = [repr(norm.dual()) for norm in norms]
    w_name = min(NAME_WIDTH, max(len("norm"), *map(len, names)))
    w_dual = min(NAME_WIDTH, max(len("dual"), *map(len, duals)))
    head = (
        f"{'norm':{w_name}s}  {'dual':{w_dual}s}  {'rho':>9s}  {'||dualize(G)||':>15s}  "
        f"{'<G,D>-||G||*':>13s}  {'brute':>5s}"
    )
    print(head)
    print("-" * len(head))
    worst = 0.0
    failed = False
    for norm, name, dual in zip(norms, names, duals):
        r = check(norm, m, n, args.trials, gen)
        worst = max(worst, abs(r["unit"] - 1.0), abs(r["gap"]))
        failed = failed or not r["ok"]
        print(
            f"{_cell(name, w_name)}  {_cell(dual, w_dual)}  {r['rho']:9.3f}  "
            f"{r['unit']:15.12f}  {r['gap']:13.2e}  {'ok' if r['ok'] else 'FAIL':>5s}"
        )
    print(f"\nlargest deviation from the identities: {worst:.2e}")

    print("\npolar factor U V^T: singular values of each method (float32 iteration), vs the SVD")
    A = torch.randn(m, n, generator=gen)
    ref = linalg.polar(A.double(), "svd")
    print(
        f"{'method':22s}  {'steps':>5s}  {'s_min':>8s}  {'s_max':>8s}  {'rel. err':>9s}  {'ms':>8s}"
    )
    for method in ("newton_schulz", "polar_express", "gram_newton_schulz"):
        for steps in (5, 6):
            t0 = time.perf_counter()
            O = linalg.polar(A, method, steps)
            ms = 1e3 * (time.perf_counter() - t0)
            s = torch.linalg.svdvals(O.double())
            err = float((O.double() - ref).norm() / ref.norm())
            print(
                f"{method:22s}  {steps:5d}  {float(s.min()):8.4f}  {float(s.max()):8.4f}  "
                f"{err:9.2e}  {ms:8.2f}"
            )
    ok = worst < 1e-9 and not failed
    print("\nall dualize identities hold" if ok else "\nSOME IDENTITIES FAILED")
    return 0 if ok else 1


def _shape(text: str) -> tuple[int, int]:
    try:
        m, n = (int(t) for t in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MxN, e.g. 64x256, got {text!r}") from None
    if m < 1 or n < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return m, n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("norms", help="list the norm catalog and check every dualize map live")
    p.add_argument(
        "--shape", type=_shape, default=(48, 96), help="matrix shape MxN (default 48x96)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--trials", type=int, default=300, help="random directions for the brute-force check"
    )
    p.set_defaults(func=run)
