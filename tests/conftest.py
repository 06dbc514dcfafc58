import os
import shutil
import sys
import tempfile
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

# Snakemake's SLURM executor plugin runs `scontrol show config` (timeout 10 s)
# when any Snakemake starts, to word its help. Where SLURM's client is installed
# but no controller answers (after `make test` installed it for the SLURM test),
# that is ~9 s of waiting at every start of a test that never uses SLURM. Those
# tests get an `scontrol` that fails at once first on PATH; tests/test_slurm.py
# restores the real PATH (REAL_PATH) for its module and talks to a real cluster.
REAL_PATH = os.environ.get("PATH", "")
if shutil.which("scontrol"):
    _stub = Path(tempfile.mkdtemp(prefix="boltzbench_no_scontrol_")) / "scontrol"
    _stub.write_text("#!/bin/sh\nexit 1\n")
    _stub.chmod(0o755)
    os.environ["PATH"] = f"{_stub.parent}{os.pathsep}{REAL_PATH}"


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
