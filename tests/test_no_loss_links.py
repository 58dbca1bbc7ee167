"""Nothing lost, round three (issue 22, items 1, 3, 4, 5, 8, 9 and the full-disk part of 13; issue 24's
one reader): planted links, a missing newline, a name shared with the sidecar, a full disk at the last
write, a kill in the last cell and merges in either order must never cost a finished file.

Each test reproduces one reported case. Cells are measured by a stand-in (conftest.ok_rows), so the
tests are about the files, not torch.
"""
import errno
import json
import os
import subprocess
import sys

import pytest
from conftest import ok_rows, run_stand_in, tiny_grid
from test_no_loss import fill, one_line_error, small_disk, statuses  # noqa: F401 - small_disk is a fixture

from bench.cli import main
from bench.errors import UserError
from bench.results.files import lock_path, read_lines, sidecar_path
from bench.run import started
from bench.run.runner import RunInterrupted

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECIOUS = b"run_id,cell_id,status\nr1,c1,ok\n"


@pytest.fixture
def finished(tmp_path):
    """A file that must survive every case: what a planted link points at."""
    path = tmp_path / "finished.csv"
    path.write_bytes(PRECIOUS)
    return path


def merge_input(tmp_path, name="t2.csv", widths=(1,)):
    path = tmp_path / name
    run_stand_in(tiny_grid(widths=widths), path)
    return path


