"""Design spaces (a grid's sample: section): reproducible draws, constraints honoured, bad spaces refused."""
import copy
import os
import textwrap

import pytest

from bench.cli import main
from bench.errors import GridError
from bench.grid import expand_grid
from models import model_complexity

BASE = {"preset": "resnext29_32x4d", "width_multiplier": 0.25, "stem_width": 16, "device": "cpu"}
SPACE = {"seed": 3, "n": 12,
         "settings": {"cardinality": {"choice": [1, 2, 4, 8]},
                      "bottleneck_width": {"log_uniform": [4, 64]},
                      "depth": {"choice": [11, 20, 29]}},
         "constraints": {"macs": [20e6, 60e6]}}


def expand(sample, defaults=BASE, **kw):
    return expand_grid({"defaults": dict(defaults), "sample": copy.deepcopy(sample)}, "g.yaml",
                       cuda_available=False, **kw)


def test_the_same_space_and_seed_draw_the_same_cells_with_the_same_ids():
    first, again = expand(SPACE), expand(SPACE)
    assert [c.cell_id for c in first.cells] == [c.cell_id for c in again.cells]
    assert len(first.cells) == 12
    assert all(c.origin.startswith(f"sample[{i}] (") for i, c in enumerate(first.cells))


def test_another_seed_draws_another_sample():
    other = expand({**SPACE, "seed": 4})
    assert {c.cell_id for c in other.cells} != {c.cell_id for c in expand(SPACE).cells}


def test_growing_n_keeps_the_earlier_samples_and_their_ids():
    small, big = expand({**SPACE, "n": 5}), expand({**SPACE, "n": 12})
    assert [c.cell_id for c in big.cells[:5]] == [c.cell_id for c in small.cells]


def test_reordering_the_settings_in_the_yaml_does_not_change_the_sample():
    reordered = {**SPACE, "settings": dict(reversed(list(SPACE["settings"].items())))}
    assert [c.cell_id for c in expand(reordered).cells] == [c.cell_id for c in expand(SPACE).cells]


def test_every_sample_meets_the_constraints_and_draws_from_the_distributions():
    space = {**SPACE, "n": 30, "constraints": {"macs": [20e6, 60e6], "params": [0, 400e3]}}
    grid = expand(space)
    for cell in grid.cells:
        cost = model_complexity(cell.model)
        assert 20e6 <= cost.macs <= 60e6 and cost.params <= 400e3
        assert cell.model.cardinality in (1, 2, 4, 8) and cell.model.depth in (11, 20, 29)
        assert 4 <= cell.model.bottleneck_width <= 64 and isinstance(cell.model.bottleneck_width, int)
    report = grid.sampling
    assert report.accepted == 30 and report.tries == 30 + sum(report.rejected.values())
    assert 0 < report.acceptance_rate <= 1
    assert grid.to_dict()["sampling"]["accepted"] == 30  # the sidecar records the acceptance rate


def test_samples_are_distinct_architectures():
    grid = expand({**SPACE, "n": 30})
    assert len({c.variant_id for c in grid.cells}) == 30 and grid.duplicates == 0


def test_resuming_and_sharding_see_the_sampled_cells_like_any_others(tmp_path):
    from bench.results.files import ResultWriter
    from bench.results.schema import empty_row
    from bench.run.runner import plan_run
    from bench.run.shard import Shard

    grid = expand(SPACE)
    out = str(tmp_path / "r.csv")
    ResultWriter(out).append([{**empty_row(), "run_id": "r1", "cell_id": c.cell_id, "status": "ok"}
                              for c in grid.cells[:4]])
    plan = plan_run(expand(SPACE), out)  # loaded again, as a resumed run does
    assert [c.cell_id for c in plan.done] == [c.cell_id for c in grid.cells[:4]] and len(plan.todo) == 8
    parts = [Shard(k, 3).select(grid.cells) for k in (1, 2, 3)]
    assert sorted(c.cell_id for part in parts for c in part) == sorted(c.cell_id for c in grid.cells)


def test_a_sampled_grid_can_mix_with_include_cells():
    grid = expand_grid({"defaults": BASE, "include": [{"cardinality": 1}], "sample": SPACE}, "g.yaml",
                       cuda_available=False)
    assert grid.cells[0].origin == "include[0]" and len(grid.cells) == 13


@pytest.mark.parametrize("sample, where, message", [
    ({**SPACE, "n": 0}, "sample.n", "expected the number of samples"),
    ({**SPACE, "settings": {"cardinality": [1, 2]}}, "sample.settings.cardinality", "expected one of {choice"),
    ({**SPACE, "settings": {"cardinality": {"log_uniform": [0, 8]}}}, "sample.settings.cardinality.log_uniform",
     "low > 0"),
    ({**SPACE, "settings": {"cardinality": {"int": [8, 2]}}}, "sample.settings.cardinality.int", "low <= high"),
    ({**SPACE, "settings": {"cardinality": {"choice": [1, "two"]}}}, "sample.settings.cardinality.choice[1]",
     "expected an integer"),
    ({**SPACE, "settings": {"cardinallity": {"choice": [1]}}}, "sample.settings.cardinallity", "did you mean"),
    ({**SPACE, "constraints": {"macs": [60e6, 20e6]}}, "sample.constraints.macs", "impossible constraint"),
    ({**SPACE, "constraints": {"flops": [1, 2]}}, "sample.constraints.flops", "unknown constraint"),
    ({**SPACE, "constraints": {"macs": [1e3, 2e3]}}, "sample", "no draw was accepted in 2000 tries"),
    ({**SPACE, "n": 50, "settings": {"cardinality": {"choice": [1, 2]}}, "constraints": {}}, "sample.n",
     "n=50 exceeds the 2 distinct draws the settings allow"),
    ({**SPACE, "settings": {"cardinality": {"int": [1, float("inf")]}}}, "sample.settings.cardinality.int",
     "two finite numbers"),
    ({**SPACE, "settings": {"bottleneck_width": {"uniform": [4, float("nan")]}}},
     "sample.settings.bottleneck_width.uniform", "two finite numbers"),
    ({**SPACE, "settings": {"bottleneck_width": {"log_uniform": [4, 1e300]}}},
     "sample.settings.bottleneck_width.log_uniform", "within +-2^53 for an integer setting"),
    ({**SPACE, "n": 10 ** 8}, "sample.n", "an integer from 1 to 1,000,000"),
])
def test_bad_spaces_are_refused_with_one_line(sample, where, message):
    with pytest.raises(GridError) as err:
        expand(sample)
    text = str(err.value)
    assert f"g.yaml: {where}: " in text and message in text and "\n" not in text


