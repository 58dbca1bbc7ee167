"""Statistics over timing samples, checked against numpy on known samples."""
import math

import numpy as np
import pytest

from bench.measure import stats
from bench.results import samples


SAMPLES = [10.0, 12.0, 11.0, 13.0, 50.0, 11.5, 10.5, 12.5, 11.0, 10.0]


@pytest.mark.parametrize("q", [0, 10, 25, 50, 75, 90, 95, 100])
def test_percentile_matches_numpy_linear(q):
    assert stats.percentile(SAMPLES, q) == pytest.approx(np.percentile(SAMPLES, q))


def test_summary_on_known_samples():
    s = stats.summarize(SAMPLES)
    assert s.n == 10
    assert s.median == pytest.approx(11.25)
    assert s.iqr == pytest.approx(np.percentile(SAMPLES, 75) - np.percentile(SAMPLES, 25))
    assert s.p90 == pytest.approx(np.percentile(SAMPLES, 90))
    assert s.cv == pytest.approx(np.std(SAMPLES, ddof=1) / np.mean(SAMPLES))
    # the outlier moves the mean a lot and the median not at all
    assert stats.median(SAMPLES[:4] + SAMPLES[5:]) == pytest.approx(11.0)


def test_noisy_flag_threshold():
    tight = [100.0, 101.0, 99.0, 100.5, 99.5]
    assert not stats.summarize(tight).noisy
    # IQR / median just above 10%
    wide = [90.0, 94.0, 100.0, 105.0, 110.0]
    assert stats.relative_iqr(wide) > 0.10 and stats.summarize(wide).noisy


def test_single_sample_and_empty():
    s = stats.summarize([5.0])
    assert (s.median, s.iqr, s.cv, s.noisy) == (5.0, 0.0, 0.0, False)
    with pytest.raises(ValueError):
        stats.summarize([])


def test_columns_and_sample_round_trip():
    cols = stats.summarize(SAMPLES).as_columns("latency")
    assert set(cols) == {"latency_ms_median", "latency_ms_p90", "latency_ms_iqr", "latency_cv", "latency_noisy",
                         "latency_n"}
    text = samples.format_samples([1.23456789, 2.0, 1e-4])
    assert samples.parse_samples(text) == pytest.approx([1.23457, 2.0, 1e-4])
    assert samples.parse_samples("") == [] and samples.parse_samples(math.nan) == []