# ------------------------------------------------------------- 1: files that follow links
def test_a_lock_file_planted_as_a_link_to_a_finished_csv_leaves_that_file_untouched(tmp_path, finished, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    os.symlink(finished, folder / ".m.csv.lock")
    t2 = merge_input(tmp_path)
    one_line_error(capsys, ["merge", str(t2), "--out", str(folder / "m.csv")], "lock file", "symbolic link")
    with pytest.raises(UserError, match="symbolic link"):
        run_stand_in(tiny_grid(widths=(1,)), folder / "m.csv")
    assert finished.read_bytes() == PRECIOUS


def test_a_lock_file_hard_linked_to_a_result_is_refused_and_the_result_kept(tmp_path, finished):
    os.link(finished, tmp_path / ".r.csv.lock")
    with pytest.raises(UserError, match="not a lock file of this harness"):
        run_stand_in(tiny_grid(widths=(1,)), tmp_path / "r.csv")
    assert finished.read_bytes() == PRECIOUS


def test_a_lock_file_left_by_an_earlier_run_is_taken_again(tmp_path):
    (tmp_path / ".r.csv.lock").write_text("12345\n")
    summary, _ = run_stand_in(tiny_grid(widths=(1,)), tmp_path / "r.csv")
    assert summary.cells_run == 1
    assert (tmp_path / ".r.csv.lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize("name", [".r.csv.started.tmp", ".r.csv.started"])
def test_a_started_mark_planted_as_a_link_costs_only_the_link(tmp_path, finished, name):
    os.symlink(finished, tmp_path / name)
    summary, _ = run_stand_in(tiny_grid(widths=(1, 2)), tmp_path / "r.csv")  # serial: a mark per cell
    assert summary.cells_run == 2 and finished.read_bytes() == PRECIOUS
    assert not os.path.lexists(tmp_path / name)


@pytest.mark.parametrize("which", ["images", "profile"])
def test_a_per_image_or_profile_file_planted_as_a_link_is_refused_in_one_line(tmp_path, which):
    from bench.results.image_schema import IMAGE_ROWS_KEY, image_row, test_set_id
    from bench.results.profile_schema import PROFILE_ROWS_KEY

    def with_side_rows(cell):
        rows = ok_rows(cell)
        if which == "images":
            rows[0][IMAGE_ROWS_KEY] = [image_row(0, [True, False], test_set_id([1, 2]))]
        else:
            rows[0][PROFILE_ROWS_KEY] = [{"cell_id": cell.cell_id, "phase": "inference", "ms": 1.0}]
        return rows

    victim = tmp_path / "victim.txt"  # empty, so no header check stands in the way: only the link does
    victim.write_bytes(b"")
    os.symlink(victim, tmp_path / f"r.{which}.csv")
    with pytest.raises(UserError) as info:
        run_stand_in(tiny_grid(widths=(1,)), tmp_path / "r.csv", with_side_rows)
    assert str(info.value).startswith(f"{tmp_path / f'r.{which}.csv'}: cannot write results: is a symbolic link")
    assert "\n" not in str(info.value) and victim.read_bytes() == b""


# ----------------------------------------------------------- 3: a file lacking only its final newline
def test_a_file_lacking_only_its_final_newline_keeps_its_last_cell_on_resume(tmp_path):
    out = tmp_path / "r.csv"
    run_stand_in(tiny_grid(widths=(1, 2)), out)
    whole = out.read_bytes()
    out.write_bytes(whole[:-1])  # head -c -1
    summary, messages = run_stand_in(tiny_grid(widths=(1, 2)), out)
    assert summary.cells_run == 0 and not any("removed" in m for m in messages), messages
    assert out.read_bytes() == whole  # the newline is supplied, nothing else changes
    out.write_bytes(whole[:-1])
    summary, _ = run_stand_in(tiny_grid(widths=(1, 2, 3)), out)  # the next cell starts on a new line
    assert summary.cells_run == 1 and out.read_bytes().startswith(whole)
    assert len(read_lines(str(out)).lines) == 6


def test_a_last_row_lacking_only_its_newline_is_read_by_compare_and_report_without_advice(tmp_path, capsys):
    from bench.analysis.reports import load_results
    from bench.results.validate import read_table

    out = tmp_path / "r.csv"
    run_stand_in(tiny_grid(widths=(1,)), out)
    out.write_bytes(out.read_bytes()[:-1])
    table = read_table(str(out))
    assert len(table.frame) == 2 and table.notes == []
    rows, _ = load_results([str(out)])
    assert len(rows) == 2 and "newline" not in capsys.readouterr().err


@pytest.mark.parametrize("cut", ["status", "quote"])
def test_a_cut_last_row_is_still_removed_on_resume(tmp_path, cut):
    """The rule keeps only rows that are whole: a bad status or an open quote is a cut write."""
    out = tmp_path / "r.csv"
    run_stand_in(tiny_grid(widths=(1, 2)), out)
    whole = out.read_bytes()
    body, last = whole[:-1].rsplit(b"\n", 1)
    last = last.replace(b",ok,", b",o,") if cut == "status" else last + b',"unfinished'
    out.write_bytes(body + b"\n" + last)
    summary, messages = run_stand_in(tiny_grid(widths=(1, 2)), out)
    assert any("removed an unfinished write" in m for m in messages)
    assert summary.cells_run == 1 and len(read_lines(str(out)).lines) == 4


# ------------------------------------------------------------ 4: the lock is on the file, not the name
def test_a_run_through_a_link_to_an_output_being_written_is_refused(tmp_path):
    folder = tmp_path / "w"
    (folder / "other").mkdir(parents=True)
    target = folder / "c1.csv"
    link = folder / "other" / "link.csv"
    os.symlink(target, link)
    assert lock_path(str(link)) == lock_path(str(target))
    refused = []

    def second_run_during_the_first(cell):
        if not refused:
            with pytest.raises(UserError, match="another run is writing this output") as info:
                run_stand_in(tiny_grid(), link)
            refused.append(str(info.value))
        return ok_rows(cell)

    run_stand_in(tiny_grid(), target, second_run_during_the_first)
    assert refused
    parsed = read_lines(str(target))
    cells = [ln.get(parsed.index, "cell_id") for ln in parsed.lines]
    assert len(cells) == 8 and len(set(cells)) == 4  # every cell once (two rows each)
    summary, _ = run_stand_in(tiny_grid(), link)  # afterwards, the link resumes the file it names
    assert summary.cells_run == 0 and not (folder / "other" / "link.json").exists()


def test_an_output_that_is_a_link_to_nothing_is_refused(tmp_path):
    os.symlink(tmp_path / "elsewhere" / "x.csv", tmp_path / "r.csv")
    with pytest.raises(UserError, match="symbolic link to a missing file"):
        run_stand_in(tiny_grid(widths=(1,)), tmp_path / "r.csv")
    assert not (tmp_path / "elsewhere").exists()


# ------------------------------------------------------------- 5: files that share the sidecar's name
def test_a_json_that_merely_shares_the_sidecar_name_is_refused_not_replaced(tmp_path):
    folder = tmp_path / "o"
    folder.mkdir()
    (folder / "c.json").write_text("{}\n")
    with pytest.raises(UserError, match="not a sidecar of this harness"):
        run_stand_in(tiny_grid(widths=(1,)), folder / "c.csv")
    assert (folder / "c.json").read_text() == "{}\n" and not (folder / "c.csv").exists()


def test_a_sidecar_whose_csv_is_gone_is_kept_aside_not_replaced(tmp_path):
    out = tmp_path / "c.csv"
    run_stand_in(tiny_grid(widths=(1,)), out)
    old = (tmp_path / "c.json").read_text()
    out.unlink()
    _, messages = run_stand_in(tiny_grid(widths=(1,)), out)
    assert (tmp_path / "c.json.other-run").read_text() == old
    assert any("kept as" in m and "c.json.other-run" in m for m in messages)


def test_a_sidecar_of_another_run_is_kept_aside_when_the_csv_has_rows(tmp_path):
    out, other = tmp_path / "c.csv", tmp_path / "o.csv"
    run_stand_in(tiny_grid(widths=(1,)), out)
    run_stand_in(tiny_grid(widths=(1,)), other)
    foreign = (tmp_path / "o.json").read_text()
    (tmp_path / "c.json").write_text(foreign)
    run_stand_in(tiny_grid(widths=(1, 2)), out)
    assert (tmp_path / "c.json.other-run").read_text() == foreign


def test_a_header_only_csv_adopts_its_sidecar_and_calls_its_run_killed(tmp_path):
    """A run killed before its first cell leaves a header and a sidecar: both are this file's."""
    out = tmp_path / "c.csv"

    def killed_before_any_row(cell):
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted):
        run_stand_in(tiny_grid(widths=(1,)), out, killed_before_any_row)
    side = json.loads((tmp_path / "c.json").read_text())
    side["runs"][-1]["status"] = side["status"] = "running"  # as a SIGKILL leaves it
    (tmp_path / "c.json").write_text(json.dumps(side))
    run_stand_in(tiny_grid(widths=(1,)), out)
    runs = json.loads((tmp_path / "c.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["killed", "finished"]
    assert not list(tmp_path.glob("c.json.*"))


# ----------------------------------------------------- 8: a finished run's sidecar never stays 'running'
def _fail_at_the_final_sidecar_write(monkeypatch):
    import bench.run.runner as runner

    real = runner.write_bytes_atomic
    calls = []

    def write(path, data):
        calls.append(path)
        if path.endswith(".json") and len([c for c in calls if c.endswith(".json")]) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(path, data)

    monkeypatch.setattr(runner, "write_bytes_atomic", write)


@pytest.mark.parametrize("stop, status", [(False, "finished"), (True, "interrupted")])
def test_a_full_disk_at_the_final_sidecar_write_still_leaves_the_true_status(tmp_path, monkeypatch, stop, status):
    """Through a seam: the final atomic write fails with ENOSPC, so the status is patched in place."""
    _fail_at_the_final_sidecar_write(monkeypatch)
    grid = tiny_grid(widths=(1, 2))

    def measure(cell):
        if stop and cell.cell_id == grid.cells[0].cell_id:
            os.kill(os.getpid(), __import__("signal").SIGINT)  # the first Ctrl-C: stop after this cell
        return ok_rows(cell)

    try:
        run_stand_in(grid, tmp_path / "r.csv", measure)
    except RunInterrupted:
        assert stop
    side = json.loads((tmp_path / "r.json").read_text())
    assert side["status"] == status and side["runs"][-1]["status"] == status


def test_a_disk_that_fills_at_the_final_sidecar_write_leaves_finished(small_disk):  # noqa: F811
    """The real thing on a 64 KiB tmpfs: the last cell's rows fit, the new sidecar copy does not."""
    out = small_disk / "r.csv"
    grid = tiny_grid(widths=(1, 2))

    def measure(cell):
        if cell.cell_id == grid.cells[-1].cell_id:
            fill(small_disk)
            filler = small_disk / "filler"
            os.truncate(filler, max(0, (os.path.getsize(filler) // 4096 - 1) * 4096))  # one page: the rows
        return ok_rows(cell)

    _, messages = run_stand_in(grid, out, measure)
    assert any("cannot write the sidecar" in m and "'finished'" in m for m in messages), messages
    assert set(statuses(out)) == {c.cell_id for c in grid.cells}
    side = json.loads((small_disk / "r.json").read_text())
    assert side["status"] == "finished" and side["runs"][-1]["status"] == "finished"


KILL_LAST = """\
import os, signal, sys
sys.path.insert(0, {root!r})
sys.path.insert(0, os.path.join({root!r}, "tests"))
from conftest import ok_rows, tiny_grid
from bench.run.executors import SerialExecutor
from bench.run.runner import run_grid

grid = tiny_grid(widths=(1, 2))

def measure(cell):
    if cell.cell_id == grid.cells[-1].cell_id:
        os.kill(os.getpid(), signal.SIGKILL)
    return ok_rows(cell)

run_grid(grid, sys.argv[1], executor=SerialExecutor(measure), progress=False, command=["t"], log=lambda m: None)
"""


def test_a_resume_after_a_kill_in_the_last_cell_records_the_run_as_killed(tmp_path):
    out = tmp_path / "r.csv"
    script = tmp_path / "child.py"
    script.write_text(KILL_LAST.format(root=ROOT))
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, timeout=300)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "running"
    assert started.read(str(out)) is not None
    summary, messages = run_stand_in(tiny_grid(widths=(1, 2)), out)
    assert summary.cells_run == 0 and "nothing to run" in messages
    side = json.loads((tmp_path / "r.json").read_text())
    assert side["status"] == "killed" and [r["status"] for r in side["runs"]] == ["killed"]


# ------------------------------------------------------------------ 9: merge in any order
def counted(params=1000, latency=1.0):
    """A stand-in measurement with counts and a timing given."""
    def measure(cell):
        rows = ok_rows(cell)
        for row in rows:
            row.update(params=params, macs=5000, latency_ms_median=latency * row["batch_size"])
        return rows
    return measure


def _two_runs(tmp_path, second):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    run_stand_in(tiny_grid(widths=(1, 2)), a, counted())
    run_stand_in(tiny_grid(widths=(1, 2)), b, second)
    assert set(statuses(b).values()) == {"ok"}
    return a, b


def test_merge_refuses_two_ok_attempts_at_a_cell_with_different_counts_in_either_order(tmp_path, capsys):
    a, b = _two_runs(tmp_path, counted(params=1001))
    cell = tiny_grid(widths=(1,)).cells[0].cell_id
    for inputs in ([a, b], [b, a]):
        err = one_line_error(capsys, ["merge", *map(str, inputs), "--out", str(tmp_path / "m.csv")],
                             str(a), str(b), "params")
        assert "cell " in err and (cell in err or tiny_grid(widths=(2,)).cells[0].cell_id in err)
    assert not (tmp_path / "m.csv").exists()


def test_merge_output_does_not_depend_on_input_order_when_timings_differ(tmp_path, capsys):
    a, b = _two_runs(tmp_path, counted(latency=2.0))
    outputs = []
    for n, inputs in enumerate(([a, b], [b, a])):
        out = tmp_path / f"m{n}.csv"
        assert main(["merge", *map(str, inputs), "--out", str(out)]) == 0
        assert "hold different measurements" in capsys.readouterr().err
        side = json.loads(open(sidecar_path(str(out))).read())
        outputs.append((out.read_bytes(), side["runs"], side["merged_from"]))
    assert outputs[0] == outputs[1]
    parsed = read_lines(str(tmp_path / "m0.csv"))
    assert len(parsed.lines) == 4  # one attempt per cell, the same one whichever file came first
    assert len({ln.get(parsed.index, "run_id") for ln in parsed.lines}) == 1


# --------------------------------------------------------------- 13: report or merge onto a full disk
def test_merge_onto_a_full_disk_is_one_line_and_the_old_output_is_kept(tmp_path, small_disk, capsys):  # noqa: F811
    a = merge_input(tmp_path, "a.csv", widths=(1, 1.5, 2, 2.5))
    out = small_disk / "m.csv"
    out.write_bytes(b"old csv\n")
    (small_disk / "m.json").write_bytes(b"{}\n")
    fill(small_disk)
    filler = small_disk / "filler"
    os.truncate(filler, (os.path.getsize(filler) // 4096 - 1) * 4096)  # the probe's byte fits, the merge not
    one_line_error(capsys, ["merge", str(a), "--out", str(out), "--force"], "No space left on device")
    assert out.read_bytes() == b"old csv\n" and (small_disk / "m.json").read_bytes() == b"{}\n"
    assert sorted(os.listdir(small_disk)) == [".m.csv.lock", "filler", "m.csv", "m.json"]


def test_merge_whose_sidecar_does_not_fit_replaces_neither_file(tmp_path, monkeypatch, capsys):
    """Through a seam (no tmpfs needed): the temporary sidecar cannot be created."""
    import tempfile

    import bench.results.files as files

    a = merge_input(tmp_path, "a.csv")
    out = tmp_path / "m.csv"
    out.write_bytes(b"old csv\n")
    (tmp_path / "m.json").write_bytes(b"{}\n")

    class FullForJson:
        def __getattr__(self, name):
            return getattr(tempfile, name)

        @staticmethod
        def mkstemp(*args, **kw):
            if kw.get("suffix") == ".json":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return tempfile.mkstemp(*args, **kw)

    monkeypatch.setattr(files, "tempfile", FullForJson())
    one_line_error(capsys, ["merge", str(a), "--out", str(out), "--force"], "No space left on device")
    assert out.read_bytes() == b"old csv\n" and (tmp_path / "m.json").read_bytes() == b"{}\n"
    assert not list(tmp_path.glob(".tmp-*"))


def test_report_onto_a_full_disk_is_one_line_and_an_older_report_is_kept(tmp_path, small_disk, capsys):  # noqa: F811
    run = merge_input(tmp_path, "r.csv", widths=(1, 2))
    plots = small_disk / "plots"
    plots.mkdir()
    (plots / "report.md").write_text("older report\n")
    fill(small_disk)
    one_line_error(capsys, ["report", str(run), "--out", str(plots)], "No space left on device")
    assert (plots / "report.md").read_text() == "older report\n"


# ------------------------------------------------------------------ issue 24: one validating reader
def test_the_latency_model_reads_through_the_validating_reader(tmp_path):
    from bench.analysis.latency_model import load_predictor

    out = tmp_path / "r.csv"
    run_stand_in(tiny_grid(widths=(1, 2)), out)
    text = out.read_text().split("\n")
    text[1] = text[1].replace(",1.5,", ",-5,", 1)  # a tampered batch-1 latency
    out.write_text("\n".join(text))
    with pytest.raises(UserError, match=r"r.csv: line 2, column latency_ms_median: expected a finite number > 0"):
        load_predictor(str(out))
