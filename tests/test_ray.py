"""The Ray executor on a local Ray instance started once for this module.

The instance declares two GPUs that do not exist: Ray hands them out all the
same, which is enough to see that concurrent GPU cells get different
``CUDA_VISIBLE_DEVICES``. The measure functions used by the workers live
here at module level; the workers import this module by name.
"""
import json
import os
import time

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install '.[ray]')")

from bench.run.executors import RayExecutor  # noqa: E402
from bench.grid import expand_grid  # noqa: E402
from bench.results.files import read_lines, sidecar_path  # noqa: E402
from bench.run.rows import cell_columns  # noqa: E402
from bench.run.runner import run_grid  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


@pytest.fixture(scope="module", autouse=True)
def local_ray(tmp_path_factory):
    # No token file under HOME, no dashboard, a small object store: a quick, tidy start.
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024,
             logging_level="WARNING", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([ROOT, TESTS]), "RAY_AUTH_MODE": "disabled"}})
    try:
        yield
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def grid(device="cpu", **matrix):
    raw = {"name": "raytiny", "defaults": {"preset": "resnet20", "device": device, "speed": True,
                                           "train_step": False, "batch_sizes": [1], "warmup": 0, "repeats": 2,
                                           "threads": 1},
           "matrix": matrix or {"width_multiplier": [1, 2]}}
    return expand_grid(raw, "raytiny.yaml")


def which_gpu(cell):
    """Reports the GPU Ray gave the task, and stays long enough for both cells to hold one."""
    time.sleep(2.0)
    row = cell_columns(cell, os.environ.get("CUDA_VISIBLE_DEVICES", "none"))
    row.update(status="ok", batch_size=1)
    return [row]


def misbehave(cell):
    kind = cell.settings["repeats"]
    if kind == 1:
        os._exit(1)  # the worker process dies under Ray
    if kind == 2:
        raise ValueError("bad cell")
    time.sleep(3600)  # kind 3: a hang


def test_tiny_grid_end_to_end_then_resume(tmp_path):
    out = str(tmp_path / "ray.csv")
    g = grid()
    summary = run_grid(g, out, executor=RayExecutor(), progress=False, log=lambda m: None)
    assert summary.cells_run == 2 and summary.ok
    parsed = read_lines(out)
    cols = parsed.index
    assert sorted(ln.fields[cols["cell_id"]] for ln in parsed.lines) == sorted(c.cell_id for c in g.cells)
    assert {ln.fields[cols["status"]] for ln in parsed.lines} == {"ok"}
    assert all(float(ln.fields[cols["latency_ms_median"]]) > 0 for ln in parsed.lines)
    side = json.loads(open(sidecar_path(out)).read())
    executor = side["runs"][0]["executor"]
    assert executor["name"] == "ray" and executor["cluster_resources"]["GPU"] == 2
    assert executor["workers"] and executor["workers"][0]["hostname"]
    # Resuming needs no cluster work at all: both cells are done.
    summary = run_grid(grid(), out, executor=RayExecutor(), progress=False, log=lambda m: None)
    assert summary.cells_run == 0


def test_gpu_cells_each_get_their_own_gpu(tmp_path):
    out = str(tmp_path / "gpu.csv")
    g = grid(device="cuda")
    summary = run_grid(g, out, executor=RayExecutor(measure=which_gpu), progress=False, log=lambda m: None)
    assert summary.cells_run == 2
    seen = sorted(row["device_name"] for row in summary.rows)
    assert seen == ["0", "1"]


def test_failures_on_workers_come_back_as_status_rows(tmp_path):
    g = grid(repeats=[1, 2])
    results = {c.settings["repeats"]: rows[0] for c, rows in _run(RayExecutor(measure=misbehave), g.cells)}
    assert results[1]["status"] == "error" and "Ray task failed" in results[1]["error"]
    assert "WorkerCrashedError" in results[1]["error"]
    assert results[2]["status"] == "error" and results[2]["error"] == "ValueError: bad cell"


@pytest.mark.slow  # the timeout itself is IsolatedExecutor's, tested in test_executors.py
def test_timeout_on_a_worker_isolates_the_cell(tmp_path):
    g = grid(repeats=[3])
    (cell, rows), = _run(RayExecutor(measure=misbehave, timeout=2), g.cells)
    assert rows[0]["status"] == "timeout" and "--timeout 2 s" in rows[0]["error"]


def _run(executor, cells):
    executor.open()
    try:
        return list(executor.run_cells(cells, lambda: False))
    finally:
        executor.close()
