import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch):
    """examples/ on sys.path (the scripts import chardata, beside them); one torch thread."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    sys.modules.pop("chardata", None)
