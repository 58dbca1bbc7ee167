"""Report figures: the Pareto scatter plots and batch-size curves of one section, drawn with
:mod:`bench.analysis.plots` (matplotlib is imported only when a figure is drawn).
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from bench.analysis.report_points import METRICS, POINT_KEY, Frontier, Group, Metric

def _axis_label(metric: Metric, values: Sequence[float]) -> str:
    from bench.analysis.plots import wants_log

    label = metric.label
    return label[:-1] + ", log scale)" if wants_log(values) and label.endswith(")") else label



def _accuracy_label(points: pd.DataFrame) -> str:
    datasets = sorted(points.loc[points["top1_acc"].notna(), "dataset"].dropna().astype(str).unique())
    base = METRICS["top1"].label
    if datasets == ["synthetic"]:
        return base[:-1] + ", SYNTHETIC data, not CIFAR-10)"
    if datasets:
        return base[:-1] + f", {', '.join(datasets)})"
    return base


def figures_for(group: Group, fr: Frontier, out_dir: str) -> Optional[str]:
    from bench.analysis import plots

    if fr.points.empty:
        return None
    x, y = METRICS[fr.pair.x], METRICS[fr.pair.y]
    pts = fr.points
    data = pd.DataFrame({"x": pts[x.column] * x.scale, "y": pts[y.column] * y.scale, "front": pts["front"],
                         "tied": pts["tied"] if "tied" in pts else False,
                         "family": pts["family"], "cardinality": pts["cardinality"], "params": pts["params"]})
    labels = pts["label"].astype(str)
    if "top1" in (fr.pair.x, fr.pair.y) and pts["synthetic"].any() and not pts["synthetic"].all():
        labels = labels + np.where(pts["synthetic"], " (synthetic)", "")
    if "top1" in (fr.pair.x, fr.pair.y) and "near_chance" in pts:
        labels = labels + np.where(pts["near_chance"].astype(bool), " (chance)", "")
    if "tied" in pts:
        labels = labels + np.where(pts["tied"].astype(bool), " (tied)", "")
    # a noisy timing stays visible in the figure, not only in the tables
    for key, flag in (("latency", "latency_bs1_noisy"), ("throughput", "throughput_noisy")):
        if key in (fr.pair.x, fr.pair.y):
            labels = labels + np.where(pts[flag].astype(bool), " (noisy)", "")
    data["label"] = labels.to_numpy()
    ylabel = _accuracy_label(pts) if fr.pair.y == "top1" else _axis_label(y, data["y"].tolist())
    xlabel = _axis_label(x, data["x"].tolist())
    warn = "  [SYNTHETIC-DATA ACCURACY]" if "top1" in (fr.pair.x, fr.pair.y) and pts["synthetic"].any() else ""
    title = f"{y.short} vs {x.short}{warn}\n{group.title}"
    name = f"{group.slug}-{fr.pair.name}"
    plots.pareto_plot(data, xlabel, ylabel, x.sense, title, os.path.join(out_dir, name))
    return name


def curve_figures(group: Group, out_dir: str) -> List[Tuple[str, str]]:
    from bench.analysis import plots

    labels = {tuple(k): lab for k, lab in zip(group.points[list(POINT_KEY)].itertuples(index=False, name=None),
                                              group.points["label"])}
    rows = group.rows[group.rows["batch_size"].notna()].copy()
    rows["label"] = [labels.get(k) for k in rows[list(POINT_KEY)].itertuples(index=False, name=None)]
    made = []
    for col, what, ylabel in (("throughput_img_s", "throughput", "throughput (images/s)"),
                              ("peak_mem_mb", "memory", "peak inference memory (MiB)")):
        have = rows[rows[col].notna()]
        if have.empty:
            continue
        name = f"{group.slug}-{what}_vs_batch"
        plots.batch_curves(have, col, ylabel, f"{what} vs batch size\n{group.title}", os.path.join(out_dir, name))
        made.append((name, f"{what} vs batch size"))
    return made
