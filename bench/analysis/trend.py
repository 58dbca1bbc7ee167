"""The trend of accuracy over an ordered setting (cardinality 1, 4, 8, 32, say), with the test set's error.

The statistic is the least-squares slope of the per-seed accuracies on log2 of the setting (on the
setting itself when a value is not positive). Because x is constant within a level, that slope is a
fixed linear combination of the level means, sum_k c_k m_k (:func:`slope_weights`), so its error comes
from two places: the seeds (each model's training noise) and the test set (the 10,000 images every
seed of every model is scored on). A permutation of per-seed accuracies across levels sees only the
first and so gives too small a p; both tests here carry both.

* :func:`paired_trend_test`: with per-image records for every level (``RUN.images.csv``), a bootstrap
  over the test images (one draw shared by all levels, so what they have in common cancels) and over
  each level's seeds, as :func:`bench.analysis.paired_images.paired_test` does for a pair;
* :func:`seed_trend_test`: without them, a t test on the slope whose variance adds each level's seed
  variance s_k^2 / n_k and its test-set error p_k (1 - p_k) / images, Welch-Satterthwaite degrees of
  freedom from the seed parts only (as :func:`bench.analysis.verdicts.seed_mean_test`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from bench.analysis.paired_images import (LEVEL, N_BOOT, ImageRecord, bootstrap_floor, bootstrap_p, image_totals,
                                          resampled_mean, seed_scale)
from bench.analysis.verdicts import AccuracySample, satterthwaite_dof


@dataclass(frozen=True)
class TrendResult:
    setting: str
    levels: Tuple[float, ...]
    means: Tuple[float, ...]  # mean accuracy per level, in the order given
    slope: float  # accuracy (fraction) per unit of log2(level) (a doubling), or per unit of the level
    low: float  # LEVEL interval of the slope
    high: float
    log2: bool
    p_value: float
    test_name: str  # "paired bootstrap slope" or "Welch t on the slope"
    detail: str
    p_floor: float = 0.0  # the smallest p the test can give (a bootstrap's: 2 / (resamples + 1))

    @property
    def monotone(self) -> bool:
        """The level means rise (or fall) at every step."""
        steps = np.diff(self.means)
        return bool(np.all(steps > 0) or np.all(steps < 0))


def slope_weights(levels: Sequence[float], seeds: Sequence[int]) -> Tuple[np.ndarray, bool]:
    """(c, log2): the least-squares slope of per-seed accuracies on x is sum_k c_k * mean_k, where level k
    has ``seeds[k]`` seeds at x_k = log2(level_k) (the level itself when one is not positive):
    c_k = n_k (x_k - xbar) / Sxx, xbar and Sxx over the seeds. ValueError with fewer than 3 levels, a
    level without seeds, or levels that are all equal."""
    if len(levels) < 3 or len(levels) != len(seeds) or any(n < 1 for n in seeds):
        raise ValueError(f"a trend test needs 3 or more levels, each with seeds; got {len(levels)} level(s)")
    log2 = all(float(v) > 0 for v in levels)
    x = np.array([math.log2(v) if log2 else float(v) for v in levels])
    n = np.asarray(seeds, dtype=float)
    centred = x - (n @ x) / n.sum()
    sxx = float(n @ centred ** 2)
    if sxx == 0:
        raise ValueError("a trend test needs levels that differ")
    return n * centred / sxx, log2


def paired_trend_test(setting: str, levels: Sequence[float], records: Sequence[ImageRecord],
                      totals: Optional[Sequence[np.ndarray]] = None, n_boot: int = N_BOOT, level: float = LEVEL,
                      seed: int = 0) -> TrendResult:
    """The slope over ``levels``, each with its model's per-image record, and its paired bootstrap.

    Each resample draws the test images once for all levels (``totals``: their
    :func:`~bench.analysis.paired_images.image_totals`, when a family computed them already) and each
    level's seeds, scaled by :func:`~bench.analysis.paired_images.seed_scale` so the image noise is not
    counted twice. Interval: percentiles of the resampled slopes; p: their inversion
    (:func:`~bench.analysis.paired_images.bootstrap_p`). ValueError when the records were scored on
    different test sets."""
    if len({(r.test_set, r.images) for r in records}) != 1:
        raise ValueError("refusing a paired trend over accuracies scored on different test sets")
    c, log2 = slope_weights(levels, [r.correct.shape[0] for r in records])
    totals = list(totals) if totals is not None else image_totals(records, n_boot, seed)
    rng = np.random.default_rng(seed + 1)
    images = records[0].images
    slopes = sum(w * resampled_mean(t, rng, seed_scale(r)) / images for w, t, r in zip(c, totals, records))
    means = [float(r.correct.mean()) for r in records]
    tail = (1 - level) / 2
    low, high = (float(q) for q in np.quantile(slopes, [tail, 1 - tail]))
    seeds = sorted({r.correct.shape[0] for r in records})
    return TrendResult(setting, _floats(levels), tuple(means), float(c @ means), low, high, log2,
                       bootstrap_p(slopes), "paired bootstrap slope",
                       f"least-squares slope on {_unit(setting, log2)}, {images:,} images x "
                       f"{'/'.join(map(str, seeds))} seeds, {len(slopes):,} resamples of both",
                       bootstrap_floor(len(slopes)))


def seed_trend_test(setting: str, levels: Sequence[float], samples: Sequence[AccuracySample],
                    level: float = LEVEL) -> TrendResult:
    """The slope over ``levels`` from each level's per-seed accuracies, and its t test.

    var(slope) = sum_k c_k^2 (s_k^2 / n_k + p_k (1 - p_k) / images_k). The test-set term is counted as
    if each model's error were independent; models scored on the same images err together, so the
    true variance of a contrast is smaller and this test is conservative (the paired test removes it).
    Degrees of freedom: Welch-Satterthwaite from the seed terms alone, since the test-set term is known,
    not estimated. Needs 2 or more seeds per level (ValueError otherwise)."""
    from scipy.stats import t as student_t

    if any(s.n < 2 for s in samples):
        raise ValueError("a trend test without per-image records needs 2 or more seeds per level, got "
                         f"{'/'.join(str(s.n) for s in samples)}")
    c, log2 = slope_weights(levels, [s.n for s in samples])
    seed_terms = np.array([w * w * s.std ** 2 / s.n for w, s in zip(c, samples)])
    test_terms = np.array([w * w * s.test_set_variance for w, s in zip(c, samples)])
    dof = satterthwaite_dof([(float(v), s.n) for v, s in zip(seed_terms, samples)])
    means = [s.mean for s in samples]
    slope = float(c @ means)
    se = math.sqrt(float(seed_terms.sum() + test_terms.sum()))
    p = (1.0 if slope == 0 else 0.0) if se == 0 else float(2 * student_t.sf(abs(slope) / se, dof))
    half = float(student_t.isf((1 - level) / 2, dof)) * se
    error = "test-set error added" if all(s.test_images for s in samples) else "seed spread only: test_images unknown"
    return TrendResult(setting, _floats(levels), tuple(means), slope, slope - half, slope + half, log2, p,
                       "Welch t on the slope", f"least-squares slope on {_unit(setting, log2)}, seeds "
                                               f"{'/'.join(str(s.n) for s in samples)}, df {dof:.1f}, {error}")


def _unit(setting: str, log2: bool) -> str:
    return f"log2 {setting}" if log2 else setting


def _floats(levels: Sequence[float]) -> Tuple[float, ...]:
    return tuple(float(v) for v in levels)
