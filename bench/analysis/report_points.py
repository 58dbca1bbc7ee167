"""Report points, frontiers and joins: result rows in, pandas tables out. No drawing, no Markdown, no I/O.

The steps :mod:`bench.analysis.reports` composes:

* :func:`cell_points` reduces the ``status == ok`` rows to one *point* per
  measured cell: batch-1 latency, throughput and peak memory at the cell's
  largest batch, complexity and accuracy;
* :func:`join_on_variant` gives a speed-only point the accuracy of the
  training-only point of the same architecture (``variant_id``);
* :func:`mark_chance` flags accuracies within noise of guessing;
* :func:`assign_groups` splits them by (device, device name, precision), so
  timings from different hardware or precisions never share a frontier;
* :func:`frontier` marks the Pareto frontier of one pair of axes, and the points
  tied with it within the seed spread (:func:`mark_ties`);
* :func:`cardinality_sets` finds variants of equal MACs and different cardinality.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from bench.analysis.edf import holm
from bench.analysis.pareto import MAXIMIZE, MINIMIZE, dominates, pareto_front
from bench.analysis.paired_images import ImageRecord, image_totals, paired_test
from bench.analysis.trend import TrendResult, paired_trend_test, seed_trend_test
from bench.analysis.verdicts import DEFAULT_ALPHA, accuracy_sample, chance_check, difference_test
from bench.results.compare_spec import SETTINGS
from bench.results.compare_spec import describe as describe_family

POINT_KEY = ("group", "source", "run_id", "cell_id")
# What a training run measured about a variant: moved onto its speed points by join_on_variant.
ACCURACY_COLUMNS = ("top1_acc", "top1_acc_std", "top1_acc_seeds", "top1_correct_seeds", "test_images", "dataset",
                    "epochs", "n_seeds", "target_acc", "time_to_target_s", "train_time_s")
# Where a point's accuracy was measured (file name, run, cell): the key of its per-image record. Set on
# every trained point and moved with the accuracy by join_on_variant.
ACCURACY_KEY_COLUMNS = ("acc_file", "acc_run_id", "acc_cell_id")
# A point with any of these was timed (a speed row).
TIMING_COLUMNS = ("latency_bs1_ms", "throughput_img_s", "peak_mem_mb", "train_step_ms")
# Classes of the datasets the harness trains on, for files that predate the num_classes column.
KNOWN_CLASSES = {"cifar10": 10, "cifar-10": 10, "synthetic": 10}
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


_STATIC = ("variant", "variant_id", "family", "block", "depth", "blocks", "cardinality", "bottleneck_width",
           "width_multiplier", "stem", "layout", "input_size", "params", "macs", "device", "device_name", "precision",
           "memory_format", "compile", "tf32", "threads", "pretrained", "num_classes") + ACCURACY_COLUMNS


def _point(rows: pd.DataFrame) -> Dict[str, Any]:
    rec = {c: _first(rows[c]) for c in _STATIC}
    bs1 = rows[(rows["batch_size"] == 1) & rows["latency_ms_median"].notna()]
    rec["latency_bs1_ms"] = bs1["latency_ms_median"].iloc[0] if len(bs1) else np.nan
    rec["latency_bs1_noisy"] = bool(bs1["latency_noisy"].iloc[0]) if len(bs1) else False
    rec.update(_at_largest_batch(rows, "throughput_img_s", {
        "throughput_img_s": "throughput_img_s", "throughput_bs": "batch_size", "throughput_noisy": "latency_noisy",
        "achieved_gflop_s": "achieved_gflop_s"}))
    rec.update(_at_largest_batch(rows, "peak_mem_mb", {"peak_mem_mb": "peak_mem_mb", "mem_bs": "batch_size"}))
    rec.update(_at_largest_batch(rows, "train_step_ms_median", {
        "train_step_ms": "train_step_ms_median", "train_step_bs": "batch_size", "train_step_noisy": "train_step_noisy",
        "train_peak_mem_mb": "train_peak_mem_mb"}))
    # Written by newer runners only: the share of a timed loop spent in the kernel (another process's load).
    for column, at in (("latency_sys_share", bs1), ("train_step_sys_share", _measured(rows, "train_step_ms_median"))):
        if column in rows:
            have = at[at[column].notna()] if len(at) else at
            rec[column] = float(have[column].max()) if len(have) else np.nan
    return rec


def _measured(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows where ``column`` and the batch size are both set."""
    return rows[rows[column].notna() & rows["batch_size"].notna()]


