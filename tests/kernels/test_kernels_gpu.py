"""The fast paths on a real CUDA device (skipped without one): the same checks as on the CPU,
in the compute dtype they were made for (bf16), plus the automatic choice itself."""

import pytest
import torch
from kernel_bands import assert_in_band, coefficients, spectrum_matrix
from torch import nn

import normopt
from normopt import kernels
from normopt.kernels import triton_sym
from normopt.linalg import newton_schulz

pytestmark = pytest.mark.gpu
SHAPES = [(4, 64, 256), (4, 256, 64), (2, 128, 128)]


def _rel(out, ref):
    return float((out.double() - ref).abs().max() / ref.abs().max())


def test_cuda_picks_a_fast_path_and_merges():
    dev = torch.device("cuda")
    assert kernels.select_backend(dev) in ("compiled", "fused")
    assert kernels.merge_transposed_enabled(dev)


@pytest.mark.parametrize("name", ["jordan", "polar_express"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backend", ["reference", "fused", "compiled", "triton"])
def test_backends_in_bf16_stay_in_band(name, shape, backend):
    if backend == "triton" and not triton_sym.available():
        pytest.skip("triton is not installed")
    G = spectrum_matrix(*shape, seed=4, dtype=torch.float32).cuda()
    co, scale = coefficients(name)
    out = kernels.quintic_polar(G, co, scale, compute_dtype=torch.bfloat16, backend=backend)
    assert out.dtype == G.dtype and out.shape == G.shape
    assert_in_band(G.cpu(), out.cpu(), name, torch.bfloat16)
    ref = newton_schulz(G.double().cpu(), 5, name)
    assert _rel(out.cpu(), ref) <= 4e-2


@pytest.mark.parametrize("backend", ["fused", "compiled", "triton"])
def test_backends_in_float32_match_float64(backend):
    if backend == "triton" and not triton_sym.available():
        pytest.skip("triton is not installed")
    torch.backends.cuda.matmul.allow_tf32 = False
    G = torch.randn(3, 96, 200, device="cuda")
    co, scale = coefficients("jordan")
    out = kernels.quintic_polar(G, co, scale, compute_dtype=torch.float32, backend=backend)
    assert _rel(out.cpu(), newton_schulz(G.double().cpu(), 5)) <= 1e-4


def test_sym_product_on_cuda():
    if not triton_sym.available():
        pytest.skip("triton is not installed")
    X = torch.randn(3, 300, 700, device="cuda", dtype=torch.bfloat16)
    out = triton_sym.sym_product(X)
    assert torch.equal(out, out.mT)
    ref = X.double() @ X.double().mT
    assert _rel(out, ref) <= 8e-3


def test_muon_on_cuda_merged_matches_cpu_reference():
    torch.manual_seed(0)
    shapes = [(96, 32), (32, 96), (48, 48)]
    cpu = [nn.Parameter(torch.randn(s)) for s in shapes]
    gpu = [nn.Parameter(p.detach().clone().cuda()) for p in cpu]
    o_cpu = normopt.Muon(cpu, lr=0.02, polar_dtype="bfloat16")
    o_gpu = normopt.Muon(gpu, lr=0.02)  # bf16 by default on CUDA, fast path, merged stacks
    for _ in range(3):
        for a, b in zip(cpu, gpu):
            g = torch.randn(a.shape)
            a.grad, b.grad = g, g.cuda()
        o_cpu.step()
        o_gpu.step()
    for a, b in zip(cpu, gpu):
        # three steps of lr * scale * O; bf16 on both sides, rounded differently
        assert float((a.detach() - b.detach().cpu()).abs().max()) <= 3 * 0.02 * 1.8 * 0.05


@pytest.mark.parametrize("method", ["newton_schulz", "polar_express"])
def test_entry_point_and_spectral_norm_take_the_fast_path_on_cuda(method):
    # kernels.polar on CUDA: the automatic fast path, with the method's schedule, in bf16;
    # Spectral.dualize is that same call.
    name = {"newton_schulz": "jordan", "polar_express": "polar_express"}[method]
    G = spectrum_matrix(4, 64, 256, seed=5, dtype=torch.float32).cuda()
    co, scale = coefficients(name)
    backend = kernels.select_backend(G.device)
    out = kernels.polar(G, method)
    assert torch.equal(out, kernels.quintic_polar(G, co, scale, backend=backend))
    assert torch.equal(normopt.norms.Spectral(polar=method).dualize(G), out)
    assert_in_band(G.cpu(), out.cpu(), name, torch.bfloat16)
