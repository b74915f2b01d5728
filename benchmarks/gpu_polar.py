"""Time every polar (orthogonalization) method on the issue's shapes; report ms, TFLOP/s and accuracy.

Methods (names for ``--methods``):

- ``normopt.newton_schulz``, ``normopt.polar_express``, ``normopt.gram_newton_schulz``:
  ``normopt.linalg.polar``, the references;
- ``kernels.{fused,compiled,triton}.{jordan,polar_express}``: the fast paths of
  ``normopt.kernels`` with Jordan's or the Polar Express coefficients (compiled: on
  CUDA, or with ``--compile``; triton: on CUDA with triton installed);
- ``peer.torch_muon_ns``: torch.optim.Muon's internal Newton-Schulz
  (``torch.optim._muon._zeropower_via_newtonschulz``), one matrix per call as
  torch.optim.Muon runs it (bf16 always);
- ``peer.gns.torch_compiled``, ``peer.gns.torch_eager``: gram-newton-schulz's pure-torch
  path, ``GramNewtonSchulz(ns_use_kernels=False)``, with its default ``torch.compile``
  settings (CUDA only) or none; it iterates in fp16 with its own Polar Express
  schedule (safety 1.05); ``peer.gns.kernels``: its CuTe kernels, when they import.

For each (shape, method): median of ``--repeat`` runs after ``--warmup`` (CUDA events on
CUDA, ``perf_counter`` on the CPU), rotating over ``--inputs`` input stacks so that small
shapes are not timed out of L2; TFLOP/s on the method's own dense-matmul FLOP count
(``normopt.linalg.polar_flops``; the Triton path is credited with the full Newton-Schulz
count, so its TFLOP/s is an *effective* rate); fraction of ``--peak-tflops``. Accuracy,
against float64: the output's singular values (``s_min``, ``s_max``, from the eigenvalues
of ``O O^T``) and the response ``u_i^T O v_i`` along the input's singular directions
with ``s_i / ||G||_F >= 1.5e-3`` (``resp_min``, ``resp_max``; SPEC A5 bands: Jordan
[0.679, 1.2024], Polar Express after 5 steps about [0.84, 1.124]).

Examples::

    python benchmarks/gpu_polar.py --device cpu --small --out polar_cpu.json
    python benchmarks/gpu_polar.py --device cuda --peak-tflops 989 --out $OUT/polar.json
    python benchmarks/gpu_polar.py --device cuda --shapes 12x768x768,12x768x3072 --methods 'normopt.*'
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from normopt import kernels  # noqa: E402
from normopt.kernels import triton_sym  # noqa: E402
from normopt.linalg import get_schedule, polar, polar_flops  # noqa: E402

# The shapes: (batch, m, n); batch 1 is a single matrix.
FULL_SHAPES = [
    (1, 4096, 4096),
    (1, 4096, 16384),
    (1, 8192, 8192),
    (1, 2048, 8192),
    (12, 768, 768),
    (12, 768, 2304),
    (12, 768, 3072),
]
# Every side divided by 32: the same aspect ratios, small enough for a CPU smoke run.
SMALL_SHAPES = [(b, m // 32, n // 32) for b, m, n in FULL_SHAPES]
RELATIVE_FLOOR = 1.5e-3
STEPS = 5


def parse_shape(text: str) -> tuple[int, int, int]:
    parts = [int(x) for x in text.lower().split("x")]
    if len(parts) == 2:
        return (1, parts[0], parts[1])
    if len(parts) == 3:
        return (parts[0], parts[1], parts[2])
    raise argparse.ArgumentTypeError(f"shape {text!r}: expected MxN or BxMxN")


def shape_name(shape: tuple[int, int, int]) -> str:
    b, m, n = shape
    return f"{m}x{n}" if b == 1 else f"{b}x{m}x{n}"


# -- timing ---------------------------------------------------------------------------------------
def bench_device(name: str, threads: int | None, tf32: bool) -> torch.device:
    """The device to time on, set up for timing: ``threads`` CPU threads (1 by default off
    CUDA), and on CUDA float32 matmuls in TF32 or not (``tf32``)."""
    device = torch.device(name)
    cuda = device.type == "cuda"
    if threads or not cuda:
        # One thread on a shared CPU: OpenMP threads spinning against other processes make
        # the timings of small products swing by 100x.
        torch.set_num_threads(threads or 1)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return device


def time_fn(
    fn: Callable[[Any], Any],
    inputs: list[Any],
    warmup: int,
    repeat: int,
    device: torch.device,
) -> list[float]:
    """Milliseconds of each of ``repeat`` calls, after ``warmup`` calls, rotating inputs."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
        for i in range(repeat):
            x = inputs[i % len(inputs)]
            starts[i].record()
            fn(x)
            ends[i].record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]
    times = []
    for i in range(repeat):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


