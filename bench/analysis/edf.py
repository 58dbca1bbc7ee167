"""Design-space statistics: empirical distribution functions (EDFs) of sampled variants, compared.

Pure numpy/scipy/pandas over result rows, as in Radosavovic et al.,
"Designing Network Design Spaces" (pycls ``sweep/analysis.py``): a space is
judged by the distribution of its members' error, not by its best member.
Here the same is done for speed: batch-1 latency per GMAC and throughput per
GMAC (GMAC/s: images/s x GMACs per image), per device and precision.

* :func:`edf` / :func:`edf_at`: F(x) = share of values <= x.
* :func:`dkw_band`: a simultaneous band of F (Dvoretzky-Kiefer-Wolfowitz), valid at any n.
* :func:`compare_groups`: two-sample Kolmogorov-Smirnov test for every pair of
  groups, Holm-adjusted over the pairs; "differ" means adjusted p < alpha.
* :func:`trend`: least-squares error = a + b log10(MACs) per group.
* :func:`space_points`: one row per sampled variant (training and speed rows
  joined on ``variant_id``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
import pandas as pd

ALPHA = 0.05
BAND_LEVEL = 0.95
SAMPLE_ORIGIN = "sample["  # how the grid loader names a sampled cell's origin


# ------------------------------------------------------------------ EDFs
def edf(values: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted values and F at each: (i + 1) / n."""
    x = np.sort(np.asarray(values, dtype=float))
    return x, np.arange(1, len(x) + 1) / len(x)


def edf_at(values: Sequence[float], grid: Sequence[float]) -> np.ndarray:
    """F(grid): the share of values <= each grid point."""
    x = np.sort(np.asarray(values, dtype=float))
    return np.searchsorted(x, np.asarray(grid, dtype=float), side="right") / len(x)


def dkw_epsilon(n: int, level: float = BAND_LEVEL) -> float:
    """Half-width of the Dvoretzky-Kiefer-Wolfowitz band: sqrt(ln(2 / (1 - level)) / (2n)).

    With Massart's constant the band F_n +/- epsilon holds the true F everywhere at once with probability
    at least ``level`` for every n (not only asymptotically): 0.78 at n = 3, 0.45 at n = 9, 0.25 at n = 30
    for 95%. ValueError for n < 1 or a level outside (0, 1)."""
    if n < 1 or not 0 < level < 1:
        raise ValueError(f"a DKW band needs n >= 1 and 0 < level < 1, got n={n}, level={level}")
    return math.sqrt(math.log(2 / (1 - level)) / (2 * n))


def dkw_band(values: Sequence[float], grid: Sequence[float],
             level: float = BAND_LEVEL) -> Tuple[np.ndarray, np.ndarray]:
    """Simultaneous ``level`` confidence band of F on ``grid``: the EDF +/- :func:`dkw_epsilon`, clipped to 0..1.

    A pointwise bootstrap band (what this replaced) covered the true F in 75% of samples at n = 3 and 91%
    at n = 9, against a nominal 95%: resampling 3 values cannot show how far off 3 values can be."""
    x = np.asarray(values, dtype=float)
    if np.isnan(x).any():
        raise ValueError("a DKW band of values containing NaN")
    eps = dkw_epsilon(len(x), level)
    f = edf_at(x, grid)
    return np.clip(f - eps, 0, 1), np.clip(f + eps, 0, 1)


# ------------------------------------------------------------------ groups
def cardinality_bin(cardinality: float) -> str:
    """Power-of-two bins: 1, 2-3, 4-7, ...; labelled by the bin's range."""
    c = int(cardinality)
    lo = 1 << (c.bit_length() - 1)
    return str(lo) if lo == 1 else f"{lo}-{2 * lo - 1}"


def group_labels(points: pd.DataFrame, by: str) -> pd.Series:
    """The group of each point: cardinality in power-of-two bins, any other setting by value."""
    if by == "cardinality":
        labels = points["cardinality"].map(cardinality_bin)
        # a bin that holds a single value is named by it (C=4, not C=4-7)
        for label, members in points.groupby(labels)["cardinality"]:
            if members.nunique() == 1:
                labels[labels == label] = str(int(members.iloc[0]))
        return labels
    return points[by].map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))


def group_order(labels: Iterable[str]) -> List[str]:
    """Numeric order where the labels start with numbers (1, 2, 4-7, 16), else text order."""
    def key(label: str):
        head = label.split("-")[0]
        try:
            return (0, float(head), label)
        except ValueError:
            return (1, 0.0, label)
    return sorted(set(labels), key=key)


@dataclass(frozen=True)
class GroupDifference:
    a: str
    b: str
    n_a: int
    n_b: int
    statistic: float  # KS D: the largest vertical gap between the two EDFs
    p_value: float
    p_adjusted: float  # Holm over all pairs
    differ: bool


