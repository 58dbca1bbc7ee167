"""The runner: the one place that ties grid cells to an executor and the result files.

A run is resumable by construction. Before any work it repairs a write that
a kill cut short, reads which cells the output already holds (by cell id)
and runs only the rest; every finished cell is appended to the CSV at once;
the sidecar keeps one entry per run (a "segment") with its environment, so a
file written by several resumed or sharded runs still says where each row
came from (rows carry their segment's ``run_id``).

Stopping: the first Ctrl-C lets the running cell(s) finish and then stops;
the second stops at once (SIGTERM, as sent by schedulers before a kill, stops
at once too). Either way every finished row is on disk and
:class:`RunInterrupted` tells the caller how many cells are left.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from bench.run import console, environment
from bench.errors import UserError, os_error_text
from bench.run.executors import Executor, SerialExecutor, run_cell_safely  # noqa: F401 - re-exported
from bench.grid import Cell, Grid
from bench.results.files import (OutputLock, ResultWriter, TailRepair, check_writable, json_bytes, open_no_follow,
                                 read_sidecar, repair_tail, scan_cells, sidecar_path, write_bytes_atomic)
from bench.run import started as started_mark
from bench.run.rows import failure_rows
from bench.results.schema import FAILED_STATUSES, SCHEMA_VERSION
from bench.results.image_schema import IMAGE_COLUMNS, images_path, pop_image_rows
from bench.results.profile_schema import PROFILE_COLUMNS, pop_profile_rows, profile_path
from bench.results.sidecar import Sidecar
from bench.run.shard import Shard

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ plan
@dataclass
class Plan:
    """Which cells of a grid this run will do, given what the output already holds."""

    grid_cells: int  # cells in the grid
    cells: List[Cell]  # cells in scope (this shard's, or all)
    todo: List[Cell]
    done: List[Cell]  # present with status ok
    skipped: List[Cell]  # present with a failed status, not retried
    retry: Set[str]  # ids of failed cells being run again (their old rows are replaced)
    foreign: int  # cells in the output that are not in scope (another grid, another shard)
    shard: Optional[Shard] = None
    repair: TailRepair = field(default_factory=TailRepair)

    def describe(self, name: str) -> str:
        scope = f"grid {name}: {self.grid_cells} cell(s)"
        if self.shard is not None:
            scope += f", shard {self.shard}: {len(self.cells)}"
        text = f"{scope}; {len(self.done)} done, {len(self.todo)} to run, {len(self.skipped)} skipped"
        if self.skipped:
            text += " (failed earlier; --retry-failed runs them again)"
        if self.retry:
            text += f"; retrying {len(self.retry)} failed"
        return text


def plan_run(grid: Grid, csv_path: str, retry_failed: bool = False, shard: Optional[Shard] = None) -> Plan:
    """Compare the grid with ``csv_path``; reads only, changes nothing."""
    cells = shard.select(grid.cells) if shard is not None else list(grid.cells)
    records = scan_cells(csv_path)
    todo, done, skipped, retry = [], [], [], set()
    for cell in cells:
        rec = records.get(cell.cell_id)
        if rec is None:
            todo.append(cell)
        elif rec.ok:
            done.append(cell)
        elif retry_failed:
            todo.append(cell)
            retry.add(cell.cell_id)
        else:
            skipped.append(cell)
    in_scope = {c.cell_id for c in cells}
    foreign = sum(1 for cid in records if cid not in in_scope)
    return Plan(len(grid.cells), cells, todo, done, skipped, retry, foreign, shard)


# ---------------------------------------------------------------------- result
@dataclass
class RunSummary:
    csv_path: str
    sidecar_path: str
    rows: List[Dict[str, Any]] = field(default_factory=list)  # the rows this run wrote
    failed_cells: int = 0
    seconds: float = 0.0
    plan: Optional[Plan] = None
    cells_run: int = 0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.failed_cells == 0

    @property
    def remaining(self) -> int:
        return len(self.plan.todo) - self.cells_run if self.plan else 0


class RunInterrupted(Exception):
    """The run stopped early (Ctrl-C, SIGTERM); every finished cell is on disk."""

    def __init__(self, summary: RunSummary, exit_code: int = 130) -> None:
        super().__init__(f"interrupted with {summary.remaining} cell(s) to go")
        self.summary = summary
        self.exit_code = exit_code


def new_run_id() -> str:
    now = _dt.datetime.now(_dt.timezone.utc)
    salt = hashlib.sha1(f"{now.timestamp()}-{id(now)}-{time.perf_counter_ns()}".encode()).hexdigest()[:6]
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + salt


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------- stopping
class _Stop:
    """SIGINT: first asks to stop after the running cell(s), second stops now. SIGTERM stops now."""

    def __init__(self, notify: Log) -> None:
        self.requested = False
        self.exit_code = 130
        self._notify = notify
        self._old: Dict[int, Any] = {}
        self._writing = False
        self._stop_now = False

    def _now(self) -> None:
        if self._writing:  # never between the pieces of a write: stop right after it
            self._stop_now = True
            return
        raise KeyboardInterrupt

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:
            self._now()
            return
        self.requested = True
        self._notify("\nstopping after the cell(s) running now; press Ctrl-C again to stop at once")

    def _on_sigterm(self, signum, frame) -> None:
        self.requested = True
        self.exit_code = 128 + signal.SIGTERM
        self._now()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A section (a cell's write) that a stop-now waits for."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._stop_now:
            raise KeyboardInterrupt

    def __enter__(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            self._old[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
            self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------ run
def run_grid(grid: Grid, csv_path: str, executor: Optional[Executor] = None, progress: bool = True,
             command: Optional[List[str]] = None, quick: bool = False, *, retry_failed: bool = False,
             shard: Optional[Shard] = None, log: Log = _stderr) -> RunSummary:
    """Run the cells of ``grid`` that ``csv_path`` does not hold yet, appending rows as cells finish.

    Raises :class:`RunInterrupted` when stopped early, :class:`UserError` for
    an output that cannot be resumed (another tool's CSV, another schema, a
    run already writing it).
    """
    executor = executor or SerialExecutor()
    csv_path = _real_output(csv_path)
    side = sidecar_path(csv_path)
    check_writable(csv_path)  # a read-only folder or a full disk: one line now, not a traceback after a cell
    lock = OutputLock(csv_path)
    lock.acquire()
    try:
        killed = started_mark.read(csv_path)  # a cell the last run was running when it died
        repair = repair_tail(csv_path)
        if repair:
            log(f"{csv_path}: removed an unfinished write at the end ({repair.dropped_bytes} bytes, "
                f"{repair.dropped_rows} whole row(s) of the cut cell): a run was killed mid-write; "
                f"that cell runs again")
        writer = ResultWriter(csv_path)  # refuses a file with other columns before anything is written
        if killed is not None:
            _record_killed_cell(grid, csv_path, writer, killed, log)
        plan = plan_run(grid, csv_path, retry_failed=retry_failed, shard=shard)
        plan.repair = repair
        log(plan.describe(grid.name))
        if plan.foreign:
            log(f"{csv_path} also holds {plan.foreign} cell(s) not in this "
                f"{'shard' if shard else 'grid'}; their rows are kept")
        summary = RunSummary(csv_path, side, plan=plan)
        if not plan.todo:
            log("nothing to run")
            _settle_sidecar(csv_path, log)  # a run killed after (or during) its last cell still says 'running'
            return summary
        previous = _previous_sidecar(csv_path, plan, log)  # refuses another tool's JSON before anything is written
        try:
            writer.append([])  # the header, so even a run stopped before its first cell leaves a valid CSV
        except OSError as e:
            raise UserError(f"{csv_path}: cannot write results: {os_error_text(e)}") from None
        return _run_plan(grid, plan, writer, executor, summary, progress, command, quick, retry_failed, previous,
                         log)
    finally:
        lock.release()


def _real_output(csv_path: str) -> str:
    """The file ``--out`` really is: a run through a symbolic link writes (and locks) the linked file.

    So two runs reaching one file by two names share one lock, and the sidecar, the started mark and
    the per-image and profile files sit beside the file they describe. A link to nothing is refused:
    it would create a file wherever it points.
    """
    if os.path.islink(csv_path) and not os.path.exists(csv_path):
        raise UserError(f"--out {csv_path}: is a symbolic link to a missing file ({os.readlink(csv_path)}); "
                        f"refusing to create a file through it")
    return os.path.realpath(csv_path) if os.path.islink(csv_path) else csv_path


def _run_plan(grid: Grid, plan: Plan, writer: ResultWriter, executor: Executor, summary: RunSummary,
              progress: bool, command: Optional[List[str]], quick: bool, retry_failed: bool,
              previous: Optional[Dict[str, Any]], log: Log) -> RunSummary:
    run_id = new_run_id()
    segment = _new_segment(run_id, grid, plan, executor, environment.capture(command), quick, retry_failed)
    meta = _start_sidecar(grid, segment, executor, quick, previous)
    try:
        write_sidecar(summary.sidecar_path, meta)
    except OSError as e:
        raise UserError(f"{summary.sidecar_path}: cannot write the sidecar: {os_error_text(e)}") from None
    # In-process cells can take the runner down with them (the OOM killer): mark each one before it
    # starts so the next run can tell which cell it was. A child process per cell needs no mark.
    marks = getattr(executor, "in_process", False)

    start = time.perf_counter()
    bar = _progress_bar(len(plan.todo), progress)
    say = bar.write if bar is not None else log
    stop = _Stop(lambda m: say(m.strip()))
    console.start_run(grid, plan.todo, summary.csv_path, quick=quick, progress=progress, write=say)
    try:
        with stop:
            executor.open()
            _run_cells(executor, plan, writer, summary, stop, bar, run_id, marks)
        summary.interrupted = summary.cells_run < len(plan.todo)
        segment["status"] = "interrupted" if summary.interrupted else "finished"
    except KeyboardInterrupt:
        summary.interrupted = True
        segment["status"] = "interrupted"
    except BaseException:
        segment["status"] = "failed"
        raise
    finally:
        _close_run(executor, summary, segment, meta, bar, marks, start, log)
    if summary.interrupted:
        raise RunInterrupted(summary, stop.exit_code)
    return summary


def _run_cells(executor: Executor, plan: Plan, writer: ResultWriter, summary: RunSummary, stop: _Stop, bar: Any,
               run_id: str, marks: bool) -> None:
    """Run the plan's cells, writing each one's rows the moment it finishes."""
    for cell, rows in _finished_cells(executor, plan.todo, stop, summary.csv_path, run_id, marks):
        image_rows = _image_rows(cell, rows, run_id)
        profile_rows = _stamp_rows(rows, run_id)
        with stop.writing():
            _write_cell(cell, rows, profile_rows, image_rows, plan, writer, summary.csv_path)
            if marks:
                started_mark.clear(summary.csv_path)
            _count_cell(summary, rows)
        _advance_bar(bar, cell)


def _close_run(executor: Executor, summary: RunSummary, segment: Dict[str, Any], meta: Dict[str, Any], bar: Any,
               marks: bool, start: float, log: Log) -> None:
    """However the run ended: close the bar and the executor, then write the sidecar's final facts."""
    if bar is not None:
        bar.close()
    if marks:  # this process is alive to get here, so no cell was killed
        started_mark.clear(summary.csv_path)
    try:
        executor.close()
    finally:
        summary.seconds = time.perf_counter() - start
        _end_segment(segment, meta, summary, executor, log)


