"""Pareto frontiers: which points no other point beats on every objective at once.

A point *a* dominates *b* when *a* is at least as good as *b* on every
objective and strictly better on at least one ("good" = smaller for a cost,
larger for a gain). The frontier is the set of points nothing dominates.

Rules worth knowing, because every report table depends on them:

* Exact duplicates (equal on every objective) do not dominate each other, so
  all copies stay on the frontier when one of them would: two measurements
  that tie are both shown rather than one picked arbitrarily.
* A tie on one objective is broken by the others: of two points with the same
  cost, only the one with the larger gain survives.
* Any number of objectives works; with one objective the frontier is simply
  every point that attains the best value.
* NaN has no order, so it is refused (``ValueError``); callers drop
  incomplete points first and say so. Infinities are ordinary values.

Pure Python + numpy, no plotting and no I/O.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

MINIMIZE = "min"
MAXIMIZE = "max"
_SENSES = (MINIMIZE, MAXIMIZE)


def _as_costs(points: Sequence[Sequence[float]], senses: Sequence[str]) -> np.ndarray:
    """The points as an (n, k) array in which every column is a cost (smaller is better)."""
    if not senses:
        raise ValueError("pareto: need at least one objective")
    bad = [s for s in senses if s not in _SENSES]
    if bad:
        raise ValueError(f"pareto: objective senses must be 'min' or 'max', got {bad}")
    arr = np.asarray(points, dtype=float)
    if arr.size == 0:
        return arr.reshape(0, len(senses))
    if arr.ndim != 2 or arr.shape[1] != len(senses):
        raise ValueError(f"pareto: expected points with {len(senses)} value(s) each, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("pareto: NaN among the points; drop incomplete points before computing a frontier")
    # Negating a gain turns "larger is better" into "smaller is better", so one rule serves both.
    flip = np.array([-1.0 if s == MAXIMIZE else 1.0 for s in senses])
    return arr * flip


def dominates(a: Sequence[float], b: Sequence[float], senses: Sequence[str]) -> bool:
    """True when ``a`` is no worse than ``b`` on every objective and better on at least one."""
    ca, cb = _as_costs([a, b], senses)
    return bool(np.all(ca <= cb) and np.any(ca < cb))


def pareto_front(points: Sequence[Sequence[float]], senses: Sequence[str]) -> List[int]:
    """Indices (ascending, into ``points``) of the non-dominated points.

    ``points`` is a sequence of equal-length value tuples; ``senses`` gives, per
    objective, ``"min"`` for a cost or ``"max"`` for a gain.
    """
    costs = _as_costs(points, senses)
    keep: List[int] = []
    # O(n^2 k) comparisons: result tables hold tens to a few thousand cells, where
    # this takes milliseconds and is easy to check by eye, unlike sweep algorithms.
    for i in range(costs.shape[0]):
        no_worse = np.all(costs <= costs[i], axis=1)
        better = np.any(costs < costs[i], axis=1)
        if not np.any(no_worse & better):
            keep.append(i)
    return keep
