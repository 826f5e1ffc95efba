import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # paged_batch, shared by this folder's tests


@pytest.fixture
def one_thread():
    """Tiny models' matmuls on one thread: a second one only adds sync cost (and, on a busy
    machine, waits for a core: 100x slower here under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
