"""Regression verdicts and the compare/baseline subcommands, on hand-made result files.

The files are written with the project's own writers (schema rows, CSV text,
atomic sidecar), so the tests run the same read path as a real comparison.
"""
import copy
import json
import os

import pytest

from bench.analysis import regression as reg
from bench.analysis.baselines import store_baseline
from bench.cli import main
from bench.errors import UserError
from bench.results.files import rows_to_csv_text, sidecar_path, write_json_atomic
from bench.results.schema import empty_row
from conftest import one_line_error as _bad
from bench.measure.stats import median
from bench.results.samples import format_samples

ENV = {
    "software": {"torch": "2.3.0", "cuda": None, "cudnn": None},
    "cpu": {"cpu_model": "Test CPU 3000", "torch_threads": 2},
    "gpus": [],
}
TIGHT = [10.0 + 0.02 * i for i in range(10)]  # IQR/median ~ 1%
NOISY = [4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0]  # IQR/median ~ 70%


def scaled(samples, factor):
    return [x * factor for x in samples]


def make_row(cell_id="c0ffee000001", variant="resnet20", batch=8, status="ok", params=272474,
             latency=TIGHT, train=None, acc_seeds=(0.61,), error=None, test_images=None):
    row = empty_row()
    row.update(cell_id=cell_id, variant=variant, device="cpu", device_name="Test CPU 3000", precision="fp32",
               memory_format="contiguous", compile=False, threads=2, batch_size=batch, requested_batch_size=batch,
               status=status, error=error)
    if status != "ok":
        return row
    row.update(params=params, macs=params * 150, flops=params * 300, activations=params * 3)
    if latency is not None:
        m = median(latency)
        row.update(latency_ms_median=m, latency_samples_ms=format_samples(latency), throughput_img_s=batch * 1e3 / m)
    if train is not None:
        m = median(train)
        row.update(train_step_ms_median=m, train_step_samples_ms=format_samples(train),
                   train_throughput_img_s=batch * 1e3 / m)
    if acc_seeds:
        mean = sum(acc_seeds) / len(acc_seeds)
        std = (sum((a - mean) ** 2 for a in acc_seeds) / (len(acc_seeds) - 1)) ** 0.5 if len(acc_seeds) > 1 else None
        row.update(top1_acc=mean, top1_acc_std=std, n_seeds=len(acc_seeds), top1_acc_seeds=format_samples(acc_seeds))
        if test_images:
            row.update(test_images=test_images,
                       top1_correct_seeds=";".join(str(round(a * test_images)) for a in acc_seeds))
    return row


def write_run(path, rows, env=ENV, extra_meta=None):
    with open(path, "w") as f:
        f.write(rows_to_csv_text(rows, header=True))
    meta = {"schema_version": 1, "status": "finished", "environment": env}
    meta.update(extra_meta or {})
    write_json_atomic(sidecar_path(str(path)), meta)
    return str(path)


