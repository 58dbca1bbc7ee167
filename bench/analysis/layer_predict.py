"""Predict a variant's latency from a layer table: the sum of its operators plus a fitted overhead.

Reads CSV files only (no torch, no model): the table (``bench.measure.layer_table``
writes it), and for the overhead fit and the error band the end-to-end timings
and the variants' inventories that ``benchmarks/layer_latency.py`` writes beside
it (``e2e.csv``, ``inventory.csv`` in the table's folder)::

    latency = sum over operators of count x table[shape] + per_layer x operators + per_call

``per_layer`` (what a model adds per operator beyond the op itself: the
``nn.Module`` call, the block's Python, caches colder than in isolation) and
``per_call`` are fitted by least squares per batch size on the timed variants.
A shape missing from the table is interpolated from its family (same kind,
kernel, stride and groups; for elementwise ops the same kind): a power law in
the shape's work (MACs, or elements for BN/ReLU/add/pooling) fitted through
its nearest neighbours in channels and spatial size, and flagged. The error
band of a prediction is the 90th percentile of the held-out |log error| of the
evaluation (5-fold over variants, and for interpolated shapes with each
variant's own unique shapes taken out of the table).

A table is keyed by the machine's fingerprint (:mod:`bench.results.fingerprint`):
predicting with another machine's table is refused.
"""
from __future__ import annotations

import csv
import math
import os
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from bench.errors import UserError
from bench.results.files import read_sidecar

SHAPE = re.compile(r"^(\w+) k(\d+) s(\d+) g(\d+) c(\d+)>(\d+) h(\d+)$")
TABLE_COLUMNS = ("shape", "batch_size", "precision", "memory_format", "threads", "fingerprint_id", "macs",
                 "ms_median")
E2E_COLUMNS = ("variant_id", "batch_size", "precision", "memory_format", "threads", "fingerprint_id", "ms_median")
INVENTORY_COLUMNS = ("variant_id", "shape", "count", "macs")
K_FOLDS = 5
NEIGHBOURS = 4
BAND_QUANTILE = 90
# A table entry is the statistic of a shape's rounds that the prediction is compared with: the median, as
# the harness reports a variant's latency (what is predicted and what it is built from measure the same
# statistic). "min", each shape's fastest round over all its rows, is for a table timed on a loaded machine:
# there another process's thread stalls torch's 2-thread barriers, the stalls only ever add time (a ReLU
# read 0.04 ms in one round and 19.8 ms in another), and it predicts the variants' fastest rounds.
TABLE_STATISTIC = "median"
OVERHEAD_ROWS = {"call": "call k1 s1 g1 c1>1 h1", "op": "op k1 s1 g1 c1>1 h1"}
# Where benchmarks/layer_latency.py writes the table, and where `--dry-run --predict` looks for one
# (relative to the working directory, as the runner's results/ folder is).
DEFAULT_TABLE = os.path.join("results", "layer-latency", "table.csv")


class ForeignTable(UserError):
    """A layer table that holds no row measured on this machine and software."""


Spec = Tuple[int, str, str, int]  # batch, precision, memory format, threads
Layers = Sequence[Tuple[str, int, int]]  # (shape, count, MACs per image)


@dataclass(frozen=True)
class Shape:
    kind: str
    kernel: int
    stride: int
    groups: int
    c_in: int
    c_out: int
    size: int

    @classmethod
    def parse(cls, text: str) -> "Shape":
        m = SHAPE.match(text)
        if m is None:
            raise ValueError(f"shape {text!r}: expected 'KIND kK sS gG cIN>OUT hSIZE'")
        return cls(m.group(1), *(int(v) for v in m.groups()[1:]))

    @property
    def family(self) -> Tuple[Any, ...]:
        if self.kind == "conv":
            return ("conv", self.kernel, self.stride, self.groups)
        return (self.kind, self.kernel, self.stride)

    def work(self, macs: int) -> float:
        """What its time scales with: MACs (conv, linear) or the elements it reads (the others)."""
        return float(macs) if macs > 0 else float(self.c_in * self.size * self.size)


