"""Executors: failures become status rows; an isolated cell's crash or hang costs that cell only.

The misbehaving measure functions live here at module level so the isolated
children can import them ("test_executors:NAME"), as a user's would be.
"""
import os
import signal
import time

import pytest

from bench.run.executors import IsolatedExecutor, SerialExecutor, load_measure, measure_path
from bench.grid import expand_grid
from bench.run.rows import cell_columns


def grid_of(*repeats):
    raw = {"name": "ex", "defaults": {"preset": "resnet20", "device": "cpu", "speed": True, "train_step": False,
                                      "batch_sizes": [1], "warmup": 0, "threads": 1},
           "matrix": {"repeats": list(repeats)}}
    return expand_grid(raw, "ex.yaml")


# The cell's `repeats` picks the behaviour, so one grid holds all of them.
def misbehave(cell):
    kind = cell.settings["repeats"]
    if kind == 2:
        from bench.run.cell import measure_cell
        return measure_cell(cell)  # the real thing
    if kind == 3:
        time.sleep(3600)  # a hang
    if kind == 4:
        os.kill(os.getpid(), signal.SIGSEGV)  # a crash in native code looks like this
        time.sleep(60)
    if kind == 5:
        raise ValueError("bad cell")
    if kind == 6:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    row = cell_columns(cell, "fake")
    row.update(status="ok", batch_size=1)
    return [row]


def test_serial_turns_exceptions_into_status_rows():
    grid = grid_of(1, 5, 6)
    results = list(SerialExecutor(misbehave).run_cells(grid.cells, lambda: False))
    assert [cell.cell_id for cell, _ in results] == [c.cell_id for c in grid.cells]
    statuses = [(rows[0]["status"], rows[0]["error"]) for _, rows in results]
    assert statuses[0] == ("ok", None)
    assert statuses[1] == ("error", "ValueError: bad cell")
    assert statuses[2][0] == "oom" and "out of memory" in statuses[2][1]


def test_serial_starts_no_cell_once_asked_to_stop():
    grid = grid_of(1, 7, 8)
    seen = []
    results = SerialExecutor(misbehave).run_cells(grid.cells, lambda: len(seen) >= 2)
    for cell, _rows in results:
        seen.append(cell)
    assert len(seen) == 2


def test_measure_functions_travel_by_import_path():
    assert measure_path(misbehave) == "test_executors:misbehave"
    assert load_measure("test_executors:misbehave") is misbehave
    with pytest.raises(ValueError, match="module-level"):
        measure_path(lambda cell: [])


def test_isolated_cells_survive_crashes_and_hangs():
    grid = grid_of(2, 3, 4, 5)
    real, others = grid.cells[0], grid.cells[1:]
    results = {2: IsolatedExecutor().run(real)}  # the real measurement, no time limit on a loaded machine
    executor = IsolatedExecutor(measure=misbehave, timeout=3)
    started = time.monotonic()
    results.update({cell.settings["repeats"]: rows for cell, rows in executor.run_cells(others, lambda: False)})
    elapsed = time.monotonic() - started

    ok = results[2]
    assert len(ok) == 1 and ok[0]["status"] == "ok" and ok[0]["cell_id"] == grid.cells[0].cell_id
    assert ok[0]["latency_n"] == 2 and ok[0]["params"] == 272474  # measured in the child, came back whole

    hang = results[3][0]
    assert hang["status"] == "timeout" and "--timeout 3 s" in hang["error"]
    crash = results[4][0]
    assert crash["status"] == "error" and "SIGSEGV" in crash["error"]
    raised = results[5][0]
    assert raised["status"] == "error" and raised["error"] == "ValueError: bad cell"
    assert elapsed < 120  # the hang cost its timeout, not an hour


@pytest.mark.slow  # two interpreters with torch: seconds on an idle box, much more on a busy one
def test_a_killed_runner_takes_its_isolated_cell_with_it(tmp_path):
    """The child watches its parent: a SIGKILLed runner leaves no cell running on."""
    import subprocess
    import sys

    script = (
        "import sys; sys.path[:0] = %r\n"
        "from test_executors import grid_of, misbehave\n"
        "from bench.run.executors import IsolatedExecutor\n"
        "IsolatedExecutor(measure=misbehave).run(grid_of(3).cells[0])\n" % [p for p in sys.path if p]
    )
    runner = subprocess.Popen([sys.executable, "-c", script])
    try:
        child = None
        for _ in range(600):
            out = subprocess.run(["pgrep", "-P", str(runner.pid)], capture_output=True, text=True).stdout.split()
            if out:
                child = int(out[0])
                break
            time.sleep(0.1)
        assert child is not None, "the isolated child never started"
    finally:
        runner.kill()
        runner.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the isolated child outlived its runner")
