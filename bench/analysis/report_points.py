"""Report points, frontiers and joins: result rows in, pandas tables out. No drawing, no Markdown, no I/O.

The steps :mod:`bench.analysis.reports` composes:

* :func:`cell_points` reduces the ``status == ok`` rows to one *point* per
  measured cell: batch-1 latency, throughput and peak memory at the cell's
  largest batch, complexity and accuracy;
* :func:`assign_groups` splits them by (device, device name, precision), so
  timings from different hardware or precisions never share a frontier;
* :func:`frontier` marks the Pareto frontier of one pair of axes;
* :func:`cardinality_sets` finds variants of equal MACs and different cardinality.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from bench.analysis.pareto import MAXIMIZE, MINIMIZE, pareto_front

POINT_KEY = ("group", "source", "run_id", "cell_id")
# Cardinality comparison: MACs of the members within this fraction of the smallest.
EQUAL_MACS_TOLERANCE = 0.05


# --------------------------------------------------------------------------- metrics and axis pairs


@dataclass(frozen=True)
class Metric:
    column: str  # column of the point table
    label: str  # axis label, with unit
    short: str  # name in titles and table headers
    sense: str  # MINIMIZE for a cost, MAXIMIZE for a gain
    scale: float = 1.0  # stored value x scale = displayed value
    fmt: str = ".3g"


METRICS: Dict[str, Metric] = {
    "macs": Metric("macs", "MACs per image (G)", "GMACs", MINIMIZE, 1e-9, ".4g"),
    "params": Metric("params", "parameters (M)", "params (M)", MINIMIZE, 1e-6, ".4g"),
    "latency": Metric("latency_bs1_ms", "latency at batch 1 (ms)", "latency bs1 (ms)", MINIMIZE, 1.0, ".4g"),
    "throughput": Metric("throughput_img_s", "throughput at the largest batch (images/s)", "throughput (img/s)",
                         MAXIMIZE, 1.0, ".4g"),
    "memory": Metric("peak_mem_mb", "peak inference memory at the largest batch (MiB)", "peak memory (MiB)",
                     MINIMIZE, 1.0, ".4g"),
    "top1": Metric("top1_acc", "top-1 test accuracy (%)", "top-1 (%)", MAXIMIZE, 100.0, ".2f"),
}


@dataclass(frozen=True)
class Pair:
    name: str  # file-name part, e.g. top1_vs_macs
    x: str  # key of METRICS: the cost (or the quantity traded)
    y: str  # key of METRICS


ACCURACY_PAIRS = (Pair("top1_vs_macs", "macs", "top1"), Pair("top1_vs_latency", "latency", "top1"),
                  Pair("top1_vs_throughput", "throughput", "top1"), Pair("top1_vs_memory", "memory", "top1"),
                  Pair("throughput_vs_params", "params", "throughput"))
# Speed-only runs (no accuracy anywhere in a group): speed and memory against complexity.
SPEED_PAIRS = (Pair("throughput_vs_macs", "macs", "throughput"), Pair("latency_vs_macs", "macs", "latency"),
               Pair("memory_vs_macs", "macs", "memory"), Pair("throughput_vs_params", "params", "throughput"))


# --------------------------------------------------------------------------- files and copies


@dataclass
class Source:
    path: str
    name: str  # how the report names the file (its stem, or parent/stem when stems collide)
    sidecar: Optional[Dict[str, Any]] = None
    sidecar_note: str = ""


def drop_copies(rows: pd.DataFrame) -> Tuple[pd.DataFrame, int]:
    """Remove rows that repeat another file's row exactly (same run id and values, e.g. a merged file
    given together with its shards). Different runs of a cell are kept as separate points."""
    cols = [c for c in rows.columns if c != "source"]
    dup = rows.astype(str).duplicated(subset=cols, keep="first")
    return rows[~dup].reset_index(drop=True), int(dup.sum())


# --------------------------------------------------------------------------- points and groups


@dataclass
class Group:
    key: Tuple[str, str, str]  # (device, device_name, precision)
    slug: str  # file-name prefix
    title: str
    points: pd.DataFrame = field(repr=False, default=None)  # type: ignore[assignment]
    rows: pd.DataFrame = field(repr=False, default=None)  # type: ignore[assignment]


def _slug(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "-" for ch in text.lower())
    return "-".join(part for part in out.split("-") if part)


def assign_groups(rows: pd.DataFrame) -> List[Group]:
    """Add a ``group`` column; one :class:`Group` per (device, device name, precision)."""
    keys = list(dict.fromkeys(zip(rows["device"].astype(str), rows["device_name"].astype(str),
                                  rows["precision"].astype(str))))
    groups, slugs = [], set()
    for key in keys:
        device, name, precision = key
        slug = base = _slug(f"{device}-{precision}")
        n = 2
        while slug in slugs:  # two CPUs, or two GPUs, at the same precision
            slug, n = f"{base}-{n}", n + 1
        slugs.add(slug)
        title = f"{name} ({device}), {precision}" if name != device else f"{device}, {precision}"
        groups.append(Group(key, slug, title))
    index = {g.key: g.slug for g in groups}
    rows["group"] = [index[k] for k in zip(rows["device"].astype(str), rows["device_name"].astype(str),
                                           rows["precision"].astype(str))]
    return groups


def _first(series: pd.Series) -> Any:
    s = series.dropna()
    return s.iloc[0] if len(s) else None


_STATIC = ("variant", "family", "block", "depth", "blocks", "cardinality", "bottleneck_width", "width_multiplier",
           "stem", "layout", "input_size", "params", "macs", "device", "device_name", "precision", "memory_format",
           "compile", "tf32", "threads", "pretrained", "top1_acc", "top1_acc_std", "dataset", "epochs", "n_seeds")


def _point(rows: pd.DataFrame) -> Dict[str, Any]:
    rec = {c: _first(rows[c]) for c in _STATIC}
    bs1 = rows[(rows["batch_size"] == 1) & rows["latency_ms_median"].notna()]
    rec["latency_bs1_ms"] = bs1["latency_ms_median"].iloc[0] if len(bs1) else np.nan
    rec["latency_bs1_noisy"] = bool(bs1["latency_noisy"].iloc[0]) if len(bs1) else False
    timed = rows[rows["throughput_img_s"].notna() & rows["batch_size"].notna()]
    if len(timed):
        big = timed.loc[timed["batch_size"].idxmax()]
        rec.update(throughput_img_s=big["throughput_img_s"], throughput_bs=big["batch_size"],
                   throughput_noisy=bool(big["latency_noisy"]), achieved_gflop_s=big["achieved_gflop_s"])
    else:
        rec.update(throughput_img_s=np.nan, throughput_bs=np.nan, throughput_noisy=False, achieved_gflop_s=np.nan)
    weighed = rows[rows["peak_mem_mb"].notna() & rows["batch_size"].notna()]
    if len(weighed):
        big = weighed.loc[weighed["batch_size"].idxmax()]
        rec.update(peak_mem_mb=big["peak_mem_mb"], mem_bs=big["batch_size"])
    else:
        rec.update(peak_mem_mb=np.nan, mem_bs=np.nan)
    return rec


def cell_points(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, source, run, cell) of the ok rows, with the plotted quantities."""
    records = []
    for key, rows in ok.groupby(list(POINT_KEY), sort=False, dropna=False):
        rec = dict(zip(POINT_KEY, key))
        rec.update(_point(rows))
        records.append(rec)
    points = pd.DataFrame.from_records(records)
    for col in ("latency_bs1_ms", "throughput_img_s", "peak_mem_mb", "top1_acc", "params", "macs", "cardinality"):
        points[col] = points[col].astype(float)
    points["synthetic"] = points["dataset"].map(lambda d: "synthetic" in str(d).lower())
    points["label"] = unique_labels(points)
    return points


