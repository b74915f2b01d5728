import pytest

from normopt import kernels
from normopt.kernels import dispatch


@pytest.fixture(autouse=True)
def _clean_kernel_switches(monkeypatch):
    """Every test starts from the defaults: no forced backend, compile allowed, merge automatic."""
    for var in (
        "NORMOPT_POLAR_BACKEND",
        "NORMOPT_DISABLE_COMPILE",
        "NORMOPT_MERGE_TRANSPOSED",
        "NORMOPT_COMPILE_MODE",
    ):
        monkeypatch.delenv(var, raising=False)
    kernels.set_backend(None)
    kernels.set_compile_enabled(True)
    kernels.set_merge_transposed(None)
    saved = dict(dispatch._probe_results)
    yield
    kernels.set_backend(None)
    kernels.set_compile_enabled(True)
    kernels.set_merge_transposed(None)
    dispatch._probe_results.clear()
    dispatch._probe_results.update(saved)
