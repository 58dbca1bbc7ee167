"""Bad analysis input (issue 12, items 8-10): refused or said the same way by report, compare, baseline and merge.

Every case is a file a user could really hold: a header-only baseline, a
literal nan, an accuracy of 7.0, a run killed mid-write, a sidecar copied
from another run. The files are written with the project's own writers.
"""
import json
import shutil

import pytest

from bench.analysis.reports import load_results
from bench.cli import main
from bench.results.files import sidecar_path
from conftest import one_line_error as _one_line_error
from bench.results.schema import COLUMNS
from bench.results.sidecar import Sidecar
from bench.results.validate import RULES, read_table
from test_regression import ENV, make_row, write_run


def _rows(run_id="run-a"):
    return [dict(make_row(batch=1, acc_seeds=(0.7,), test_images=500), run_id=run_id),
            dict(make_row(batch=8, acc_seeds=(0.7,), test_images=500), run_id=run_id)]


def _edit(path, old, new, count=1):
    text = open(path).read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new, count))
    return path


def test_every_schema_column_has_a_validation_rule():
    assert set(RULES) == set(COLUMNS), "add a rule in bench/results/validate.py for each new column"


def test_header_only_or_all_failed_baseline_is_an_error_not_a_pass(tmp_path, capsys):
    cur = write_run(tmp_path / "cur.csv", _rows())
    empty = write_run(tmp_path / "empty.csv", [])
    _one_line_error(capsys, ["compare", cur, "--baseline", empty], "empty.csv", "no rows (only a header)")
    failed = write_run(tmp_path / "failed.csv", [make_row(batch=None, status="error", error="boom")])
    _one_line_error(capsys, ["compare", cur, "--baseline", failed], "failed.csv", "no row with status ok")
    _one_line_error(capsys, ["baseline", empty, "--name", "x", "--dir", str(tmp_path / "b")], "no rows")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("column, old, bad, expected", [
    ("top1_acc", "0.7,", "nan,", "expected a finite number >= 0 and <= 1, got 'nan'"),
    ("top1_acc", "0.7,", "7.0,", "expected a finite number >= 0 and <= 1, got '7.0'"),
    ("params", "272474", "-5", "expected a whole number >= 1, got '-5'"),
    ("macs", "40871100", "inf", "expected a whole number >= 1, got 'inf'"),
])
def test_out_of_range_nan_and_inf_are_refused_alike_by_every_reader(tmp_path, capsys, column, old, bad, expected):
    good = write_run(tmp_path / "good.csv", _rows())
    broken = _edit(write_run(tmp_path / "bad.csv", _rows()), old, bad)
    where = f"bad.csv: line 2, column {column}: {expected}"
    _one_line_error(capsys, ["compare", good, "--baseline", broken], where)
    _one_line_error(capsys, ["compare", broken, "--baseline", good], where)
    _one_line_error(capsys, ["report", broken, "--out", str(tmp_path / "rep")], where)
    _one_line_error(capsys, ["baseline", broken, "--name", "x", "--dir", str(tmp_path / "b")], where)
    _one_line_error(capsys, ["merge", broken, "--out", str(tmp_path / "m.csv")], where)
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "rep").exists()


def test_merge_refuses_duplicate_rows(tmp_path, capsys):
    rows = _rows()
    dup = write_run(tmp_path / "dup.csv", rows + rows[:1])
    _one_line_error(capsys, ["merge", dup, "--out", str(tmp_path / "m.csv")],
                    "dup.csv: lines 2 and 4 are the same row (run run-a, cell c0ffee000001, batch 1)")
    assert not (tmp_path / "m.csv").exists()


def _cut(path, keep_fields):
    """Cut the last line after ``keep_fields`` fields (None: drop only its newline)."""
    text = open(path).read()
    body, last = text[:-1].rsplit("\n", 1)
    last = last if keep_fields is None else ",".join(last.split(",")[:keep_fields])
    with open(path, "w") as f:
        f.write(body + "\n" + last)
    return path