def compare_cli(capsys, base, cur, *extra):
    code = main(["compare", cur, "--baseline", base, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def line_for(out, metric, batch="8"):
    """The table line of ``metric`` (at ``batch``), split into fields."""
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == metric and fields[1] == batch:
            return fields
    raise AssertionError(f"no line for {metric} bs={batch} in:\n{out}")


@pytest.fixture
def two_rows():
    return [make_row(batch=1, latency=scaled(TIGHT, 0.2)), make_row(batch=8)]


# ------------------------------------------------------------------ pure verdicts
def test_tight_20_percent_slowdown_regresses():
    v = reg.timing_verdict(median(TIGHT), median(TIGHT) * 1.2, TIGHT, scaled(TIGHT, 1.2), higher_is_better=False)
    assert v.verdict == reg.REGRESSED
    assert v.ratio == pytest.approx(1.2)
    assert v.p_value < 0.001


def test_noisy_20_percent_slowdown_is_within_noise():
    v = reg.timing_verdict(median(NOISY), median(NOISY) * 1.2, NOISY, scaled(NOISY, 1.2), higher_is_better=False)
    assert v.verdict == reg.NOISE
    assert v.p_value > 0.05
    assert "within noise" in v.note


def test_3_percent_change_is_ok_even_when_significant():
    v = reg.timing_verdict(median(TIGHT), median(TIGHT) * 1.03, TIGHT, scaled(TIGHT, 1.03), higher_is_better=False)
    assert v.verdict == reg.OK


def test_faster_is_improved_and_direction_follows_the_metric():
    faster = scaled(TIGHT, 0.7)
    lat = reg.timing_verdict(median(TIGHT), median(faster), TIGHT, faster, higher_is_better=False)
    assert lat.verdict == reg.IMPROVED
    # throughput of the same samples: higher is better, so the same data is an improvement too ...
    thr = reg.timing_verdict(8e3 / median(TIGHT), 8e3 / median(faster), TIGHT, faster, higher_is_better=True)
    assert thr.verdict == reg.IMPROVED
    # ... and a throughput drop is a regression
    drop = reg.timing_verdict(100.0, 70.0, TIGHT, scaled(TIGHT, 1 / 0.7), higher_is_better=True)
    assert drop.verdict == reg.REGRESSED


def test_latency_and_throughput_agree_at_the_threshold_edge():
    # +10.5% time is past 10%; throughput drops by 9.5%, which must still count as past the threshold
    lat = reg.timing_verdict(10.0, 11.05, TIGHT, scaled(TIGHT, 1.105), higher_is_better=False)
    thr = reg.timing_verdict(800.0, 800.0 / 1.105, TIGHT, scaled(TIGHT, 1.105), higher_is_better=True)
    assert lat.verdict == thr.verdict == reg.REGRESSED


def test_without_samples_a_big_change_is_not_trusted():
    v = reg.timing_verdict(10.0, 20.0, [], [20.0], higher_is_better=False)
    assert v.verdict == reg.NOISE
    assert "too few samples to test (0 vs 1" in v.note


def test_three_samples_per_side_say_too_few_to_test_however_large_the_change():
    # 3 vs 3 completely separated: the exact test's smallest p is 2/20 = 0.1, never below 0.05
    v = reg.timing_verdict(10.0, 20.0, [9.9, 10.0, 10.1], [19.9, 20.0, 20.1], higher_is_better=False)
    assert v.verdict == reg.NOISE
    assert "too few samples to test (3 vs 3; the smallest possible p is 0.1" in v.note
    # 4 vs 4 can reach 2/70 = 0.029: the same separation is now a regression
    four = reg.timing_verdict(10.0, 20.0, [9.9, 10.0, 10.1, 10.2], [19.9, 20.0, 20.1, 20.2],
                              higher_is_better=False)
    assert four.verdict == reg.REGRESSED and four.p_value < 0.05


def test_exact_metrics():
    assert reg.exact_verdict(100, 100).verdict == reg.OK
    changed = reg.exact_verdict(100, 99)
    assert changed.verdict == reg.CHANGED and changed.note.startswith("-1")
    assert reg.exact_verdict(100, 400, allowed=True).verdict == reg.ALLOWED


def acc(*seeds, images=500):
    return reg.AccuracySample(tuple(seeds), images)


def test_one_seed_500_images_drop_of_1_4_pp_is_ok_with_a_p_value():
    """The case of issue 11: 349/500 -> 342/500 is well within the test set's sampling error."""
    v = reg.accuracy_verdict(acc(0.698), acc(0.684))
    assert v.verdict == reg.OK
    assert v.p_value == pytest.approx(0.632, abs=0.002)  # two-proportion z = -0.479
    assert v.note.startswith("-1.40 pp, p=0.63 (two-proportion z; 349/500 vs 342/500 correct)")
    assert "margin 5.73 pp" in v.note


def test_one_seed_large_drop_regresses_and_rise_improves():
    assert reg.accuracy_verdict(acc(0.80), acc(0.70)).verdict == reg.REGRESSED
    assert reg.accuracy_verdict(acc(0.70), acc(0.80)).verdict == reg.IMPROVED
    # exact correct counts win over accuracy x images when recorded
    counted = reg.AccuracySample((0.80,), 500, (400,))
    assert reg.two_proportion_test(counted, acc(0.70), 0.05).detail == "400/500 vs 350/500 correct"


def test_significant_drop_within_the_floor_is_ok():
    big = 1_000_000  # so many test images that a 0.4 pp drop is highly significant
    v = reg.accuracy_verdict(acc(0.800, images=big), acc(0.796, images=big), floor=0.005)
    assert v.p_value < 1e-6 and v.verdict == reg.OK


def test_a_drop_of_exactly_the_floor_is_not_more_than_the_floor():
    big = 10_000_000
    assert 0.795 - 0.800 < -0.005  # float rounding: -0.0050000000000000044
    exact = reg.accuracy_verdict(acc(0.800, images=big), acc(0.795, images=big), floor=0.005)
    assert exact.verdict == reg.OK and exact.p_value < 1e-6
    past = reg.accuracy_verdict(acc(0.800, images=big), acc(0.794, images=big), floor=0.005)
    assert past.verdict == reg.REGRESSED


def test_seeds_that_agree_closely_still_carry_the_test_sets_sampling_error():
    # three seeds agreeing to 0.1 pp, 1 pp apart: with 500 test images that is noise ...
    base, cur = acc(0.700, 0.701, 0.699), acc(0.690, 0.691, 0.689)
    v = reg.accuracy_verdict(base, cur)
    assert v.verdict == reg.OK and v.p_value > 0.4
    assert "Welch t on seed means; seeds 3 vs 3" in v.note and "test-set error added" in v.note
    # ... and the same seeds without test_images (older files) have only their own spread to go on
    old = reg.accuracy_verdict(acc(0.700, 0.701, 0.699, images=None), acc(0.690, 0.691, 0.689, images=None))
    assert old.verdict == reg.REGRESSED and "test_images unknown" in old.note


def test_without_test_images_the_seed_mean_test_is_scipys_welch_test():
    from scipy.stats import ttest_ind

    for b, c in [((0.70, 0.72, 0.69), (0.74, 0.73)), ((0.5, 0.52), (0.49, 0.47, 0.55, 0.51))]:
        test = reg.seed_mean_test(acc(*b, images=None), acc(*c, images=None), 0.05)
        ref = ttest_ind(c, b, equal_var=False)
        assert test.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert f"df {ref.df:.1f}" in test.detail and test.seeds == (len(b), len(c))
        assert test.describe() == f"seeds {len(b)} vs {len(c)}, {test.detail}"
        assert test.describe("base", "new").startswith(f"seeds {len(b)} (base) vs {len(c)} (new), df ")


def test_the_test_set_error_is_shared_by_the_seeds_and_never_raises_df_or_lowers_p():
    """The study's C=1 vs C=32 seeds (issue 23): Welch alone gives df 2.1, p 0.016; the old floor, divided by
    the seeds and fed into df, gave df 3.5, p 0.0056. Adding p(1-p)/10,000 per side, undivided, keeps df 2.1."""
    from scipy.stats import t, ttest_ind

    c1, c32 = (0.6829, 0.6834, 0.6851), (0.7129, 0.7054, 0.7189)
    test = reg.seed_mean_test(acc(*c1, images=10_000), acc(*c32, images=10_000), 0.05)
    welch = ttest_ind(c32, c1, equal_var=False)
    assert "df 2.1" in test.detail
    assert test.p_value == pytest.approx(0.0585, abs=5e-4) and test.p_value > welch.pvalue
    # a hand-made case: seeds identical on each side, so all the variance is the test set's
    same = reg.seed_mean_test(acc(0.70, 0.70, images=10_000), acc(0.72, 0.72, images=10_000), 0.05)
    se = ((0.70 * 0.30 + 0.72 * 0.28) / 10_000) ** 0.5  # not divided by the 2 seeds
    assert same.p_value == pytest.approx(2 * t.sf(0.02 / se, 1))  # df min(n) - 1 when both spreads are 0


def test_the_test_set_term_never_gives_a_smaller_p_than_welch_on_the_seeds_alone():
    import numpy as np
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(0)
    for _ in range(200):
        n_b, n_c = rng.integers(2, 6, size=2)
        b = tuple(rng.uniform(0.6, 0.8, n_b))
        c = tuple(rng.uniform(0.6, 0.8, n_c))
        ours = reg.seed_mean_test(acc(*b, images=int(rng.integers(100, 20_000))), acc(*c), 0.05)
        assert ours.p_value >= ttest_ind(c, b, equal_var=False).pvalue - 1e-12


def test_one_seed_or_a_nan_seed_is_a_one_line_error_not_a_crash():
    with pytest.raises(ValueError, match="2 or more seeds per side, got 1 vs 2"):
        reg.seed_mean_test(acc(0.7), acc(0.7, 0.71), 0.05)
    with pytest.raises(ValueError, match="per-seed accuracy nan is not a fraction"):
        acc(0.7, float("nan"))
    with pytest.raises(ValueError, match="at least one seed"):
        reg.AccuracySample(())
    # one seed against several is still tested: two-proportion z on the mean count out of the test images
    from bench.analysis.verdicts import difference_test

    mixed = difference_test(acc(0.70, images=10_000), acc(0.72, 0.74, images=10_000))
    assert mixed.name == "two-proportion z" and mixed.detail == "7000/10000 vs 7300/10000 correct"


def test_several_seeds_with_a_real_drop_regress():
    v = reg.accuracy_verdict(acc(0.80, 0.81, 0.79), acc(0.70, 0.71, 0.69))
    assert v.verdict == reg.REGRESSED and v.p_value < 0.05  # 0.024: 500 images' error is not averaged away


def test_an_older_file_without_test_images_borrows_the_other_sides():
    v = reg.accuracy_verdict(acc(0.698, images=None), acc(0.684))
    assert v.verdict == reg.OK and v.p_value == pytest.approx(0.632, abs=0.002)
    assert "baseline test_images taken from the run (older file)" in v.note


def test_one_seed_and_no_test_images_anywhere_says_it_could_not_test():
    v = reg.accuracy_verdict(acc(0.80, images=None), acc(0.79, images=None), floor=0.005, k=2)
    assert v.verdict == reg.REGRESSED and v.p_value is None
    assert "not tested for significance: neither file records test_images" in v.note
    assert reg.accuracy_verdict(acc(0.80, images=None), acc(0.797, images=None)).verdict == reg.OK


def test_pooled_std():
    assert reg.pooled_std(acc(0.5), acc(0.5)) == 0.0
    a, b = acc(0.1, 0.4, 0.7), acc(0.2, 0.6, 1.0)  # sample stds 0.3 and 0.4
    assert reg.pooled_std(a, b) == pytest.approx(((0.09 + 0.16) / 2) ** 0.5)


# ------------------------------------------------------------------ compare via the CLI
def test_identical_runs_pass(tmp_path, capsys, two_rows):
    base = write_run(tmp_path / "base.csv", two_rows)
    cur = write_run(tmp_path / "cur.csv", two_rows)
    code, out, _ = compare_cli(capsys, base, cur)
    assert code == 0
    assert "result: PASS" in out
    assert "ok lines hidden" in out
    assert "params" not in out  # ok lines are hidden by default
    code, out, _ = compare_cli(capsys, base, cur, "--all")
    assert code == 0
    assert line_for(out, "params", "-")[1:5] == ["-", "272,474", "272,474", "1.000"]
    assert line_for(out, "latency_ms_median", "1")[5] == "ok"
    assert line_for(out, "latency_ms_median", "1")[-2:] == ["report", "only"]


def test_tight_slowdown_reported_but_not_gating_by_default(tmp_path, capsys, two_rows):
    base = write_run(tmp_path / "base.csv", two_rows)
    slow = copy.deepcopy(two_rows)
    slow[1] = make_row(batch=8, latency=scaled(TIGHT, 1.2))
    cur = write_run(tmp_path / "cur.csv", slow)
    code, out, _ = compare_cli(capsys, base, cur)
    assert code == 0
    assert line_for(out, "latency_ms_median")[2:6] == ["10.09", "12.11", "1.200", "regressed"]
    assert line_for(out, "throughput_img_s")[5] == "regressed"
    assert "not gating" in out and "result: PASS" in out
    code, out, _ = compare_cli(capsys, base, cur, "--timings", "gate")
    assert code == 1
    assert "result: FAIL (2 regressed)" in out


def test_noisy_slowdown_is_tilde_even_when_gating(tmp_path, capsys):
    base = write_run(tmp_path / "base.csv", [make_row(latency=NOISY)])
    cur = write_run(tmp_path / "cur.csv", [make_row(latency=scaled(NOISY, 1.2))])
    code, out, _ = compare_cli(capsys, base, cur, "--timings", "gate")
    assert code == 0
    assert line_for(out, "latency_ms_median")[5] == "~"


def test_thresholds_from_sidecar_and_command_line(tmp_path, capsys):
    base = write_run(tmp_path / "base.csv", [make_row()], extra_meta={"thresholds": {"latency_ms_median": 0.5,
                                                                                      "throughput_img_s": 0.5}})
    cur = write_run(tmp_path / "cur.csv", [make_row(latency=scaled(TIGHT, 1.2))])
    code, out, _ = compare_cli(capsys, base, cur, "--timings", "gate")
    assert code == 0  # 20% is within the baseline's own 50%
    code, out, _ = compare_cli(capsys, base, cur, "--timings", "gate", "--threshold", "latency_ms_median=0.05")
    assert code == 1  # the command line wins for latency; throughput keeps 50%
    assert line_for(out, "latency_ms_median")[5] == "regressed"
    assert "throughput_img_s" not in out


def test_environment_mismatch_is_incomparable(tmp_path, capsys):
    base = write_run(tmp_path / "base.csv", [make_row()])
    env = copy.deepcopy(ENV)
    env["software"]["torch"] = "2.4.0"
    cur = write_run(tmp_path / "cur.csv", [make_row(latency=scaled(TIGHT, 1.5))], env=env)
    code, out, _ = compare_cli(capsys, base, cur, "--timings", "gate")
    assert code == 0
    fields = line_for(out, "latency_ms_median")
    assert fields[5] == "incomparable"
    assert "torch 2.3.0 vs 2.4.0" in out
    # thread count is part of the fingerprint too
    cur2 = write_run(tmp_path / "cur2.csv", [dict(make_row(latency=scaled(TIGHT, 1.5)), threads=4)])
    code, out, _ = compare_cli(capsys, base, cur2, "--timings", "gate")
    assert code == 0 and "threads 2 vs 4" in out


def test_missing_sidecar_makes_timings_incomparable(tmp_path, capsys):
    base = write_run(tmp_path / "base.csv", [make_row()])
    cur = write_run(tmp_path / "cur.csv", [make_row(latency=scaled(TIGHT, 1.5))])
    os.unlink(sidecar_path(cur))
    code, out, err = compare_cli(capsys, base, cur, "--timings", "gate")
    assert code == 0
    assert line_for(out, "latency_ms_median")[5] == "incomparable"
    assert "cur.json not found" in err


def test_missing_row_fails_and_new_row_does_not(tmp_path, capsys, two_rows):
    base = write_run(tmp_path / "base.csv", two_rows)
    cur = write_run(tmp_path / "cur.csv", two_rows[:1])
    code, out, _ = compare_cli(capsys, base, cur)
    assert code == 1
    assert line_for(out, "row")[2:6] == ["ok", "-", "-", "missing"]
    assert "result: FAIL (1 missing)" in out
    # the other way round: an extra row is new, which does not fail
    code, out, _ = compare_cli(capsys, cur, base)
    assert code == 0
    assert line_for(out, "row")[2:6] == ["-", "ok", "-", "new"]
    # a new cell is new too
    more = write_run(tmp_path / "more.csv", two_rows + [make_row(cell_id="c0ffee000002", variant="resnet32")])
    code, out, _ = compare_cli(capsys, base, more)
    assert code == 0 and "resnet32" in out and line_for(out, "row")[5] == "new"


def test_changed_deterministic_metrics_fail_unless_allowed(tmp_path, capsys, two_rows):
    base = write_run(tmp_path / "base.csv", two_rows)
    wider = [make_row(batch=1, params=272474 * 4, latency=scaled(TIGHT, 0.2)), make_row(batch=8, params=272474 * 4)]
    cur = write_run(tmp_path / "cur.csv", wider)
    code, out, _ = compare_cli(capsys, base, cur)
    assert code == 1
    assert line_for(out, "params", "-")[2:6] == ["272,474", "1,089,896", "4.000", "changed"]
    assert "result: FAIL (4 changed)" in out  # params, macs, flops, activations, once per cell
    code, out, _ = compare_cli(capsys, base, cur, "--allow-changed", "params", "--allow-changed", "macs")
    assert code == 1 and "result: FAIL (2 changed)" in out
    assert line_for(out, "params", "-")[5] == "allowed"
    code, out, _ = compare_cli(capsys, base, cur, *sum((["--allow-changed", m] for m in reg.EXACT_METRICS), []))
    assert code == 0


def test_smaller_params_is_a_change_too(tmp_path, capsys):
    base = write_run(tmp_path / "base.csv", [make_row()])
    cur = write_run(tmp_path / "cur.csv", [make_row(params=272473)])
    code, out, _ = compare_cli(capsys, base, cur)
    assert code == 1 and line_for(out, "params", "-")[5] == "changed"


def test_failed_cell_regresses_with_its_error(tmp_path, capsys, two_rows):
    base = write_run(tmp_path / "base.csv", two_rows)
    # a cell that failed as a whole has one row without a batch size; it stands for every batch
    failed = make_row(batch=None, status="error", error="RuntimeError: shapes do not match")
    cur = write_run(tmp_path / "cur.csv", [failed])
    code, out, _ = compare_cli(capsys, base, cur)
    assert code == 1
    for batch in ("1", "8"):
        assert line_for(out, "status", batch)[2:6] == ["ok", "error", "-", "regressed"]
    assert "RuntimeError: shapes do not match" in out
    assert "missing" not in out and "new" not in out
    # failed in the baseline and ok now: improved, not gating
    other = make_row(cell_id="c0ffee000002")
    code, out, _ = compare_cli(capsys, write_run(tmp_path / "b2.csv", [failed, other]),
                               write_run(tmp_path / "c2.csv", two_rows + [other]))
    assert code == 0
    assert "failed in the baseline; not in the current run" in out
    # a baseline in which every row failed can catch nothing: an error, not a pass
    _bad(capsys, ["compare", base, "--baseline", cur], "cur.csv", "no row with status ok")


def test_accuracy_through_the_cli(tmp_path, capsys):
    base = write_run(tmp_path / "base.csv", [make_row(acc_seeds=(0.80, 0.801, 0.799))])
    worse = write_run(tmp_path / "worse.csv", [make_row(acc_seeds=(0.78, 0.781, 0.779))])
    code, out, _ = compare_cli(capsys, base, worse)
    assert code == 1
    fields = line_for(out, "top1_acc", "-")
    assert fields[2:6] == ["0.8000", "0.7800", "0.975", "regressed"]
    assert "seeds 3 vs 3" in out
    # one seed on 500 images: 1.4 pp is sampling noise (the case of issue 11), 10 pp is not
    base1 = write_run(tmp_path / "base1.csv", [make_row(acc_seeds=(0.698,), test_images=500)])
    cur1 = write_run(tmp_path / "cur1.csv", [make_row(acc_seeds=(0.684,), test_images=500)])
    code, out, _ = compare_cli(capsys, base1, cur1, "--all")
    assert code == 0 and line_for(out, "top1_acc", "-")[5] == "ok"
    assert "-1.40 pp, p=0.63 (two-proportion z; 349/500 vs 342/500 correct)" in out
    cur2 = write_run(tmp_path / "cur2.csv", [make_row(acc_seeds=(0.598,), test_images=500)])
    code, out, _ = compare_cli(capsys, base1, cur2)
    assert code == 1 and line_for(out, "top1_acc", "-")[5] == "regressed"
    # a baseline from before test_images: the run's count is used, and the note says so
    old = write_run(tmp_path / "old.csv", [make_row(acc_seeds=(0.698,))])
    code, out, _ = compare_cli(capsys, old, cur1, "--all")
    assert code == 0 and "baseline test_images taken from the run (older file)" in out
    # accuracy gone from the current run: missing, which fails
    none = write_run(tmp_path / "none.csv", [make_row(acc_seeds=())])
    code, out, _ = compare_cli(capsys, base, none)
    assert code == 1 and line_for(out, "top1_acc", "-")[5] == "missing"


def test_baseline_by_name(tmp_path, capsys, two_rows):
    folder = tmp_path / "baselines"
    folder.mkdir()
    write_run(folder / "mine.csv", two_rows)
    cur = write_run(tmp_path / "cur.csv", two_rows)
    assert main(["compare", cur, "--baseline", "mine", "--dir", str(folder)]) == 0


# ------------------------------------------------------------------ bad input: one line, exit 2
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, two_rows):
    base = write_run(tmp_path / "base.csv", two_rows)
    cur = write_run(tmp_path / "cur.csv", two_rows)
    _bad(capsys, ["compare", str(tmp_path / "nope.csv"), "--baseline", base], "nope.csv", "no such results file")
    _bad(capsys, ["compare", cur, "--baseline", base, "--threshold", "latency_ms_median"], "METRIC=FRACTION")
    _bad(capsys, ["compare", cur, "--baseline", base, "--threshold", "latency_ms_median=-1"], "fraction > 0")
    _bad(capsys, ["compare", cur, "--baseline", base, "--threshold", "params=0.1"], "not a timing metric")
    _bad(capsys, ["compare", cur, "--baseline", base, "--allow-changed", "latency"], "not an exact metric")
    _bad(capsys, ["compare", cur, "--baseline", base, "--alpha", "2"], "--alpha")

    text = open(cur).read().replace("272474", "lots", 1)
    (tmp_path / "badnum.csv").write_text(text)
    _bad(capsys, ["compare", str(tmp_path / "badnum.csv"), "--baseline", base],
         "badnum.csv", "line 2", "column params", "expected a whole number >= 1, got 'lots'")

    rows = copy.deepcopy(two_rows)
    rows[0]["latency_samples_ms"] = "1.0;fast;2.0"
    _bad(capsys, ["compare", write_run(tmp_path / "badsamples.csv", rows), "--baseline", base],
         "badsamples.csv", "latency_samples_ms", "';'-separated finite numbers > 0")

    dup = write_run(tmp_path / "dup.csv", two_rows + two_rows[:1])
    _bad(capsys, ["compare", dup, "--baseline", base], "dup.csv", "lines 2 and 4", "the same row", "remove the copy")
    # the same configuration measured by two runs (a concatenation, not a resume): one run at a time
    two_runs = [dict(r, run_id="run-a") for r in two_rows] + [dict(two_rows[0], run_id="run-b")]
    _bad(capsys, ["compare", write_run(tmp_path / "tworuns.csv", two_runs), "--baseline", base],
         "tworuns.csv", "lines 2 and 4", "same configuration")

    (tmp_path / "notresults.csv").write_text("a,b\n1,2\n")
    _bad(capsys, ["compare", str(tmp_path / "notresults.csv"), "--baseline", base], "missing column(s) cell_id")

    bad_thr = write_run(tmp_path / "badthr.csv", two_rows, extra_meta={"thresholds": {"latency_ms_median": "x"}})
    _bad(capsys, ["compare", cur, "--baseline", bad_thr], "badthr.json: thresholds", "latency_ms_median")
    bad_thr2 = write_run(tmp_path / "badthr2.csv", two_rows, extra_meta={"thresholds": [0.1]})
    _bad(capsys, ["compare", cur, "--baseline", bad_thr2], "badthr2.json: thresholds", "expected a mapping")

    with open(sidecar_path(cur), "w") as f:
        f.write("{not json")
    _bad(capsys, ["compare", cur, "--baseline", base], "cur.json", "unreadable sidecar")


# ------------------------------------------------------------------ the baseline subcommand
def test_baseline_stores_refuses_overwrite_and_keeps_thresholds(tmp_path, capsys, two_rows):
    run = write_run(tmp_path / "run.csv", two_rows)
    folder = tmp_path / "baselines"
    assert main(["baseline", run, "--name", "cpu-quick", "--dir", str(folder),
                 "--threshold", "latency_ms_median=0.2"]) == 0
    out = capsys.readouterr().out
    assert "stored baseline 'cpu-quick': 2 rows" in out
    stored = folder / "cpu-quick.csv"
    assert stored.read_text() == open(run).read()
    meta = json.loads((folder / "cpu-quick.json").read_text())
    assert meta["environment"] == ENV
    assert meta["thresholds"] == {"latency_ms_median": 0.2}
    assert meta["baseline"]["name"] == "cpu-quick"

    err = _bad(capsys, ["baseline", run, "--name", "cpu-quick", "--dir", str(folder)], "exists", "--force")
    assert "cpu-quick.csv" in err
    # --force replaces the rows and keeps the thresholds someone tuned
    run2 = write_run(tmp_path / "run2.csv", two_rows[:1])
    assert main(["baseline", run2, "--name", "cpu-quick", "--dir", str(folder), "--force"]) == 0
    out = capsys.readouterr().out
    assert "1 rows" in out and "kept thresholds" in out
    assert json.loads((folder / "cpu-quick.json").read_text())["thresholds"] == {"latency_ms_median": 0.2}
    # and the stored baseline is immediately usable by compare
    assert main(["compare", run2, "--baseline", "cpu-quick", "--dir", str(folder)]) == 0


def test_baseline_bad_input(tmp_path, capsys, two_rows):
    run = write_run(tmp_path / "run.csv", two_rows)
    _bad(capsys, ["baseline", run, "--name", "../escape", "--dir", str(tmp_path)], "--name", "no path separators")
    _bad(capsys, ["baseline", str(tmp_path / "none.csv"), "--name", "x", "--dir", str(tmp_path / "b")],
         "none.csv", "no such results file")
    os.unlink(sidecar_path(run))
    _bad(capsys, ["baseline", run, "--name", "x", "--dir", str(tmp_path / "b")], "run.json", "no sidecar")
    assert not (tmp_path / "b").exists()


def test_baseline_warns_about_failed_rows(tmp_path, capsys):
    run = write_run(tmp_path / "run.csv", [make_row(), make_row(cell_id="c0ffee000002", batch=None,
                                                                status="error", error="boom")])
    facts = store_baseline(run, "w", str(tmp_path / "b"))
    assert facts["rows"] == 2 and facts["not_ok"] == 1
    with pytest.raises(UserError, match="exists"):
        store_baseline(run, "w", str(tmp_path / "b"))


def test_each_row_uses_the_environment_of_the_run_that_wrote_it(tmp_path, capsys):
    """A resumed file holds rows of two runs; only the row from the matching environment is comparable."""
    base = write_run(tmp_path / "base.csv", [make_row(batch=1), make_row(batch=8)])
    newer = copy.deepcopy(ENV)
    newer["software"]["torch"] = "2.4.0"
    rows = [dict(make_row(batch=1, latency=scaled(TIGHT, 1.5)), run_id="run-a"),
            dict(make_row(batch=8, latency=scaled(TIGHT, 1.5)), run_id="run-b")]
    runs = [{"run_id": "run-a", "environment": ENV}, {"run_id": "run-b", "environment": newer}]
    cur = write_run(tmp_path / "cur.csv", rows, env=newer, extra_meta={"runs": runs})
    code, out, _ = compare_cli(capsys, base, cur, "--timings", "gate")
    assert code == 1
    assert line_for(out, "latency_ms_median", "1")[5] == "regressed"
    assert line_for(out, "latency_ms_median", "8")[5] == "incomparable"


def test_compare_never_imports_torch_or_models(tmp_path):
    """Architecture rule: verdicts come from stored results only, so compare must not load torch or models."""
    import subprocess
    import sys

    rows = [make_row()]
    base = write_run(tmp_path / "base.csv", rows)
    cur = write_run(tmp_path / "cur.csv", rows)
    code = ("import sys; from bench.cli import main; rc = main(['compare', sys.argv[1], '--baseline', sys.argv[2]]); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'models')); "
            "print('loaded:', bad); sys.exit(rc or (3 if bad else 0))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code, cur, base], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "loaded: []" in proc.stdout


# ------------------------------------------------------------------ CPU provenance
def test_cpu_flags_are_read_from_cpuinfo():
    from bench.run.environment import cpu_flags

    text = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_1 avx2 avx512f avx512bw amx_tile amx_bf16\n"
    assert cpu_flags(text) == {"avx2": True, "avx512f": True, "avx512_bf16": False, "amx": True}
    assert cpu_flags("flags\t: fpu avx2\n") == {"avx2": True, "avx512f": False, "avx512_bf16": False, "amx": False}


def test_the_sidecar_records_the_isa_and_torch_cpu_capability():
    from bench.run.environment import cpu_info

    cpu = cpu_info()
    assert set(cpu["isa"]) == {"avx2", "avx512f", "avx512_bf16", "amx"}
    assert cpu["torch_cpu_capability"] in ("DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "NEON", "SVE256")
    assert set(cpu["isa_env"]) == {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"}


def test_same_cpu_model_with_another_isa_makes_timings_incomparable(tmp_path, capsys, two_rows):
    """"AMD EPYC" hides a 1.7x speed difference; the ISA and torch's capability tell the machines apart."""
    avx512 = copy.deepcopy(ENV)
    avx512["cpu"].update(isa={"avx2": True, "avx512f": True, "avx512_bf16": True, "amx": False},
                         torch_cpu_capability="AVX512")
    avx2 = copy.deepcopy(avx512)
    avx2["cpu"].update(isa=dict(avx512["cpu"]["isa"], avx512f=False, avx512_bf16=False),
                       torch_cpu_capability="AVX2")
    base = write_run(tmp_path / "base.csv", two_rows, env=avx512)
    slow = [make_row(batch=1, latency=scaled(TIGHT, 0.2 * 1.7)), make_row(batch=8, latency=scaled(TIGHT, 1.7))]
    code, out, _ = compare_cli(capsys, base, write_run(tmp_path / "cur.csv", slow, env=avx2), "--timings", "gate")
    assert code == 0
    fields = line_for(out, "latency_ms_median", "8")
    assert fields[5] == "incomparable"
    assert "cpu_capability AVX512 vs AVX2; isa_avx512_bf16 True vs False; isa_avx512f True vs False" in out
    # the same ISA on both sides: the 1.7x slowdown is a regression when timings gate
    code, out, _ = compare_cli(capsys, base, write_run(tmp_path / "same.csv", slow, env=avx512), "--timings", "gate")
    assert code == 1 and line_for(out, "latency_ms_median", "8")[5] == "regressed"


def test_a_huge_threshold_value_in_a_sidecar_is_named_in_a_short_message(tmp_path, capsys, two_rows):
    """A value is printed through checks.shown: a sidecar's 5,000-character string is not pasted whole."""
    cur = write_run(tmp_path / "cur.csv", two_rows)
    base = write_run(tmp_path / "base.csv", two_rows, extra_meta={"thresholds": {"latency_ms_median": "x" * 5000}})
    err = _bad(capsys, ["compare", cur, "--baseline", base], "base.json: thresholds: latency_ms_median: expected a "
                                                              "fraction > 0 such as 0.05, got 'xxxxxxxx")
    assert len(err) < 300
