"""The runner: the one place that ties grid cells to an executor and the result files.

An executor turns a cell into rows; a cell that fails becomes a status row,
never a crashed sweep. Rows are written as each cell finishes.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol

from . import environment
from .grid import Cell, Grid
from .results import ResultWriter, sidecar_path, write_json_atomic
from .rows import failure_rows
from .schema import FAILED_STATUSES, SCHEMA_VERSION


class Executor(Protocol):
    name: str

    def run(self, cell: Cell) -> List[Dict[str, Any]]:
        """All rows for ``cell``; failures come back as status rows, not exceptions."""


class SerialExecutor:
    """Runs cells one after another in this process."""

    name = "serial"

    def __init__(self, measure: Optional[Callable[[Cell], List[Dict[str, Any]]]] = None) -> None:
        if measure is None:
            from .measure import measure_cell as measure
        self._measure = measure

    def run(self, cell: Cell) -> List[Dict[str, Any]]:
        return run_cell_safely(cell, self._measure)


def run_cell_safely(cell: Cell, measure: Callable[[Cell], List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    from .measure import free_memory, is_oom

    try:
        return measure(cell)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one cell is recorded, the sweep goes on
        status = "oom" if is_oom(e) else "error"
        free_memory(cell.settings["device"])
        return failure_rows(cell, status, f"{type(e).__name__}: {e}")


@dataclass
class RunSummary:
    csv_path: str
    sidecar_path: str
    rows: List[Dict[str, Any]] = field(default_factory=list)
    failed_cells: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed_cells == 0


def new_run_id() -> str:
    now = _dt.datetime.now(_dt.timezone.utc)
    salt = hashlib.sha1(f"{now.timestamp()}-{id(now)}".encode()).hexdigest()[:6]
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + salt


def run_grid(grid: Grid, csv_path: str, executor: Optional[Executor] = None, progress: bool = True,
             command: Optional[List[str]] = None, quick: bool = False) -> RunSummary:
    """Run every cell of ``grid``, appending rows to ``csv_path`` as cells finish."""
    executor = executor or SerialExecutor()
    writer = ResultWriter(csv_path)
    run_id = new_run_id()
    env = environment.capture(command)
    side = sidecar_path(csv_path)
    meta: Dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "running",
        "quick": quick,
        "executor": executor.name,
        "grid": grid.to_dict(),
        "environment": env,
    }
    write_json_atomic(side, meta)
    summary = RunSummary(csv_path, side)
    start = time.perf_counter()
    cells = _progress(grid.cells, progress)
    for cell in cells:
        if hasattr(cells, "set_postfix_str"):
            cells.set_postfix_str(cell.variant)
        rows = executor.run(cell)
        for row in rows:
            row["run_id"] = run_id
        writer.append(rows)
        summary.rows.extend(rows)
        if any(r.get("status") in FAILED_STATUSES for r in rows):
            summary.failed_cells += 1
    summary.seconds = time.perf_counter() - start
    meta.update(status="finished", seconds=summary.seconds, failed_cells=summary.failed_cells,
                finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                environment_end={"gpus": environment.gpu_info()})
    write_json_atomic(side, meta)
    return summary


def _progress(cells: List[Cell], enabled: bool):
    if not enabled:
        return cells
    from tqdm import tqdm

    return tqdm(cells, desc="cells", unit="cell", file=sys.stderr, dynamic_ncols=True)
