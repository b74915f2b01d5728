"""Which backend runs where: CUDA picks a fast path (compiled or fused), the CPU the fused one, switches respected.

No GPU is needed: the choice only reads the device type, and the inductor probe is
replaced by a stub where a CUDA device is pretended.
"""

import pytest
import torch

from normopt import kernels
from normopt.kernels import dispatch

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


@pytest.fixture
def probe(monkeypatch):
    """Replace the inductor probe; returns the list of devices it was asked about."""
    calls = []
    answer = {"value": True}

    def fake(device):
        calls.append(device.type)
        return answer["value"]

    dispatch.reset_probe()
    monkeypatch.setattr(dispatch, "_probe_inductor", fake)
    return calls, answer


def test_cpu_runs_fused(probe):
    calls, _ = probe
    assert kernels.select_backend(CPU) == "fused"
    assert calls == []  # the CPU never probes


def test_cuda_picks_compiled_when_inductor_works(probe):
    calls, _ = probe
    assert kernels.select_backend(CUDA) == "compiled"
    assert kernels.select_backend(CUDA) == "compiled"
    assert calls == ["cuda"]  # probed once


def test_cuda_picks_fused_when_inductor_does_not_work(probe):
    _, answer = probe
    answer["value"] = False
    assert kernels.select_backend(CUDA) == "fused"


def test_disable_compile_env(probe, monkeypatch):
    calls, _ = probe
    monkeypatch.setenv("NORMOPT_DISABLE_COMPILE", "1")
    assert not kernels.compile_enabled()
    assert kernels.select_backend(CUDA) == "fused"
    assert calls == []  # disabled: no probe either
    monkeypatch.setenv("NORMOPT_DISABLE_COMPILE", "0")
    assert kernels.select_backend(CUDA) == "compiled"


def test_disable_compile_function(probe):
    kernels.set_compile_enabled(False)
    assert kernels.select_backend(CUDA) == "fused"
    kernels.set_compile_enabled(True)
    assert kernels.select_backend(CUDA) == "compiled"


def test_forced_backends(probe, monkeypatch):
    monkeypatch.setenv("NORMOPT_POLAR_BACKEND", "fused")
    assert kernels.select_backend(CPU) == "fused"
    assert kernels.select_backend(CUDA) == "fused"
    with kernels.backend("triton"):  # code beats the environment
        assert kernels.select_backend(CPU) == "triton"
    assert kernels.select_backend(CPU) == "fused"
    monkeypatch.setenv("NORMOPT_POLAR_BACKEND", "auto")
    assert kernels.select_backend(CPU) == "fused"
    monkeypatch.setenv("NORMOPT_POLAR_BACKEND", "magic")
    with pytest.raises(ValueError, match="NORMOPT_POLAR_BACKEND"):
        kernels.select_backend(CPU)
    with pytest.raises(ValueError, match="set_backend"):
        kernels.set_backend("magic")


def test_triton_is_never_chosen_by_itself(probe):
    for answer in (True, False):
        probe[1]["value"] = answer
        dispatch.reset_probe()
        assert kernels.select_backend(CUDA) != "triton"


def test_merge_transposed_defaults(monkeypatch):
    assert kernels.merge_transposed_enabled(CUDA)
    assert kernels.merge_transposed_enabled(CPU)
    monkeypatch.setenv("NORMOPT_MERGE_TRANSPOSED", "0")
    assert not kernels.merge_transposed_enabled(CPU)
    monkeypatch.setenv("NORMOPT_MERGE_TRANSPOSED", "1")
    assert kernels.merge_transposed_enabled(CPU)
    monkeypatch.setenv("NORMOPT_MERGE_TRANSPOSED", "0")
    assert not kernels.merge_transposed_enabled(CUDA)
    kernels.set_merge_transposed(True)  # code beats the environment
    assert kernels.merge_transposed_enabled(CPU)


@pytest.mark.parametrize(
    "version, ok",
    [
        ("2.6.0+cu124", True),
        ("2.13.0a0+git1234", True),
        ("2.5.1", False),
        ("3.0", True),
        ("x", False),
    ],
)
def test_version_gate(version, ok):
    assert dispatch.torch_at_least(2, 6, version) is ok


def test_probe_says_no_on_old_torch(monkeypatch):
    monkeypatch.setattr(dispatch, "torch_at_least", lambda *a, **k: False)
    assert dispatch._probe_inductor(CPU) is False


def test_probe_says_no_when_compile_raises(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("inductor is broken")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match="does not work"):
        assert dispatch._probe_inductor(CPU) is False


def test_probe_says_no_without_triton_on_cuda(monkeypatch):
    import torch.utils._triton as tt

    monkeypatch.setattr(tt, "has_triton", lambda: False)
    assert dispatch._probe_inductor(CUDA) is False


def test_forced_triton_without_triton_warns_and_runs_fused(monkeypatch):
    from normopt.kernels import triton_sym

    monkeypatch.setattr(triton_sym, "usable", lambda device: False)
    monkeypatch.setattr(triton_sym, "_warned", set())
    G = torch.randn(6, 10)
    co = [(3.4445, -4.7750, 2.0315)] * 5
    with kernels.backend("triton"), pytest.warns(RuntimeWarning, match="triton"):
        out = kernels.quintic_polar(G, co)
    assert torch.equal(out, kernels.quintic_fused(G, co))


def test_compiled_is_not_nested_inside_a_users_compile(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    from normopt.kernels import newton_schulz as kns

    def boom(*a, **k):
        raise AssertionError("quintic_compiled must not run while compiling")

    monkeypatch.setattr(kns, "quintic_compiled", boom)
    G = torch.randn(5, 9)
    co = [(3.4445, -4.7750, 2.0315)] * 5
    assert torch.equal(
        kernels.quintic_polar(G, co, backend="compiled"), kernels.quintic_fused(G, co)
    )