# -- accuracy -------------------------------------------------------------------------------------
def input_spectrum(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float64 ``(U, s, keep)`` of a wide-oriented ``G`` (B, m, n), m <= n, from eigh of G G^T."""
    Gd = G.double()
    if Gd.shape[-2] > Gd.shape[-1]:
        Gd = Gd.mT
    evals, U = torch.linalg.eigh(Gd @ Gd.mT)  # ascending
    s = evals.clamp_min(0).sqrt()
    fro = torch.linalg.matrix_norm(Gd).unsqueeze(-1)
    return U, s, s / fro >= RELATIVE_FLOOR


def accuracy(G: torch.Tensor, O: torch.Tensor, spectrum: Any) -> dict[str, float]:
    """Singular values of O and its response along G's singular directions, in float64."""
    U, s, keep = spectrum
    Gd, Od = G.double(), O.double()
    if Gd.shape[-2] > Gd.shape[-1]:
        Gd, Od = Gd.mT, Od.mT
    if not bool(torch.isfinite(Od).all()):
        return {"s_min": math.nan, "s_max": math.nan, "resp_min": math.nan, "resp_max": math.nan}
    s_out = torch.linalg.eigvalsh(Od @ Od.mT).clamp_min(0).sqrt()
    # u_i^T O v_i with v_i = G^T u_i / s_i: the diagonal of U^T (O G^T) U over s.
    M = U.mT @ (Od @ Gd.mT) @ U
    resp = M.diagonal(dim1=-2, dim2=-1) / s.clamp_min(1e-300)
    kept = resp[keep]
    return {
        "s_min": float(s_out.min()),
        "s_max": float(s_out.max()),
        "resp_min": float(kept.min()) if kept.numel() else math.nan,
        "resp_max": float(kept.max()) if kept.numel() else math.nan,
    }


# -- methods --------------------------------------------------------------------------------------
Method = tuple[str, Callable[[torch.Tensor], torch.Tensor], str]  # name, fn, FLOP-count method


def build_methods(
    device: torch.device, compute_dtype: torch.dtype, compile_ok: bool
) -> tuple[list[Method], dict[str, str]]:
    """The methods that can run here, and a note for each one that cannot."""
    methods: list[Method] = []
    skipped: dict[str, str] = {}
    cd = compute_dtype
    for m in ("newton_schulz", "polar_express", "gram_newton_schulz"):
        methods.append((f"normopt.{m}", lambda G, m=m: polar(G, m, STEPS, compute_dtype=cd), m))
    for sched_name, flops_as in (("jordan", "newton_schulz"), ("polar_express", "polar_express")):
        sched = get_schedule(sched_name)
        co = [sched.at(i) for i in range(STEPS)]
        sc = sched.norm_scale
        low = (torch.bfloat16, torch.float16, torch.float32)
        triton_ok = triton_sym.usable(device) and cd in low
        # (backend, its quintic function, runs here, else why not)
        for backend, quintic, ok, why_not in (
            ("fused", kernels.quintic_fused, True, ""),
            (
                "compiled",
                kernels.quintic_compiled,
                compile_ok,
                "compile off (CPU default; --compile)",
            ),
            ("triton", triton_sym.quintic_triton, triton_ok, "triton not usable on this device"),
        ):
            name = f"kernels.{backend}.{sched_name}"
            if not ok:
                skipped[name] = why_not
                continue
            fn = lambda G, q=quintic, co=co, sc=sc: q(G, co, sc, compute_dtype=cd)  # noqa: E731
            methods.append((name, fn, flops_as))

    # Peer: torch.optim.Muon's internal Newton-Schulz (bf16 always), one matrix per call.
    try:
        from torch.optim._muon import _zeropower_via_newtonschulz as torch_ns

        coeffs = (3.4445, -4.7750, 2.0315)

        def torch_muon(G: torch.Tensor) -> torch.Tensor:
            return torch.stack([torch_ns(g, coeffs, STEPS, 1e-7) for g in G])

        methods.append(("peer.torch_muon_ns", torch_muon, "newton_schulz"))
    except ImportError:
        skipped["peer.torch_muon_ns"] = f"not in torch {torch.__version__}"

    # Peer: gram-newton-schulz's pure-torch path (fp16 iteration, its Polar Express schedule).
    try:
        from gram_newton_schulz import GramNewtonSchulz

        if device.type == "cuda":
            gns = GramNewtonSchulz(ns_use_kernels=False)  # its defaults: torch.compile, cudagraphs
            methods.append(("peer.gns.torch_compiled", gns, "gram_newton_schulz"))
        gns_eager = GramNewtonSchulz(ns_use_kernels=False, compile_kwargs=None)
        methods.append(("peer.gns.torch_eager", gns_eager, "gram_newton_schulz"))
        if device.type == "cuda":
            try:
                gns_k = GramNewtonSchulz(ns_use_kernels=True)
                methods.append(("peer.gns.kernels", gns_k, "gram_newton_schulz"))
            except Exception as exc:  # its CuTe kernels need quack-kernels and cutlass
                skipped["peer.gns.kernels"] = f"{type(exc).__name__}: {exc}"
    except ImportError:
        skipped["peer.gns"] = "not installed (pip install gram-newton-schulz)"
    return methods, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="shapes divided by 32 (CPU smoke run)")
    ap.add_argument("--shapes", default=None, help="comma list of MxN or BxMxN")
    ap.add_argument(
        "--methods", default="*", help="comma list of fnmatch patterns, e.g. 'kernels.*,peer.*'"
    )
    ap.add_argument("--dtype", default=None, help="compute dtype (default: bf16 on CUDA)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--inputs", type=int, default=3, help="input stacks to rotate over")
    ap.add_argument("--peak-tflops", type=float, default=None, help="e.g. 989 (H100 SXM bf16)")
    ap.add_argument("--compile", action="store_true", help="time the compiled path on the CPU")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (CPU default: 1)")
    args = ap.parse_args(argv)

    device = bench_device(args.device, args.threads, tf32=False)  # float32 runs are float32
    cuda = device.type == "cuda"
    compute_dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else kernels.default_compute_dtype(torch.empty(0, device=device))
    )
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    repeat = args.repeat if args.repeat is not None else (20 if cuda else 3)
    if args.shapes:
        shapes = [parse_shape(s) for s in args.shapes.split(",")]
    else:
        shapes = SMALL_SHAPES if args.small else FULL_SHAPES
    patterns = [p.strip() for p in args.methods.split(",") if p.strip()]
    methods, skipped = build_methods(device, compute_dtype, compile_ok=cuda or args.compile)
    methods = [m for m in methods if any(fnmatch.fnmatch(m[0], p) for p in patterns)]

    meta = {
        "script": "benchmarks/gpu_polar.py",
        "argv": sys.argv[1:] if argv is None else argv,
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "compute_dtype": str(compute_dtype),
        "steps": STEPS,
        "warmup": warmup,
        "repeat": repeat,
        "peak_tflops": args.peak_tflops,
        "auto_backend": kernels.select_backend(device),
        "skipped": skipped,
        "env": {k: v for k, v in os.environ.items() if k.startswith("NORMOPT_")},
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results: list[dict[str, Any]] = []
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    print(f"# {meta['device']}, torch {meta['torch']}, compute {compute_dtype}, {STEPS} steps")
    for name, why in skipped.items():
        print(f"# skipped {name}: {why}")
    header = f"{'shape':>14} {'method':<40} {'ms':>9} {'TFLOP/s':>8} {'%peak':>6} {'s_min':>6} {'s_max':>6} {'resp_min':>8} {'resp_max':>8}"
    print(header, flush=True)
    for shape in shapes:
        b, m, n = shape
        inputs = [
            torch.randn(b, m, n, generator=gen).to(device) for _ in range(max(1, args.inputs))
        ]
        spectrum = None if args.no_accuracy else input_spectrum(inputs[0])
        for name, fn, flops_as in methods:
            row: dict[str, Any] = {"shape": shape_name(shape), "method": name}
            try:
                out = fn(inputs[0]).clone()  # first call: compiles, where it compiles
                times = time_fn(fn, inputs, warmup, repeat, device)
            except Exception as exc:  # report and go on: one broken peer must not stop the rest
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                results.append(row)
                print(f"{row['shape']:>14} {name:<40} ERROR {row['error']}", flush=True)
                continue
            ms = statistics.median(times)
            flops = b * polar_flops(m, n, STEPS, flops_as)
            tflops = flops / (ms * 1e-3) / 1e12
            row.update(
                ms=ms,
                ms_min=min(times),
                ms_max=max(times),
                flops=flops,
                tflops=tflops,
                peak_fraction=tflops / args.peak_tflops if args.peak_tflops else None,
            )
            if spectrum is not None:
                row.update(accuracy(inputs[0], out, spectrum))
            results.append(row)
            pk = f"{100 * row['peak_fraction']:6.1f}" if row["peak_fraction"] else f"{'-':>6}"
            acc = (
                f"{row['s_min']:6.3f} {row['s_max']:6.3f} {row['resp_min']:8.4f} {row['resp_max']:8.4f}"
                if spectrum is not None
                else ""
            )
            print(f"{row['shape']:>14} {name:<40} {ms:9.3f} {tflops:8.1f} {pk} {acc}", flush=True)
            del out
        if args.out:  # after every shape, so a run cut short still leaves its numbers
            Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        del inputs
        if cuda:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