# ------------------------------------------------------------------------------------------ reading
def _read_csv(path: str, required: Sequence[str]) -> List[Dict[str, str]]:
    if os.path.islink(path):
        raise UserError(f"{path}: is a symbolic link; give the file itself")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read: {e}") from None


def _field(path: str, line: int, row: Mapping[str, str], name: str, kind: type) -> Any:
    try:
        value = kind(row[name])
    except (TypeError, ValueError):
        raise UserError(f"{path}: line {line}: {name}: expected a {kind.__name__}, got {row[name]!r}") from None
    if kind is float and not (math.isfinite(value) and value >= 0):
        raise UserError(f"{path}: line {line}: {name}: expected a finite number >= 0, got {row[name]!r}")
    return value


@dataclass
class LayerTable:
    """One machine's table: spec -> shape -> (ms, MACs of the whole batch)."""

    path: str
    fingerprint_id: str
    fingerprint: Dict[str, Any]
    entries: Dict[Spec, Dict[str, Tuple[float, int]]]
    cache: Dict[Any, float] = field(default_factory=dict, repr=False)
    _index: Dict[Spec, Any] = field(default_factory=dict, repr=False)

    def index(self, spec: Spec) -> Dict[Tuple[Any, ...], Family]:
        if spec not in self._index:
            self._index[spec] = family_index(self.entries.get(spec, {}))
        return self._index[spec]

    def overhead_ms(self, spec: Spec, which: str) -> float:
        """The measured ``call`` (an nn.Module that does nothing) or ``op`` (cheapest torch op) row."""
        entry = self.entries.get(spec, {}).get(OVERHEAD_ROWS[which])
        return entry[0] if entry else math.nan


def _statistic(path: str, line: int, row: Mapping[str, str], statistic: str) -> float:
    """A row's time: ``median`` (``ms_median``) or ``min`` (the fastest round of ``samples_ms``)."""
    if statistic == "min" and row.get("samples_ms"):
        try:
            values = [float(v) for v in row["samples_ms"].split()]
        except ValueError:
            raise UserError(f"{path}: line {line}: samples_ms: expected numbers separated by spaces") from None
        if not values or not all(math.isfinite(v) and v >= 0 for v in values):
            raise UserError(f"{path}: line {line}: samples_ms: expected finite numbers >= 0")
        return min(values)
    return _field(path, line, row, "ms_median", float)


def load_table(path: str, current: Dict[str, Any], current_id: str, statistic: str = TABLE_STATISTIC) -> LayerTable:
    """The rows of ``path`` measured on this machine; UserError when it holds only other machines' rows.

    A shape timed again: with ``min`` its entry is the fastest round of all its rows, with ``median`` the
    last row's median."""
    rows = _read_csv(path, TABLE_COLUMNS)
    recorded = (read_sidecar(path) or {}).get("fingerprints") or {}
    ids = {r["fingerprint_id"] for r in rows}
    if current_id not in ids:
        seen = recorded.get(sorted(ids)[0], {}) if ids else {}
        diff = "; ".join(f"{k} {seen.get(k)!s} vs {current.get(k)!s}"
                         for k in sorted(set(seen) | set(current)) if seen.get(k) != current.get(k))
        raise ForeignTable(f"{path}: fingerprint_id: the table was measured on another machine or software "
                           f"({diff or 'fingerprint ' + ', '.join(sorted(ids)) + ' vs ' + current_id}); "
                           "a layer table does not transfer, build one here (benchmarks/layer_latency.py)")
    entries: Dict[Spec, Dict[str, Tuple[float, int]]] = defaultdict(dict)
    for line, row in enumerate(rows, start=2):
        if row["fingerprint_id"] != current_id:
            continue
        shape = row["shape"]
        if shape not in OVERHEAD_ROWS.values():
            try:
                Shape.parse(shape)
            except ValueError as e:
                raise UserError(f"{path}: line {line}: {e}") from None
        spec = (_field(path, line, row, "batch_size", int), row["precision"], row["memory_format"],
                _field(path, line, row, "threads", int))
        ms = _statistic(path, line, row, statistic)
        if statistic == "min" and shape in entries[spec]:  # timed again: the fastest round of all its rows
            ms = min(ms, entries[spec][shape][0])
        entries[spec][shape] = (ms, _field(path, line, row, "macs", int))
    return LayerTable(path, current_id, recorded.get(current_id, current), dict(entries))


