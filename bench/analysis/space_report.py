"""The report's design-space section: EDF figures and tables for sampled cells, and the latency model.

Computation lives in :mod:`bench.analysis.edf` and :mod:`bench.analysis.latency_model`;
this module only draws (matplotlib, via :func:`bench.analysis.plots.save_figure`)
and writes Markdown. :func:`section` is the one call ``report`` makes.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from bench.analysis import edf as E
from bench.analysis import latency_model as L
from bench.analysis.plots import plt, save_figure
from bench.errors import UserError

MIN_GROUP = 2  # points a group needs for an EDF, a band and a KS test
DEFAULT_GROUP_BY = "cardinality"


def section(rows: pd.DataFrame, sidecars: Sequence[Optional[dict]], out_dir: str) -> List[str]:
    """Markdown lines (and figures in ``out_dir``) for the sampled cells among ``rows``; [] when there are none."""
    ids, group_by = E.sampled_cells(sidecars)
    ok = rows[(rows["status"].astype(str) == "ok") & rows["cell_id"].isin(ids)]
    if ok.empty:
        return []
    by = group_by or DEFAULT_GROUP_BY
    if by not in ok.columns:
        return ["## Design space", "", f"The space's `group_by: {by}` is not a column of the results; "
                "no EDFs drawn.", ""]
    lines = ["## Design space", "",
             f"{ok['cell_id'].nunique()} sampled cell(s); variants grouped by `{by}`"
             + (" (power-of-two bins)" if by == "cardinality" else "") + ". Each curve is an empirical "
             f"distribution function (EDF): the share of a group's variants at or below x; shaded: a "
             f"{E.BAND_LEVEL:.0%} simultaneous band (Dvoretzky-Kiefer-Wolfowitz: the EDF ± sqrt(ln(2 / 0.05) / 2n), "
             f"± {E.dkw_epsilon(3):.2f} at n = 3, ± {E.dkw_epsilon(10):.2f} at n = 10). Groups differ when a "
             "two-sample Kolmogorov-Smirnov test gives p < 0.05 after Holm's correction over all pairs.", ""]
    acc = E.accuracy_points(ok)
    if len(acc):
        acc["group"] = _groups(acc, ok, by)
        lines += _error_lines(acc, by, out_dir)
    speed = E.speed_points(ok)
    speed = speed[speed["latency_bs1_ms"].notna() | speed["throughput_img_s"].notna()].copy()
    if len(speed):
        speed["group"] = _groups(speed, ok, by)
        lines += _speed_lines(speed, by, out_dir)
        lines += _latency_model_lines(speed, ok, out_dir)
    return lines


def _groups(points: pd.DataFrame, rows: pd.DataFrame, by: str) -> np.ndarray:
    """Each point's group: the ``by`` setting of its variant (from the rows), labelled by :func:`E.group_labels`."""
    setting = points["variant_id"].map(E.numeric_rows(rows).groupby("variant_id")[by].first())
    values = pd.to_numeric(setting, errors="coerce")
    column = values if values.notna().all() else setting
    return E.group_labels(pd.DataFrame({by: column.to_numpy()}), by).to_numpy()


# ------------------------------------------------------------------ accuracy
def _error_lines(acc: pd.DataFrame, by: str, out_dir: str) -> List[str]:
    groups = _values(acc, "error")
    name = "space-error-edf"
    _edf_figure(groups, "test error (1 - top-1)", f"Error EDF by {by}", os.path.join(out_dir, name))
    lines = ["### Error EDF", "", f"![error EDF by {by}]({name}.png)", ""]
    lines += _group_table(acc, "error", "error", by, binomial=True)
    lines += _ks_lines(groups, "error")
    name = "space-error-vs-macs"
    trends = _trend_figure(acc, by, os.path.join(out_dir, name))
    lines += ["### Error against MACs", "", f"![error against MACs by {by}]({name}.png)", "",
              "Each group's least-squares line of error on log10(MACs): the slope is the change in error per "
              "tenfold MACs.", ""]
    if not trends:
        return lines[:-2] + ["No group has 3 or more variants over more than one MAC value: no trend fitted.", ""]
    body = []
    for g, t in trends.items():
        median_macs = np.median(acc.loc[acc["group"] == g, "macs"])
        body.append((g, t.n, f"{t.slope:+.4f}", f"{float(t.at(np.array([median_macs]))[0]):.4f}"))
    lines += _table([by, "variants", "slope per decade of MACs", "error at the group's median MACs"], body)
    return lines


