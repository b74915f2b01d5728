"""``normopt norms``: the catalog, with a live check of every dualize map and polar method."""

from __future__ import annotations

import argparse
import time

import torch

from normopt import linalg
from normopt import norms as N


def _catalog(m: int, n: int) -> list[N.Norm]:
    return [
        N.L1(), N.L2(), N.LInf(), N.Frobenius(), N.Spectral(), N.Nuclear(), N.Schatten(3.0),
        N.KyFan(2), N.KyFanDual(2), N.MaxEntry(), N.EntrywiseL1(), N.RMSToRMS(), N.RMSToRMSDual(),
        N.ColumnRMS(), N.ColumnRMSDual(), N.RowRMS(), N.RowRMSDual(), N.ConvSpectral(),
        N.ConvSpectralDual(), N.Transposed(N.ColumnRMS()),
    ]  # fmt: skip


def run(args: argparse.Namespace) -> int:
    m, n = args.shape
    gen = torch.Generator().manual_seed(args.seed)
    print(f"normopt norm catalog: live check on random float64 tensors (seed {args.seed})")
    print(f"matrices {m}x{n}; vectors of {m * n}; conv kernels {m}x{n}x3x3\n")
    head = f"{'norm':30s} {'dual':28s} {'rho':>9s} {'||dualize(G)||':>15s} {'<G,D>-||G||*':>13s} {'brute':>7s}"
    print(head)
    print("-" * len(head))
    worst = 0.0
    for norm in _catalog(m, n):
        shape = (m, n, 3, 3) if norm.ndim == 4 else ((m * n,) if norm.ndim == 1 else (m, n))
        G = torch.randn(shape, dtype=torch.float64, generator=gen)
        D = norm.dualize(G)
        unit = float(norm.norm(D))
        gap = float((G * D).sum() - norm.dual_norm(G))
        # brute force: random unit-norm directions never beat the dual norm
        T = torch.randn((args.trials, *shape), dtype=torch.float64, generator=gen)
        T = T / norm.norm(T).reshape(-1, *([1] * len(shape)))
        best = float((T * G).sum(dim=tuple(range(1, T.ndim))).max())
        ok = best <= float(norm.dual_norm(G)) * (1 + 1e-12)
        worst = max(worst, abs(unit - 1.0), abs(gap))
        print(
            f"{norm!r:30.30s} {norm.dual()!r:28.28s} {norm.rho(shape):9.3f} "
            f"{unit:15.12f} {gap:13.2e} {'ok' if ok else 'FAIL':>7s}"
        )
    print(f"\nlargest deviation from the identities: {worst:.2e}")

    print("\npolar factor U V^T: singular values of each method (float32 iteration), vs the SVD")
    A = torch.randn(m, n, generator=gen)
    ref = linalg.polar(A.double(), "svd")
    print(f"{'method':22s} {'steps':>5s} {'s_min':>8s} {'s_max':>8s} {'rel. err':>9s} {'ms':>8s}")
    for method in ("newton_schulz", "polar_express", "gram_newton_schulz"):
        for steps in (5, 6):
            t0 = time.perf_counter()
            O = linalg.polar(A, method, steps)
            ms = 1e3 * (time.perf_counter() - t0)
            s = torch.linalg.svdvals(O.double())
            err = float((O.double() - ref).norm() / ref.norm())
            print(
                f"{method:22s} {steps:5d} {float(s.min()):8.4f} {float(s.max()):8.4f} {err:9.2e} {ms:8.2f}"
            )
    ok = worst < 1e-9
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
