"""A latency model from exact counts: predict batch-1 latency of variants nobody has timed yet.

For each (device, device name, precision, threads), fit by least squares::

    log latency = b0 + b1 log MACs + b2 log activations + b3 log params + one offset per group

on measured cells (``group`` is the design-space group, e.g. the cardinality
bin: grouped convs run at another speed per MAC than dense ones). Its honesty
is measured, not assumed: k-fold cross-validation (folds stratified by group)
predicts every cell from a model that never saw it, and the median and 90th
percentile of those held-out absolute percentage errors are reported. The
prediction band of a new cell is ``pred x exp(+-q)``, with q the 90th
percentile of the held-out |log error|: nine in ten held-out cells fell inside
such a band.

A model is judged against the trivial predictors it must beat, fitted and
held out on the same folds: a constant (the geometric mean latency), MACs alone
(log latency on log MACs) and activations alone. It *beats* a baseline only
when its held-out |log error| is smaller point for point, by a one-sided
Wilcoxon signed-rank test at p < 0.05; a model that does not beat every
baseline says so, and ``--predict`` refuses to use it. Only cells whose
batch-1 latency is not flagged noisy (``latency_noisy``: spread, system time
or other processes above 10%) are fitted: a model of noise predicts nothing.

A model remembers the environment fingerprints (:mod:`bench.results.fingerprint`)
of the runs it was fitted on and refuses to predict for any other: a latency
model does not transfer between machines or software versions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from bench.analysis.edf import cardinality_bin, group_labels, group_order, sampled_cells, speed_points
from bench.errors import UserError
from bench.results.files import read_sidecar
from bench.results.validate import read_table
from bench.results.fingerprint import fingerprint

FEATURES = ("macs", "activations", "params")
K_FOLDS = 5
BAND_QUANTILE = 90
BEATS_P = 0.05  # one-sided Wilcoxon signed-rank level for "beats a baseline"
# name -> (log features, group offsets): the predictors a latency model must beat
BASELINES: Dict[str, Tuple[Tuple[str, ...], bool]] = {
    "constant": ((), False), "MACs only": (("macs",), False), "activations only": (("activations",), False)}
MODEL_NAME = "counts + group"

ModelKey = Tuple[str, str, str, int]  # device, device name, precision, threads (0 = torch's default)


def design_matrix(features: pd.DataFrame, levels: Sequence[str], columns: Sequence[str] = FEATURES,
                  groups: bool = True) -> np.ndarray:
    """[1, log of each of ``columns``, one-hot group (the first level is the reference) when ``groups``]."""
    cols = [np.ones(len(features))] + [np.log(features[f].to_numpy(dtype=float)) for f in columns]
    if groups:
        labels = features["group"].astype(str).to_numpy()
        cols += [(labels == level).astype(float) for level in levels[1:]]
    return np.column_stack(cols)


def fit_least_squares(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef


def stratified_folds(groups: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    """A fold id per point: each group's points shuffled and dealt round-robin, so every fold's
    training part sees every group with two or more members."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(groups), dtype=int)
    start = 0
    for level in sorted(set(groups)):
        members = np.flatnonzero(np.asarray(groups) == level)
        rng.shuffle(members)
        folds[members] = (start + np.arange(len(members))) % k
        start += len(members)
    return folds


