import os

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

# The tests step tiny tensors: one thread avoids oversubscription on small CI machines
# (two threads made the optimizer tests up to 20x slower on a shared 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        # The marker itself, not item.keywords: keywords hold every parent node's name too,
        # so a checkout in a folder named "gpu" would skip the whole suite.
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