def _at_largest_batch(rows: pd.DataFrame, column: str, taken: Dict[str, str]) -> Dict[str, Any]:
    """Point columns from the row at the largest batch size where ``column`` is set.

    ``taken`` maps each point column to the row column it is read from. A ``_noisy`` point column is a
    flag (False when unknown); without such a row every other one is NaN.
    """
    have = _measured(rows, column)
    if not len(have):
        return {name: False if name.endswith("_noisy") else np.nan for name in taken}
    big = have.loc[have["batch_size"].idxmax()]
    return {name: bool(big[source]) if name.endswith("_noisy") else big[source] for name, source in taken.items()}


def cell_points(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, source, run, cell) of the ok rows, with the plotted quantities (joined on variant_id)."""
    return points_and_joins(ok)[0]


def points_and_joins(ok: pd.DataFrame) -> Tuple[pd.DataFrame, List[str]]:
    """:func:`cell_points` and the notes of :func:`join_on_variant` (variants it could not join)."""
    records = []
    for key, rows in ok.groupby(list(POINT_KEY), sort=False, dropna=False):
        rec = dict(zip(POINT_KEY, key))
        rec.update(_point(rows))
        records.append(rec)
    points = pd.DataFrame.from_records(records)
    trained = points["top1_acc"].notna()
    for col, source in zip(ACCURACY_KEY_COLUMNS, ("source", "run_id", "cell_id")):
        points[col] = points[source].astype(str).where(trained, "")
    for col in ("latency_bs1_ms", "throughput_img_s", "peak_mem_mb", "train_step_ms", "top1_acc", "params", "macs",
                "cardinality"):
        points[col] = points[col].astype(float)
    points, notes = join_on_variant(points)
    points["synthetic"] = points["dataset"].map(lambda d: "synthetic" in str(d).lower())
    points = mark_chance(points)
    points["label"] = unique_labels(points)
    return points, notes


# --------------------------------------------------------------------------- joins on variant_id


def join_on_variant(points: pd.DataFrame) -> Tuple[pd.DataFrame, List[str]]:
    """Give speed-only points the accuracy of the training-only point of the same architecture.

    A study trains in the background (``speed: false``: accuracy, no timings) and times the same
    variants on a quiet machine (no accuracy); both rows carry ``variant_id``, the hash of the model
    config and input size. Each speed-only point whose variant_id has exactly one training-only point
    takes that point's accuracy columns (``acc_from`` names the file and cell), in any section: a model
    trained on a GPU keeps its accuracy when timed on a CPU. The training-only point is then dropped.
    Two training points of one variant (different recipes) are ambiguous: nothing is joined and a note
    says so. Files without variant_id (older runners) are left as they are.
    """
    points = points.copy()
    points["acc_from"] = ""
    points["acc_source"] = ""
    if "variant_id" not in points or points["variant_id"].isna().all():
        return points, []
    timed = points[list(TIMING_COLUMNS)].notna().any(axis=1)
    trained = points["top1_acc"].notna()
    has_id = points["variant_id"].notna() & (points["variant_id"].astype(str) != "")
    for col in ACCURACY_COLUMNS:  # text columns (seed lists) may have been read as numbers
        points[col] = points[col].astype(object)
    notes, dropped = [], []
    for variant_id, idx in points[trained & ~timed & has_id].groupby("variant_id", sort=False).groups.items():
        targets = points.index[timed & ~trained & (points["variant_id"] == variant_id)]
        if not len(targets):
            continue
        if len(idx) > 1:
            cells = ", ".join(f"`{points.at[i, 'cell_id']}`" for i in idx)
            notes.append(f"{points.at[idx[0], 'variant']}: {len(idx)} trained cells ({cells}) share variant_id "
                         f"`{variant_id}` (different recipes?), so its speed rows were not joined to either")
            continue
        acc = points.loc[idx[0]]
        for col in ACCURACY_COLUMNS + ACCURACY_KEY_COLUMNS:
            points.loc[targets, col] = [acc[col]] * len(targets)
        points.loc[targets, "acc_from"] = f"{acc['source']} `{acc['cell_id']}`"
        points.loc[targets, "acc_source"] = acc["source"]
        dropped.append(idx[0])
    points = points.drop(index=dropped).reset_index(drop=True)
    for col in ("top1_acc", "top1_acc_std", "test_images", "n_seeds", "epochs", "num_classes"):
        points[col] = pd.to_numeric(points[col], errors="coerce")
    return points, notes


# --------------------------------------------------------------------------- accuracy statistics


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and np.isnan(value))


def classes_of(point: pd.Series) -> Optional[int]:
    """The number of classes an accuracy is out of: ``num_classes``, else known from the dataset name."""
    if not _missing(point.get("num_classes")):
        return int(point["num_classes"])
    return KNOWN_CLASSES.get(str(point.get("dataset")).lower())


def mark_chance(points: pd.DataFrame, alpha: float = DEFAULT_ALPHA) -> pd.DataFrame:
    """Columns ``near_chance`` (accuracy not distinguishable from guessing) and ``chance_note``.

    Guessing among C classes scores 1/C (10% on CIFAR-10). See :func:`bench.analysis.verdicts.chance_check`
    for the test; a point whose number of classes is unknown is never marked."""
    near, notes = [], []
    for _, p in points.iterrows():
        sample, classes = accuracy_sample(p), classes_of(p)
        if sample is None or not classes or classes < 2:
            near.append(False)
            notes.append("")
            continue
        check = chance_check(sample, classes, alpha)
        near.append(check.within)
        notes.append(check.detail)
    return points.assign(near_chance=near, chance_note=notes)


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


def frontier(points: pd.DataFrame, pair: Pair, alpha: float = DEFAULT_ALPHA) -> Frontier:
    """The points of a group that have both values of ``pair``, the frontier ones marked.

    Column ``front``: on the exact Pareto frontier (:func:`bench.analysis.pareto.pareto_front`).
    Column ``tied`` (accuracy pairs only): off it, but within noise of it, see :func:`mark_ties`."""
    x, y = METRICS[pair.x], METRICS[pair.y]
    have = points[x.column].notna() & points[y.column].notna()
    sub = points[have].copy()
    idx = pareto_front(sub[[x.column, y.column]].to_numpy(dtype=float), [x.sense, y.sense])
    sub["front"] = False
    sub.iloc[idx, sub.columns.get_loc("front")] = True
    sub["tied"], sub["tied_note"] = False, ""
    if "top1" in (pair.x, pair.y) and len(sub):
        sub = mark_ties(sub, [x.column, y.column], [x.sense, y.sense], alpha)
    return Frontier(pair, sub, int((~have).sum()))


def mark_ties(sub: pd.DataFrame, columns: Sequence[str], senses: Sequence[str],
              alpha: float = DEFAULT_ALPHA) -> pd.DataFrame:
    """Mark off-frontier points that could be on it, given the seed spread of the accuracies.

    A point is *tied* when every point that dominates it is not significantly more accurate: the test of
    :func:`bench.analysis.verdicts.difference_test` (Welch t on the seed means, the test set's sampling
    error p(1-p)/test_images added; two-proportion z for a single seed) gives p >= alpha. The
    other axis (MACs, latency, ...) is taken as exact. A dominating point whose difference cannot be
    tested (one seed, no test_images) counts as significant, so such files get the exact frontier."""
    values = sub[list(columns)].to_numpy(dtype=float)
    samples = [accuracy_sample(p) for _, p in sub.iterrows()]
    labels = sub["label"].astype(str).tolist() if "label" in sub else sub["variant"].astype(str).tolist()
    tied, notes = sub["tied"].tolist(), sub["tied_note"].tolist()
    front = sub["front"].tolist()
    for i in range(len(sub)):
        if front[i] or samples[i] is None:
            continue
        tests = []
        for j in range(len(sub)):
            if j != i and dominates(values[j], values[i], senses):
                test = difference_test(samples[i], samples[j], alpha) if samples[j] is not None else None
                tests.append((j, test))
        if not tests or any(t is None or t.p_value < alpha for _, t in tests):
            continue
        j, closest = min(tests, key=lambda jt: jt[1].p_value)
        gap = (samples[j].mean - samples[i].mean) * 100
        tied[i] = True
        notes[i] = f"{gap:.2f} pp below {labels[j]}, p={closest.p_value:.2g} ({closest.name})"
    return sub.assign(tied=tied, tied_note=notes)


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


# --------------------------------------------------------------------------- headline comparisons


@dataclass(frozen=True)
class Family:
    """The accuracy comparisons a report tests, declared before the data (see :mod:`bench.results.compare_spec`)."""

    contrasts: Tuple[Dict[str, Any], ...] = ({"all_pairs": True},)
    origin: str = "the default: no family declared in the grid or on the command line"

    @property
    def text(self) -> str:
        return describe_family(self.contrasts)


@dataclass(frozen=True)
class AccuracyComparison:
    """One pairwise accuracy difference of a section's declared family: ``second`` minus ``first``."""

    kind: str  # the declared contrast(s) it belongs to: "all-pairs", "cardinality 1 vs 32"
    first: str  # label of the first point (the less accurate, or the lower setting value)
    second: str
    difference: float  # second - first, fraction
    p_value: Optional[float]  # None: not testable (one seed, test_images unknown)
    test: str  # the test's name and detail
    holm_p: Optional[float] = None  # Holm-adjusted over the family's testable comparisons
    significant: bool = False
    low: Optional[float] = None  # 95% interval of the difference (None: not testable)
    high: Optional[float] = None
    test_name: str = ""  # "paired bootstrap", "McNemar exact", "Welch t on seed means", "two-proportion z"
    seeds_ahead: Optional[Tuple[int, int]] = None  # (seeds where second beat first, seeds matched by number)
    family_size: int = 0  # testable comparisons Holm ran over
    p_floor: float = 0.0  # the smallest p its test can give: a p there (and its Holm p) is an upper bound


