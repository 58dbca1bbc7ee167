"""Shared test set-up: quiet, reproducible torch on a small shared CPU."""
import os
import sys
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")


@pytest.fixture(autouse=True)
def _fixed_threads():
    """One intra-op thread per test, restored afterwards.

    Tests check behaviour, not speed; on a loaded 2-core machine two OpenMP
    threads per op spin against each other and made one test 10x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
