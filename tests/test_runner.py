"""The runner's bookkeeping on real files: resume, retries, repair of a cut write, Ctrl-C, the sidecar.

The cells here are measured by a small function that returns well-formed
rows without timing anything, so each test is about the runner, not torch.
"""
import csv
import io
import json
import os
import signal
import time

import pytest
from conftest import ok_rows, run_stand_in, tiny_grid

from bench.errors import UserError
from bench.grid import expand_grid
from bench.results.files import OutputLock, read_lines, repair_tail, rows_to_csv_text, scan_cells, sidecar_path
from bench.run.runner import RunInterrupted, plan_run
from bench.results.schema import COLUMNS


class Recorder:
    """A measure function: :func:`conftest.ok_rows`, or a failure for the widths in ``fail``."""

    def __init__(self, fail=(), hook=None):
        self.calls = []
        self.fail = set(fail)
        self.hook = hook

    def __call__(self, cell):
        self.calls.append(cell.cell_id)
        if self.hook:
            self.hook(cell, len(self.calls))
        if cell.model.width_multiplier in self.fail:
            raise RuntimeError("boom\nsecond line")
        return ok_rows(cell)


def ctrl_c_at_second_cell(*pauses):
    """A Recorder hook: as the second cell starts, press Ctrl-C once per pause, waiting that long (s) after each."""
    def hook(cell, n):
        if n == 2:
            for pause in pauses:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(pause)
    return hook


def interrupted_run(grid, out, hook):
    """Run with ``hook`` called as each cell starts; the run must stop early. Returns the RunInterrupted."""
    with pytest.raises(RunInterrupted) as info:
        run_stand_in(grid, out, Recorder(hook=hook))
    return info.value


def cell_ids_in(path):
    parsed = read_lines(str(path))
    col = parsed.header.index("cell_id")
    return [line.fields[col] for line in parsed.lines]


def test_fresh_run_then_resume_runs_nothing(tmp_path):
    out = tmp_path / "r.csv"
    grid = tiny_grid()
    measure = Recorder()
    summary, messages = run_stand_in(grid, out, measure)
    assert summary.cells_run == 4 and summary.ok
    assert messages[0] == "grid tiny: 4 cell(s); 0 done, 4 to run, 0 skipped"
    ids = cell_ids_in(out)
    assert len(ids) == 8 and set(ids) == {c.cell_id for c in grid.cells}
    before = out.read_bytes()

    again = Recorder()
    summary, messages = run_stand_in(tiny_grid(), out, again)
    assert again.calls == [] and summary.cells_run == 0
    assert messages[0] == "grid tiny: 4 cell(s); 4 done, 0 to run, 0 skipped"
    assert out.read_bytes() == before


def test_changed_grid_runs_only_new_cells_and_keeps_the_old(tmp_path):
    out = tmp_path / "r.csv"
    run_stand_in(tiny_grid(widths=(1, 2)), out, Recorder())
    measure = Recorder()
    grid = tiny_grid(widths=(2, 3))
    summary, messages = run_stand_in(grid, out, measure)
    assert [c.model.width_multiplier for c in grid.cells if c.cell_id in measure.calls] == [3]
    assert "1 done, 1 to run" in messages[0]
    assert any("1 cell(s) not in this grid; their rows are kept" in m for m in messages)
    assert len(set(cell_ids_in(out))) == 3


def test_failed_cells_are_skipped_unless_retried_and_then_replaced(tmp_path):
    out = tmp_path / "r.csv"
    summary, _ = run_stand_in(tiny_grid(), out, Recorder(fail={1.5}))
    assert summary.failed_cells == 1 and not summary.ok
    parsed = read_lines(str(out))
    cols = parsed.index
    failed = [ln for ln in parsed.lines if ln.fields[cols["status"]] == "error"]
    assert len(failed) == 1 and failed[0].fields[cols["error"]] == "RuntimeError: boom second line"
    good_lines = [ln.raw for ln in parsed.lines if ln.fields[cols["status"]] == "ok"]

    skip = Recorder()
    summary, messages = run_stand_in(tiny_grid(), out, skip)
    assert skip.calls == []
    assert "3 done, 0 to run, 1 skipped (failed earlier; --retry-failed runs them again)" in messages[0]

    retry = Recorder()
    summary, messages = run_stand_in(tiny_grid(), out, retry, retry_failed=True)
    assert len(retry.calls) == 1 and summary.ok
    parsed = read_lines(str(out))
    # The failed attempt is gone, the retried cell appears once, the other rows are untouched bytes.
    assert [ln.fields[cols["status"]] for ln in parsed.lines] == ["ok"] * 8
    assert [ln.raw for ln in parsed.lines[:6]] == good_lines
    assert sorted(scan_cells(str(out))) == sorted(c.cell_id for c in tiny_grid().cells)
    side = json.loads(open(sidecar_path(str(out))).read())
    assert [r["status"] for r in side["runs"]] == ["finished", "finished"]  # the no-op run adds no segment
    assert side["runs"][1]["retry_failed"] is True and side["run_id"] == side["runs"][1]["run_id"]
    run_ids = {ln.fields[cols["run_id"]] for ln in parsed.lines}
    assert run_ids == {r["run_id"] for r in side["runs"]}


