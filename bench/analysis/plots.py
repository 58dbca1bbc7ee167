"""Figures for the report: Pareto scatter plots and per-variant batch-size curves.

Only matplotlib (Agg backend, no display needed) and plain tables in; files
out. What to plot and which points form the frontier is decided by the caller
(:mod:`bench.analysis.reports`), so these functions can be checked by eye in isolation.

Visual encoding, the same in every scatter plot: colour = family (ResNet or
ResNeXt), marker = cardinality, marker area = parameters (log-scaled), a black
edge + label = on the Pareto frontier, dashed staircase = the frontier itself.
"""
from __future__ import annotations

import math
import os
import tempfile
from typing import List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display, works on a headless runner
# The same data gives the same SVG bytes: no random clip-path ids and no date (committed figures
# change in git only when their data does).
matplotlib.rcParams["svg.hashsalt"] = "resnext-bench"

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

FORMATS = ("png", "svg")
DPI = 120
FAMILY_COLOURS = {"resnet": "#1f77b4", "resnext": "#d62728"}
OTHER_COLOUR = "#7f7f7f"
CARDINALITY_MARKERS = {1: "o", 2: "s", 4: "^", 8: "D", 16: "v", 32: "P", 64: "X"}
OTHER_MARKER = "*"
# Non-frontier points get grey labels too while the plot stays readable.
LABEL_ALL_UP_TO = 20
# A data range spanning at least this factor gets a log axis.
LOG_SPAN = 10.0
_SIZE_MIN, _SIZE_MAX = 40.0, 320.0


def marker_for(cardinality: object) -> str:
    try:
        return CARDINALITY_MARKERS.get(int(cardinality), OTHER_MARKER)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return OTHER_MARKER


def colour_for(family: object) -> str:
    return FAMILY_COLOURS.get(str(family), OTHER_COLOUR)


def wants_log(values: Sequence[float]) -> bool:
    """Log scale when every value is positive and they span a decade or more."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return v.size > 1 and bool(np.all(v > 0)) and v.max() / v.min() >= LOG_SPAN


def marker_sizes(params: Sequence[float]) -> np.ndarray:
    """Marker areas from parameter counts, log-scaled to [_SIZE_MIN, _SIZE_MAX] within one plot."""
    p = np.asarray(params, dtype=float)
    ok = np.isfinite(p) & (p > 0)
    sizes = np.full(p.shape, (_SIZE_MIN + _SIZE_MAX) / 2)
    if ok.sum() >= 2:
        lo, hi = np.log(p[ok].min()), np.log(p[ok].max())
        if hi > lo:
            sizes[ok] = _SIZE_MIN + (np.log(p[ok]) - lo) / (hi - lo) * (_SIZE_MAX - _SIZE_MIN)
    return sizes


def set_log(axis) -> None:
    """Log scale with plain-number ticks at 1-2-5 steps (no 3x10^-2 clutter on the minor ticks)."""
    axis.axes.set_xscale("log") if axis is axis.axes.xaxis else axis.axes.set_yscale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _size_for(param: float, params: Sequence[float]) -> float:
    return float(marker_sizes(list(params) + [param])[-1])


def _format_params(p: float) -> str:
    return f"{p / 1e6:.3g} M" if p >= 1e5 else f"{p / 1e3:.3g} k"


_METADATA = {"svg": {"Date": None}}  # (matplotlib writes no date into a PNG)


def save_figure(fig, out_base: str) -> List[str]:
    """Write ``out_base.png`` and ``.svg`` (each via a temporary file and rename: never half-written)."""
    paths = []
    folder = os.path.dirname(os.path.abspath(out_base))
    # measure the tight box (legend outside the axes included) once for both formats
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.08)
    for fmt in FORMATS:
        path = f"{out_base}.{fmt}"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f".{fmt}", dir=folder)
        os.close(fd)
        try:
            fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches=box, metadata=_METADATA.get(fmt))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        paths.append(path)
    plt.close(fig)
    return paths


def _legend_handles(points: pd.DataFrame, frontier: bool, tied: bool = False) -> List[Line2D]:
    handles: List[Line2D] = []
    for fam in sorted(points["family"].dropna().astype(str).unique()):
        handles.append(Line2D([], [], ls="", marker="o", ms=8, color=colour_for(fam), label=fam))
    cards = sorted({int(c) for c in points["cardinality"].dropna()})
    for c in cards:
        handles.append(Line2D([], [], ls="", marker=marker_for(c), ms=8, color="#555555",
                              label=f"cardinality {c}"))
    params = points["params"].dropna()
    params = params[params > 0]
    if params.nunique() >= 2:
        for p in sorted({params.min(), float(np.exp(np.log(params).mean())), params.max()}):
            ms = math.sqrt(_size_for(p, params.tolist()))
            handles.append(Line2D([], [], ls="", marker="o", ms=ms, color="#bbbbbb", markeredgecolor="#555555",
                                  label=f"{_format_params(p)} params"))
    if frontier:
        handles.append(Line2D([], [], ls="--", color="black", label="Pareto frontier"))
    if tied:
        handles.append(Line2D([], [], ls="", marker="o", ms=8, color="#bbbbbb", markeredgecolor="black",
                              label="tied with the frontier (within noise)"))
    return handles


# Label offsets in points (dx, dy, horizontal alignment, vertical alignment), tried in order.
_CANDIDATES: Tuple[Tuple[float, float, str, str], ...] = (
    (7, 5, "left", "bottom"), (7, -5, "left", "top"), (-7, 5, "right", "bottom"), (-7, -5, "right", "top"),
    (0, 10, "center", "bottom"), (0, -10, "center", "top"), (12, 16, "left", "bottom"), (12, -16, "left", "top"),
    (-12, 16, "right", "bottom"), (-12, -16, "right", "top"), (0, 24, "center", "bottom"), (0, -24, "center", "top"),
)


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str],
                 emphasis: Sequence[bool]) -> List[Bbox]:
    """Annotate points, choosing per label the candidate offset that overlaps least.

    Greedy: emphasised (frontier) labels first, each placed where it overlaps
    the already placed labels, the markers and the axes border least. Good
    enough for tens of points; no iterative solver.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    axes_box = ax.get_window_extent(renderer)
    obstacles = [Bbox.from_extents(x - 6, y - 6, x + 6, y + 6) for x, y in pts]
    placed: List[Bbox] = []
    order = sorted(range(len(texts)), key=lambda i: (not emphasis[i], i))
    for i in order:
        style = dict(fontsize=8, fontweight="bold", color="black") if emphasis[i] else dict(fontsize=7, color="#666666")
        ann = ax.annotate(texts[i], (xs[i], ys[i]), xytext=(7, 5), textcoords="offset points", **style)
        best, best_score = None, math.inf
        for dx, dy, ha, va in _CANDIDATES:
            ann.set_position((dx, dy))
            ann.set_ha(ha)
            ann.set_va(va)
            box = ann.get_window_extent(renderer)
            score = sum(_overlap(box, b) for b in placed) * 3
            score += sum(_overlap(box, b) for j, b in enumerate(obstacles) if j != i)
            # leaving the axes risks running into the legend or the next label column
            inside = _overlap(box, axes_box)
            score += (box.width * box.height - inside) * 2
            if score < best_score:
                best, best_score = (dx, dy, ha, va, box), score
            if score == 0:
                break
        dx, dy, ha, va, box = best  # type: ignore[misc]
        ann.set_position((dx, dy))
        ann.set_ha(ha)
        ann.set_va(va)
        placed.append(box)
    return placed