def compare_groups(groups: Dict[str, Sequence[float]], alpha: float = ALPHA,
                   min_size: int = 2) -> List[GroupDifference]:
    """Two-sample KS test for each pair of groups with at least ``min_size`` values, Holm-adjusted."""
    from scipy import stats  # only reports with sampled cells pay for importing it

    names = [g for g in groups if len(groups[g]) >= min_size]
    raw = []
    for a, b in combinations(names, 2):
        result = stats.ks_2samp(groups[a], groups[b])
        raw.append((a, b, float(result.statistic), float(result.pvalue)))
    adjusted = holm([p for *_, p in raw])
    return [GroupDifference(a, b, len(groups[a]), len(groups[b]), d, p, q, q < alpha)
            for (a, b, d, p), q in zip(raw, adjusted)]


def holm(p_values: Sequence[float]) -> List[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    ValueError for a p that is NaN or outside 0..1: an untested comparison must be left out of the family
    by the caller (and said so), not silently counted as p = 1 or sorted anywhere."""
    bad = [p for p in p_values if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0)]
    if bad:
        raise ValueError(f"holm: p-value {bad[0]!r} is not a probability in 0..1")
    m = len(p_values)
    order = np.argsort(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Trend:
    slope: float  # error change per decade of MACs
    intercept: float
    n: int

    def at(self, macs: np.ndarray) -> np.ndarray:
        return self.intercept + self.slope * np.log10(macs)


def trend(macs: Sequence[float], error: Sequence[float]) -> Optional[Trend]:
    """Least-squares line of error on log10(MACs); None with fewer than 3 points or one MAC value."""
    x, y = np.log10(np.asarray(macs, dtype=float)), np.asarray(error, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return Trend(float(slope), float(intercept), len(x))


# ------------------------------------------------------------------ points
NUMERIC = ("macs", "params", "activations", "cardinality", "batch_size", "latency_ms_median", "throughput_img_s",
           "top1_acc", "top1_acc_std", "n_seeds", "test_images", "threads")


def sampled_cells(sidecars: Iterable[Optional[dict]]) -> Tuple[Set[str], Optional[str]]:
    """Cell ids the sidecars say were drawn from a design space, and the space's ``group_by`` (if any)."""
    ids: Set[str] = set()
    group_by = None
    for side in sidecars:
        if not isinstance(side, dict):
            continue
        cells = side.get("cells") or {c.get("cell_id"): c for c in (side.get("grid") or {}).get("cells", [])}
        ids |= {cid for cid, c in cells.items() if str((c or {}).get("origin", "")).startswith(SAMPLE_ORIGIN)}
        sample = ((side.get("grid") or {}).get("source") or {}).get("sample")
        if isinstance(sample, dict) and isinstance(sample.get("group_by"), str):
            group_by = sample["group_by"]
    return ids, group_by


def numeric_rows(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.copy()
    for col in NUMERIC:
        rows[col] = pd.to_numeric(rows[col], errors="coerce") if col in rows.columns else np.nan
    for col in ("device", "device_name", "precision", "variant", "variant_id"):
        if col not in rows.columns:
            rows[col] = None
    rows["variant_id"] = rows["variant_id"].where(rows["variant_id"].notna(), rows["variant"])
    return rows


def accuracy_points(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per variant with an accuracy: error = 1 - mean top-1 (averaged over the cells that trained it)."""
    rows = numeric_rows(rows)
    trained = rows[rows["top1_acc"].notna()]
    out = trained.groupby("variant_id", sort=False).agg(
        variant=("variant", "first"), cardinality=("cardinality", "first"), macs=("macs", "first"),
        params=("params", "first"), top1_acc=("top1_acc", "mean"), n_seeds=("n_seeds", "max"),
        test_images=("test_images", "max")).reset_index()
    out["error"] = 1 - out["top1_acc"]
    return out


def speed_points(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (device, device name, precision, threads, variant) with batch-1 latency and the largest
    batch's throughput, and both per GMAC."""
    rows = numeric_rows(rows)
    rows["threads"] = rows["threads"].fillna(0)
    timed = rows[rows["latency_ms_median"].notna() & rows["batch_size"].notna()]
    records = []
    keys = ["device", "device_name", "precision", "threads", "variant_id"]
    for key, group in timed.groupby(keys, sort=False, dropna=False):
        one = group[group["batch_size"] == 1]
        big = group.loc[group["batch_size"].idxmax()]
        first = group.iloc[0]
        records.append({**dict(zip(keys, key)), "variant": first["variant"], "cardinality": first["cardinality"],
                        "macs": first["macs"], "params": first["params"], "activations": first["activations"],
                        "latency_bs1_ms": one["latency_ms_median"].iloc[0] if len(one) else np.nan,
                        "throughput_img_s": big["throughput_img_s"], "throughput_bs": big["batch_size"]})
    out = pd.DataFrame.from_records(records, columns=keys + [
        "variant", "cardinality", "macs", "params", "activations", "latency_bs1_ms", "throughput_img_s",
        "throughput_bs"])
    gmacs = out["macs"] / 1e9
    out["ms_per_gmac"] = out["latency_bs1_ms"] / gmacs
    out["gmac_per_s"] = out["throughput_img_s"] * gmacs
    return out


def binomial_se(accuracy: float, test_images: float) -> float:
    """Standard error of a test accuracy from the finite test set alone (sampling error), fraction."""
    if not test_images or math.isnan(test_images):
        return math.nan
    return math.sqrt(accuracy * (1 - accuracy) / test_images)
