import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))  # for the user-target module custom_target.py

torch.set_default_dtype(torch.float64)
# One intra-op thread: on a 2-core machine a second thread competing with any
# other process slows small torch ops down by orders of magnitude.
torch.set_num_threads(1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