@dataclass(frozen=True)
class TrendComparison:
    """A declared trend test over an ordered setting (3 or more values), Holm-adjusted over the section's trends."""

    result: TrendResult
    labels: Tuple[str, ...]  # the point of each level
    holm_p: float
    significant: bool


@dataclass
class AccuracyTests:
    """A section's declared family, its tests and what could not be tested or paired."""

    family: Family
    comparisons: List[AccuracyComparison]
    trends: List[TrendComparison]
    notes: List[str]


ImageKey = Tuple[str, str, str]  # (source name, run_id, cell_id) of the training row


def headline_points(points: pd.DataFrame) -> pd.DataFrame:
    """A section's points with an accuracy, best first."""
    return points[points["top1_acc"].notna()].sort_values("top1_acc", ascending=False, kind="stable")


def headline_comparisons(points: pd.DataFrame, alpha: float = DEFAULT_ALPHA, family: Optional[Family] = None,
                         images: Optional[Mapping[ImageKey, ImageRecord]] = None) -> List[AccuracyComparison]:
    """The comparisons of :func:`accuracy_tests`."""
    return accuracy_tests(points, family or Family(), images or {}, alpha).comparisons


def accuracy_tests(points: pd.DataFrame, family: Family, images: Mapping[ImageKey, ImageRecord],
                   alpha: float = DEFAULT_ALPHA) -> AccuracyTests:
    """Test every pair the family declares among a section's points, Holm-adjusted over the family.

    The test of a pair: where both points have per-image records on the same test set, the paired test
    of :func:`bench.analysis.paired_images.paired_test` (paired bootstrap over images and seeds; McNemar
    exact for one seed each); otherwise :func:`bench.analysis.verdicts.difference_test` (Welch t on the
    seed means, the test set's sampling error added; two-proportion z for a single seed). A pair is
    significant when its Holm-adjusted p over the family's testable pairs is below ``alpha``. A setting
    contrast of 3 or more numeric values also declares a trend test (:func:`trend_tests`)."""
    acc = headline_points(points)
    notes: List[str] = []
    records = _records(acc, images, notes)
    pairs = declared_pairs(acc, family.contrasts, notes)
    totals = _family_totals([records[i] for pair in pairs for i in pair[1:] if i in records])
    out = [_compare(kind, acc.loc[i], acc.loc[j], records.get(i), records.get(j), totals, alpha, notes)
           for kind, i, j in pairs]
    tested = [k for k, c in enumerate(out) if c.p_value is not None]
    for k, q in zip(tested, holm([out[k].p_value for k in tested])):
        out[k] = replace(out[k], holm_p=q, significant=q < alpha, family_size=len(tested))
    return AccuracyTests(family, out, trend_tests(acc, family.contrasts, records, totals, alpha, notes), notes)