@pytest.mark.parametrize("keep_fields, said", [
    (5, f"the last line is cut (5 of {len(COLUMNS)} fields; a run was killed mid-write): left out"),
    (len(COLUMNS) - 1, f"the last line is cut ({len(COLUMNS) - 1} of {len(COLUMNS)} fields; a run was killed "
                       f"mid-write): left out"),
])
def test_a_cut_or_unterminated_last_row_is_said_by_report_compare_and_baseline(tmp_path, capsys, keep_fields, said):
    base = write_run(tmp_path / "base.csv", _rows())
    cut = _cut(write_run(tmp_path / "cut.csv", _rows()), keep_fields)
    assert len(read_table(cut).frame) == 1

    code = main(["compare", cut, "--baseline", base])
    out, err = capsys.readouterr()
    assert f"warning: {cut}: {said}" in err
    assert code == 1 and "missing" in out  # the left-out row is missing, so the gate fails rather than passes

    rows, _ = load_results([cut])  # report's reader (the figures are covered in test_reports)
    assert len(rows) == 1 and f"warning: {cut}: {said}" in capsys.readouterr().err

    _one_line_error(capsys, ["baseline", cut, "--name", "x", "--dir", str(tmp_path / "b")],
                    said, "a baseline is stored only from a clean run")


def _foreign_sidecar(tmp_path):
    """A run's CSV whose sidecar was copied from another run (another machine, say)."""
    base = write_run(tmp_path / "base.csv", _rows("run-a"), extra_meta={"run_id": "run-a"})
    elsewhere = write_run(tmp_path / "elsewhere.csv", _rows("run-z"), extra_meta={"run_id": "run-z"})
    cur = write_run(tmp_path / "cur.csv", _rows("run-b"), extra_meta={"run_id": "run-b"})
    shutil.copyfile(sidecar_path(elsewhere), sidecar_path(cur))
    return base, cur


