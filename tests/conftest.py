import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))  # for the user-target module custom_target.py

torch.set_default_dtype(torch.float64)
# One intra-op thread: on a 2-core machine a second thread competing with any
# other process slows small torch ops down by orders of magnitude.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fixed_global_rng():
    """Every test starts from the same global torch and NumPy random state, so a
    result that draws from it (a layer's initialisation, say) does not depend on
    which tests ran before it."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