def declared_pairs(acc: pd.DataFrame, contrasts: Sequence[Dict[str, Any]],
                   notes: List[str]) -> List[Tuple[str, Any, Any]]:
    """(kind, index of first, index of second) for each pair the contrasts declare, each pair once.

    all-pairs: every two points, the less accurate first. {setting: values}: every two listed values, the
    earlier listed first, between points that agree on every other setting (bottleneck width and family
    follow cardinality and are not compared). [a, b]: the points of those two variants."""
    found: Dict[frozenset, Tuple[List[str], Any, Any]] = {}

    def add(kind: str, i: Any, j: Any) -> None:
        key = frozenset((i, j))
        if key in found:
            found[key][0].append(kind)
        else:
            found[key] = ([kind], i, j)

    order = list(acc.index)
    for contrast in contrasts:
        if contrast.get("all_pairs"):
            for a, i in enumerate(order):
                for j in order[:a]:
                    add("all-pairs", i, j)  # order is best first: i is the less accurate
        elif "setting" in contrast:
            _setting_pairs(acc, contrast, add, notes)
        else:
            a, b = contrast["pair"]
            first, second = acc.index[acc["variant"] == a], acc.index[acc["variant"] == b]
            if not len(first) or not len(second):
                notes.append(f"declared pair {a} vs {b}: {a if not len(first) else b} has no accuracy in this "
                             "section, so it is not tested")
            for i in first:
                for j in second:
                    add(f"{a} vs {b}", i, j)
    return [(", ".join(dict.fromkeys(kinds)), i, j) for kinds, i, j in found.values()]


