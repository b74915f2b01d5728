"""The quintic Newton-Schulz iteration on the CPU: the reference against the fused path.

Why it exists: ``normopt.kernels.select_backend`` picks the fused path (``bmm`` and
``baddbmm`` with the scalars in the GEMM epilogue) on the CPU as on CUDA. This
measures that it is not slower than the reference (``normopt.linalg.newton_schulz``)
on Muon-sized stacks, counts the aten ops each dispatches (what a step's launch
overhead is made of on a GPU), and reports the largest difference between the two.

    python3 benchmarks/cpu_polar.py [--threads 2] [--repeats 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from normopt import kernels  # noqa: E402
from normopt.linalg import get_schedule, newton_schulz  # noqa: E402
from step_overhead import count_ops  # noqa: E402

# (B, m, n): GPT-2-small-like stacks at widths a 2-core CPU times in seconds
SHAPES = [(12, 64, 192), (24, 64, 256), (12, 256, 768), (24, 256, 1024), (12, 512, 512)]


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sched = get_schedule("jordan")
    coeffs = [sched.at(i) for i in range(args.steps)]
    rows = []
    print(f"# torch {torch.__version__}, {args.threads} thread(s), {args.steps} steps, float32")
    print(
        "| stack (B, m, n) | reference ms | fused ms | fused / reference | ops ref | ops fused | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        G = torch.randn(shape, generator=torch.Generator().manual_seed(0))

        def ref(G=G):
            return newton_schulz(G, args.steps)

        def fused(G=G):
            return kernels.quintic_fused(G, coeffs, sched.norm_scale)

        t_ref, t_fused = _median_ms(ref, args.repeats), _median_ms(fused, args.repeats)
        ops_ref, _ = count_ops(ref, warmup=0)
        ops_fused, _ = count_ops(fused, warmup=0)
        diff = float((ref() - fused()).abs().max())
        row = dict(
            shape=list(shape),
            reference_ms=t_ref,
            fused_ms=t_fused,
            ratio=t_fused / t_ref,
            ops_reference=ops_ref,
            ops_fused=ops_fused,
            max_abs_diff=diff,
        )
        rows.append(row)
        print(
            f"| {shape} | {t_ref:.1f} | {t_fused:.1f} | {t_fused / t_ref:.2f} | {ops_ref} | "
            f"{ops_fused} | {diff:.1e} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