# ------------------------------------------------------------------------------------------ summing
@dataclass
class LayerSum:
    """The table's sum for one variant, and which of its operators were interpolated."""

    ms: float
    layers: int
    interpolated: int  # operators (counted) whose shape was not in the table
    missing: int  # operators with no family member in the table at all (the sum is NaN)
    per_shape: Dict[str, float] = field(default_factory=dict)  # shape -> ms of one call


Family = Tuple[np.ndarray, List[str], np.ndarray, np.ndarray]  # log (c_in, c_out, size) rows, texts, log work, log ms


def family_index(entries: Mapping[str, Tuple[float, int]]) -> Dict[Tuple[Any, ...], Family]:
    """family -> its shapes in the table (the overhead rows left out), as arrays for a quick distance."""
    members: Dict[Tuple[Any, ...], List[Tuple[Shape, str, float, float]]] = defaultdict(list)
    for text, (ms, macs) in entries.items():
        if text not in OVERHEAD_ROWS.values():
            s = Shape.parse(text)
            members[s.family].append((s, text, s.work(macs), ms))
    return {family: (np.log([[s.c_in, s.c_out, s.size] for s, _, _, _ in rows]), [t for _, t, _, _ in rows],
                     np.log([w for _, _, w, _ in rows]), np.log([max(ms, 1e-9) for _, _, _, ms in rows]))
            for family, rows in members.items()}


_DISTANCE_WEIGHTS = np.array([1.0, 1.0, 2.0])  # c_in, c_out, spatial size (log): size counts double


def interpolate(index: Mapping[Tuple[Any, ...], Family], shape: str, macs: int, batch: int,
                exclude: Set[str] = frozenset()) -> float:
    """A missing shape's time from its family's nearest neighbours (NaN when the family is empty).

    ``macs`` is per image, as inventories give it; the table's MACs are of the whole batch."""
    target = Shape.parse(shape)
    family = index.get(target.family)
    if family is None:
        return math.nan
    feats, texts, log_work, log_ms = family
    where = (math.log(target.c_in), math.log(target.c_out), math.log(target.size))
    distance = np.abs(feats - where) @ _DISTANCE_WEIGHTS
    usable = len(texts)
    if exclude:  # (without it the shape is missing from the table, so it is none of its own neighbours)
        left_out = np.array([t == shape or t in exclude for t in texts])
        distance[left_out] = np.inf
        usable -= int(left_out.sum())
    if not usable:
        return math.nan
    near = np.argsort(distance, kind="stable")[:min(NEIGHBOURS, usable)]
    # a handful of neighbours: plain floats beat numpy's per-call cost (a sampled space interpolates
    # thousands of shapes in its dry run)
    x, y = log_work[near].tolist(), log_ms[near].tolist()
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((a - mx) ** 2 for a in x)
    # ms ~ work ** slope through the neighbours (least squares in logs); clamped so a few noisy points
    # cannot invert it; one neighbour (or equal work) scales in proportion
    slope = min(1.2, max(0.0, sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx)) if sxx > 1e-12 else 1.0
    offset = statistics.median([b - slope * a for a, b in zip(x, y)])
    return math.exp(offset + slope * math.log(target.work(macs * batch)))


def layer_sum(table: LayerTable, layers: Layers, spec: Spec, exclude: Set[str] = frozenset()) -> LayerSum:
    """Sum of count x table time over ``layers``; shapes in ``exclude`` are treated as missing."""
    entries = table.entries.get(spec, {})
    index = table.index(spec)
    cache = table.cache.setdefault(spec, {})
    total, n, interp, missing, per = 0.0, 0, 0, 0, {}
    for shape, count, macs in layers:
        n += count
        entry = entries.get(shape) if shape not in exclude else None
        if entry is not None:
            ms = entry[0]
        elif exclude:
            ms = interpolate(index, shape, macs, spec[0], exclude)
        else:  # a dry run over a sampled space asks for the same missing shapes again and again
            ms = cache.get(shape)
            if ms is None:
                ms = cache[shape] = interpolate(index, shape, macs, spec[0])
        if entry is None:
            interp += count
            missing += count if math.isnan(ms) else 0
        per[shape] = ms
        total += count * ms
    return LayerSum(total, n, interp, missing, per)


