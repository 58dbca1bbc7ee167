"""Nothing lost, nothing silent (issue 12): every writer of a result file takes the run's lock,
outputs that cannot be written fail in one line before any work, a full disk leaves a true sidecar,
and a cell that got the runner killed is recorded instead of killing every resume.

Each test reproduces one reported case; the cells are measured by a stand-in function, so the
tests are about the files, not torch.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from bench.cli import main
from bench.errors import UserError
from bench.grid import expand_grid
from bench.results.files import OutputLock, read_lines, sidecar_path
from bench.run import started
from bench.run.executors import SerialExecutor
from bench.run.rows import cell_columns
from bench.run.runner import run_grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, "results", "baselines", "quick-cpu.csv")


def tiny_grid(widths=(1, 1.5, 2, 2.5)):
    raw = {"name": "tiny",
           "defaults": {"preset": "resnet20", "device": "cpu", "speed": True, "train_step": False,
                        "batch_sizes": [1, 2], "warmup": 0, "repeats": 2},
           "matrix": {"width_multiplier": list(widths)}}
    return expand_grid(raw, "tiny.yaml")


def ok_rows(cell):
    rows = []
    for bs in cell.settings["batch_sizes"]:
        row = cell_columns(cell, "test-cpu")
        row.update(status="ok", batch_size=bs, requested_batch_size=bs, latency_ms_median=1.5 * bs)
        rows.append(row)
    return rows


def run(grid, out, measure=ok_rows, **kw):
    messages = []
    summary = run_grid(grid, str(out), executor=SerialExecutor(measure), progress=False, command=["test"],
                       log=messages.append, **kw)
    return summary, messages


def statuses(path):
    parsed = read_lines(str(path))
    return {ln.get(parsed.index, "cell_id"): ln.get(parsed.index, "status") for ln in parsed.lines}


def one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ------------------------------------------------------------- 1-2: data loss
def test_merge_into_a_file_a_run_is_writing_is_refused_and_the_run_keeps_every_row(tmp_path, capsys):
    other = tmp_path / "other.csv"
    run(tiny_grid(widths=(3,)), other)
    out = tmp_path / "lockt.csv"
    codes = []

    def merge_during_the_run(cell):
        if not codes:  # while the runner holds the lock, on its first cell
            codes.append(main(["merge", str(other), "--out", str(out), "--force"]))
        return ok_rows(cell)

    summary, _ = run(tiny_grid(), out, merge_during_the_run)
    assert codes == [2]
    assert "another run is writing this output" in capsys.readouterr().err
    assert summary.cells_run == 4
    assert set(statuses(out)) == {c.cell_id for c in tiny_grid().cells}  # all four cells, no stranger's rows
    assert len(read_lines(str(out)).lines) == 8


def test_baseline_into_a_locked_file_is_refused(tmp_path, capsys):
    folder = tmp_path / "baselines"
    folder.mkdir()
    with OutputLock(str(folder / "gate.csv")):
        one_line_error(capsys, ["baseline", BASELINE, "--name", "gate", "--dir", str(folder)],
                       "another run is writing this output")
    assert not (folder / "gate.csv").exists()
    assert main(["baseline", BASELINE, "--name", "gate", "--dir", str(folder)]) == 0


def test_merge_over_an_existing_file_needs_force(tmp_path, capsys):
    a = tmp_path / "a.csv"
    run(tiny_grid(widths=(1,)), a)
    out = tmp_path / "m.csv"
    out.write_text("precious\n")
    one_line_error(capsys, ["merge", str(a), "--out", str(out)], str(out), "exists; pass --force")
    assert out.read_text() == "precious\n"
    # the sidecar alone counts too: it would be overwritten
    out.unlink()
    side = tmp_path / "m.json"
    side.write_text("{}")
    one_line_error(capsys, ["merge", str(a), "--out", str(out)], str(side), "--force")
    assert side.read_text() == "{}"
    assert main(["merge", str(a), "--out", str(out), "--force"]) == 0
    assert len(read_lines(str(out)).lines) == 2
