from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Run this folder's tests on one intra-op thread, then restore the setting.

    The tensors here are tiny or thin (up to 1 x 65536); on the shared 2-core CI machine, two
    threads made small kernels 10-1000x slower (thread wake-ups under load: a 3x3
    torch.linalg.qr took 16 ms instead of 7 us).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