# ------------------------------------------------------------------------------------------ fitting
@dataclass(frozen=True)
class Overhead:
    per_layer_ms: float
    per_call_ms: float

    def apply(self, s: LayerSum) -> float:
        return s.ms + self.per_layer_ms * s.layers + self.per_call_ms


def fit_overhead(sums: Sequence[LayerSum], measured: Sequence[float]) -> Overhead:
    """Least squares of measured - sum on [operators, 1]; with fewer than 3 variants, a constant only."""
    residual = np.asarray(measured, dtype=float) - np.array([s.ms for s in sums])
    if len(sums) < 3 or len({s.layers for s in sums}) < 2:
        return Overhead(0.0, float(np.median(residual)) if len(residual) else 0.0)
    x = np.column_stack([[s.layers for s in sums], np.ones(len(sums))])
    coef, *_ = np.linalg.lstsq(x, residual, rcond=None)
    return Overhead(float(coef[0]), float(coef[1]))


def folds_of(keys: Sequence[str], k: int = K_FOLDS) -> np.ndarray:
    """A fold per variant, dealt in sorted-id order (deterministic, no variant's fold depends on others')."""
    order = {key: i for i, key in enumerate(sorted(set(keys)))}
    return np.array([order[key] % k for key in keys])


def unique_shapes(inventories: Mapping[str, Layers]) -> Dict[str, Set[str]]:
    """variant -> the shapes no other variant of ``inventories`` has."""
    owners: Dict[str, Set[str]] = defaultdict(set)
    for variant, layers in inventories.items():
        for shape, _, _ in layers:
            owners[shape].add(variant)
    return {v: {s for s, _, _ in layers if owners[s] == {v}} for v, layers in inventories.items()}


@dataclass
class Heldout:
    """Held-out predictions of one spec's timed variants: with the full table, and with each variant's
    own unique shapes removed (interpolated)."""

    variants: List[str]
    measured: np.ndarray
    in_table: np.ndarray
    interpolated: np.ndarray
    interpolated_layers: List[int]
    overhead: Overhead  # fitted on all variants (what a new prediction uses)
    sums: List[LayerSum]
    _bands: Dict[bool, float] = field(default_factory=dict, repr=False)

    def band_log(self, interpolated: bool) -> float:
        """The 90th percentile of |log(predicted / measured)| (inf with no usable prediction)."""
        if interpolated not in self._bands:
            pred = self.interpolated if interpolated else self.in_table
            ok = pred > 0  # NaN (a shape with no family) and a non-positive prediction give no band
            self._bands[interpolated] = (float(np.percentile(np.abs(np.log(pred[ok] / self.measured[ok])),
                                                             BAND_QUANTILE)) if ok.any() else math.inf)
        return self._bands[interpolated]


def evaluate(table: LayerTable, inventories: Mapping[str, Layers], measured: Mapping[str, float],
             spec: Spec, k: int = K_FOLDS) -> Heldout:
    """K-fold over variants: each variant's overhead is fitted on the other folds."""
    variants = sorted(v for v in measured if v in inventories)
    if len(variants) < k:
        raise UserError(f"{table.path}: batch {spec[0]}: {len(variants)} timed variant(s) with an inventory; "
                        f"the held-out evaluation needs at least {k}")
    y = np.array([measured[v] for v in variants])
    full = [layer_sum(table, inventories[v], spec) for v in variants]
    own = unique_shapes({v: inventories[v] for v in variants})
    alone = [layer_sum(table, inventories[v], spec, exclude=own[v]) for v in variants]
    folds = folds_of(variants, k)
    in_table, interp = np.full(len(y), np.nan), np.full(len(y), np.nan)
    for f in range(k):
        test, train = folds == f, folds != f
        oh = fit_overhead([full[i] for i in np.flatnonzero(train)], y[train])
        for i in np.flatnonzero(test):
            in_table[i] = oh.apply(full[i])
            interp[i] = oh.apply(alone[i])
    return Heldout(variants, y, in_table, interp, [s.interpolated for s in alone], fit_overhead(full, y), full)