def test_an_n_beyond_a_finite_space_is_refused_before_drawing_even_when_huge():
    import time

    space = {**SPACE, "n": 20_000, "settings": {**SPACE["settings"], "cardinality": {"choice": [1, 2, 4, 8, 16, 32]},
                                                 "depth": {"choice": [20, 29, 38]}}}
    started = time.process_time()
    with pytest.raises(GridError, match=r"sample\.n: n=20,000 exceeds the 1,098 distinct draws"):
        expand(space)  # 6 cardinalities x 61 rounded widths x 3 depths
    assert time.process_time() - started < 1.0  # was 50 x n = 1,000,000 tries, 22 s


def test_a_space_that_runs_dry_under_its_constraints_is_refused_once_new_samples_stop_coming():
    # 4 x 61 x 3 = 732 settings could fill n = 600, but the MAC budget leaves far fewer: the sampler stops
    # when the run of draws without a new sample grows to 20 mean gaps, instead of trying 50 x n times
    from bench import space as S

    with pytest.raises(GridError) as err:
        expand({**SPACE, "n": 600})
    text = str(err.value)
    assert "sample: only " in text and "of n=600 distinct samples" in text and "none new in the last" in text
    tries = int(text.split(" tries")[0].rsplit(" ", 1)[1])
    assert tries < S.default_max_tries(600) / 3


def test_a_continuous_setting_that_makes_few_architectures_stalls_in_bounded_draws():
    # the channels round, so width_multiplier 0.25..0.26 makes a handful of models: no size bound applies,
    # and the stall rule refuses after about max(2000, 20 mean gaps) draws
    sample = {"seed": 0, "n": 40, "settings": {"width_multiplier": {"uniform": [0.25, 0.26]},
                                               "cardinality": {"choice": [1, 2]}}}
    with pytest.raises(GridError, match=r"only \d+ of n=40 distinct samples after \d+ tries \(none new"):
        expand(sample)


def test_a_zero_acceptance_refusal_says_what_the_draws_cost():
    with pytest.raises(GridError, match=r"macs ranged .* against \[1000, 2000\]"):
        expand({**SPACE, "constraints": {"macs": [1e3, 2e3]}})


def test_constraints_written_as_yaml_1_1_strings_are_numbers(tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent("""
        defaults: {preset: resnext29_32x4d, width_multiplier: 0.25, stem_width: 16, device: cpu}
        sample:
          n: 3
          settings: {cardinality: {choice: [1, 2, 4]}, bottleneck_width: {int: [4, 64]}}
          constraints: {macs: [20e6, 60e6]}
    """))
    assert main(["--grid", str(path), "--dry-run", "--out", str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    assert "acceptance" in out and out.count("[sample[") == 3


def test_the_cli_refuses_a_bad_space_before_any_work(tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text("defaults: {preset: resnet20}\nsample: {n: 2, settings: {depth: {choice: [20]}}}\n")
    out = tmp_path / "r.csv"
    assert main(["--grid", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: sample.n: n=2 exceeds the 1 distinct draws") and "\n" not in err
    assert not out.exists()


def test_the_shipped_space_grids_train_and_time_the_same_48_architectures():
    from bench.grid import load_grid

    grids = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "grids")
    train = load_grid(os.path.join(grids, "space-cpu.yaml"), cuda_available=False)
    speed = load_grid(os.path.join(grids, "space-cpu-speed.yaml"), cuda_available=False)
    assert [c.variant_id for c in train.cells] == [c.variant_id for c in speed.cells]
    assert len(train.cells) == 48 and all(20e6 <= model_complexity(c.model).macs <= 60e6 for c in train.cells)
    assert all(c.train is not None and not c.settings["speed"] for c in train.cells)
    assert all(c.train is None and c.settings["speed"] for c in speed.cells)


def test_the_dry_run_lists_a_cell_whose_macs_exceed_a_float_instead_of_crashing(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    path.write_text("defaults: {preset: resnext29_32x4d, width_multiplier: 0.25, stem_width: 16, device: cpu}\n"
                    f"include:\n  - {{bottleneck_width: {10 ** 200}}}\n")
    assert main(["--grid", str(path), "--dry-run", "--out", str(tmp_path / "r.csv")]) == 0
    from decimal import Decimal

    from bench.grid import load_grid

    macs = model_complexity(load_grid(str(path), cuda_available=False).cells[0].model).macs
    printed = Decimal(capsys.readouterr().out.split("MACs=")[1].split("G")[0])
    assert abs(printed * 10 ** 9 / macs - 1) < Decimal("1e-3")  # the count, in powers of ten beyond a float
