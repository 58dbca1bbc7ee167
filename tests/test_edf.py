"""Design-space statistics and the report's design-space section, on hand-made data with known answers."""
import numpy as np
import pandas as pd
import pytest

from bench.analysis import edf as E
from bench.analysis.reports import write_report
from bench.results.files import ResultWriter, write_json_atomic
from bench.results.schema import empty_row


def test_edf_is_the_share_of_values_at_or_below_x():
    x, f = E.edf([3.0, 1.0, 2.0, 2.0])
    assert list(x) == [1, 2, 2, 3] and list(f) == [0.25, 0.5, 0.75, 1.0]
    assert list(E.edf_at([3.0, 1.0, 2.0, 2.0], [0.5, 1.0, 2.0, 2.5, 9.0])) == [0, 0.25, 0.75, 0.75, 1.0]


def test_the_dkw_band_holds_the_edf_and_narrows_as_one_over_root_n():
    rng = np.random.default_rng(1)
    grid = np.linspace(-2, 2, 41)
    small = rng.normal(size=20)
    lo_s, hi_s = E.dkw_band(small, grid)
    assert np.all(lo_s <= E.edf_at(small, grid)) and np.all(E.edf_at(small, grid) <= hi_s)
    assert E.dkw_epsilon(20) == pytest.approx((np.log(40) / 40) ** 0.5)  # sqrt(ln(2/0.05) / 2n)
    assert E.dkw_epsilon(500) == pytest.approx(E.dkw_epsilon(20) / 5)
    lo, hi = E.dkw_band([2.0] * 5, [1.0, 2.0, 3.0])  # clipped to 0..1
    assert list(lo) == [0.0, pytest.approx(1 - E.dkw_epsilon(5)), pytest.approx(1 - E.dkw_epsilon(5))]
    assert list(hi) == [pytest.approx(E.dkw_epsilon(5)), 1.0, 1.0]
    with pytest.raises(ValueError, match="NaN"):
        E.dkw_band([1.0, float("nan")], grid)


@pytest.mark.parametrize("n", [3, 9, 30])
def test_the_band_covers_the_true_distribution_everywhere_at_its_stated_level(n):
    """Simulated: 2,000 samples of n uniform values; the band must hold F(x) = x on the whole of [0, 1] in at
    least 95% - 1.5% of them (1.5% is three binomial standard errors at 2,000 draws)."""
    rng = np.random.default_rng(n)
    grid = np.linspace(0, 1, 401)
    covered = 0
    for _ in range(2000):
        lo, hi = E.dkw_band(rng.random(n), grid)
        covered += bool(np.all((lo <= grid) & (grid <= hi)))
    assert covered / 2000 >= 0.95 - 0.015


def test_ks_finds_clearly_different_groups_and_not_identical_ones():
    rng = np.random.default_rng(0)
    same = rng.normal(size=40)
    diffs = E.compare_groups({"1": same, "1-copy": same.copy(), "32": same + 10.0})
    by_pair = {(d.a, d.b): d for d in diffs}
    assert not by_pair[("1", "1-copy")].differ and by_pair[("1", "1-copy")].statistic == 0.0
    assert by_pair[("1", "32")].differ and by_pair[("1", "32")].statistic == 1.0
    # Holm over three pairs: the two smallest (equal) p-values are multiplied by 3
    assert by_pair[("1", "32")].p_adjusted == pytest.approx(3 * by_pair[("1", "32")].p_value)


def test_holm_adjusts_step_down_and_stays_monotone():
    assert E.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert E.holm([]) == []


def test_holm_refuses_a_nan_p_instead_of_counting_it_as_1():
    with pytest.raises(ValueError, match="p-value nan is not a probability"):
        E.holm([0.01, float("nan")])
    with pytest.raises(ValueError, match="1.5 is not a probability"):
        E.holm([1.5])


def test_trend_recovers_a_known_line_in_log_macs():
    macs = np.array([1e7, 2e7, 4e7, 8e7])
    t = E.trend(macs, 0.5 - 0.1 * np.log10(macs))
    assert t.slope == pytest.approx(-0.1) and t.intercept == pytest.approx(0.5)
    assert E.trend(macs[:2], [0.1, 0.2]) is None


@pytest.mark.parametrize("values, expected", [
    ([1, 2, 4, 8], ["1", "2", "4", "8"]),
    ([1, 4, 5, 16], ["1", "4-7", "4-7", "16"]),
])
def test_cardinality_groups_are_power_of_two_bins_named_by_their_values(values, expected):
    labels = E.group_labels(pd.DataFrame({"cardinality": [float(v) for v in values]}), "cardinality")
    assert list(labels) == expected


