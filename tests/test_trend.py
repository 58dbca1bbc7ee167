"""The trend test over an ordered setting: hand-made levels with known slopes, the pair tests it must
reduce to, and a simulation showing it carries the test set's sampling error (where a test on the
seeds' accuracies alone does not)."""
import numpy as np
import pytest

from bench.analysis.paired_images import ImageRecord, image_totals, paired_test
from bench.analysis.trend import paired_trend_test, seed_trend_test, slope_weights
from bench.analysis.verdicts import AccuracySample, seed_mean_test


def record(*seeds, test_set="t"):
    return ImageRecord(test_set, tuple(range(len(seeds))), np.array(seeds, dtype=bool))


def test_the_slope_weights_give_the_least_squares_slope_of_the_per_seed_accuracies():
    c, log2 = slope_weights([1, 2, 4], [1, 1, 1])
    assert log2 and c == pytest.approx([-0.5, 0.0, 0.5])  # x = 0, 1, 2: Sxx = 2
    levels, seeds = [1, 4, 8, 32], [[0.68, 0.69], [0.70, 0.71, 0.72], [0.71], [0.72, 0.70, 0.71, 0.73]]
    c, _ = slope_weights(levels, [len(s) for s in seeds])
    x = np.concatenate([[np.log2(v)] * len(s) for v, s in zip(levels, seeds)])
    assert c @ [np.mean(s) for s in seeds] == pytest.approx(np.polyfit(x, np.concatenate(seeds), 1)[0])
    c, log2 = slope_weights([0, 1, 2], [1, 1, 1])  # a value that is not positive: the setting itself
    assert not log2 and c == pytest.approx([-0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="3 or more levels"):
        slope_weights([1, 32], [1, 1])
    with pytest.raises(ValueError, match="levels that differ"):
        slope_weights([4, 4, 4], [1, 1, 1])


def test_the_seed_trend_over_three_symmetric_levels_is_the_welch_test_of_the_outer_two():
    from scipy.stats import ttest_ind

    low, mid, high = (0.680, 0.684, 0.690), (0.70, 0.69, 0.71), (0.712, 0.716, 0.709)
    plain = seed_trend_test("cardinality", [1, 2, 4], [AccuracySample(s) for s in (low, mid, high)])
    assert plain.slope == pytest.approx((np.mean(high) - np.mean(low)) / 2)  # the middle level weighs 0
    assert plain.p_value == pytest.approx(ttest_ind(high, low, equal_var=False).pvalue)
    samples = [AccuracySample(s, test_images=10_000) for s in (low, mid, high)]
    added = seed_trend_test("cardinality", [1, 2, 4], samples)
    outer = seed_mean_test(samples[0], samples[2], 0.05)
    assert added.p_value == pytest.approx(outer.p_value) and added.p_value > plain.p_value
    assert added.low < added.slope < added.high and added.test_name == "Welch t on the slope"
    assert "test-set error added" in added.detail and "seed spread only" in plain.detail
    with pytest.raises(ValueError, match="2 or more seeds per level"):
        seed_trend_test("cardinality", [1, 2, 4], [AccuracySample((0.7,)), *samples[1:]])


def test_the_paired_trend_over_three_symmetric_levels_is_half_the_paired_test_of_the_outer_two():
    rng = np.random.default_rng(3)
    a, b, c = (rng.random(500) < p for p in (0.6, 0.65, 0.7))
    # two equal seeds per level: a bootstrap p on both sides (McNemar is for one seed), no seed effect
    records = [record(a, a), record(b, b), record(c, c)]
    totals = image_totals(records, n_boot=400)
    trend = paired_trend_test("cardinality", [1, 2, 4], records, totals)
    pair = paired_test(records[0], records[2], totals=(totals[0], totals[2]))
    assert trend.slope == pytest.approx(pair.difference / 2)
    assert (trend.low, trend.high) == pytest.approx((pair.low / 2, pair.high / 2))
    assert trend.p_value == pytest.approx(pair.p_value) and trend.test_name == "paired bootstrap slope"
    assert "500 images x 2 seeds, 400 resamples" in trend.detail
    with pytest.raises(ValueError, match="different test sets"):
        paired_trend_test("cardinality", [1, 2, 4], [record(a), record(b), record(c, test_set="u")])


def test_the_paired_trend_carries_the_test_sets_error_that_a_test_on_seeds_alone_misses():
    # Three models of equal true accuracy (0.7), each right on its own random 70% of the images, seeds
    # differing by a few flipped images: every difference between them is the test sample's, not a trend.
    rng = np.random.default_rng(0)
    paired_rejects = seeds_only_rejects = 0
    runs = 30
    for _ in range(runs):
        models = []
        for _level in range(3):
            base = rng.random(1500) < 0.7
            models.append(record(*[base ^ (rng.random(1500) < 0.01) for _ in range(3)]))
        paired_rejects += paired_trend_test("c", [1, 2, 4], models, n_boot=400).p_value < 0.05
        seeds = [AccuracySample(m.seed_accuracies) for m in models]
        seeds_only_rejects += seed_trend_test("c", [1, 2, 4], seeds).p_value < 0.05
    assert seeds_only_rejects / runs > 0.5  # the seeds agree closely, so the sample's luck looks like a trend
    assert paired_rejects / runs <= 0.2  # nominal 0.05; 30 runs give 0.2 as a loose upper bound
