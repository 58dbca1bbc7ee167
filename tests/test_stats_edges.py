"""NaN and n = 1 in the statistics helpers: defined behaviour or a one-line error, checked against numpy/scipy
where they have the function."""
import math

import numpy as np
import pytest

from bench.measure import stats
from bench.measure.paired import median_interval

NAN = float("nan")


@pytest.mark.parametrize("order", [[NAN, 1.0, 2.0, 3.0], [1.0, 2.0, NAN, 3.0], [3.0, 2.0, 1.0, NAN]])
def test_a_nan_timing_is_refused_whatever_its_place(order):
    for fn in (stats.median, stats.iqr, stats.mean, stats.std, stats.summarize):
        with pytest.raises(ValueError, match="containing NaN"):
            fn(order)


def test_one_sample_has_a_defined_median_and_zero_spread():
    s = stats.summarize([4.0])
    assert (s.n, s.median, s.p90, s.iqr, s.cv) == (1, 4.0, 4.0, 0.0, 0.0)
    assert stats.median([4.0]) == np.median([4.0])


def test_the_median_interval_refuses_nan_and_covers_at_its_stated_level():
    from scipy.stats import binom

    with pytest.raises(ValueError, match="containing NaN"):
        median_interval([1.0, 2.0, NAN, 3.0, 4.0, 5.0, 6.0])
    for n in (6, 10, 25):
        lo, hi = median_interval(list(range(1, n + 1)), 0.95)
        k = int(lo)  # values 1..n: the interval's low end is its rank
        assert hi == n + 1 - k
        assert 1 - 2 * binom.cdf(k - 1, n, 0.5) >= 0.95  # P(k-th smallest <= median <= k-th largest)
        assert 1 - 2 * binom.cdf(k, n, 0.5) < 0.95  # and k is the largest such rank
    assert median_interval([1.0], 0.95) is None and not math.isnan(stats.median([1.0]))
