"""``benchmark.py`` run flags end to end: a real run killed, interrupted and resumed; flag errors."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.cli import default_out, main
from bench.run.executors import SerialExecutor
from bench.grid import load_grid
from bench.results.files import read_lines, sidecar_path
from bench.run.rows import cell_columns
from bench.run.runner import run_grid
from bench.run import started
from bench.run.shard import Shard
from bench.results.schema import COLUMNS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """\
name: tiny
defaults: {preset: resnet20, device: cpu, speed: true, train_step: false, batch_sizes: [1],
           warmup: 0, repeats: 2, threads: 1}
matrix:
  width_multiplier: [1, 1.25, 1.5, 1.75, 2, 2.25, 2.5]
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return str(path)


def data_lines(path):
    """Whole lines after the header (a cut last line is not a line)."""
    if not os.path.exists(path):
        return []
    data = open(path, "rb").read()
    return data[:data.rfind(b"\n") + 1].splitlines(keepends=True)[1:]


def wait_for_lines(proc, path, count, limit=300):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if len(data_lines(path)) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early with {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"no {count} rows in {path} after {limit} s")


def test_killed_then_interrupted_then_resumed_run(tiny, tmp_path):
    out = str(tmp_path / "run.csv")
    cmd = [sys.executable, os.path.join(ROOT, "benchmark.py"), "--grid", tiny, "--out", out,
           "--no-report", "--no-progress"]
    kw = dict(cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # 1. SIGKILL partway: whatever is on disk is whole cells.
    first = subprocess.Popen(cmd, **kw)
    wait_for_lines(first, out, 2)
    first.kill()
    first.communicate()
    after_kill = data_lines(out)
    assert len(after_kill) >= 2

    # 2. Resume, then Ctrl-C once: the running cell finishes, the run stops with 130 and says how to resume.
    # A cell the kill cut short left its started mark: the resumed run first records it as a failure row.
    cut_short = 1 if os.path.exists(started.mark_path(out)) else 0
    second = subprocess.Popen(cmd, **kw)
    wait_for_lines(second, out, len(after_kill) + cut_short + 1)
    second.send_signal(signal.SIGINT)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 130, err
    assert "stopping after the cell(s) running now" in err
    assert "Resume with the same command" in err and f"--out {out}" in err
    assert "done" in err and "to run" in err
    after_int = data_lines(out)
    assert after_int[:len(after_kill)] == after_kill and len(after_int) > len(after_kill)

    # 3. Resume to the end.
    third = subprocess.run(cmd, timeout=300, **kw)
    assert third.returncode == 0, third.stderr
    # The cell the SIGKILL cut short was recorded by the next start (status error: no OOM kill seen), and is
    # skipped as failed earlier rather than run a third time.
    statuses = [row[COLUMNS.index("status")] for row in csv.reader(line.decode() for line in after_int)]
    done, failed = statuses.count("ok"), len(statuses) - statuses.count("ok")
    assert failed <= 1
    assert f"grid tiny: 7 cell(s); {done} done, {7 - done - failed} to run, {failed} skipped" in third.stderr
    final = data_lines(out)
    assert final[:len(after_int)] == after_int  # every row finished before the kill, byte for byte
    parsed = read_lines(out)
    ids = [ln.fields[parsed.index["cell_id"]] for ln in parsed.lines]
    assert sorted(ids) == sorted(c.cell_id for c in load_grid(tiny).cells)  # each cell exactly once
    assert not parsed.partial_tail
    side = json.loads(open(sidecar_path(out)).read())
    assert [r["status"] for r in side["runs"]] == ["killed", "interrupted", "finished"]
    assert {ln.fields[parsed.index["run_id"]] for ln in parsed.lines} == {r["run_id"] for r in side["runs"]}


def fake_measure(cell):
    row = cell_columns(cell, "cpu")
    row.update(status="ok", batch_size=1)
    return [row]


def test_resume_with_nothing_left_runs_nothing(tiny, tmp_path, capsys):
    out = str(tmp_path / "done.csv")
    run_grid(load_grid(tiny), out, executor=SerialExecutor(fake_measure), progress=False, log=lambda m: None)
    before = open(out, "rb").read()
    assert main(["--grid", tiny, "--out", out, "--no-report", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "7 done, 0 to run, 0 skipped" in captured.err and "nothing was run" in captured.out
    assert open(out, "rb").read() == before


def test_dry_run_shows_what_a_resumed_shard_would_do(tiny, tmp_path, capsys):
    out = str(tmp_path / "part.csv")
    grid = load_grid(tiny)
    shard = Shard(1, 2)
    mine = shard.select(grid.cells)
    # Half of shard 1 done already.
    run_grid(grid, out, executor=SerialExecutor(fake_measure), progress=False, log=lambda m: None,
             shard=shard)
    lines = open(out).read().splitlines()
    open(out, "w").write("\n".join(lines[:1 + 2]) + "\n")
    assert main(["--grid", tiny, "--out", out, "--shard", "1/2", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert f"shard 1/2: {len(mine)}; 2 done, {len(mine) - 2} to run" in printed
    listed = [line.split()[1] for line in printed.splitlines() if line.startswith("  ")]
    assert listed == [c.cell_id for c in mine]
    assert printed.count("  done ") == 2 and printed.count("  to-run ") == len(mine) - 2


@pytest.mark.parametrize("argv, message", [
    (["--shard", "0/4"], "--shard 0/4: K must be between 1 and N=4"),
    (["--shard", "3"], "--shard 3: expected K/N"),
    (["--timeout", "0"], "--timeout 0: expected a positive number of seconds"),
    (["--out", "x.tsv"], "--out x.tsv: expected a path ending in .csv"),
])
def test_bad_run_flags_are_one_line_errors(tiny, argv, message, capsys):
    assert main(["--grid", tiny, "--no-report", *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {err.strip()[7:]}" and message in err and len(err.strip().splitlines()) == 1


def test_ray_executor_without_ray_says_how_to_install(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    out = str(tmp_path / "r.csv")
    for flags in (["--executor", "ray"], ["--ray-address", "auto"]):
        assert main(["--grid", tiny, "--out", out, *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err == "error: --executor ray needs Ray, which is not installed: pip install '.[ray]' " \
                      "(or pip install 'ray>=2.9')"
    assert not os.path.exists(out)


def test_default_outputs_keep_shards_apart():
    assert default_out("grids/cardinality.yaml", False) == os.path.join("results", "runs", "cardinality.csv")
    assert default_out("grids/cardinality.yaml", True, Shard(2, 8)) == \
        os.path.join("results", "runs", "cardinality-quick-shard2of8.csv")
