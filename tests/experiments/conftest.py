import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the harness tests are tiny, and two threads on shared cores can be
    a hundred times slower than one (OpenMP threads waiting on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
