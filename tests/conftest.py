import os
from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, settings

# Small, deterministic hypothesis profile for CI's 2 cores; NORMOPT_HYPOTHESIS=thorough for more.
settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("NORMOPT_HYPOTHESIS", "ci"))

# The tests step tiny tensors: one intra-op thread avoids oversubscription on small CI
# machines (two threads made the optimizer tests up to 20x slower on a shared 2-core machine,
# and small kernels 10-1000x slower: a 3x3 torch.linalg.qr took 16 ms instead of 7 us).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Every test starts and ends on one intra-op thread, whatever it set (the benchmark
    scripts take ``--threads``)."""
    torch.set_num_threads(1)
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        # The marker itself, not item.keywords: keywords hold every parent node's name too,
        # so a checkout in a folder named "gpu" would skip the whole suite.
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