def _row(i, cardinality, **values):
    row = empty_row()
    row.update({"run_id": "r1", "cell_id": f"c{i:03d}", "variant_id": f"v{i:03d}", "variant": f"m{i}",
                "status": "ok", "device": "cpu", "device_name": "Test CPU", "precision": "fp32", "threads": 2,
                "cardinality": cardinality, "family": "resnext" if cardinality > 1 else "resnet",
                "params": 100_000 + 1000 * i, "macs": int(20e6 + 1e6 * i), "activations": 50_000 + 500 * i})
    row.update(values)
    return row


def _space_run(tmp_path, rows, sampled_ids, name="space"):
    csv = str(tmp_path / f"{name}.csv")
    ResultWriter(csv).append(rows)
    cells = {r["cell_id"]: {"cell_id": r["cell_id"], "origin": f"sample[{i}] (cardinality={r['cardinality']})"
                            if r["cell_id"] in sampled_ids else "include[0]"} for i, r in enumerate(rows)}
    write_json_atomic(csv[:-4] + ".json", {"run_id": "r1", "grid": {"source": {"sample": {"n": 1}}},
                                          "cells": cells, "environment": {}})
    return csv


def test_report_adds_a_design_space_section_for_sampled_cells_only(tmp_path):
    rows, sampled = [], set()
    for i in range(24):
        c = 1 if i % 2 else 32
        err = 0.30 if c == 1 else 0.20  # cardinality 32 is better in every sample: the EDFs must differ
        rows.append(_row(i, c, batch_size=1, top1_acc=1 - err - 0.001 * i, n_seeds=1, test_images=10000,
                         latency_ms_median=5.0 + 0.1 * i * (2 if c == 32 else 1), throughput_img_s=200.0))
        sampled.add(f"c{i:03d}")
    rows.append(_row(99, 8, batch_size=1, top1_acc=0.99, latency_ms_median=1.0))  # not sampled: left out
    csv = _space_run(tmp_path, rows, sampled)
    report = open(write_report([csv], str(tmp_path / "out"))).read()
    assert "## Design space" in report and "24 sampled cell(s)" in report
    assert "The error distributions differ for: 1 vs 32." in report
    assert "| 8 |" not in report.split("## Design space")[1].split("###")[1]  # the include cell is not a group
    for fig in ("space-error-edf", "space-error-vs-macs", "space-ms-per-gmac-edf-cpu-fp32-2",
                "space-gmac-per-s-edf-cpu-fp32-2", "space-latency-model-cpu-fp32-2"):
        assert (tmp_path / "out" / f"{fig}.png").exists(), fig


def test_report_without_sampled_cells_has_no_design_space_section(tmp_path):
    csv = _space_run(tmp_path, [_row(i, 1, batch_size=1, latency_ms_median=2.0) for i in range(3)], set())
    assert "## Design space" not in open(write_report([csv], str(tmp_path / "out"))).read()


def test_speed_points_join_per_variant_and_normalise_by_gmacs():
    rows = pd.DataFrame([_row(0, 4, batch_size=1, latency_ms_median=10.0, throughput_img_s=100.0, macs=50e6),
                         _row(0, 4, batch_size=32, latency_ms_median=80.0, throughput_img_s=400.0, macs=50e6)])
    p = E.speed_points(rows).iloc[0]
    assert p["latency_bs1_ms"] == 10.0 and p["throughput_bs"] == 32
    assert p["ms_per_gmac"] == pytest.approx(200.0) and p["gmac_per_s"] == pytest.approx(20.0)


def test_report_groups_by_the_space_s_group_by_setting(tmp_path):
    rows = [_row(i, 4, depth=20 if i % 2 else 38, batch_size=1, top1_acc=0.7, latency_ms_median=3.0)
            for i in range(8)]
    csv = _space_run(tmp_path, rows, {r["cell_id"] for r in rows})
    side = __import__("json").load(open(csv[:-4] + ".json"))
    side["grid"]["source"]["sample"]["group_by"] = "depth"
    write_json_atomic(csv[:-4] + ".json", side)
    report = open(write_report([csv], str(tmp_path / "out"))).read()
    assert "grouped by `depth`" in report and "| 20 | 4 |" in report and "| 38 | 4 |" in report