def test_sidecar_keeps_every_run_and_every_cell(tmp_path):
    out = tmp_path / "r.csv"
    run_stand_in(tiny_grid(widths=(1,)), out, Recorder())
    side = json.loads(open(sidecar_path(str(out))).read())
    side["runs"][0]["status"] = "running"  # as a SIGKILLed run leaves it
    with open(sidecar_path(str(out)), "w") as f:
        json.dump(side, f)
    run_stand_in(tiny_grid(widths=(1, 2)), out, Recorder())
    side = json.loads(open(sidecar_path(str(out))).read())
    assert [r["status"] for r in side["runs"]] == ["killed", "finished"]
    assert set(side["cells"]) == {c.cell_id for c in tiny_grid(widths=(1, 2)).cells}
    assert all("environment" in r and r["environment"]["command"] == "test" for r in side["runs"])
    assert side["runs"][1]["cells"] == {"grid": 2, "in_scope": 2, "done_before": 1, "to_run": 1,
                                        "skipped_failed": 0}


def _write_cells(path, grid, run_id="R1"):
    rows = Recorder()
    text = rows_to_csv_text([], header=True)
    for cell in grid.cells:
        cell_rows = rows(cell)
        for r in cell_rows:
            r["run_id"] = run_id
        text += rows_to_csv_text(cell_rows)
    path.write_text(text)
    return text


def test_repair_drops_a_cut_line_with_the_rest_of_its_cell(tmp_path):
    out = tmp_path / "r.csv"
    grid = tiny_grid()
    text = _write_cells(out, grid)
    lines = text.splitlines(keepends=True)
    # Killed while writing the last cell: its first row whole, its second cut mid-line.
    cut = "".join(lines[:-1]) + lines[-1][:60]
    out.write_text(cut)
    repaired = repair_tail(str(out))
    assert repaired.dropped_rows == 1 and repaired.dropped_bytes == len(lines[-2]) + 60
    assert out.read_text() == "".join(lines[:-2])

    # Resuming measures exactly the cut cell again; every byte before the cut is kept.
    measure = Recorder()
    summary, messages = run_stand_in(grid, out, measure)
    assert measure.calls == [grid.cells[-1].cell_id]
    assert out.read_text().startswith("".join(lines[:-2]))
    assert sorted(cell_ids_in(out)) == sorted(c.cell_id for c in grid.cells for _ in range(2))


def test_repair_of_a_fragment_too_short_to_name_its_cell(tmp_path):
    out = tmp_path / "r.csv"
    text = _write_cells(out, tiny_grid())
    lines = text.splitlines(keepends=True)
    out.write_text(text + "R1,ab")  # the start of a new write: which cell, we cannot tell
    repaired = repair_tail(str(out))
    # The last whole cell might be the one cut, so it is measured again rather than trusted.
    assert repaired.dropped_rows == 2
    assert out.read_text() == "".join(lines[:-2])
    out.write_text(",".join(COLUMNS)[:40])  # killed inside the very first write
    assert repair_tail(str(out)).dropped_bytes == 40 and out.read_bytes() == b""
    assert not repair_tail(str(out))  # nothing to do on a clean file


def test_a_line_break_in_a_value_stays_one_row():
    # Resume and repair read the file line by line, so no value may span lines.
    text = rows_to_csv_text([{"status": "diverged", "error": "loss is nan\r\nat epoch 3"}])
    assert text.count("\n") == 1 and "loss is nan at epoch 3" in text


