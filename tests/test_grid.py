"""YAML grids: expansion semantics and every bad-grid error (one line, exit 2, nothing written)."""
import os
import textwrap

import pytest

from bench.cli import main
from bench.errors import GridError
from bench.grid import expand_grid, load_grid


def write(tmp_path, text, name="g.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def expand(raw, **kw):
    kw.setdefault("cuda_available", False)
    return expand_grid(raw, "g.yaml", **kw)


CIFAR = {"stem": "cifar", "num_classes": 10, "input_size": 32}


def test_matrix_is_a_cartesian_product_with_defaults():
    grid = expand({"defaults": {**CIFAR, "block": "bottleneck", "batch_sizes": [1, 4]},
                   "matrix": {"depth": [11, 29], "cardinality": [1, 2, 4]}})
    assert len(grid.cells) == 6
    assert {(c.model.depth, c.model.cardinality) for c in grid.cells} == \
        {(d, c) for d in (11, 29) for c in (1, 2, 4)}
    assert all(c.settings["batch_sizes"] == [1, 4] for c in grid.cells)


def test_exclude_drops_matching_combinations_and_include_adds_cells():
    grid = expand({"defaults": {**CIFAR, "block": "bottleneck"},
                   "matrix": {"depth": [11, 29], "cardinality": [1, 2]},
                   "exclude": [{"depth": 29, "cardinality": 2}],
                   "include": [{"preset": "resnet56"}, {"preset": "resnet20", "precision": "bf16"}]})
    combos = [(c.model.depth, c.model.cardinality) for c in grid.cells[:3]]
    assert combos == [(11, 1), (11, 2), (29, 1)]
    assert [c.variant for c in grid.cells[3:]] == ["resnet56", "resnet20"]
    # an include that names a preset is that preset: the defaults' architecture does not leak into it
    assert grid.cells[3].model.block == "basic" and grid.cells[3].model.stage_blocks() == (9, 9, 9)
    assert grid.cells[4].settings["precision"] == "bf16"


def test_preset_with_overrides_and_paired_values():
    grid = expand({"include": [{"preset": "resnext29_8x64d", "cardinality": 4, "bottleneck_width": 128}]})
    (cell,) = grid.cells
    assert (cell.model.cardinality, cell.model.bottleneck_width) == (4, 128)
    assert cell.variant == "resnext29_4x128d" and cell.preset == "resnext29_8x64d"


def test_auto_width_matches_a_reference_at_equal_cost():
    grid = expand({"defaults": {"preset": "resnext29_8x64d", "bottleneck_width": "auto",
                                "match": {"preset": "resnext29_8x64d", "metric": "macs"}},
                   "matrix": {"cardinality": [2, 8, 32]}})
    widths = {c.model.cardinality: c.model.bottleneck_width for c in grid.cells}
    assert widths[8] == 64  # the reference itself
    assert widths[2] > widths[8] > widths[32]


def test_cell_ids_are_stable_and_distinguish_settings():
    raw = {"defaults": CIFAR, "include": [{"preset": "resnet20"}, {"preset": "resnet20", "precision": "bf16"}]}
    a, b = expand(raw).cells, expand(raw).cells
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    assert a[0].cell_id != a[1].cell_id
    # the data root does not change what a cell measures
    with_train = {"include": [{"preset": "resnet20", "train": {"epochs": 1}}]}
    assert expand(with_train, data_root="/x").cells[0].cell_id == expand(with_train, data_root="/y").cells[0].cell_id


def test_duplicate_cells_are_dropped_once():
    grid = expand({"include": [{"preset": "resnet20"}, {"preset": "resnet20"}]})
    assert len(grid.cells) == 1 and grid.duplicates == 1


def test_quick_shrinks_any_grid():
    raw = {"defaults": {"device": "cuda", "batch_sizes": [1, 64, 256], "repeats": 100,
                        "train": {"epochs": 30, "dataset": "synthetic"}},
           "include": [{"preset": "resnet50"}], "quick": {"repeats": 3}}
    (cell,) = expand(raw, quick=True).cells
    s = cell.settings
    assert s["device"] == "cpu" and s["batch_sizes"] == [1] and s["repeats"] == 3
    assert s["train"]["epochs"] == 1 and s["train"]["train_subset"] <= 5000
    assert s["train"]["dataset"] == "synthetic"


def test_device_auto_resolves_and_cli_device_overrides():
    raw = {"include": [{"preset": "resnet20"}]}
    assert expand(raw, cuda_available=True).cells[0].settings["device"] == "cuda"
    assert expand(raw, cuda_available=False).cells[0].settings["device"] == "cpu"
    assert expand(raw, cuda_available=True, device="cpu").cells[0].settings["device"] == "cpu"


def test_cell_round_trips_through_a_dict():
    from bench.grid import Cell

    cell = expand({"include": [{"preset": "resnext29_32x4d", "train": {"epochs": 2}}]}).cells[0]
    again = Cell.from_dict(cell.to_dict())
    assert again.cell_id == cell.cell_id and again.model == cell.model and again.settings == cell.settings


# ------------------------------------------------------------------ bad grids
BAD_GRIDS = [
    ("unknown top-level key", "matrx:\n  depth: [20]\n", "matrx: unknown key (did you mean 'matrix'?)"),
    ("unknown setting", "matrix:\n  cardinallity: [1, 2]\n", "matrix.cardinallity: unknown setting (did you mean 'cardinality'?)"),
    ("wrong type", "defaults:\n  batch_sizes: 8\ninclude:\n  - {preset: resnet20}\n", "defaults.batch_sizes: expected a non-empty list"),
    ("wrong type in matrix", "matrix:\n  cardinality: [1, two]\n", "matrix.cardinality[1]: expected an integer >= 1, got 'two'"),
    ("matrix value not a list", "matrix:\n  depth: 20\n", "matrix.depth: expected a non-empty list"),
    ("empty matrix", "matrix: {}\n", "matrix: is empty"),
    ("empty list", "matrix:\n  depth: []\n", "matrix.depth: expected a non-empty list"),
    ("no cells", "defaults:\n  device: cpu\n", "the grid has no cells"),
    ("unknown preset", "include:\n  - {preset: resnext5O_32x4d}\n", "include[0].preset: unknown preset 'resnext5O_32x4d'; did you mean resnext50_32x4d"),
    ("impossible model", "defaults: {stem: cifar}\nmatrix:\n  block: [basic]\n  depth: [20]\n  cardinality: [1, 4]\n",
     "cell 1 from matrix (block=basic, depth=20, cardinality=4): cardinality: basic blocks"),
    ("bad depth", "include:\n  - {block: basic, depth: 21, stem: cifar}\n", "cell 0 from include[0]: depth: cifar basic networks need depth = 6n+2"),
    ("auto without match", "include:\n  - {preset: resnext29_8x64d, bottleneck_width: auto}\n", "bottleneck_width: auto needs match"),
    ("bad training key", "include:\n  - {preset: resnet20, train: {epoch: 3}}\n", "include[0].train: epoch: unknown training setting"),
    ("exclude everything", "matrix:\n  preset: [resnet20]\nexclude:\n  - {preset: resnet20}\n", "exclude: removes every cell"),
    ("include not a mapping", "include:\n  - resnet20\n", "include[0]: expected a non-empty mapping"),
    ("not a mapping", "- resnet20\n", "expected a mapping with keys"),
    ("bad choice", "include:\n  - {preset: resnet20, precision: fp8}\n", "include[0].precision: expected one of fp32, bf16, fp16, got 'fp8'"),
]


@pytest.mark.parametrize("label,text,expected", BAD_GRIDS, ids=[b[0] for b in BAD_GRIDS])
def test_bad_grid_raises_grid_error_naming_file_and_key(tmp_path, label, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(GridError) as info:
        load_grid(path, cuda_available=False)
    message = str(info.value)
    assert message.startswith(path + ": ")
    assert expected in message
    assert "\n" not in message


def test_malformed_yaml_reports_line_number(tmp_path):
    path = write(tmp_path, "matrix:\n  depth: [20, 32\ninclude: x\n")
    with pytest.raises(GridError) as info:
        load_grid(path)
    assert f"{path}: line 3, column" in str(info.value) and "malformed YAML" in str(info.value)


def test_missing_grid_file(tmp_path):
    with pytest.raises(GridError, match="no such grid file"):
        load_grid(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize("label,text,expected", BAD_GRIDS[:4] + BAD_GRIDS[9:10], ids=[b[0] for b in BAD_GRIDS[:4] + BAD_GRIDS[9:10]])
def test_cli_bad_grid_one_line_exit_2_nothing_written(tmp_path, capsys, label, text, expected):
    path = write(tmp_path, text)
    out = tmp_path / "out" / "r.csv"
    assert main(["--grid", path, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and expected in err
    assert not out.exists() and not (tmp_path / "out").exists()


def test_cli_bad_grid_never_touches_existing_results(tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("precious\n")
    path = write(tmp_path, BAD_GRIDS[0][1])
    assert main(["--grid", path, "--out", str(out)]) == 2
    assert out.read_text() == "precious\n"


def test_shipped_grids_are_valid():
    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "grids")
    names = sorted(f for f in os.listdir(root) if f.endswith(".yaml"))
    assert {"quick.yaml", "cardinality.yaml", "depth.yaml", "width.yaml", "imagenet-presets.yaml"} <= set(names)
    for name in names:
        for quick in (False, True):
            grid = load_grid(os.path.join(root, name), quick=quick, cuda_available=False)
            assert grid.cells, name


def test_dry_run_lists_cells_with_params_and_macs(tmp_path, capsys):
    path = write(tmp_path, "include:\n  - {preset: resnet56}\n  - {preset: resnext50_32x4d}\n")
    assert main(["--grid", path, "--dry-run", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "2 cell(s)" in out
    assert "855,770" in out and "0.126G" in out  # resnet56: pycls params and MACs
    assert "25,028,904" in out and "4.230G" in out  # resnext50_32x4d


# ------------------------------------------------ hostile YAML (issue 22, items 11, 13, 14)
def _laughs(levels: int, fan: int = 9) -> str:
    """A "billion laughs" as one YAML value: each level a list of ``fan`` copies of the one below (the
    first written out, anchored, the others aliases of it), fan**levels strings in all."""
    text = "&a0 [lol]"
    for i in range(1, levels + 1):
        text = f"&a{i} [{text}, {', '.join([f'*a{i - 1}'] * (fan - 1))}]"
    return text


def test_an_alias_bomb_is_refused_in_a_second_not_expanded(tmp_path):
    """Before the fix --dry-run expanded 9**9 values into the error message: MemoryError after a minute
    at 2 GB, or a hang. The subprocess has a time limit so that a regression cannot hang the suite."""
    import subprocess
    import sys
    import time

    path = write(tmp_path, f"matrix: {{depth: [{_laughs(9)}]}}\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, os.path.join(root, "benchmark.py"), "--grid", path, "--dry-run"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-1000:]
    assert "YAML aliases expand its 16 values to 823,268,544, more than 1,000,000 beyond the ones written " \
           "(an alias bomb?)" in proc.stderr
    assert time.monotonic() - start < 60


def test_aliases_within_the_bound_load_and_a_refused_value_prints_a_bounded_repr(tmp_path):
    # 9**5 = 59,049 values through aliases: allowed, but the refused depth value is not printed whole
    path = write(tmp_path, f"matrix: {{depth: [{_laughs(5)}]}}\n")
    with pytest.raises(GridError) as info:
        load_grid(path, cuda_available=False)
    message = str(info.value)
    assert "matrix.depth[0]: expected an integer >= 1, got [[[[...], [...], [...], [...], ...]," in message
    assert len(message) < len(path) + 200


def test_a_key_written_twice_is_refused_naming_it_anywhere_in_the_grid(tmp_path):
    path = write(tmp_path, "defaults:\n  device: cpu\n  device: cuda\ninclude:\n  - {preset: resnet20}\n")
    with pytest.raises(GridError, match=r"g.yaml: line 3, column 3: malformed YAML: duplicate key 'device' "
                                        r"\(first at line 2\); write each key once"):
        load_grid(path, cuda_available=False)
    nested = write(tmp_path, "include:\n  - {preset: resnet20, train: {epochs: 1, lr: 0.1, epochs: 3}}\n", "n.yaml")
    with pytest.raises(GridError, match="line 2, column 52: malformed YAML: duplicate key 'epochs'"):
        load_grid(nested, cuda_available=False)
    # a merge key is meant to be overridden: not a duplicate
    merged = write(tmp_path, "base: &b {preset: resnet20, device: cpu}\ninclude:\n  - {<<: *b, device: cpu}\n", "m.yaml")
    with pytest.raises(GridError, match="base: unknown key"):  # gets past the YAML, to the grid's own check
        load_grid(merged, cuda_available=False)


def test_a_grid_with_a_utf8_bom_loads_like_one_without(tmp_path):
    text = "name: bom\ninclude:\n  - {preset: resnet20, device: cpu}\n"
    plain = load_grid(write(tmp_path, text, "plain.yaml"), cuda_available=False)
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    bom = load_grid(str(tmp_path / "bom.yaml"), cuda_available=False)
    assert bom.name == "bom" and [c.cell_id for c in bom.cells] == [c.cell_id for c in plain.cells]


def test_a_width_multiplier_that_overflows_is_a_one_line_error(tmp_path, capsys):
    path = write(tmp_path, "include:\n  - {preset: resnet20, device: cpu, width_multiplier: 1.0e+308}\n")
    assert main(["--grid", path, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cell 0 from include[0]: the model's sizes overflow" in err