def pareto_plot(points: pd.DataFrame, xlabel: str, ylabel: str, x_sense: str, title: str,
                out_base: str) -> List[str]:
    """Scatter of ``points`` (columns x, y, label, family, cardinality, params, front) with the frontier.

    ``x_sense`` ("min" or "max") sets the direction of the frontier staircase:
    the best y reachable for a given x budget.
    """
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    sizes = marker_sizes(points["params"].tolist())
    front = points["front"].to_numpy(dtype=bool)
    # tied: off the frontier but within noise of it; drawn as strongly, with a dashed edge
    tied = points["tied"].to_numpy(dtype=bool) if "tied" in points else np.zeros(len(points), dtype=bool)
    for i, (_, p) in enumerate(points.iterrows()):
        shown = front[i] or tied[i]
        ax.scatter([p["x"]], [p["y"]], s=sizes[i], marker=marker_for(p["cardinality"]), c=colour_for(p["family"]),
                   alpha=0.9 if shown else 0.45, edgecolors="black" if shown else "none",
                   linewidths=1.4 if shown else 0, linestyles="--" if tied[i] else "-", zorder=3 if shown else 2)
    if front.any():
        f = points[front].sort_values(["x", "y"])
        ax.plot(f["x"], f["y"], ls="--", color="black", lw=1.0, alpha=0.7, zorder=1,
                drawstyle="steps-post" if x_sense == "min" else "steps-pre")
    if wants_log(points["x"].tolist()):
        set_log(ax.xaxis)
    if wants_log(points["y"].tolist()):
        set_log(ax.yaxis)
    ax.margins(0.12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    ax.legend(handles=_legend_handles(points, bool(front.any()), bool(tied.any())), loc="upper left",
              bbox_to_anchor=(1.02, 1.0),
              borderaxespad=0.0, fontsize=8, labelspacing=1.0, frameon=False)
    # No tight_layout: save_figure crops to the drawn content anyway, and skipping it saves a layout pass.
    # Fix the limits before measuring label boxes: placement works in display coordinates
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    label_all = len(points) <= LABEL_ALL_UP_TO
    keep = [i for i in range(len(points)) if front[i] or tied[i] or label_all]
    place_labels(ax, points["x"].to_numpy()[keep], points["y"].to_numpy()[keep],
                 [points["label"].iloc[i] for i in keep], [bool(front[i] or tied[i]) for i in keep])
    return save_figure(fig, out_base)


def batch_curves(rows: pd.DataFrame, ycol: str, ylabel: str, title: str, out_base: str) -> List[str]:
    """One line per series (column ``label``): ``ycol`` against ``batch_size``.

    ``rows`` also needs ``family`` and ``cardinality``: ResNeXt series are
    dashed, markers follow cardinality as in the scatter plots.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    labels = list(dict.fromkeys(rows["label"]))
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    for k, label in enumerate(labels):
        s = rows[rows["label"] == label].sort_values("batch_size")
        first = s.iloc[0]
        ax.plot(s["batch_size"], s[ycol], marker=marker_for(first["cardinality"]), ms=6,
                ls="--" if str(first["family"]) == "resnext" else "-", color=cmap(k % cmap.N), label=label)
    batches = rows["batch_size"].tolist()
    if wants_log(batches) or (len(set(batches)) > 1 and min(batches) > 0 and max(batches) / min(batches) >= 4):
        ax.set_xscale("log", base=2)
        ticks = sorted(set(int(b) for b in batches))
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
    else:
        ax.set_xticks(sorted(set(int(b) for b in batches)))
    if wants_log(rows[ycol].tolist()):
        set_log(ax.yaxis)
        ylabel = ylabel[:-1] + ", log scale)" if ylabel.endswith(")") else ylabel + " (log scale)"
    ax.set_xlabel("batch size (images per forward pass)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False,
              ncol=1 if len(labels) <= 20 else 2)  # two columns keep a long legend within the figure's height
    return save_figure(fig, out_base)