def _new_segment(run_id: str, grid: Grid, plan: Plan, executor: Executor, env: Dict[str, Any], quick: bool,
                 retry_failed: bool) -> Dict[str, Any]:
    """This run's entry in the sidecar, as it starts: what was asked, of which cells, where."""
    return {
        "run_id": run_id,
        "status": "running",
        "started": _now(),
        "command": env.get("command"),
        "grid_path": grid.path,
        "grid_name": grid.name,
        "quick": quick,
        "shard": str(plan.shard) if plan.shard else None,
        "retry_failed": retry_failed,
        "cells": {"grid": plan.grid_cells, "in_scope": len(plan.cells), "done_before": len(plan.done),
                  "to_run": len(plan.todo), "skipped_failed": len(plan.skipped)},
        "executor": {"name": executor.name},
        "environment": env,
    }


def _finished_cells(executor: Executor, todo: List[Cell], stop: _Stop, csv_path: str, run_id: str,
                    marks: bool) -> Iterator[Tuple[Cell, List[Dict[str, Any]]]]:
    """The executor's (cell, rows) as cells finish; with ``marks``, each cell is marked started first."""
    if not marks:
        return executor.run_cells(todo, lambda: stop.requested)

    def on_start(cell: Cell) -> None:
        try:
            started_mark.write(csv_path, cell.cell_id, run_id)
        except OSError as e:
            raise UserError(f"{started_mark.mark_path(csv_path)}: cannot write: {os_error_text(e)}") from None

    return executor.run_cells(todo, lambda: stop.requested, on_start)  # type: ignore[call-arg]


