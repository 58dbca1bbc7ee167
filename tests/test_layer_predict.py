"""The layer-table predictor: exact sums, interpolation (flagged), fitted overhead, fingerprint refusal, the CLI."""
import csv
import json
import math
import os

import numpy as np
import pytest

from bench.analysis import layer_predict as lp
from bench.cli import main
from bench.errors import UserError
from models import ModelConfig
from models.layers import inventory

COLUMNS = ("shape", "batch_size", "precision", "memory_format", "threads", "fingerprint_id", "macs", "ms_median")
SPEC = (1, "fp32", "contiguous", 2)
FP = {"torch": "x", "device_name": "cpu A"}


def write_table(path, entries, fid="me", batch=1, threads=2, fingerprint=FP):
    """entries: shape -> (ms, macs of the batch)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for shape, (ms, macs) in entries.items():
            w.writerow([shape, batch, "fp32", "contiguous", threads, fid, macs, ms])
    with open(str(path)[:-4] + ".json", "w") as f:
        json.dump({"fingerprints": {fid: fingerprint}}, f)
    return str(path)


def test_a_model_whose_shapes_are_all_in_the_table_sums_exactly_before_the_overhead(tmp_path):
    a, b = "conv k3 s1 g1 c16>16 h32", "relu k1 s1 g1 c16>16 h32"
    table = lp.load_table(write_table(tmp_path / "t.csv", {a: (0.25, 100), b: (0.01, 0)}), FP, "me")
    s = lp.layer_sum(table, [(a, 3, 100), (b, 4, 0)], SPEC)
    assert s.ms == pytest.approx(3 * 0.25 + 4 * 0.01) and s.layers == 7
    assert s.interpolated == 0 and s.missing == 0
    assert lp.Overhead(0.002, 0.1).apply(s) == pytest.approx(s.ms + 7 * 0.002 + 0.1)


def test_a_missing_shape_is_interpolated_from_its_family_and_flagged(tmp_path):
    # the family (3x3, stride 1, 4 groups) runs at exactly 1 ms per 1e6 MACs: the interpolation gives that back
    family = {f"conv k3 s1 g4 c{c}>{c} h16": (9 * c * c / 4 * 256 / 1e6, int(9 * c * c / 4 * 256))
              for c in (16, 32, 64, 128)}
    family["conv k3 s1 g8 c48>48 h16"] = (50.0, 1)  # another group count: not a neighbour
    table = lp.load_table(write_table(tmp_path / "t.csv", family), FP, "me")
    missing, macs = "conv k3 s1 g4 c48>48 h16", int(9 * 48 * 48 / 4 * 256)
    s = lp.layer_sum(table, [(missing, 2, macs), ("conv k3 s1 g4 c32>32 h16", 1, 0)], SPEC)
    assert s.interpolated == 2 and s.missing == 0
    assert s.per_shape[missing] == pytest.approx(macs / 1e6, rel=1e-9)


def test_a_shape_with_no_family_in_the_table_gives_no_number_rather_than_a_wrong_one(tmp_path):
    table = lp.load_table(write_table(tmp_path / "t.csv", {"conv k1 s1 g1 c8>8 h8": (0.1, 512)}), FP, "me")
    s = lp.layer_sum(table, [("conv k3 s1 g32 c64>64 h8", 1, 1000)], SPEC)
    assert s.missing == 1 and math.isnan(s.ms)


def test_a_table_from_another_machine_is_refused_naming_what_differs(tmp_path):
    path = write_table(tmp_path / "t.csv", {"relu k1 s1 g1 c8>8 h8": (0.01, 0)}, fid="them")
    with pytest.raises(UserError, match=r"fingerprint_id: .*device_name cpu A vs cpu B"):
        lp.load_table(path, {"torch": "x", "device_name": "cpu B"}, "me")


def test_a_table_with_a_bad_value_names_the_file_line_and_field(tmp_path):
    path = write_table(tmp_path / "t.csv", {"relu k1 s1 g1 c8>8 h8": ("-1", 0)})
    with pytest.raises(UserError, match=r"t.csv: line 2: ms_median: expected a finite number"):
        lp.load_table(path, FP, "me")


def test_the_overhead_fit_recovers_a_known_per_layer_and_per_call_cost():
    sums = [lp.LayerSum(ms=m, layers=n, interpolated=0, missing=0) for m, n in [(1, 10), (2, 30), (4, 20), (3, 50)]]
    measured = [s.ms + 0.005 * s.layers + 0.2 for s in sums]
    oh = lp.fit_overhead(sums, measured)
    assert oh.per_layer_ms == pytest.approx(0.005) and oh.per_call_ms == pytest.approx(0.2)


def test_the_heldout_evaluation_is_exact_when_the_model_is_and_interpolates_each_variants_own_shapes(tmp_path):
    shared = "relu k1 s1 g1 c16>16 h32"
    entries = {shared: (0.01, 0)}
    inventories, measured = {}, {}
    for i, c in enumerate((8, 16, 24, 32, 40, 48)):
        own = f"conv k1 s1 g1 c{c}>{c} h16"
        entries[own] = (c * c * 256 / 1e6, c * c * 256)  # 1 ms per 1e6 MACs
        inventories[f"v{i}"] = [(own, 2, c * c * 256), (shared, 3 + i, 0)]
        measured[f"v{i}"] = 2 * entries[own][0] + (3 + i) * 0.01 + (5 + i) * 0.003 + 0.1
    table = lp.load_table(write_table(tmp_path / "t.csv", entries), FP, "me")
    held = lp.evaluate(table, inventories, measured, SPEC)
    assert np.allclose(held.in_table, held.measured)
    assert held.interpolated_layers == [2] * 6  # each variant's conv is its own: taken out, interpolated
    assert np.allclose(held.interpolated, held.measured)  # the family is exactly linear in MACs
    assert held.band_log(interpolated=False) == pytest.approx(0, abs=1e-9)


def test_the_shape_string_of_the_inventory_is_what_the_analysis_parses():
    for layer, _ in inventory(ModelConfig(block="bottleneck", stem="imagenet", depth=50, cardinality=32,
                                          bottleneck_width=4)).layers:
        s = lp.Shape.parse(layer.shape)
        assert (s.kind, s.kernel, s.stride, s.groups, s.c_in, s.c_out, s.size) == tuple(layer[:7])


GRID = """\
name: tiny
defaults: {preset: resnet20, device: cpu, threads: 2, batch_sizes: [1]}
matrix:
  width_multiplier: [1, 2]
