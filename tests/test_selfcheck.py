"""The timer self-check compares the same statistic on both sides, allows for the measured spread, and still
catches a 10% disagreement. Synthetic samples: what they cannot show (that the two real timers agree on this
machine) is what `python -m benchmarks.selfcheck` shows."""
import random
import statistics

import pytest

from benchmarks.selfcheck import block_means, compare


def skewed_calls(rng, n, scale=10.0):
    """Per-call times of a loaded machine: mostly ~scale ms, one call in five delayed by up to 3x."""
    return [scale * (1 + (rng.uniform(0.5, 2.0) if rng.random() < 0.2 else rng.uniform(0, 0.05))) for _ in range(n)]


def rounds(rng, slowdown=1.0, k=10, n=60, rounds_=8):
    """Per round: the harness's per-call samples (x slowdown) and the timer's median of k-call means."""
    harness, timer = [], []
    for _ in range(rounds_):
        harness.append([x * slowdown for x in skewed_calls(rng, n)])
        timer.append(statistics.median(block_means(skewed_calls(rng, n * k), k)))
    return harness, timer


def test_block_means_average_consecutive_blocks_and_drop_a_partial_one():
    assert block_means([1, 2, 3, 4, 5, 6, 7], 3) == [2, 5]
    assert block_means([1, 2, 3], 1) == [1, 2, 3]
    assert block_means([1, 3], 5) == [2]  # fewer samples than a block: their mean
    with pytest.raises(ValueError):
        block_means([1.0], 0)


def test_the_median_per_call_and_the_median_of_block_means_part_on_a_skewed_distribution():
    # the old self-check's mistake: the same timer, two statistics, 6% apart
    harness, timer = rounds(random.Random(0))
    per_call = [statistics.median(h) for h in harness]
    assert not compare(per_call, timer, tolerance=0.05, max_allowance=0.03).ok
    assert compare(per_call, timer, 0.05, 0.03).ratio < 0.93


def test_the_same_statistic_on_both_sides_agrees_on_the_same_skewed_distribution():
    harness, timer = rounds(random.Random(1))
    matched = [statistics.median(block_means(h, 10)) for h in harness]
    verdict = compare(matched, timer, tolerance=0.05, max_allowance=0.03)
    assert verdict.ok and abs(verdict.ratio - 1) < 0.03 and verdict.interval[0] < 1 < verdict.interval[1]


def test_an_injected_10_percent_slowdown_fails_even_with_the_largest_allowance():
    harness, timer = rounds(random.Random(2), slowdown=1.10)
    matched = [statistics.median(block_means(h, 10)) for h in harness]
    verdict = compare(matched, timer, tolerance=0.05, max_allowance=0.03)
    assert not verdict.ok and verdict.ratio > 1.08 and verdict.allowance <= 0.03


def test_the_allowance_is_the_intervals_half_width_capped():
    # ratios 0.99 .. 1.01 over 8 rounds: the sign-test interval at n = 8 is the 1st..8th, half-width 0.01
    ratios = [0.99, 0.995, 1.0, 1.0, 1.0, 1.0, 1.005, 1.01]
    verdict = compare(ratios, [1.0] * 8, tolerance=0.05, max_allowance=0.03)
    assert verdict.allowance == pytest.approx(0.01) and verdict.ok
    wide = compare([0.8, 0.9, 1.0, 1.0, 1.0, 1.1, 1.2, 1.3], [1.0] * 8, tolerance=0.05, max_allowance=0.03)
    assert wide.allowance == 0.03  # a spread of 25% does not excuse a 10% gap
    assert compare([1.09] * 3, [1.0] * 3, 0.05, 0.03).allowance == 0.03  # too few rounds: the cap
    assert not compare([1.09] * 3, [1.0] * 3, 0.05, 0.03).ok


def test_rounds_spread_beyond_25_percent_are_inconclusive_not_a_disagreement():
    # two threads on two busy cores: the per-round ratios ranged 0.24..2.9
    verdict = compare([0.24, 0.5, 0.7, 0.9, 1.3, 2.9], [1.0] * 6, tolerance=0.05, max_allowance=0.03)
    assert not verdict.ok and not verdict.conclusive and verdict.label.startswith("INCONCLUSIVE")
    assert compare([1.2] * 6, [1.0] * 6, 0.05, 0.03).label == "DISAGREE"