# Columns that can tell two points of the same variant apart, in the order tried.
_DISCRIMINATORS = ("source", "run_id", "memory_format", "compile", "tf32", "threads", "input_size", "pretrained",
                   "dataset", "epochs", "cell_id")


def plain(value: Any) -> str:
    """2.0 -> '2' (a float column read back from CSV), anything else as str."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def unique_labels(points: pd.DataFrame) -> List[str]:
    """Variant names, extended where needed so that no two points in a group share a label.

    The same variant from two files gets ``[file]``; from two runs of one file
    ``[run RUN_ID]``; with different settings ``[memory_format=...]`` etc.
    """
    labels = points["variant"].astype(str).tolist()
    for _, idx in points.groupby(["group", "variant"], sort=False).groups.items():
        idx = list(idx)
        if len(idx) < 2:
            continue
        sub = points.loc[idx]
        parts: Dict[int, List[str]] = {i: [] for i in idx}
        for col in _DISCRIMINATORS:
            values = sub[col].map(plain)
            if values.nunique() > 1:
                for i in idx:
                    v = values.loc[i]
                    parts[i].append(v if col == "source" else f"run {v}" if col == "run_id" else f"{col}={v}")
            if len({tuple(p) for p in parts.values()}) == len(idx):
                break
        for i in idx:
            if parts[i]:
                labels[points.index.get_loc(i)] += " [" + ", ".join(parts[i]) + "]"
    return labels


# --------------------------------------------------------------------------- frontiers


@dataclass
class Frontier:
    pair: Pair
    points: pd.DataFrame  # the points with both values; column ``front`` marks the frontier
    missing: int  # points of the group without one of the two values


def frontier(points: pd.DataFrame, pair: Pair) -> Frontier:
    """The points of a group that have both values of ``pair``, the frontier ones marked."""
    x, y = METRICS[pair.x], METRICS[pair.y]
    have = points[x.column].notna() & points[y.column].notna()
    sub = points[have].copy()
    idx = pareto_front(sub[[x.column, y.column]].to_numpy(dtype=float), [x.sense, y.sense])
    sub["front"] = False
    sub.iloc[idx, sub.columns.get_loc("front")] = True
    return Frontier(pair, sub, int((~have).sum()))


def pairs_for(points: pd.DataFrame) -> Tuple[Pair, ...]:
    """Accuracy pairs when any point of the group has an accuracy; otherwise the speed-only pairs.

    When only some points have one (a speed-only file combined with a trained one), both sets, so
    that every point appears in some figure."""
    acc = points["top1_acc"].notna()
    if not acc.any():
        return SPEED_PAIRS
    if acc.all():
        return ACCURACY_PAIRS
    return ACCURACY_PAIRS + tuple(p for p in SPEED_PAIRS if p not in ACCURACY_PAIRS)


# --------------------------------------------------------------------------- cardinality comparison


def cardinality_sets(points: pd.DataFrame, tolerance: float = EQUAL_MACS_TOLERANCE) -> List[pd.DataFrame]:
    """Sets of points of one group sharing depth, stem, layout and input size, with MACs within
    ``tolerance`` of the set's smallest, and more than one cardinality. Sorted by cardinality."""
    out = []
    keys = ["group", "depth", "stem", "layout", "input_size"]
    have = points[points["macs"].notna() & points["cardinality"].notna()]
    for _, sub in have.groupby(keys, sort=False, dropna=False):
        sub = sub.sort_values("macs")
        start = 0
        macs = sub["macs"].to_numpy()
        while start < len(sub):
            end = start
            while end + 1 < len(sub) and macs[end + 1] <= macs[start] * (1 + tolerance):
                end += 1
            cluster = sub.iloc[start:end + 1]
            if cluster["cardinality"].nunique() > 1:
                out.append(cluster.sort_values(["cardinality", "macs"], kind="stable"))
            start = end + 1
    return out
