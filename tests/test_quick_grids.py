"""--quick on the shipped grids: small enough for a few minutes on 2 cores, and the cells it keeps."""
import glob
import os

import pytest

from bench.errors import GridError
from bench.grid import expand_grid, load_grid
from bench.run import estimate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRIDS = sorted(glob.glob(os.path.join(ROOT, "grids", "*.yaml")))
# MAC-equivalents (training counted 3x) a quick grid may cost: ~3 min at the
# ~60 GMAC/s a 2-core AVX-512 CPU trains resnet20-class models at in bf16.
QUICK_BUDGET = 1.2e13


@pytest.mark.parametrize("path", GRIDS, ids=os.path.basename)
def test_every_shipped_grid_under_quick_fits_the_budget(path):
    cells = load_grid(path, quick=True, cuda_available=False).cells
    assert estimate.total_work(cells).macs < QUICK_BUDGET
    for cell in cells:
        assert cell.settings["device"] == "cpu"
        if cell.train is not None:
            assert cell.train["train_subset"] <= 4000 and cell.train["epochs"] <= 1 and cell.train["seeds"] == 1


def test_cardinality_quick_is_the_quarter_width_family_at_equal_macs():
    cells = load_grid(os.path.join(ROOT, "grids", "cardinality.yaml"), quick=True, cuda_available=False).cells
    trained = [c for c in cells if c.train is not None]
    assert [c.model.cardinality for c in trained] == [1, 2, 4, 8, 16, 32]
    macs = [estimate.model_complexity(c.model).macs for c in trained]
    assert max(macs) < 55e6 and max(macs) / min(macs) < 1.1


def test_the_full_cardinality_grid_still_matches_resnext29_32x4d():
    cells = load_grid(os.path.join(ROOT, "grids", "cardinality.yaml"), cuda_available=True).cells
    c32 = next(c for c in cells if c.model.cardinality == 32 and c.train is not None)
    assert c32.model.bottleneck_width == 4 and c32.model.width_multiplier in (None, 1, 1.0)


def _raw(quick):
    return {"defaults": {"device": "cpu"}, "matrix": {"preset": ["resnet20", "resnet32", "resnet44"]}, "quick": quick}


def test_quick_cells_keeps_the_first_n_cells_with_their_ids():
    full = expand_grid(_raw({"cells": 2}), cuda_available=False).cells
    quick = expand_grid(_raw({"cells": 2}), quick=True, cuda_available=False).cells
    assert len(full) == 3 and [c.preset for c in quick] == ["resnet20", "resnet32"]
    assert [c.cell_id for c in quick] == [c.cell_id for c in expand_grid(_raw({}), quick=True).cells[:2]]


@pytest.mark.parametrize("bad", [0, "two", True])
def test_a_bad_quick_cells_value_is_one_line_naming_the_key(bad):
    with pytest.raises(GridError, match=r"quick\.cells: expected an integer >= 1"):
        expand_grid(_raw({"cells": bad}))
