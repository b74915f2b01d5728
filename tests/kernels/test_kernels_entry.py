"""kernels.polar, the one polar entry point, beside its reference normopt.linalg.polar."""

import pytest
import torch
from kernel_bands import FUSED_TOL, coefficients

from normopt import kernels, linalg
from normopt import norms as N
from normopt.kernels import newton_schulz as kns

SHAPES = [(24, 40), (40, 24), (2, 3, 12, 20)]
QUINTIC = {"newton_schulz": "jordan", "polar_express": "polar_express"}


def _steps_for(method):
    return [None] if method == "svd" else [None, 3]


@pytest.mark.parametrize("method", linalg.POLAR_METHODS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_backend_is_linalg_polar_bit_for_bit(method, shape, dtype):
    G = torch.randn(shape, dtype=dtype)
    for steps in _steps_for(method):
        ref = linalg.polar(G, method, steps)
        auto = kernels.polar(G, method, steps)  # the CPU's automatic choice: fused for quintics
        fast = method in kernels.QUINTIC_METHODS
        assert torch.equal(auto, kernels.polar(G, method, steps, backend="fused") if fast else ref)
        assert torch.equal(kernels.polar(G, method, steps, backend="reference"), ref)
        with kernels.backend("reference"):
            assert torch.equal(kernels.polar(G, method, steps), ref)


def test_reference_backend_passes_every_argument_through():
    G = torch.randn(3, 10, 16, dtype=torch.float64)
    for kw in (
        {"coefficients": "classical"},
        {"coefficients": linalg.get_schedule("polar_express")},
        {"compute_dtype": torch.float32},
        {"compute_dtype": torch.bfloat16},
    ):
        for method in ("newton_schulz", "polar_express", "gram_newton_schulz"):
            ref = linalg.polar(G, method, 4, **kw)
            got = kernels.polar(G, method, 4, backend="reference", **kw)
            assert torch.equal(got, ref), (method, kw)


@pytest.mark.parametrize("method", ["newton_schulz", "polar_express"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cdtype", [torch.float64, torch.float32, torch.bfloat16])
def test_fused_backend_matches_float64_reference(method, shape, cdtype):
    G = torch.randn(shape, dtype=torch.float64)
    ref = linalg.polar(G, method)  # float64 throughout
    with kernels.backend("fused"):
        out = kernels.polar(G, method, compute_dtype=cdtype)
    assert out.dtype == G.dtype and out.shape == G.shape
    err = float((out - ref).abs().max() / ref.abs().max())
    assert err <= FUSED_TOL[cdtype], f"relative error {err:.2e}"


@pytest.mark.parametrize("method", ["newton_schulz", "polar_express"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_backend_in_the_input_dtype(method, dtype):
    # Default compute dtype on the CPU: float32, float64 kept; the output keeps G's dtype.
    G = torch.randn(2, 20, 36, dtype=dtype)
    ref = linalg.polar(G.double(), method)
    out = kernels.polar(G, method, backend="fused")
    assert out.dtype == dtype and out.shape == G.shape
    err = float((out.double() - ref).abs().max() / ref.abs().max())
    assert err <= FUSED_TOL[dtype], f"relative error {err:.2e}"


@pytest.mark.parametrize("method", ["newton_schulz", "polar_express"])
@pytest.mark.parametrize("steps", [None, 1, 7])
def test_fused_backend_runs_the_methods_schedule(method, steps):
    # What kernels.polar hands the fast path: the method's schedule, one triple per step.
    G = torch.randn(2, 16, 24)
    co, scale = coefficients(QUINTIC[method], 5 if steps is None else steps)
    expected = kernels.quintic_fused(G, co, scale)
    with kernels.backend("fused"):
        assert torch.equal(kernels.polar(G, method, steps), expected)
    co, scale = coefficients("classical", 4)
    assert torch.equal(
        kernels.polar(G, method, 4, coefficients="classical", backend="fused"),
        kernels.quintic_fused(G, co, scale),
    )


@pytest.mark.parametrize("method", ["svd", "gram_newton_schulz"])
def test_methods_without_a_fast_path_run_linalg_on_any_backend(method, monkeypatch):
    calls = []
    monkeypatch.setattr(kns, "quintic_fused", lambda *a, **k: calls.append(a))
    G = torch.randn(12, 20, dtype=torch.float64)
    with kernels.backend("fused"):
        assert torch.equal(kernels.polar(G, method), linalg.polar(G, method))
    assert torch.equal(kernels.polar(G, method, backend="fused"), linalg.polar(G, method))
    assert calls == []


def test_edge_cases_on_the_fused_backend():
    with kernels.backend("fused"):
        Z = torch.zeros(2, 5, 7)
        assert torch.equal(kernels.polar(Z), Z)
        E = torch.zeros(0, 5, 7)
        assert kernels.polar(E).shape == E.shape
        G = torch.randn(9, 6)
        before = G.clone()
        kernels.polar(G)
        assert torch.equal(G, before)  # input untouched


def _bad_calls():
    G = torch.randn(4, 6)
    return [
        ((G,), {"method": "qr"}),
        ((G,), {"method": "svd", "steps": 3}),
        (([[1.0, 2.0]],), {}),
        ((torch.ones(3, 4, dtype=torch.int64),), {}),
        ((torch.ones(3, 4, dtype=torch.complex64),), {}),
        ((torch.randn(5),), {}),
        ((torch.randn(3, 4).to_sparse(),), {}),
        ((G,), {"steps": 0}),
        ((G,), {"steps": True}),
        ((G,), {"steps": 2.5}),
        ((G,), {"method": "polar_express", "steps": -1}),
        ((G,), {"coefficients": "bogus"}),
        ((G,), {"method": "gram_newton_schulz", "coefficients": "bogus"}),
        ((torch.randn(5),), {"method": "svd"}),
    ]


def _raised(fn, args, kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_errors_are_linalg_polars(backend, case):
    args, kwargs = _bad_calls()[case]
    expected = _raised(linalg.polar, args, kwargs)
    assert expected is not None and expected[0] in (TypeError, ValueError)
    with kernels.backend(backend):
        assert _raised(kernels.polar, args, kwargs) == expected
    assert _raised(kernels.polar, args, {**kwargs, "backend": backend}) == expected


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"^backend: unknown backend 'cublas'"):
        kernels.polar(torch.randn(4, 6), backend="cublas")
    with pytest.raises(ValueError, match=r"^backend: "):
        kernels.polar(torch.randn(4, 6), "svd", backend="cublas")


@pytest.mark.integration  # torch.compile / dynamo traces
@pytest.mark.parametrize("forced", ["reference", "fused"])
def test_traces_as_one_graph(forced):
    # No host reads or graph breaks: dynamo captures the whole entry point.
    G = torch.randn(2, 12, 20)
    with kernels.backend(forced):
        eager = kernels.polar(G, "polar_express", 4)
        fn = torch.compile(
            lambda x: kernels.polar(x, "polar_express", 4), fullgraph=True, backend="eager"
        )
        assert torch.allclose(fn(G), eager, rtol=0, atol=1e-6)


# -- the norms reach the fast paths through it -------------------------------------------------
def _count_fused(monkeypatch):
    calls = []
    real = kns.quintic_fused

    def counting(G, *args, **kwargs):
        calls.append(tuple(G.shape))
        return real(G, *args, **kwargs)

    monkeypatch.setattr(kns, "quintic_fused", counting)
    return calls


NORM_CASES = [
    (lambda: N.Spectral(polar="newton_schulz"), (24, 40)),
    (lambda: N.Spectral("polar_express", 6), (2, 40, 24)),
    (lambda: N.RMSToRMS("newton_schulz", 5), (24, 40)),
    (lambda: N.ConvSpectral("newton_schulz", 5), (8, 6, 3, 3)),
    (lambda: N.Transposed(N.Spectral("polar_express", 5)), (24, 40)),
]


@pytest.mark.parametrize("case", range(len(NORM_CASES)))
def test_norms_dualize_through_the_entry_point(case, monkeypatch):
    make, shape = NORM_CASES[case]
    norm = make()
    G = torch.randn(shape)
    reference = norm.dualize(G)  # the CPU's automatic choice: the reference
    calls = _count_fused(monkeypatch)
    assert calls == []
    with kernels.backend("fused"):
        fast = norm.dualize(G)
    assert len(calls) == 1  # one batched call, even for a conv kernel's slices
    assert fast.shape == G.shape and fast.dtype == G.dtype
    err = float((fast.double() - reference.double()).abs().max() / reference.abs().max())
    assert err <= FUSED_TOL[torch.float32], f"relative error {err:.2e}"


def test_spectral_dualize_is_kernels_polar():
    G = torch.randn(3, 16, 28)
    norm = N.Spectral(polar="newton_schulz")
    with kernels.backend("fused"):
        assert torch.equal(norm.dualize(G), kernels.polar(G, "newton_schulz"))
    with kernels.backend("reference"):
        assert torch.equal(norm.dualize(G), linalg.polar(G, "newton_schulz"))


def test_exact_norms_never_take_a_fast_path(monkeypatch):
    calls = _count_fused(monkeypatch)
    G = torch.randn(12, 20, dtype=torch.float64)
    exact = linalg.polar(G, "svd")
    with kernels.backend("fused"):
        assert torch.equal(N.Spectral().dualize(G), exact)
        assert torch.equal(N.Nuclear().dual().dualize(G), exact)
        assert torch.equal(N.RMSToRMS().dualize(G), exact * (12 / 20) ** 0.5)
    assert calls == []


def test_aol_schedules_take_the_reference_on_every_backend():
    """The fast paths normalize by ||G||_F only: an AOL schedule (Turbo-Muon) runs linalg's."""
    G = torch.randn(3, 6, 9)
    ref = linalg.polar(G, "newton_schulz", 4, coefficients="turbo_muon")
    out = kernels.polar(G, "newton_schulz", 4, coefficients="turbo_muon", backend="fused")
    assert torch.equal(out, ref)