def test_a_sidecar_from_another_run_is_not_trusted(tmp_path, capsys):
    base, cur = _foreign_sidecar(tmp_path)
    code = main(["compare", cur, "--baseline", base, "--all"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "cur.json: describes another run (it knows run(s) run-z; " in err
    assert "has rows of run-b): ignored, so its timings are incomparable" in err
    timing = [ln for ln in out.splitlines() if ln.split()[:1] == ["latency_ms_median"]]
    assert timing and all("incomparable" in ln for ln in timing)

    _, (source,) = load_results([cur])  # report's reader: the note goes into report.md's environment section
    assert "describes another run" in capsys.readouterr().err
    assert source.sidecar is None and source.sidecar_note.endswith("has rows of run-b): ignored")

    _one_line_error(capsys, ["baseline", cur, "--name", "x", "--dir", str(tmp_path / "b")],
                    "describes another run", "a baseline is stored only from a clean run")


def test_sidecar_reads_the_old_single_run_layout_and_the_runs_layout(tmp_path):
    old = {"run_id": "r1", "status": "finished", "environment": ENV, "grid": {}}
    side = Sidecar("x.json", old)
    assert [r["run_id"] for r in side.runs] == ["r1"] and side.runs[0]["environment"] == ENV
    assert side.environment("r1") == ENV and side.environment("") == ENV
    assert side.environment("r9") is None  # a row of a run this sidecar never saw
    newer = dict(ENV, cpu={"cpu_model": "Other"})
    new = {"run_id": "r2", "environment": newer,
           "runs": [{"run_id": "r1", "environment": ENV}, {"run_id": "r2", "environment": newer}]}
    side = Sidecar("x.json", new)
    assert side.run_ids == ["r1", "r2"]
    assert side.environment("r1") == ENV and side.environment("r2") == newer
    assert not side.foreign(["r1"]) and side.foreign(["r7"]) and not side.foreign([""])
    assert side.mismatch("x.csv", ["r1", "r7"]).startswith("x.json: describes other runs than 1 of the CSV's")
    assert Sidecar("x.json", {"environment": ENV}).unknown_run_ids(["r1"]) == []  # names no run: cannot tell


def test_resume_does_not_adopt_a_sidecar_left_by_another_run(tmp_path):
    from bench.grid import load_grid
    from bench.run.executors import SerialExecutor
    from bench.run.runner import run_grid
    from bench.run.shard import Shard
    from test_merge import GRID_YAML, fake_measure

    (tmp_path / "g.yaml").write_text(GRID_YAML)
    grid = load_grid(str(tmp_path / "g.yaml"))
    out, other = str(tmp_path / "out.csv"), str(tmp_path / "other.csv")
    for path, k in ((out, 1), (other, 2)):
        run_grid(grid, path, executor=SerialExecutor(fake_measure), progress=False, shard=Shard(k, 2),
                 command=["test"], log=lambda m: None)
    other_run = json.load(open(sidecar_path(other)))["run_id"]
    shutil.copyfile(sidecar_path(other), sidecar_path(out))
    said = []
    run_grid(grid, out, executor=SerialExecutor(fake_measure), progress=False, command=["test"], log=said.append)
    assert any("out.json: describes another run" in m and "starting a new one" in m for m in said), said
    assert other_run not in [r["run_id"] for r in json.load(open(sidecar_path(out)))["runs"]]


def test_errors_name_the_true_line_even_after_a_blank_line(tmp_path, capsys):
    good = write_run(tmp_path / "good.csv", _rows())
    row = _rows()[0]
    two = write_run(tmp_path / "two.csv", [dict(row, run_id="run-a"), dict(row, run_id="run-b")])
    lines = open(two).read().split("\n")
    lines.insert(2, "")  # a blank line 3: the second row is now line 4
    with open(two, "w") as f:
        f.write("\n".join(lines))
    _one_line_error(capsys, ["compare", two, "--baseline", good], "lines 2 and 4 are the same configuration")


# ------------------------------------------------ accuracy and counts agree (issue 22, item 6)
def _set_field(path, column, value, line=2):
    """Rewrite one field of one line, as a hand edit would, leaving every other byte alone."""
    import csv
    import io

    rows = list(csv.reader(open(path, newline="")))
    rows[line - 1][rows[0].index(column)] = value
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    with open(path, "w", newline="") as f:
        f.write(text.getvalue())
    return path


@pytest.mark.parametrize("column, value, expected", [
    ("top1_acc", "0.1", "column top1_acc: 0.1 of 200 test images is 20.0 images, but the seeds' correct counts "
                        "average 140.0"),
    ("top1_correct_seeds", "201", "column top1_correct_seeds: 201 correct of 200 test images"),
    ("top1_correct_seeds", "99999", "column top1_correct_seeds: 99999 correct of 200 test images"),
    ("top1_acc_seeds", "0.9", "column top1_acc_seeds: 0.9 of 200 test images is 180.0 images, not 140 correct"),
    ("top1_correct_seeds", "140;140", "column top1_correct_seeds: 2 seed(s), but top1_acc_seeds has 1"),
], ids=["acc-moved", "201-of-200", "99999", "seed-acc-moved", "seed-count"])
def test_counts_and_accuracy_that_disagree_are_refused_by_every_reader(tmp_path, capsys, column, value, expected):
    """Before the fix compare said "-60 pp ok" and PASS for a moved top1_acc, accepted 201 of 200, and
    99999 correct was a traceback."""
    rows = [dict(make_row(batch=b, acc_seeds=(0.7,), test_images=200), run_id="run-a") for b in (1, 8)]
    good = write_run(tmp_path / "good.csv", rows)
    broken = _set_field(write_run(tmp_path / "bad.csv", rows), column, value)
    where = f"bad.csv: line 2, {expected}"
    _one_line_error(capsys, ["compare", broken, "--baseline", good], where)
    _one_line_error(capsys, ["compare", good, "--baseline", broken], where)
    _one_line_error(capsys, ["report", broken, "--out", str(tmp_path / "rep")], where)
    _one_line_error(capsys, ["baseline", broken, "--name", "x", "--dir", str(tmp_path / "b")], where)
    _one_line_error(capsys, ["merge", broken, "--out", str(tmp_path / "m.csv")], where)


def test_counts_within_one_image_of_the_accuracy_pass_and_an_old_file_checks_its_seed_mean(tmp_path, capsys):
    rows = [dict(make_row(batch=b, acc_seeds=(0.7,), test_images=200), run_id="run-a") for b in (1, 8)]
    good = write_run(tmp_path / "good.csv", rows)
    near = _set_field(write_run(tmp_path / "near.csv", rows), "top1_acc", repr(141 / 200))  # one image off
    assert main(["compare", near, "--baseline", good]) == 0
    capsys.readouterr()
    # a file from before the counts: top1_acc must still be the mean of its seeds
    old = [dict(make_row(batch=b, acc_seeds=(0.7, 0.72)), run_id="run-a") for b in (1, 8)]
    old_good = write_run(tmp_path / "old.csv", old)
    moved = _set_field(write_run(tmp_path / "moved.csv", old), "top1_acc", "0.1")
    _one_line_error(capsys, ["compare", moved, "--baseline", old_good],
                    "moved.csv: line 2, column top1_acc: 0.1, but the seeds' accuracies average 0.7100")
