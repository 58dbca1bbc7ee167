"""One column registry, one module of choices, docs generated from them, and names that mean one thing.

The registry (bench/results/schema.py) is the only place a column's meaning, unit and rule are written;
the reader's rules, the report's column types and docs/reference.md's tables come from it. These tests fail
when a doc table drifts from the code, when a doc names a ``bench/...`` path that does not exist, when a
committed CSV has an undocumented column, and when the renamed ``train.repeats`` stops loading or changes
a cell id.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from bench import choices
from bench.analysis import reports
from bench.grid import SETTINGS, expand_grid, load_grid
from bench.results import schema
from bench.results.validate import RULES, read_table
from bench.train import recipe

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "results").rglob("README.md")])


def _has_run_sidecar(csv_path: Path) -> bool:
    """A result CSV is one with the runner's sidecar beside it (RUN.json with its runs); the profile and
    per-image files beside it, the grouped-conv and layer-latency tables have formats of their own."""
    try:
        return "runs" in json.loads(csv_path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


RESULT_CSVS = sorted(p for p in (ROOT / "results").rglob("*.csv") if _has_run_sidecar(p))


def test_docs_reference_holds_every_generated_table_as_the_code_writes_it():
    text = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert schema.fill_sections(text, schema.generated_sections()) == text, \
        "regenerate: python -m bench.results.schema --write docs/reference.md"


def test_a_changed_doc_table_is_caught(tmp_path):
    """The check above can fail: a column's meaning edited by hand no longer matches."""
    text = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8").replace("learnable parameters", "weights", 1)
    assert schema.fill_sections(text, schema.generated_sections()) != text


def test_a_doc_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="no columns section"):
        schema.fill_sections("# no tables here\n", {"columns": "| x |"})


def test_every_bench_path_named_in_the_docs_exists():
    missing = []
    for doc in DOCS:
        for path in set(re.findall(r"(?<![\w-])bench/[\w./-]*\w", doc.read_text(encoding="utf-8"))):
            if not (ROOT / path).exists():
                missing.append(f"{doc.relative_to(ROOT)}: {path}")
    assert missing == []


def test_every_column_of_every_committed_result_csv_is_in_the_registry_and_valid():
    assert RESULT_CSVS, "the committed studies and baselines"
    for path in RESULT_CSVS:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f))
        assert set(header) <= set(schema.COLUMNS), f"{path}: {sorted(set(header) - set(schema.COLUMNS))}"
        read_table(str(path))  # every value passes its column's rule


def test_the_rules_and_the_report_types_are_generated_from_the_registry():
    assert list(RULES) == schema.COLUMNS and all(RULES[c.name] is c.rule for c in schema.REGISTRY)
    typed = set(reports.NUMERIC) | set(reports.TEXT) | set(reports.SYS_SHARE_COLUMNS)
    assert typed == set(schema.COLUMNS) and not set(reports.NUMERIC) & set(reports.TEXT)
    assert "top1_acc" in reports.NUMERIC and "latency_noisy" in reports.TEXT  # a bool is not a number


def test_every_column_has_a_meaning_and_a_known_rule_kind():
    for c in schema.REGISTRY:
        assert c.meaning and c.rule.kind in ("number", "int", "bool", "samples", "ints", "choice", "text"), c.name
        assert not c.meaning.endswith((", ms", ", MiB", ", s")), f"{c.name}: the unit goes in the unit field"


@pytest.mark.parametrize("setting, column, allowed", [
    ("precision", "precision", choices.PRECISIONS), ("memory_format", "memory_format", choices.MEMORY_FORMATS),
    ("block", "block", choices.BLOCKS), ("stem", "stem", choices.STEMS)])
def test_the_grid_and_the_csv_accept_the_same_choices(setting, column, allowed):
    for value in allowed:
        SETTINGS[setting].check(value)
        RULES[column].check(value)
    with pytest.raises(ValueError):
        SETTINGS[setting].check("fp8")
    with pytest.raises(ValueError):
        RULES[column].check("fp8")


def test_the_recipe_and_the_numerics_read_the_same_precisions():
    from bench.measure.numerics import autocast_dtype

    assert recipe.resolve({"precision": choices.PRECISIONS[-1]}).precision == choices.PRECISIONS[-1]
    assert [autocast_dtype(p, "cpu") is None for p in choices.PRECISIONS] == [p == "fp32" for p in choices.PRECISIONS]
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        autocast_dtype("fp8", "cpu")


def test_the_model_space_keeps_the_same_block_and_stem_lists_as_the_choices():
    from models import config  # models/ knows nothing of bench/, so the lists are compared here

    assert (config.BLOCKS, config.STEMS, config.LAYOUTS) == (choices.BLOCKS, choices.STEMS, choices.LAYOUTS)


# --------------------------------------------------------------------------- names


def test_train_seeds_is_the_number_of_seeds_and_the_old_key_loads_with_one_note(capsys, monkeypatch):
    monkeypatch.setattr(recipe, "_noted", set())
    assert recipe.resolve({"seeds": 3}).seeds == 3
    assert recipe.resolve({"repeats": 3}).seeds == 3 and recipe.resolve({"repeats": 2}).seeds == 2
    note = capsys.readouterr().err.strip().splitlines()
    assert note == ["note: train.repeats is now train.seeds; the old key still loads"]
    with pytest.raises(ValueError, match="^repeats: expected an integer >= 1"):
        recipe.resolve({"repeats": 0})  # an error names the key as written


def _cells(train):
    raw = {"defaults": {"device": "cpu", "batch_sizes": [1], "train": train},
           "include": [{"preset": "resnet20"}, {"preset": "resnet32"}]}
    return expand_grid(raw, "g.yaml", cuda_available=False).cells


def test_a_grid_written_with_repeats_and_one_with_seeds_have_the_same_cell_ids():
    old, new = _cells({"dataset": "synthetic", "repeats": 2}), _cells({"dataset": "synthetic", "seeds": 2})
    assert [c.cell_id for c in old] == [c.cell_id for c in new]
    assert [c.cell_id for c in new] != [c.cell_id for c in _cells({"dataset": "synthetic", "seeds": 3})]


def test_the_committed_design_space_study_keeps_its_cell_ids_after_the_rename():
    """results/studies/space-cpu/train.csv was written when the grid said `repeats: 1`."""
    with open(ROOT / "results" / "studies" / "space-cpu" / "train.csv", newline="", encoding="utf-8") as f:
        written = {row["cell_id"] for row in csv.DictReader(f)}
    cells = load_grid(str(ROOT / "grids" / "space-cpu.yaml"), cuda_available=False).cells
    assert cells and all(c.cell_id in written for c in cells)


def test_the_shipped_grids_say_seeds_not_repeats_in_their_training_blocks():
    for grid in sorted((ROOT / "grids").glob("*.yaml")):
        for cell in load_grid(str(grid), cuda_available=False).cells:
            assert cell.train is None or "repeats" not in cell.train, grid.name
        assert not re.search(r"^\s{4,}repeats:", grid.read_text(encoding="utf-8"), re.M), grid.name