def read_inventories(path: str) -> Dict[str, List[Tuple[str, int, int]]]:
    out: Dict[str, List[Tuple[str, int, int]]] = defaultdict(list)
    for line, row in enumerate(_read_csv(path, INVENTORY_COLUMNS), start=2):
        out[row["variant_id"]].append((row["shape"], _field(path, line, row, "count", int),
                                       _field(path, line, row, "macs", int)))
    return dict(out)


def read_e2e(path: str, fingerprint_id: str, statistic: str = "median") -> Dict[Spec, Dict[str, float]]:
    """spec -> variant_id -> measured ms (median or fastest round), this machine's rows only."""
    out: Dict[Spec, Dict[str, float]] = defaultdict(dict)
    for line, row in enumerate(_read_csv(path, E2E_COLUMNS), start=2):
        if row["fingerprint_id"] == fingerprint_id:
            spec = (_field(path, line, row, "batch_size", int), row["precision"], row["memory_format"],
                    _field(path, line, row, "threads", int))
            out[spec][row["variant_id"]] = _statistic(path, line, row, statistic)
    return dict(out)


# ------------------------------------------------------------------------------------------ predicting
@dataclass
class TablePredictor:
    """A table with, per spec, the overhead and error bands of its held-out evaluation (where one exists)."""

    table: LayerTable
    heldout: Dict[Spec, Heldout]
    _block_sums: Dict[Tuple[Spec, int], LayerSum] = field(default_factory=dict, repr=False)

    def predict(self, groups: Sequence[Tuple[Optional[int], Layers]],
                spec: Spec) -> Tuple[float, float, float, LayerSum]:
        """(ms, band low, band high, the sum) of a model given as groups of layers (its blocks); a group
        with an id is summed once per spec and remembered (blocks recur across a sampled space). The band
        is NaN where no evaluation was run for ``spec``."""
        s = LayerSum(0.0, 0, 0, 0)
        for key, layers in groups:
            part = self._block_sums.get((spec, key)) if key is not None else None
            if part is None:
                part = layer_sum(self.table, layers, spec)
                part.per_shape = {}
                if key is not None:
                    self._block_sums[(spec, key)] = part
            s.ms, s.layers = s.ms + part.ms, s.layers + part.layers
            s.interpolated, s.missing = s.interpolated + part.interpolated, s.missing + part.missing
        held = self.heldout.get(spec)
        if held is None:  # no end-to-end timings: the measured per-module call cost is the best overhead known
            call = self.table.overhead_ms(spec, "call")
            ms = s.ms + (call if call == call else 0.0) * s.layers
            return ms, math.nan, math.nan, s
        ms = held.overhead.apply(s)
        q = held.band_log(interpolated=s.interpolated > 0)
        return ms, ms * math.exp(-q), ms * math.exp(q), s


def load_predictor(table_path: str, current: Dict[str, Any], current_id: str) -> TablePredictor:
    """The table at ``table_path`` and, when ``e2e.csv`` and ``inventory.csv`` sit beside it, its evaluation."""
    table = load_table(table_path, current, current_id)
    folder = os.path.dirname(os.path.abspath(table_path))
    e2e_path, inv_path = os.path.join(folder, "e2e.csv"), os.path.join(folder, "inventory.csv")
    heldout: Dict[Spec, Heldout] = {}
    if os.path.exists(e2e_path) and os.path.exists(inv_path):
        inventories = read_inventories(inv_path)
        for spec, measured in read_e2e(e2e_path, current_id).items():
            if spec in table.entries:
                heldout[spec] = evaluate(table, inventories, measured, spec)
    return TablePredictor(table, heldout)


def percentage_errors(pred: Iterable[float], measured: Iterable[float]) -> np.ndarray:
    p, m = np.asarray(list(pred), dtype=float), np.asarray(list(measured), dtype=float)
    ok = ~np.isnan(p)
    return np.abs(p[ok] / m[ok] - 1)