def test_first_ctrl_c_finishes_the_cell_then_stops(tmp_path):
    out = tmp_path / "r.csv"
    grid = tiny_grid()
    # one press; 0.2 s later the handler has run, and the cell goes on regardless
    stopped = interrupted_run(grid, out, ctrl_c_at_second_cell(0.2))
    summary = stopped.summary
    assert stopped.exit_code == 130 and summary.cells_run == 2 and summary.remaining == 2
    assert set(cell_ids_in(out)) == {c.cell_id for c in grid.cells[:2]}
    side = json.loads(open(sidecar_path(str(out))).read())
    assert side["runs"][-1]["status"] == "interrupted" and side["runs"][-1]["cells_run"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    measure = Recorder()
    summary, messages = run_stand_in(grid, out, measure)
    assert measure.calls == [c.cell_id for c in grid.cells[2:]]
    assert "2 done, 2 to run" in messages[0]


def test_second_ctrl_c_stops_at_once(tmp_path):
    out = tmp_path / "r.csv"
    grid = tiny_grid()
    # two presses: the 5 s wait after the second never ends, since the second Ctrl-C ends the cell
    stopped = interrupted_run(grid, out, ctrl_c_at_second_cell(0.1, 5))
    assert stopped.summary.cells_run == 1, "the second Ctrl-C did not stop the cell"
    assert set(cell_ids_in(out)) == {grid.cells[0].cell_id}
    side = json.loads(open(sidecar_path(str(out))).read())
    assert side["status"] == "interrupted"


def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    out = tmp_path / "r.csv"
    with OutputLock(str(out)):
        with pytest.raises(UserError, match="another run is writing this output"):
            run_stand_in(tiny_grid(), out, Recorder())
    assert not out.exists()
    run_stand_in(tiny_grid(widths=(1,)), out, Recorder())  # released: fine now


def test_outputs_that_cannot_be_resumed_are_left_alone(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n3,")
    with pytest.raises(UserError, match="missing column"):
        run_stand_in(tiny_grid(), other, Recorder())
    assert other.read_text() == "a,b\n1,2\n3,"
    old = tmp_path / "old.csv"
    old.write_text("run_id,cell_id,status\nR,abc,ok\n")
    with pytest.raises(UserError, match="different columns"):
        run_stand_in(tiny_grid(), old, Recorder())
    assert old.read_text() == "run_id,cell_id,status\nR,abc,ok\n"


def big_grid():
    raw = {"name": "big", "defaults": {"preset": "resnet20", "device": "cpu", "speed": True, "train_step": False,
                                       "batch_sizes": [1], "warmup": 0},
           "matrix": {"width_multiplier": [1, 1.25, 1.5, 1.75, 2, 2.25, 2.5, 2.75, 3, 3.25],
                      "repeats": list(range(1, 101))}}
    return expand_grid(raw, "big.yaml")


def test_thousand_cells_expand_and_resume_fast(tmp_path):
    """Harness time on a 1000-cell grid: both well under a second (generous bounds for a loaded CI box)."""
    t0 = time.perf_counter()
    grid = big_grid()
    expand_s = time.perf_counter() - t0
    assert len(grid.cells) == 1000
    out = tmp_path / "big.csv"
    _write_cells(out, grid)
    t0 = time.perf_counter()
    plan = plan_run(grid, str(out))
    plan_s = time.perf_counter() - t0
    assert len(plan.done) == 1000 and not plan.todo
    t0 = time.perf_counter()
    summary, messages = run_stand_in(grid, out, Recorder())  # the whole resumed run: lock, repair, scan, plan
    resume_s = time.perf_counter() - t0
    assert summary.cells_run == 0
    print(f"\n1000 cells: expand {expand_s * 1e3:.0f} ms, plan {plan_s * 1e3:.0f} ms, "
          f"resumed run {resume_s * 1e3:.0f} ms")
    assert expand_s < 2.0 and plan_s < 1.0 and resume_s < 1.0


def test_a_result_file_from_before_new_columns_resumes_with_its_values_kept(tmp_path):
    out = tmp_path / "r.csv"
    run_stand_in(tiny_grid(), out, Recorder())
    header, *lines = out.read_text().splitlines()
    columns = header.split(",")
    # The same file as an older version wrote it: without two of today's columns.
    dropped = [columns.index("latency_sys_share"), columns.index("train_precision")]

    def without(line):
        values = next(csv.reader([line]))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow([v for i, v in enumerate(values) if i not in dropped])
        return buf.getvalue()
    old_text = "\n".join([without(header)] + [without(line) for line in lines]) + "\n"
    out.write_text(old_text)
    before = list(csv.DictReader(io.StringIO(old_text)))
    old_cells = {r["cell_id"] for r in before}
    run_stand_in(tiny_grid(widths=(1, 2, 3)), out, Recorder())
    rows = list(csv.DictReader(out.open()))
    assert next(csv.reader(out.open())) == columns
    kept = [r for r in rows if r["cell_id"] in old_cells]
    assert kept and [{k: r[k] for k in old} for r, old in zip(kept, before)] == before
    assert all(r["latency_sys_share"] == "" for r in kept)
    assert len({r["cell_id"] for r in rows}) == len(old_cells) + 1  # width 3 added, the rest resumed
