"""Sharding a grid and merging the shard outputs back: disjoint, complete, conflicts caught."""
import json
import shutil

import pytest

from bench.cli import main
from bench.errors import UserError
from bench.run.executors import SerialExecutor
from bench.grid import expand_grid
from bench.results.files import read_lines, sidecar_path
from bench.run.rows import cell_columns
from bench.run.runner import run_grid
from bench.run.shard import Shard, parse_shard

GRID_YAML = """\
name: sharded
defaults: {preset: resnet20, device: cpu, speed: true, train_step: false, batch_sizes: [1, 2], warmup: 0}
matrix:
  width_multiplier: [1, 1.5, 2]
  repeats: [2, 3, 4]
exclude:
  - {width_multiplier: 2, repeats: 4}
"""


def fake_measure(cell):
    rows = []
    for bs in cell.settings["batch_sizes"]:
        row = cell_columns(cell, "cpu")
        row.update(status="ok", batch_size=bs, requested_batch_size=bs, latency_ms_median=float(bs))
        rows.append(row)
    return rows


def failing_measure(cell):
    raise RuntimeError("broken node")


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "sharded.yaml"
    path.write_text(GRID_YAML)
    return str(path)


def run_shards(grid_file, out_dir, n, only=None, measure=fake_measure):
    from bench.grid import load_grid

    grid = load_grid(grid_file)
    paths = []
    for k in range(1, n + 1):
        if only and k not in only:
            continue
        out = str(out_dir / f"shard{k}.csv")
        run_grid(grid, out, executor=SerialExecutor(measure), progress=False, shard=Shard(k, n),
                 command=["test"], log=lambda m: None)
        paths.append(out)
    return grid, paths


def cell_ids(path):
    parsed = read_lines(path)
    return [ln.fields[parsed.index["cell_id"]] for ln in parsed.lines]


# ------------------------------------------------------------------- sharding
def test_shards_are_disjoint_balanced_and_cover_the_grid():
    raw = {"name": "s", "defaults": {"preset": "resnet20", "device": "cpu"},
           "matrix": {"width_multiplier": [1, 1.5, 2, 2.5, 3], "repeats": [1, 2, 3, 4, 5, 6, 7]}}
    cells = expand_grid(raw, "s.yaml").cells  # 35 cells
    for n in (1, 2, 3, 4, 7, 8, 35, 40):
        slices = [Shard(k, n).select(cells) for k in range(1, n + 1)]
        ids = [c.cell_id for s in slices for c in s]
        assert sorted(ids) == sorted(c.cell_id for c in cells)  # cover, and disjoint (no id twice)
        sizes = [len(s) for s in slices]
        assert max(sizes) - min(sizes) <= 1
        for s in slices:  # each slice keeps the grid's order
            assert [c.index for c in s] == sorted(c.index for c in s)
        # The slice depends on the set of cells, not on the order they came in.
        assert [c.cell_id for c in Shard(1, n).select(list(reversed(cells)))] == \
            [c.cell_id for c in reversed(slices[0])]
    # Hash order, not grid order: with 5 shards of a 5x7 matrix no shard gets a single width.
    widths = [{c.model.width_multiplier for c in Shard(k, 5).select(cells)} for k in range(1, 6)]
    assert all(len(w) > 1 for w in widths)


@pytest.mark.parametrize("spec, message", [
    ("0/4", "K must be between 1 and N=4"),
    ("5/4", "K must be between 1 and N=4"),
    ("1/0", "N must be at least 1"),
    ("two/4", "expected K/N"),
    ("1/-2", "N must be at least 1"),
    ("", "expected K/N"),
])
def test_bad_shard_specs_are_one_line_errors(spec, message):
    with pytest.raises(UserError, match=message):
        parse_shard(spec)
    assert parse_shard(" 3 / 8 ") == Shard(3, 8)


