"""The package layout is the architecture: imports only run downward.

Data flows grid -> models -> measurement/training -> result files -> analysis.
Every import in the code base (function-level ones included) is read from the
source with ``ast`` and checked against that order, so a shortcut that would
tie two layers together fails here rather than in a review.
"""
from __future__ import annotations

import ast
import pathlib
from typing import Dict, Iterator, List, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Higher rank may import lower rank, never the reverse. Packages on one floor
# (analysis and run) may not import each other: they meet only in result files.
RANK: Dict[str, float] = {
    "bench.cli": 7, "bench.describe": 7, "bench.profile_cli": 7,
    "bench.analysis": 6, "bench.run": 6,
    "bench.grid": 5,
    "bench.space": 4.5,  # design spaces: grid-level, but the grid loader draws from it
    "bench.train": 4,
    "bench.results": 3,
    "bench.measure": 2,
    "models": 1,
    # The floor: user errors, the value checks and the allowed choices every layer shares. They import
    # nothing from the harness, not even each other, so anything may use them.
    "bench.errors": 0, "bench.checks": 0, "bench.choices": 0,
}
# Analysis reads result files: no torch, and nothing that measures or trains.
ANALYSIS_FORBIDDEN = ("torch", "torchvision", "fvcore", "models", "bench.measure", "bench.train", "bench.run",
                      "bench.grid", "bench.space")


def layer_of(module: str) -> str:
    for name in sorted(RANK, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return ""


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: pathlib.Path) -> Iterator[Tuple[int, str]]:
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base + "." + a.name for a in node.names]
            yield node.lineno, base
            for name in names:  # `from bench import grid` imports bench.grid, not just the package
                yield node.lineno, name


def sources() -> List[pathlib.Path]:
    return sorted(p for d in ("bench", "models") for p in (ROOT / d).rglob("*.py"))


def violations() -> List[str]:
    found = []
    for path in sources():
        here = layer_of(module_name(path))
        for line, target in imports(path):
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            there = layer_of(target)
            if here == "bench.analysis" and any(target == f or target.startswith(f + ".") for f in ANALYSIS_FORBIDDEN):
                found.append(f"{where}: analysis reads result files only")
            elif here and there and there != here and RANK[there] >= RANK[here]:
                found.append(f"{where}: {there} (rank {RANK[there]}) is not below {here} (rank {RANK[here]})")
    return found


def test_every_module_belongs_to_a_layer():
    unplaced = [str(p.relative_to(ROOT)) for p in sources() if not layer_of(module_name(p))
                and module_name(p) != "bench"]
    assert unplaced == []


def test_no_import_runs_upward_or_sideways():
    assert violations() == []


def probe(monkeypatch, module: str, source: str) -> List[str]:
    """The violations found if ``module`` (a path under the root) held just ``source``."""
    fake = ROOT / module
    monkeypatch.setattr(f"{__name__}.sources", lambda: [fake])
    original = pathlib.Path.read_text
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self, *a, **k: source if self == fake else original(self, *a, **k))
    return violations()


@pytest.mark.parametrize("source, expected", [
    ("from bench.run.runner import run_grid\n", "analysis reads result files only"),
    ("import torch\n", "analysis reads result files only"),
    ("from bench.analysis import reports\n", None),
])
def test_the_checker_catches_an_analysis_module_importing_below_files(monkeypatch, source, expected):
    found = probe(monkeypatch, "bench/analysis/_layer_probe.py", source)
    assert (expected in found[0]) if expected else found == []


def test_the_checker_catches_models_importing_the_harness(monkeypatch):
    assert "is not below models" in probe(monkeypatch, "models/_layer_probe.py", "from bench.grid import Cell\n")[0]


@pytest.mark.parametrize("source", ["from bench.grid import Cell\n", "import models\n", "from bench import errors\n"])
def test_the_checker_catches_the_shared_checks_importing_anything_of_the_harness(monkeypatch, source):
    assert "is not below bench.checks" in probe(monkeypatch, "bench/checks.py", source)[0]


def test_the_grid_and_the_recipe_take_their_value_checks_from_the_floor():
    for user in ("bench/grid.py", "bench/train/recipe.py"):
        assert "bench.checks" in {target for _, target in imports(ROOT / user)}, user