def heldout_predictions(x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """log-predictions of each point from a fit on the other folds (NaN where a fold's training part
    lacks a column the point uses, e.g. the only member of its group)."""
    pred = np.full(len(y), np.nan)
    for f in np.unique(folds):
        test, train = folds == f, folds != f
        coef = fit_least_squares(x[train], y[train])
        seen = x[train].any(axis=0)  # a group column all zero in training has no fitted offset
        usable = test & ~(x[:, ~seen] != 0).any(axis=1)
        pred[usable] = x[usable] @ coef
    return pred


def percentage_errors(log_pred: np.ndarray, log_true: np.ndarray) -> np.ndarray:
    """|pred - measured| / measured, from log values."""
    return np.abs(np.exp(log_pred - log_true) - 1)


class _HeldOutErrors:
    """The summaries of a predictor's held-out absolute percentage errors (``heldout_ape``)."""

    heldout_ape: np.ndarray

    @property
    def median_ape(self) -> float:
        return float(np.median(self.heldout_ape))

    @property
    def p90_ape(self) -> float:
        return float(np.percentile(self.heldout_ape, BAND_QUANTILE))


@dataclass(frozen=True)
class Baseline(_HeldOutErrors):
    """A trivial predictor's held-out errors on the model's folds, and whether the model beats it."""

    name: str
    heldout_ape: np.ndarray
    p_value: float  # one-sided Wilcoxon signed-rank: the model's |log error| is smaller

    @property
    def beaten(self) -> bool:
        return self.p_value < BEATS_P


def beats_p_value(model_abs_log: np.ndarray, baseline_abs_log: np.ndarray) -> float:
    """One-sided Wilcoxon signed-rank p that the model's |log errors| are smaller than the baseline's, paired
    by cell; 1.0 when every pair ties (nothing to tell them apart)."""
    from scipy.stats import wilcoxon

    diff = model_abs_log - baseline_abs_log
    if not np.any(diff != 0):
        return 1.0
    return float(wilcoxon(model_abs_log, baseline_abs_log, alternative="less", zero_method="wilcox").pvalue)


@dataclass
class LatencyModel(_HeldOutErrors):
    key: ModelKey
    levels: List[str]
    coef: np.ndarray
    n: int
    k: int
    heldout_ape: np.ndarray  # one per cell predicted from a fold that did not see it
    band_log: float  # 90th percentile of the held-out |log error|
    fingerprints: List[Dict[str, Any]] = field(default_factory=list)
    measured: pd.DataFrame = field(default=None, repr=False)  # type: ignore[assignment]
    baselines: List[Baseline] = field(default_factory=list)

    @property
    def beats_baselines(self) -> bool:
        return all(b.beaten for b in self.baselines)

    def verdict(self) -> str:
        """'beats the constant (p = 0.001), MACs only (...) and ...' or what it does not beat."""
        if not self.baselines:
            return "no baseline compared"
        lost = [b for b in self.baselines if not b.beaten]
        if not lost:
            return "beats " + ", ".join(f"{b.name} (p = {b.p_value:.2g})" for b in self.baselines) + \
                " on held-out error (one-sided Wilcoxon signed-rank)"
        return ("does not beat " + ", ".join(f"{b.name} (held-out median APE {b.median_ape:.1%} vs "
                                            f"{self.median_ape:.1%}, p = {b.p_value:.2g})" for b in lost)
                + ": no claim rests on this model")

    def predict(self, macs: float, activations: float, params: float, group: str) -> Tuple[float, float, float]:
        """(predicted ms, band low, band high); NaNs for a group the model never measured."""
        if str(group) not in self.levels:
            return math.nan, math.nan, math.nan
        row = pd.DataFrame({"macs": [macs], "activations": [activations], "params": [params], "group": [group]})
        log_pred = float((design_matrix(row, self.levels) @ self.coef)[0])
        return math.exp(log_pred), math.exp(log_pred - self.band_log), math.exp(log_pred + self.band_log)

    def check_fingerprint(self, current: Dict[str, Any], source: str) -> None:
        """UserError unless ``current`` is one of the environments the model was fitted on."""
        if current in self.fingerprints:
            return
        seen = self.fingerprints[0] if self.fingerprints else {}
        diff = "; ".join(f"{k} {seen.get(k)!s} vs {current.get(k)!s}"
                         for k in sorted(set(seen) | set(current)) if seen.get(k) != current.get(k))
        raise UserError(f"{source}: fingerprint: the latency model was fitted on another environment "
                        f"({diff or 'no environment recorded'}); a latency model does not transfer between "
                        "machines, time a few cells here first")


def fit(points: pd.DataFrame, key: ModelKey, k: int = K_FOLDS,
        fingerprints: Optional[List[Dict[str, Any]]] = None, source: str = "") -> LatencyModel:
    """Fit one device/precision's model on ``points`` (columns macs, activations, params, group, latency_bs1_ms)."""
    points = points.dropna(subset=["latency_bs1_ms", *FEATURES]).reset_index(drop=True)
    levels = group_order(points["group"].astype(str))
    n_coef = 1 + len(FEATURES) + len(levels) - 1
    need = max(n_coef + 2, k)
    if len(points) < need:
        raise UserError(f"{source}: latency model for {describe(key)}: needs at least {need} timed cells "
                        f"({n_coef} coefficients, {k}-fold), got {len(points)}")
    x = design_matrix(points, levels)
    y = np.log(points["latency_bs1_ms"].to_numpy(dtype=float))
    folds = stratified_folds(points["group"].astype(str).tolist(), k)
    held = heldout_predictions(x, y, folds)
    ok = ~np.isnan(held)
    ape = percentage_errors(held[ok], y[ok])
    band = float(np.percentile(np.abs(held[ok] - y[ok]), BAND_QUANTILE)) if ok.any() else math.inf
    baselines = []
    for name, (columns, groups) in BASELINES.items():
        # the same folds and the same cells as the model, so each pair of errors is one cell predicted twice
        base = heldout_predictions(design_matrix(points, levels, columns, groups), y, folds)[ok]
        baselines.append(Baseline(name, percentage_errors(base, y[ok]),
                                  beats_p_value(np.abs(held[ok] - y[ok]), np.abs(base - y[ok]))))
    return LatencyModel(key, levels, fit_least_squares(x, y), len(points), k, ape, band,
                        list(fingerprints or []), points.assign(heldout_ms=np.exp(held)), baselines)


def quiet_points(speed: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The speed points whose batch-1 latency row is not flagged ``latency_noisy`` (an unset flag, as in files
    older than the column, counts as not noisy)."""
    if "latency_noisy" not in rows.columns:
        return speed
    flag = rows["latency_noisy"].astype(str).str.strip().str.lower().isin(("true", "1"))
    batch = pd.to_numeric(rows["batch_size"], errors="coerce")
    keys = ["device", "device_name", "precision", "threads", "variant_id"]
    noisy = rows[flag & (batch == 1)][keys].copy()
    noisy["threads"] = pd.to_numeric(noisy["threads"], errors="coerce").fillna(0)
    marks = set(map(tuple, noisy.astype(str).to_numpy()))
    speed_keys = speed[keys].copy()
    speed_keys["threads"] = pd.to_numeric(speed_keys["threads"], errors="coerce").fillna(0)
    keep = [tuple(k) not in marks for k in speed_keys.astype(str).to_numpy()]
    return speed[keep]


def describe(key: ModelKey) -> str:
    device, name, precision, threads = key
    return f"{device} {precision} ({name}, {threads or 'default'} threads)"


def run_fingerprints(sidecar: Optional[Dict[str, Any]], device: str) -> List[Dict[str, Any]]:
    """The fingerprints of every run a sidecar records (a resumed file has several)."""
    if not sidecar:
        return []
    runs = [r for r in sidecar.get("runs") or [sidecar] if isinstance(r, dict) and r.get("environment")]
    prints = []
    for run in runs:
        fp = fingerprint(run["environment"], device)
        if fp not in prints:
            prints.append(fp)
    return prints


def fit_all(speed: pd.DataFrame, sidecars: Sequence[Optional[Dict[str, Any]]], source: str,
            k: int = K_FOLDS) -> Dict[ModelKey, LatencyModel]:
    """One model per (device, device name, precision, threads) of :func:`bench.analysis.edf.speed_points`
    output with a ``group`` column; fingerprints from the sidecars."""
    models: Dict[ModelKey, LatencyModel] = {}
    for key, points in speed.groupby(["device", "device_name", "precision", "threads"], sort=False):
        key = (str(key[0]), str(key[1]), str(key[2]), int(key[3]))
        prints = [fp for side in sidecars for fp in run_fingerprints(side, key[0])]
        models[key] = fit(points, key, k, prints, source)
    return models


# ------------------------------------------------------------------ predicting from a run's CSV
@dataclass
class Predictor:
    """The latency models of one result file, ready to annotate a dry run."""

    source: str
    models: Dict[ModelKey, LatencyModel]
    group_by: str
    timed: Dict[Tuple[str, str, str], float]  # (variant_id, device, precision) -> measured batch-1 ms

    def model_for(self, device: str, precision: str, threads: Optional[int]) -> LatencyModel:
        found = [m for k, m in self.models.items() if k[0] == device and k[2] == precision
                 and (not threads or k[3] == threads)]
        if len(found) != 1:
            have = ", ".join(describe(k) for k in self.models) or "none"
            what = "no" if not found else "more than one (set threads in the grid to pick one)"
            raise UserError(f"{self.source}: {what} latency model for {device} {precision}"
                            f"{f' at {threads} threads' if threads else ''}; fitted: {have}")
        return found[0]

    def level(self, model: LatencyModel, value: Any) -> str:
        """The model's group for a cell's ``group_by`` value (cardinality: its value or its bin)."""
        text = str(int(value)) if isinstance(value, (int, float)) and float(value).is_integer() else str(value)
        if text in model.levels or self.group_by != "cardinality":
            return text
        return cardinality_bin(value)


def load_predictor(csv_path: str) -> Predictor:
    """Fit latency models on a result file's timed cells; UserError when it has too few."""
    rows = read_table(csv_path, required=("cell_id", "status", "batch_size", "macs", "params")).frame
    sidecar = read_sidecar(csv_path)
    ok = rows[rows["status"].astype(str).str.strip().str.lower() == "ok"]
    speed = speed_points(ok)
    speed = speed[speed["latency_bs1_ms"].notna()].copy()
    if speed.empty:
        raise UserError(f"{csv_path}: no ok cells with a batch-1 latency to fit a latency model on")
    _, group_by = sampled_cells([sidecar])
    group_by = group_by or "cardinality"
    speed["group"] = group_labels(speed, group_by).to_numpy()
    timed = {(str(r.variant_id), str(r.device), str(r.precision)): float(r.latency_bs1_ms)
             for r in speed.itertuples()}
    quiet = quiet_points(speed, ok)
    if quiet.empty:
        raise UserError(f"{csv_path}: latency_noisy: all {len(speed)} batch-1 latencies are flagged noisy; a latency "
                        "model is fitted on quiet cells only: re-time some on a quiet machine")
    models = fit_all(quiet, [sidecar], csv_path)
    for model in models.values():
        if not model.beats_baselines:
            raise UserError(f"{csv_path}: latency model for {describe(model.key)} {model.verdict()}; "
                            "no predictions from it")
    return Predictor(csv_path, models, group_by, timed)