def _group_table(points: pd.DataFrame, column: str, what: str, by: str, binomial: bool = False,
                 higher_is_better: bool = False) -> List[str]:
    header = [by, "variants", f"median {what}", f"best {what}", f"worst {what}"]
    if binomial:
        header.append("test-set SE at the median")
    body = []
    for g in E.group_order(points["group"]):
        vals = points.loc[points["group"] == g, column].dropna()
        if vals.empty:
            continue
        best, worst = (vals.max(), vals.min()) if higher_is_better else (vals.min(), vals.max())
        row = [g, len(vals), f"{vals.median():.4g}", f"{best:.4g}", f"{worst:.4g}"]
        if binomial:
            n_test = points.loc[points["group"] == g, "test_images"].max()
            se = E.binomial_se(1 - vals.median(), n_test)
            row.append("–" if np.isnan(se) else f"{se:.4f} ({int(n_test)} images)")
        body.append(row)
    return _table(header, body)


def _ks_lines(groups: Dict[str, np.ndarray], what: str) -> List[str]:
    diffs = E.compare_groups(groups, min_size=MIN_GROUP)
    if not diffs:
        return [f"Too few variants per group (fewer than {MIN_GROUP}) to compare the {what} EDFs.", ""]
    differ = [f"{d.a} vs {d.b}" for d in diffs if d.differ]
    lines = _table(["groups", "n", "KS D", "p", "p (Holm)", "differ?"],
                   [(f"{d.a} vs {d.b}", f"{d.n_a} / {d.n_b}", f"{d.statistic:.3f}", f"{d.p_value:.3g}",
                     f"{d.p_adjusted:.3g}", "yes" if d.differ else "no") for d in diffs])
    verdict = (f"The {what} distributions differ for: {', '.join(differ)}." if differ else
               f"No pair of groups has significantly different {what} distributions at this sample size.")
    return lines + [verdict, ""]


# ------------------------------------------------------------------ speed
def _speed_lines(speed: pd.DataFrame, by: str, out_dir: str) -> List[str]:
    lines = []
    for key, points in speed.groupby(["device", "device_name", "precision", "threads"], sort=False):
        title = L.describe((str(key[0]), str(key[1]), str(key[2]), int(key[3])))
        slug = "-".join(str(k) for k in (key[0], key[2], int(key[3]))).replace(" ", "")
        lines += [f"### Speed per GMAC: {title}", "",
                  "Batch-1 latency per GMAC (ms/GMAC, lower is better) and the largest batch's throughput per "
                  "GMAC, as GMAC/s (images/s x GMACs per image; higher is better).", ""]
        for column, label in (("ms_per_gmac", "batch-1 latency per GMAC, ms/GMAC"),
                              ("gmac_per_s", "throughput per GMAC, GMAC/s")):
            groups = _values(points, column)
            if not groups:
                continue
            name = f"space-{column.replace('_', '-')}-edf-{slug}"
            _edf_figure(groups, label, f"{label} by {by}, {title}", os.path.join(out_dir, name))
            lines += [f"![{label} EDF]({name}.png)", ""]
            lines += _group_table(points, column, label.split(",")[0], by, higher_is_better=column == "gmac_per_s")
            lines += _ks_lines(groups, label.split(",")[0])
    return lines