def _stamp_rows(rows: List[Dict[str, Any]], run_id: str) -> List[Dict[str, Any]]:
    """Take the profile rows out of a cell's rows and mark both with this run's id; returns the profile rows."""
    profile_rows = pop_profile_rows(rows)
    for row in rows + profile_rows:
        row["run_id"] = run_id
    return profile_rows


def _image_rows(cell: Cell, rows: List[Dict[str, Any]], run_id: str) -> List[Dict[str, Any]]:
    """Take a cell's per-image correctness rows off its result rows, with the run, cell and variant ids."""
    image_rows = pop_image_rows(rows)
    for row in image_rows:
        row.update(run_id=run_id, cell_id=cell.cell_id, variant_id=cell.variant_id)
    return image_rows


def _write_cell(cell: Cell, rows: List[Dict[str, Any]], profile_rows: List[Dict[str, Any]],
                image_rows: List[Dict[str, Any]], plan: Plan, writer: ResultWriter, csv_path: str) -> None:
    """Append a cell's rows (a retried cell's replace its old ones), its profile rows beside them.

    The per-image rows (RUN.images.csv) go first: a kill between the two writes leaves per-image rows
    of a cell that runs again (readers match them by run_id), never a result row without them.
    """
    try:
        if image_rows:
            ResultWriter(images_path(csv_path), IMAGE_COLUMNS).append(image_rows)
        if cell.cell_id in plan.retry:
            writer.replace_cell(cell.cell_id, rows)
        else:
            writer.append(rows)
        if profile_rows:  # RUN.profile.csv beside RUN.csv
            ResultWriter(profile_path(csv_path), PROFILE_COLUMNS).append(profile_rows)
    except OSError as e:
        raise UserError(f"{e.filename or csv_path}: cannot write results: {os_error_text(e)}") from None


