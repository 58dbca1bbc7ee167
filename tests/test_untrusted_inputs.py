"""Files and arguments a user or another program hands the harness, read as untrusted (issue 22, items 13-14).

A crafted sidecar (``"cells": [1, 2]``, a 5,000-digit integer), a file that
starts with a UTF-8 byte-order mark, a tampered ``--predict`` input and a
``profile --out`` that cannot be written: each is a one-line error with exit
code 2 (or, for a sidecar on resume, the file set aside with a message),
never a traceback and never work thrown away.
"""
import csv
import io
import json

import pytest

from bench.cli import main
from bench.results.files import sidecar_path
from conftest import one_line_error as _one_line_error
from test_regression import make_row, write_run


def _rows():
    return [dict(make_row(batch=b, acc_seeds=(0.7,), test_images=200), run_id="run-a") for b in (1, 8)]


def _edit_sidecar(csv_path, edit):
    path = sidecar_path(csv_path)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(edit(text))
    return path


HUGE = "9" * 5000  # json reads it; int() refuses more than 4,300 digits (ValueError)
CRAFTED = {
    "cells-a-list": (lambda t: json.dumps({**json.loads(t), "cells": [1, 2]}),
                     "unreadable sidecar: cells: expected a mapping, got list"),
    "5000-digit-int": (lambda t: t.replace("{", '{"seconds": ' + HUGE + ", ", 1),
                       "unreadable sidecar: Exceeds the limit (4300 digits) for integer string conversion"),
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_a_crafted_sidecar_is_a_one_line_error_in_compare(tmp_path, capsys, kind):
    edit, said = CRAFTED[kind]
    good = write_run(tmp_path / "good.csv", _rows())
    bad = write_run(tmp_path / "bad.csv", _rows())
    _edit_sidecar(bad, edit)
    _one_line_error(capsys, ["compare", bad, "--baseline", good], "bad.json: " + said)
    _one_line_error(capsys, ["merge", bad, "--out", str(tmp_path / "m.csv")], "bad.json: " + said)


def _fake_run(out, grid):
    from bench.run.executors import SerialExecutor
    from bench.run.runner import run_grid

    log = []

    def fake_measure(cell):
        return [{"cell_id": cell.cell_id, "status": "ok"}]

    run_grid(grid, out, executor=SerialExecutor(fake_measure), progress=False, log=log.append)
    return log


def _grid(n):
    from bench.grid import expand_grid

    return expand_grid({"defaults": {"device": "cpu", "speed": False, "train_step": False},
                        "include": [{"preset": p} for p in ("resnet20", "resnet32", "resnet44")[:n]]},
                       "g.yaml", cuda_available=False)


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_a_crafted_sidecar_on_resume_is_set_aside_with_a_message_and_the_run_goes_on(tmp_path, kind):
    edit, said = CRAFTED[kind]
    out = str(tmp_path / "run.csv")
    _fake_run(out, _grid(2))
    crafted = _edit_sidecar(out, edit)
    with open(crafted) as f:
        kept = f.read()
    log = _fake_run(out, _grid(3))  # resume: one more cell
    assert any(said in line and "kept as " + crafted + ".corrupt" in line for line in log), log
    with open(crafted + ".corrupt") as f:
        assert f.read() == kept  # set aside byte for byte, not overwritten
    with open(crafted) as f:
        assert json.load(f)["status"] == "finished"  # a new sidecar for the resumed run
    with open(out) as f:
        assert len(list(csv.DictReader(f))) == 3


# ----------------------------------------------------------------- a UTF-8 BOM
BOM = b"\xef\xbb\xbf"


def _with_bom(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(BOM + data)
    return path


def test_a_bom_before_a_result_csv_or_its_sidecar_is_read_like_the_file_without_it(tmp_path, capsys):
    good = write_run(tmp_path / "good.csv", _rows())
    bom = write_run(tmp_path / "bom.csv", _rows())
    _with_bom(bom)
    _with_bom(sidecar_path(bom))
    assert main(["compare", bom, "--baseline", good]) == 0, capsys.readouterr()
    assert main(["compare", good, "--baseline", bom]) == 0, capsys.readouterr()
    assert main(["merge", bom, "--out", str(tmp_path / "m.csv")]) == 0, capsys.readouterr()
    assert main(["report", bom, "--out", str(tmp_path / "rep")]) == 0, capsys.readouterr()
    capsys.readouterr()
    from bench.results.sidecar import Sidecar

    assert Sidecar.read(bom).data["status"] == "finished"


# ----------------------------------------------------------------- --predict
def test_predict_refuses_a_tampered_latency_instead_of_printing_it_as_timed(tmp_path, capsys):
    from test_latency_model import _this_machine, _timed_run

    grid_path, run_csv, _ = _timed_run(tmp_path, _this_machine())
    rows = list(csv.reader(open(run_csv, newline="")))
    rows[1][rows[0].index("latency_ms_median")] = "-5"
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    with open(run_csv, "w", newline="") as f:
        f.write(text.getvalue())
    _one_line_error(capsys, ["--grid", grid_path, "--dry-run", "--predict", run_csv],
                    "run.csv: line 2, column latency_ms_median: expected a finite number > 0, got '-5'")


# ----------------------------------------------------------------- profile
def test_profile_checks_its_out_before_the_work(tmp_path, capsys, monkeypatch):
    """Before the fix, `profile ... --out /proc/x.csv` measured the model and only then failed to write."""
    import bench.run.executors as executors

    worked = []
    monkeypatch.setattr(executors, "run_cell_safely", lambda cell: worked.append(cell) or [])
    _one_line_error(capsys, ["profile", "resnet20", "--device", "cpu", "--out", "/proc/x.csv"],
                    "--out /proc/x.csv: cannot write in /proc")
    assert not worked


def test_profile_values_are_read_by_the_grid_s_yaml_reader(capsys):
    _one_line_error(capsys, ["profile", "resnet20", "match={metric: macs, metric: params}", "--device", "cpu"],
                    "<command line>: match: cannot read the value", "duplicate key 'metric'")