"""


def this_machine():
    from bench.results.fingerprint import fingerprint, fingerprint_id
    from bench.run import environment

    fp = fingerprint({"software": environment.software(), "cpu": environment.cpu_info(), "gpus": []}, "cpu")
    return fp, fingerprint_id(fp)


def test_the_dry_run_predicts_each_cell_from_a_table_of_this_machine(tmp_path, capsys):
    """A fake table of this machine (every shape of width 1, 1 us each) and no end-to-end timings: width 1 is
    predicted as its sum plus the measured module-call cost per layer, width 2 by interpolation, flagged."""
    fp, fid = this_machine()
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    inv = inventory(ModelConfig(block="basic", stem="cifar", depth=20, num_classes=10, input_size=32))
    entries = {layer.shape: (0.001, layer.macs) for layer, _ in inv.layers}
    entries["call k1 s1 g1 c1>1 h1"] = (0.0005, 0)
    table = write_table(tmp_path / "table.csv", entries, fid=fid, fingerprint=fp)
    assert main(["--grid", str(grid), "--dry-run", "--layer-table", table, "--out", str(tmp_path / "o.csv")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "latency:" in line]
    expected = inv.n_layers * (0.001 + 0.0005)
    assert f"table bs1 {expected:.3g} ms [no band]" in lines[0] and "interpolated" not in lines[0]
    assert "layers interpolated" in lines[1]


def test_the_dry_run_refuses_a_table_of_another_machine_with_exit_code_2(tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    table = write_table(tmp_path / "table.csv", {"relu k1 s1 g1 c8>8 h8": (0.01, 0)}, fid="elsewhere")
    assert main(["--grid", str(grid), "--dry-run", "--layer-table", table, "--out", str(tmp_path / "o.csv")]) == 2
    assert "a layer table does not transfer" in capsys.readouterr().err


def test_predict_without_a_file_uses_this_machines_table_from_the_default_place(tmp_path, capsys, monkeypatch):
    fp, fid = this_machine()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text(GRID)
    inv = inventory(ModelConfig(block="basic", stem="cifar", depth=20, num_classes=10, input_size=32))
    entries = {layer.shape: (0.001, layer.macs) for layer, _ in inv.layers}
    os.makedirs(os.path.dirname(lp.DEFAULT_TABLE))
    write_table(lp.DEFAULT_TABLE, entries, fid=fid, fingerprint=fp)
    assert main(["--grid", "g.yaml", "--dry-run", "--predict", "--out", "o.csv"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "latency:" in line]
    assert len(lines) == 2 and "table bs1 " in lines[0] and "layers interpolated" in lines[1]


def test_predict_without_a_file_says_so_and_lists_the_cells_when_no_table_is_this_machines(tmp_path, capsys,
                                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text(GRID)
    assert main(["--grid", "g.yaml", "--dry-run", "--predict", "--out", "o.csv"]) == 0
    out = capsys.readouterr().out
    assert f"layer table: none at {lp.DEFAULT_TABLE}" in out and "latency:" not in out and "to-run" in out
    os.makedirs(os.path.dirname(lp.DEFAULT_TABLE))
    write_table(lp.DEFAULT_TABLE, {"relu k1 s1 g1 c8>8 h8": (0.01, 0)}, fid="elsewhere")
    assert main(["--grid", "g.yaml", "--dry-run", "--predict", "--out", "o.csv"]) == 0
    out = capsys.readouterr().out
    assert "holds no rows of this machine" in out and "latency:" not in out
    # named, the same foreign table is refused
    assert main(["--grid", "g.yaml", "--dry-run", "--layer-table", lp.DEFAULT_TABLE, "--out", "o.csv"]) == 2
    assert main(["--grid", "g.yaml", "--predict"]) == 2
    assert "--predict: only used with --dry-run" in capsys.readouterr().err


def test_the_layer_table_flag_is_refused_outside_a_dry_run(tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    assert main(["--grid", str(grid), "--layer-table", "t.csv"]) == 2
    assert "only used with --dry-run" in capsys.readouterr().err


def test_a_table_entry_is_the_last_rows_median_or_asked_for_the_fastest_round_of_all_its_rows(tmp_path):
    path = tmp_path / "t.csv"
    shape = "relu k1 s1 g1 c8>8 h8"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS + ("samples_ms",))
        w.writerow([shape, 1, "fp32", "contiguous", 2, "me", 0, 0.5, "0.5 0.2 9"])
        w.writerow([shape, 1, "fp32", "contiguous", 2, "me", 0, 0.4, "0.4 0.1 7"])
        w.writerow([shape, 1, "fp32", "contiguous", 2, "me", 0, 0.4, "0.4 0.3 7"])
    assert lp.load_table(str(path), FP, "me").entries[SPEC][shape][0] == 0.4  # the median a harness row reports
    assert lp.load_table(str(path), FP, "me", statistic="min").entries[SPEC][shape][0] == 0.1