def _count_cell(summary: RunSummary, rows: List[Dict[str, Any]]) -> None:
    summary.rows.extend(rows)
    summary.cells_run += 1
    if any(r.get("status") in FAILED_STATUSES for r in rows):
        summary.failed_cells += 1


def _advance_bar(bar: Any, cell: Cell) -> None:
    if bar is not None:
        bar.set_postfix_str(cell.variant, refresh=False)
        bar.update(1)


def _end_segment(segment: Dict[str, Any], meta: Dict[str, Any], summary: RunSummary, executor: Executor,
                 log: Log) -> None:
    """Record how the run ended, in its segment and the sidecar's top level, and write the sidecar."""
    segment.update(finished=_now(), seconds=round(summary.seconds, 3), cells_run=summary.cells_run,
                   failed_cells=summary.failed_cells, executor=executor.describe())
    segment["environment_end"] = {"gpus": environment.gpu_info()}
    meta.update(status=segment["status"], seconds=segment["seconds"], failed_cells=summary.failed_cells,
                finished=segment["finished"], environment_end=segment["environment_end"])
    _finish_sidecar(summary.sidecar_path, meta, segment["status"], log)


# Every status a run's entry can hold. The sidecar written at the start pads "running" to the longest,
# so that on a full disk the final status can be written over it in place, whatever it is.
RUN_STATUSES = ("running", "finished", "interrupted", "failed", "killed")
_RUNNING = b'"status": "running"'
_STATUS_WIDTH = len(_RUNNING) + max(map(len, RUN_STATUSES)) - len("running")