_FOLLOWERS = ("bottleneck_width", "family")  # settings that follow cardinality in an equal-MACs contrast


def _rest_key(point: pd.Series, setting: str) -> Tuple[str, ...]:
    return tuple(plain(point.get(c)) for c in SETTINGS if c != setting and c not in _FOLLOWERS)


def _level_points(acc: pd.DataFrame, setting: str, value: Any) -> pd.Index:
    def equal(v: Any) -> bool:
        try:
            return float(v) == float(value)
        except (TypeError, ValueError):
            return str(v) == str(value)
    return acc.index[acc[setting].map(equal)] if setting in acc else acc.index[:0]


def _setting_pairs(acc: pd.DataFrame, contrast: Dict[str, Any], add, notes: List[str]) -> None:
    setting, values = contrast["setting"], contrast["values"]
    levels = [_level_points(acc, setting, v) for v in values]
    for a in range(len(values)):
        for b in range(a + 1, len(values)):
            matched = [(i, j) for i in levels[a] for j in levels[b]
                       if _rest_key(acc.loc[i], setting) == _rest_key(acc.loc[j], setting)]
            for i, j in matched:
                add(f"{setting} {plain(values[a])} vs {plain(values[b])}", i, j)
            if not matched:
                notes.append(f"declared contrast {setting} {plain(values[a])} vs {plain(values[b])}: no two points "
                             f"differ only in {setting}, so it is not tested")


def trend_tests(acc: pd.DataFrame, contrasts: Sequence[Dict[str, Any]], records: Mapping[Any, ImageRecord],
                totals: Mapping[int, Any], alpha: float, notes: List[str]) -> List[TrendComparison]:
    """A trend test for each declared setting contrast of 3 or more numeric values, over each set of points
    that agree on every other setting and have one point per value; Holm-adjusted over the section's trend
    tests. The test (:mod:`bench.analysis.trend`): the paired bootstrap slope where every point has a
    per-image record on one test set (``totals``: the family's image resampling, by record id), else the
    Welch t on the slope; a chain neither can test is a note."""
    found = []
    for contrast in contrasts:
        setting, values = contrast.get("setting"), contrast.get("values") or []
        if setting is None or len(values) < 3:
            continue
        if not all(isinstance(v, (int, float)) for v in values):
            notes.append(f"declared contrast {setting}: values are not numbers, so no trend test")
            continue
        chains: Dict[Tuple[str, ...], List[List[Any]]] = {}
        for k, v in enumerate(values):
            for i in _level_points(acc, setting, v):
                chains.setdefault(_rest_key(acc.loc[i], setting), [[] for _ in values])[k].append(i)
        complete = [c for c in chains.values() if all(len(level) == 1 for level in c)]
        if not complete:
            notes.append(f"declared trend over {setting} {', '.join(plain(v) for v in values)}: no set of points "
                         "has exactly one point per value, so it is not tested")
        for chain in complete:
            idx = [level[0] for level in chain]
            labels = tuple(str(acc.at[i, "label"]) for i in idx)
            try:
                found.append((_trend(acc, setting, values, idx, records, totals), labels))
            except ValueError as e:
                notes.append(f"declared trend over {setting} ({', '.join(labels)}): not tested: {e}")
    adjusted = holm([r.p_value for r, _ in found])
    return [TrendComparison(r, labels, q, q < alpha) for (r, labels), q in zip(found, adjusted)]