def _latency_model_lines(speed: pd.DataFrame, rows: pd.DataFrame, out_dir: str) -> List[str]:
    lines = ["### Latency model", "",
             "log latency = b0 + b1 log MACs + b2 log activations + b3 log params + a group offset, fitted per "
             "device, precision and thread count on the timed variants whose batch-1 latency is not flagged noisy; "
             "errors are held out (k-fold, folds stratified by group): each variant predicted by a fit that never "
             "saw it. Beside it, on the same folds, the baselines it must beat: a constant (the geometric mean), "
             "MACs alone and activations alone. The model beats a baseline when its held-out |log error| is "
             f"smaller cell for cell (one-sided Wilcoxon signed-rank, p < {L.BEATS_P}).", ""]
    for key, points in speed[speed["latency_bs1_ms"].notna()].groupby(
            ["device", "device_name", "precision", "threads"], sort=False):
        key = (str(key[0]), str(key[1]), str(key[2]), int(key[3]))
        quiet = L.quiet_points(points, rows)
        lines += [f"**{L.describe(key)}**: {len(quiet)} of {len(points)} timed variants have a batch-1 latency "
                  "not flagged noisy.", ""]
        try:
            model, fitted_on = L.fit(quiet, key, fingerprints=[]), "not noisy"
        except UserError as e:
            lines += [f"No model fitted on them: {str(e).split(': ', 2)[-1]}.", ""]
            try:
                model, fitted_on = L.fit(points, key, fingerprints=[]), "all, noisy included"
            except UserError:
                continue
            lines += [f"For reference only, the same comparison on all {len(points)} variants, noisy latencies "
                      "included (no claim rests on it):", ""]
        name = f"space-latency-model-{key[0]}-{key[2]}-{key[3]}"
        _predicted_figure(model, os.path.join(out_dir, name))
        body = [(f"{L.MODEL_NAME} (exponents {', '.join(f'{c:+.3f}' for c in model.coef[1:4])})", fitted_on,
                 len(model.heldout_ape), f"{model.median_ape:.1%}", f"{model.p90_ape:.1%}", "–")]
        body += [(b.name, fitted_on, len(b.heldout_ape), f"{b.median_ape:.1%}", f"{b.p90_ape:.1%}",
                  f"{'yes' if b.beaten else 'no'} (p = {b.p_value:.2g})") for b in model.baselines]
        lines += _table(["predictor", "cells fitted", "held out", "median APE", "p90 APE",
                         "model beats it?"], body)
        lines += [f"The model {model.verdict()}. [Held-out predictions against measurements]({name}.png).", ""]
    return lines


# ------------------------------------------------------------------ drawing
def _values(points: pd.DataFrame, column: str) -> Dict[str, np.ndarray]:
    out = {}
    for g in E.group_order(points["group"]):
        vals = points.loc[points["group"] == g, column].dropna().to_numpy(dtype=float)
        if len(vals):
            out[g] = vals
    return out


def _colours(names: Sequence[str]) -> Dict[str, Tuple[float, ...]]:
    cmap = plt.get_cmap("viridis")
    return {g: cmap(i / max(1, len(names) - 1)) for i, g in enumerate(names)}


def _edf_figure(groups: Dict[str, np.ndarray], xlabel: str, title: str, out_base: str) -> List[str]:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = _colours(list(groups))
    everything = np.concatenate(list(groups.values()))
    grid = np.linspace(everything.min(), everything.max(), 200)
    for g, vals in groups.items():
        x, f = E.edf(vals)
        ax.step(np.r_[x[0], x], np.r_[0, f], where="post", color=colours[g], label=f"{g} (n={len(vals)})")
        if len(vals) >= MIN_GROUP:
            lo, hi = E.dkw_band(vals, grid)
            ax.fill_between(grid, lo, hi, step="post", color=colours[g], alpha=0.15, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of variants <= x")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return save_figure(fig, out_base)


def _trend_figure(acc: pd.DataFrame, by: str, out_base: str) -> Dict[str, E.Trend]:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names = E.group_order(acc["group"])
    colours = _colours(names)
    trends = {}
    for g in names:
        pts = acc[acc["group"] == g]
        ax.scatter(pts["macs"] / 1e6, pts["error"], color=colours[g], s=18, label=f"{by} {g}")
        t = E.trend(pts["macs"], pts["error"])
        if t is not None:
            trends[g] = t
            xs = np.geomspace(pts["macs"].min(), pts["macs"].max(), 20)
            ax.plot(xs / 1e6, t.at(xs), color=colours[g], linewidth=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("MMACs per image")
    ax.set_ylabel("test error (1 - top-1)")
    ax.set_title(f"Error against MACs by {by}, with each group's least-squares trend", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, out_base)
    return trends


def _predicted_figure(model: L.LatencyModel, out_base: str) -> List[str]:
    pts = model.measured.dropna(subset=["heldout_ms"])
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.scatter(pts["latency_bs1_ms"], pts["heldout_ms"], s=16)
    lo = min(pts["latency_bs1_ms"].min(), pts["heldout_ms"].min()) if len(pts) else 1
    hi = max(pts["latency_bs1_ms"].max(), pts["heldout_ms"].max()) if len(pts) else 10
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1, label="prediction = measurement")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured batch-1 latency, ms")
    ax.set_ylabel("held-out prediction, ms")
    ax.set_title(f"{L.describe(model.key)}: median APE {model.median_ape:.1%}, p90 {model.p90_ape:.1%}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, out_base)


def _table(header: Sequence[str], rows) -> List[str]:
    out = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return out + [""]