def write_sidecar(path: str, meta: Dict[str, Any]) -> None:
    """Write the sidecar atomically, a ``"running"`` status padded with blanks (which JSON ignores)."""
    write_bytes_atomic(path, json_bytes(meta).replace(_RUNNING, _RUNNING.ljust(_STATUS_WIDTH)))


def _finish_sidecar(path: str, meta: Dict[str, Any], status: str, log: Log) -> None:
    """Write the final sidecar; on a full disk, at least make its status true.

    The atomic rewrite needs free space for the new copy. When there is none,
    the padded ``"running"`` of the sidecar written at the start is
    overwritten in place by the final status (any of them fits the padding),
    which reuses the file's blocks, so the next run does not take a failed run
    for a killed one, nor a finished one for a running one.
    """
    try:
        write_sidecar(path, meta)
        return
    except OSError as e:
        reason = os_error_text(e)
    patched = _patch_status(path, status)
    log(f"warning: {path}: cannot write the sidecar ({reason}); "
        + (f"its status now says {status!r}, its other final facts are missing" if patched
           else "it still says 'running'"))


def _patch_status(path: str, status: str) -> bool:
    """Overwrite the padded running status in place (no new blocks needed); True when done."""
    old, new = _RUNNING.ljust(_STATUS_WIDTH), f'"status": "{status}"'.encode().ljust(_STATUS_WIDTH)
    try:
        fd = open_no_follow(path, os.O_RDWR)
    except OSError:
        return False
    try:
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        if old not in data:
            return False
        start = 0
        while (at := data.find(old, start)) >= 0:  # the top level's and this run's entry
            os.pwrite(fd, new, at)
            start = at + len(old)
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _settle_sidecar(csv_path: str, log: Log) -> None:
    """Call a run that the sidecar still says is running ``killed``: we hold the lock, so it is gone."""
    try:
        data = read_sidecar(csv_path)
    except UserError:
        return  # the next run that has cells to do moves it aside
    if data is None or not Sidecar.is_harness(data):
        return
    stale = [r for r in data.get("runs") or [] if isinstance(r, dict) and r.get("status") == "running"]
    for run in stale:
        run["status"] = "killed"
    if data.get("status") == "running":
        data["status"] = "killed"
        stale = stale or [data]
    if not stale:
        return
    path = sidecar_path(csv_path)
    try:
        write_sidecar(path, data)
    except OSError as e:
        if not _patch_status(path, "killed"):
            log(f"warning: {path}: cannot record the killed run ({os_error_text(e)}); it still says 'running'")
            return
    log(f"{path}: the run that was still 'running' died before it could say so; now recorded as 'killed'")


def _record_killed_cell(grid: Grid, csv_path: str, writer: ResultWriter, mark: "started_mark.Mark",
                        log: Log) -> None:
    """Record the cell a killed run was running, so a resume does not run it first and die again."""
    cell = next((c for c in grid.cells if c.cell_id == mark.cell_id), None)
    record = scan_cells(csv_path).get(mark.cell_id)
    if cell is None or (record is not None and record.ok):  # another grid's cell, or its rows made it
        started_mark.clear(csv_path)
        return
    status, message = mark.verdict()
    rows = failure_rows(cell, status, message)
    for row in rows:
        row["run_id"] = mark.run_id or "killed"
    try:
        if record is not None:  # a failed cell retried when the run died: its old rows give way
            writer.replace_cell(cell.cell_id, rows)
        else:
            writer.append(rows)
    except OSError as e:
        raise UserError(f"{csv_path}: cannot write results: {os_error_text(e)}") from None
    started_mark.clear(csv_path)
    log(f"{csv_path}: cell {cell.cell_id} ({cell.variant}) was running when the last run died; recorded as "
        f"status={status} ({message}); --retry-failed runs it again")