# ---------------------------------------------------------------------- merge
def test_merging_all_shards_gives_the_whole_grid_in_grid_order(grid_file, tmp_path, capsys):
    grid, paths = run_shards(grid_file, tmp_path, 3)
    shard_lines = {ln.raw for p in paths for ln in read_lines(p).lines}
    out = str(tmp_path / "all.csv")
    assert main(["merge", *reversed(paths), "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "8 cell(s), 16 row(s)" in printed and "complete: all 8 grid cell(s) present" in printed
    ids = cell_ids(out)
    assert ids == [c.cell_id for c in grid.cells for _ in range(2)]  # grid order, whatever the input order
    assert {ln.raw for ln in read_lines(out).lines} == shard_lines  # rows copied byte for byte
    side = json.loads(open(sidecar_path(out)).read())
    assert sorted(r["shard"] for r in side["runs"]) == ["1/3", "2/3", "3/3"]
    assert side["missing_cells"] == [] and len(side["cells"]) == 8
    # The same shards in another order give the same file.
    out2 = str(tmp_path / "again.csv")
    assert main(["merge", *paths, "--out", out2]) == 0
    assert open(out, "rb").read() == open(out2, "rb").read()


def test_missing_shard_is_reported_and_exit_code_is_1(grid_file, tmp_path, capsys):
    grid, paths = run_shards(grid_file, tmp_path, 3, only={1, 3})
    missing = {c.cell_id for c in Shard(2, 3).select(grid.cells)}
    out = str(tmp_path / "all.csv")
    for extra in ([], ["--grid", grid_file, "--force"]):
        assert main(["merge", *paths, "--out", out, *extra]) == 1
        err = capsys.readouterr().err
        assert f"incomplete: {len(missing)} of 8 grid cell(s) are in no input" in err
        assert all(cid in err for cid in missing)
        assert set(cell_ids(out)) == {c.cell_id for c in grid.cells} - missing  # written all the same


def test_without_sidecars_or_grid_missing_cells_are_not_checked(grid_file, tmp_path, capsys):
    _, paths = run_shards(grid_file, tmp_path, 2, only={1})
    bare = str(tmp_path / "bare.csv")
    shutil.copy(paths[0], bare)
    assert main(["merge", bare, "--out", str(tmp_path / "m.csv")]) == 0
    assert "missing cells not checked" in capsys.readouterr().err
    assert main(["merge", bare, "--out", str(tmp_path / "m.csv"), "--grid", grid_file, "--force"]) == 1


def test_duplicate_cell_with_other_settings_is_rejected(grid_file, tmp_path, capsys):
    _, paths = run_shards(grid_file, tmp_path, 2)
    parsed = read_lines(paths[0])
    cols = parsed.index
    victim = parsed.lines[0].fields[cols["cell_id"]]
    # A copy of shard 1 whose first cell claims another depth, without a sidecar to vouch for it.
    forged = str(tmp_path / "forged.csv")
    with open(forged, "wb") as f:
        f.write(parsed.header_raw)
        for ln in parsed.lines:
            if ln.fields[cols["cell_id"]] == victim:
                ln.fields[cols["depth"]] = "56"
                f.write((",".join(ln.fields) + "\n").encode())
    out = str(tmp_path / "all.csv")
    assert main(["merge", *paths, forged, "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cell {victim} has different settings in")
    assert "depth: '56' vs '20'" in err  # the inputs are read in path order: forged.csv before shard1.csv
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "all.csv").exists()

    # The same conflict found in the sidecars' cell definitions.
    twin = str(tmp_path / "twin.csv")
    shutil.copy(paths[0], twin)
    side = json.loads(open(sidecar_path(paths[0])).read())
    side["cells"][victim]["settings"]["precision"] = "bf16"
    with open(sidecar_path(twin), "w") as f:
        json.dump(side, f)
    assert main(["merge", paths[0], twin, "--out", out]) == 2
    assert f"cell {victim} has different settings" in capsys.readouterr().err


def test_same_cell_twice_is_kept_once_preferring_the_ok_attempt(grid_file, tmp_path, capsys):
    from bench.grid import load_grid

    grid = load_grid(grid_file)
    good = str(tmp_path / "good.csv")
    bad = str(tmp_path / "bad.csv")
    run_grid(grid, bad, executor=SerialExecutor(failing_measure), progress=False, log=lambda m: None)
    run_grid(grid, good, executor=SerialExecutor(fake_measure), progress=False, log=lambda m: None)
    out = str(tmp_path / "all.csv")
    assert main(["merge", bad, good, "--out", out]) == 0
    captured = capsys.readouterr()
    assert "8 cell(s) were in more than one input with the same settings" in captured.err
    parsed = read_lines(out)
    assert {ln.fields[parsed.index["status"]] for ln in parsed.lines} == {"ok"}
    assert cell_ids(out) == [c.cell_id for c in grid.cells for _ in range(2)]


def test_merge_refuses_bad_paths(grid_file, tmp_path, capsys):
    _, paths = run_shards(grid_file, tmp_path, 2, only={1})
    cases = [
        ([paths[0], "--out", paths[0]], "is also one of the inputs"),
        ([str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o.csv")], "no such results file"),
        ([paths[0], paths[0], "--out", str(tmp_path / "o.csv")], "given twice"),
        ([paths[0], "--out", str(tmp_path / "o.txt")], "expected a path ending in .csv"),
    ]
    other = tmp_path / "other.csv"
    other.write_text("x,y\n1,2\n")
    cases.append(([str(other), "--out", str(tmp_path / "o.csv")], "missing column"))
    for argv, message in cases:
        assert main(["merge", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
