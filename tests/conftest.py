"""Shared test set-up: quiet, reproducible torch on a small shared CPU."""
import os
import sys
import warnings
from typing import Any, Callable, Dict, List, Sequence, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

# Imported once ROOT is on sys.path (a bare `pytest` from elsewhere finds bench that way).
from bench.grid import Grid, expand_grid  # noqa: E402
from bench.run.executors import SerialExecutor  # noqa: E402
from bench.run.rows import cell_columns  # noqa: E402
from bench.run.runner import RunSummary, run_grid  # noqa: E402


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


# ------------------------------------------------------------- runs with a stand-in measurement
# test_runner and test_no_loss run grids through the real runner but measure each cell with a
# function that returns well-formed rows without building or timing a model: they test the
# files, not torch. Imported by name (`from conftest import ...`).


def tiny_grid(widths: Sequence[float] = (1, 1.5, 2, 2.5), **defaults: Any) -> Grid:
    """One resnet20 CPU cell per width, batch sizes 1 and 2; ``defaults`` override the grid's defaults."""
    raw = {"name": "tiny",
           "defaults": {"preset": "resnet20", "device": "cpu", "speed": True, "train_step": False,
                        "batch_sizes": [1, 2], "warmup": 0, "repeats": 2, **defaults},
           "matrix": {"width_multiplier": list(widths)}}
    return expand_grid(raw, "tiny.yaml")


def ok_rows(cell) -> List[Dict[str, Any]]:
    """The stand-in measurement: an ok row per batch size, its latency 1.5 ms per image."""
    rows = []
    for bs in cell.settings["batch_sizes"]:
        row = cell_columns(cell, "test-cpu")
        row.update(status="ok", batch_size=bs, requested_batch_size=bs, latency_ms_median=1.5 * bs)
        rows.append(row)
    return rows


def run_stand_in(grid: Grid, out, measure: Callable = ok_rows, **kw: Any) -> Tuple[RunSummary, List[str]]:
    """Run ``grid`` into ``out`` serially with ``measure`` for each cell, no progress bar; (summary, log lines)."""
    messages: List[str] = []
    summary = run_grid(grid, str(out), executor=SerialExecutor(measure), progress=False, command=["test"],
                       log=messages.append, **kw)
    return summary, messages


def one_line_error(capsys, argv: Sequence[str], *expected: str) -> str:
    """Run the CLI on ``argv`` and assert the bad-input contract: exit code 2, nothing but one
    'error: ...' line on stderr, containing each of ``expected``. Returns that line."""
    from bench.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err
    return err