def _previous_sidecar(csv_path: str, plan: Plan, log: Log) -> Optional[Dict[str, Any]]:
    """The sidecar this run carries forward, or None; whatever is not this file's sidecar is set aside.

    Only a file this harness wrote for this CSV is adopted. A JSON that is not a
    sidecar of this harness at all is refused (it is someone's file that merely
    shares the name); an unreadable one is kept as ``NAME.json.corrupt``; one
    that describes other runs (it knows none of the CSV's run ids, or its CSV
    is gone) or is a symbolic link is kept as ``NAME.json.other-run``. Nothing
    is overwritten.
    """
    path = sidecar_path(csv_path)
    has_rows = bool(plan.done or plan.skipped or plan.retry or plan.foreign)
    if not os.path.lexists(path):
        if has_rows:
            log(f"warning: {path} is missing; the earlier rows' environment is unknown")
        return None
    if os.path.islink(path):
        return _set_aside(path, "other-run", "is a symbolic link, not a sidecar this harness wrote", log)
    try:
        data = read_sidecar(csv_path)
    except UserError as e:
        return _set_aside(path, "corrupt", str(e).split(": ", 1)[-1], log)
    if not Sidecar.is_harness(data):
        raise UserError(f"{path}: exists and is not a sidecar of this harness (no schema_version and runs); "
                        f"it would be overwritten: move it or choose another --out")
    sidecar = Sidecar(path, data)
    csv_run_ids = [r.run_id for r in scan_cells(csv_path).values()]
    if sidecar.foreign(csv_run_ids):
        return _set_aside(path, "other-run", sidecar.mismatch(csv_path, csv_run_ids).split(": ", 1)[-1], log)
    if not os.path.exists(csv_path):
        return _set_aside(path, "other-run", f"describes runs of a {os.path.basename(csv_path)} that is gone", log)
    return data


def _set_aside(path: str, suffix: str, why: str, log: Log) -> None:
    backup = _back_up(path, suffix)
    if backup is None:
        raise UserError(f"{path}: {why}; cannot move it aside, so it would be overwritten: choose another --out")
    log(f"warning: {path}: {why}; kept as {backup}, starting a new one (the earlier rows' environment is "
        f"unknown)")
    return None


def _start_sidecar(grid: Grid, segment: Dict[str, Any], executor: Executor, quick: bool,
                   previous: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The sidecar for this run: the earlier runs' entries (of ``previous``) kept, this one appended.

    The top-level ``run_id``, ``environment`` and ``grid`` describe the latest
    run (what a reader of a single-run file expects); ``runs`` has every run
    that wrote rows here and ``cells`` every cell any of them was asked for.
    """
    runs: List[Dict[str, Any]] = []
    cells: Dict[str, Any] = {}
    if previous:
        runs = Sidecar("", previous).runs  # either sidecar layout, as a list of runs
        for run in runs:
            if run.get("status") == "running":  # we hold the lock, so that run is gone
                run["status"] = "killed"
        cells = dict(previous.get("cells") or {})
        if not cells:
            cells = {c["cell_id"]: c for c in (previous.get("grid") or {}).get("cells", [])}
    cells.update({c.cell_id: c.to_dict() for c in grid.cells})
    runs.append(segment)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": segment["run_id"],
        "status": "running",
        "quick": quick,
        "executor": executor.name,
        "shard": segment["shard"],
        "grid": grid.to_dict(),
        "environment": segment["environment"],
        "runs": runs,
        "cells": cells,
    }


def _back_up(path: str, suffix: str = "corrupt") -> Optional[str]:
    """Move a sidecar aside (NAME.json.SUFFIX, then .SUFFIX-2, ...) rather than overwrite it."""
    for n in range(1, 100):
        backup = f"{path}.{suffix}" + ("" if n == 1 else f"-{n}")
        if not os.path.lexists(backup):
            try:
                os.rename(path, backup)
            except OSError:
                return None
            return backup
    return None


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="cells", unit="cell", file=sys.stderr, dynamic_ncols=True)
