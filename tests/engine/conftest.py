"""Engine tests run the tiny models single-threaded: they are fastest so on a shared, oversubscribed
CPU, and one thread keeps float32 kernel rounding the same from run to run."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