def _trend(acc: pd.DataFrame, setting: str, values: Sequence[Any], idx: Sequence[Any],
           records: Mapping[Any, ImageRecord], totals: Mapping[int, Any]) -> TrendResult:
    chain = [records.get(i) for i in idx]
    if all(r is not None for r in chain) and len({(r.test_set, r.images) for r in chain}) == 1:
        known = [totals.get(id(r)) for r in chain]
        return paired_trend_test(setting, values, chain, known if all(t is not None for t in known) else None)
    return seed_trend_test(setting, values, [accuracy_sample(acc.loc[i]) for i in idx])


def _records(acc: pd.DataFrame, images: Mapping[ImageKey, ImageRecord], notes: List[str]) -> Dict[Any, ImageRecord]:
    """The per-image record of each point that has one agreeing with its row (per-seed correct counts)."""
    out = {}
    for i, p in acc.iterrows():
        record = images.get((str(p.get("acc_file")), str(p.get("acc_run_id")), str(p.get("acc_cell_id"))))
        if record is None:
            continue
        sample = accuracy_sample(p)
        counts = sorted(int(c) for c in record.correct.sum(axis=1))
        if sample.correct and sorted(sample.correct) != counts:
            notes.append(f"{p['label']}: its per-image file's correct counts {counts} disagree with the result "
                         f"row's {sorted(sample.correct)}, so it is compared without them")
            continue
        out[i] = record
    return out


def _family_totals(records: Sequence[ImageRecord]) -> Dict[int, Any]:
    """One bootstrap resampling of the images per test set, shared by the family's records (by id)."""
    by_set: Dict[Tuple[str, int], List[ImageRecord]] = {}
    for r in {id(r): r for r in records}.values():
        by_set.setdefault((r.test_set, r.images), []).append(r)
    out: Dict[int, Any] = {}
    for group in by_set.values():
        out.update(zip(map(id, group), image_totals(group)))
    return out


def _compare(kind: str, a: pd.Series, b: pd.Series, rec_a: Optional[ImageRecord], rec_b: Optional[ImageRecord],
             totals: Mapping[int, Any], alpha: float, notes: List[str]) -> AccuracyComparison:
    first, second = str(a["label"]), str(b["label"])
    if rec_a is not None and rec_b is not None:
        if rec_a.test_set == rec_b.test_set and rec_a.images == rec_b.images:
            r = paired_test(rec_a, rec_b, totals=(totals[id(rec_a)], totals[id(rec_b)]))
            return AccuracyComparison(kind, first, second, r.difference, r.p_value, f"{r.name}; {r.detail}",
                                      low=r.low, high=r.high, test_name=r.name, seeds_ahead=r.seeds_ahead,
                                      p_floor=r.p_floor)
        notes.append(f"{first} and {second} were scored on different test sets ({rec_a.test_set} vs "
                     f"{rec_b.test_set}): not paired")
    sample_a, sample_b = accuracy_sample(a), accuracy_sample(b)
    test = difference_test(sample_a, sample_b, alpha)
    diff = sample_b.mean - sample_a.mean
    if test is None:
        return AccuracyComparison(kind, first, second, diff, None, "not testable: one seed and test_images unknown")
    return AccuracyComparison(kind, first, second, diff, test.p_value, f"{test.name}; {test.describe(first, second)}",
                              low=diff - test.critical, high=diff + test.critical, test_name=test.name)
