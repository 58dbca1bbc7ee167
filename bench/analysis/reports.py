"""The ``report`` subcommand: Pareto plots and a one-page Markdown comparison of result CSVs.

Reads result files only (never builds or runs a model). The steps:

1. load and validate each CSV (:func:`load_results`), keeping the file it came from;
2. reduce the ``status == ok`` rows to one *point* per measured cell
   (:func:`cell_points`): batch-1 latency, throughput and peak memory at the
   cell's largest batch, complexity and accuracy;
3. split points by (device, device name, precision): timings from different
   hardware or precisions are never mixed on one frontier;
4. per group and pair of axes, compute the Pareto frontier with
   :func:`bench.analysis.pareto.pareto_front`, draw it (:mod:`bench.analysis.plots`) and table it;
5. write ``report.md`` beside the figures.

A cell measured in two files (or two runs appended to one file) stays two
points, each labelled with its file or run, so nothing is silently averaged.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.analysis import space_report
from bench.analysis.pareto import MAXIMIZE, MINIMIZE, pareto_front
from bench.results.files import sidecar_path
from bench.results.sidecar import Sidecar
from bench.results.validate import read_table
from bench.results.schema import STATUS_OK

# Columns a file must have for a report; everything else is optional (filled empty).
REQUIRED = ("cell_id", "variant", "status", "device", "precision", "batch_size", "params", "macs")
NUMERIC = ("batch_size", "requested_batch_size", "params", "macs", "cardinality", "bottleneck_width",
           "width_multiplier", "depth", "input_size", "threads", "latency_ms_median", "throughput_img_s",
           "achieved_gflop_s", "peak_mem_mb", "top1_acc", "top1_acc_std", "epochs", "n_seeds")
TEXT = ("run_id", "family", "device_name", "dataset", "error", "block", "blocks", "stem", "layout",
        "memory_format", "compile", "tf32", "pretrained", "latency_noisy")
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


def _axis_label(metric: Metric, values: Sequence[float]) -> str:
    from bench.analysis.plots import wants_log

    label = metric.label
    return label[:-1] + ", log scale)" if wants_log(values) and label.endswith(")") else label


# --------------------------------------------------------------------------- loading


@dataclass
class Source:
    path: str
    name: str  # how the report names the file (its stem, or parent/stem when stems collide)
    sidecar: Optional[Dict[str, Any]] = None
    sidecar_note: str = ""


def _source_names(paths: Sequence[str]) -> List[str]:
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    names = []
    for p, stem in zip(paths, stems):
        if stems.count(stem) > 1:
            parent = os.path.basename(os.path.dirname(os.path.abspath(p)))
            stem = f"{parent}/{stem}"
        names.append(stem)
    return names


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def load_results(paths: Sequence[str]) -> Tuple[pd.DataFrame, List[Source]]:
    """All rows of all files, with a ``source`` column; :class:`UserError` for unusable files."""
    if not paths:
        raise UserError("report: no result CSV given")
    unique = list(dict.fromkeys(os.path.abspath(p) for p in paths))
    given = {os.path.abspath(p): p for p in reversed(paths)}
    ordered = [given[a] for a in unique]
    sources, frames = [], []
    for path, name in zip(ordered, _source_names(ordered)):
        table = read_table(path, required=REQUIRED)  # every column checked by the one shared rule set
        for note in table.notes:
            print(f"warning: {note}", file=sys.stderr)
        df = table.frame
        for col in TEXT:
            if col not in df.columns:
                df[col] = None
        for col in NUMERIC:
            if col not in df.columns:
                df[col] = np.nan
        df = df.astype({c: object for c in TEXT})
        df["status"] = df["status"].astype(str).str.strip().str.lower()
        df["run_id"] = df["run_id"].where(df["run_id"].notna(), "")
        # a hand-made file may lack family: it follows from cardinality by definition
        missing_family = df["family"].isna()
        df.loc[missing_family, "family"] = np.where(df.loc[missing_family, "cardinality"] > 1, "resnext", "resnet")
        df["latency_noisy"] = df["latency_noisy"].map(_truthy)
        df["device_name"] = df["device_name"].where(df["device_name"].notna(), df["device"])
        df["source"] = name
        src = Source(path, name)
        try:
            sidecar = Sidecar.read(path)
            src.sidecar = sidecar.data if sidecar else None
            if sidecar is None:
                src.sidecar_note = f"no sidecar ({os.path.basename(sidecar_path(path))}) beside the CSV"
            elif sidecar.mismatch(path, df["run_id"]):  # another run's environment would be a false claim
                src.sidecar_note = sidecar.mismatch(path, df["run_id"])
                if sidecar.foreign(df["run_id"]):
                    src.sidecar, src.sidecar_note = None, src.sidecar_note + ": ignored"
                print(f"warning: {src.sidecar_note}", file=sys.stderr)
        except UserError as e:  # the CSV alone still makes a report; say what is missing
            src.sidecar_note = str(e)
        sources.append(src)
        frames.append(df)
    rows = pd.concat(frames, ignore_index=True)
    if not (rows["status"] == STATUS_OK).any():
        counts = rows["status"].value_counts()
        what = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no rows at all"
        raise UserError(f"{', '.join(ordered)}: no rows with status ok ({what}); nothing to report")
    return rows, sources


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


def _plain(value: Any) -> str:
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
            values = sub[col].map(_plain)
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


# --------------------------------------------------------------------------- Markdown helpers


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _num(value: Any, fmt: str = ".4g", scale: float = 1.0) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else format(v * scale, fmt)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _acc(p: pd.Series) -> str:
    """Accuracy in %, with the seed spread and a visible synthetic mark."""
    text = _num(p["top1_acc"], ".2f", 100)
    if text != "–" and not pd.isna(p.get("top1_acc_std")):
        text += f" ± {_num(p['top1_acc_std'], '.2f', 100)}"
    if text != "–" and p["synthetic"]:
        text += " (SYNTHETIC)"
    return text


def _value(p: pd.Series, key: str) -> str:
    m = METRICS[key]
    if key == "top1":
        return _acc(p)
    text = _num(p[m.column], m.fmt, m.scale)
    if key == "latency" and p["latency_bs1_noisy"] and text != "–":
        text += " (noisy)"
    if key == "throughput" and text != "–":
        text += f" @bs{int(p['throughput_bs'])}" + (" (noisy)" if p["throughput_noisy"] else "")
    if key == "memory" and text != "–":
        text += f" @bs{int(p['mem_bs'])}"
    return text


def _frontier_heading(group: Group, pair: Pair) -> str:
    x, y = METRICS[pair.x], METRICS[pair.y]
    return f"#### Frontier: {y.short} vs {x.short} — `{group.slug}`"


# --------------------------------------------------------------------------- report sections


def _get(node: Any, *keys: str) -> Any:
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    return node


def _runs_of(src: Source, run_ids: Sequence[str]) -> List[Dict[str, Any]]:
    """The sidecar's run entries that wrote rows of this CSV (a resumed or merged file has several).

    Older sidecars have no ``runs`` list: the top level is then the one run."""
    runs = Sidecar(sidecar_path(src.path), src.sidecar).runs if src.sidecar else []
    matching = [r for r in runs if r.get("run_id") in set(run_ids)]
    return matching or runs[-1:]


_ENV_FACTS: Tuple[Tuple[str, Any], ...] = (
    ("run id", lambda r, side: r.get("run_id")),
    ("started (UTC)", lambda r, side: _get(r, "environment", "timestamp") or r.get("started")),
    ("finished (UTC)", lambda r, side: r.get("finished")),
    ("git commit", lambda r, side: _get(r, "environment", "git_commit")),
    ("torch", lambda r, side: _get(r, "environment", "software", "torch")),
    ("CUDA / cuDNN", lambda r, side: f"{_get(r, 'environment', 'software', 'cuda') or '–'} / "
                                     f"{_get(r, 'environment', 'software', 'cudnn') or '–'}"),
    ("python", lambda r, side: _get(r, "environment", "software", "python")),
    ("CPU", lambda r, side: _get(r, "environment", "cpu", "cpu_model")),
    ("CPU cores", lambda r, side: _get(r, "environment", "cpu", "cpu_count")),
    ("torch threads at start", lambda r, side: _get(r, "environment", "cpu", "torch_threads")),
    ("GPU", lambda r, side: ", ".join(str(g.get("name")) for g in _get(r, "environment", "gpus") or []) or
     ("none" if _get(r, "environment") else None)),
    ("grid", lambda r, side: r.get("grid_name") or _get(side, "grid", "name")),
    ("quick mode", lambda r, side: r.get("quick")),
    ("run status", lambda r, side: r.get("status")),
)


_UNFINISHED = ("running", "killed", "interrupted", "failed")  # run statuses the runner writes besides finished


def _environment_lines(sources: List[Source], rows: pd.DataFrame) -> List[str]:
    """One column per run that wrote rows (per file, or per run of a resumed/merged file)."""
    header, columns = [""], []
    notes = [f"- `{s.name}`: {s.sidecar_note}" for s in sources if s.sidecar_note]
    for src in sources:
        mine = rows[rows["source"] == src.name]
        run_ids = [r for r in dict.fromkeys(mine["run_id"].astype(str)) if r]
        runs = _runs_of(src, run_ids)
        notes += [f"- `{src.name}`: run {r.get('run_id')} has status {r.get('status')}: it did not finish, so "
                  "this file may hold partial results" for r in runs if r.get("status") in _UNFINISHED]
        for run in runs or [{}]:
            several = len(runs) > 1
            header.append(f"`{src.name}`" + (f" run {run.get('run_id')}" if several else ""))
            col = []
            for _, get in _ENV_FACTS:
                value = get(run, src.sidecar) if run else None
                col.append("–" if value in (None, "", "– / –") else _plain(value))
            # the CSV's own facts, for this run's rows when the file holds several runs
            part = mine[mine["run_id"].astype(str) == str(run.get("run_id"))] if several else mine
            devices = "; ".join(sorted({f"{a} ({b})" for a, b in zip(part["device_name"].astype(str),
                                                                      part["device"].astype(str))})) or "–"
            threads = ", ".join(_plain(v) for v in sorted(part["threads"].dropna().unique())) or "–"
            counts = f"{int((part['status'] == STATUS_OK).sum())} / {len(part)}"
            columns.append(col + [devices, threads, counts])
    labels = [label for label, _ in _ENV_FACTS] + ["devices in the CSV", "threads in the CSV", "rows (ok / all)"]
    facts = [[label] + [c[i] for c in columns] for i, label in enumerate(labels)]
    facts = [f for f in facts if any(v != "–" for v in f[1:])]  # no sidecar anywhere: skip empty rows
    lines = ["## Environment", ""] + _table(header, facts)
    return lines + ([""] + notes if notes else []) + [""]


def _pair_lines(group: Group, fr: Frontier, figure: Optional[str]) -> List[str]:
    x, y = METRICS[fr.pair.x], METRICS[fr.pair.y]
    lines = [f"### {y.short} vs {x.short}", ""]
    if figure:
        lines += [f"![{y.short} vs {x.short}, {group.title}]({figure}.png)", "",
                  f"Figure: [`{figure}.png`]({figure}.png), [`{figure}.svg`]({figure}.svg)", ""]
    if fr.missing:
        lines += [f"{fr.missing} point(s) of this group lack {x.short} or {y.short} and are not shown.", ""]
    if fr.points.empty:
        return lines + ["No point has both values.", ""]
    front = fr.points[fr.points["front"]].sort_values([x.column, y.column])
    extra = [] if "params" in (fr.pair.x, fr.pair.y) else ["params"]
    header = ["variant", "cell", x.short, y.short, "family", "cardinality"] + \
        [METRICS[k].short for k in extra] + ["file"]
    body = [[p["label"], f"`{p['cell_id']}`", _value(p, fr.pair.x), _value(p, fr.pair.y), p["family"],
             _num(p["cardinality"], ".0f")] + [_value(p, k) for k in extra] + [p["source"]]
            for _, p in front.iterrows()]
    lines += [_frontier_heading(group, fr.pair), "",
              f"{len(front)} of {len(fr.points)} point(s) on the frontier "
              f"({'lower' if x.sense == MINIMIZE else 'higher'} {x.short} and "
              f"{'lower' if y.sense == MINIMIZE else 'higher'} {y.short} are better).", ""]
    return lines + _table(header, body) + [""]


def _ranked_lines(points: pd.DataFrame) -> List[str]:
    acc = points[points["top1_acc"].notna()]
    if acc.empty:
        speed = points[points["throughput_img_s"].notna()].sort_values("throughput_img_s", ascending=False)
        if speed.empty:
            return []
        header = ["rank", "variant", "throughput (img/s)", "latency bs1 (ms)", "achieved GFLOP/s",
                  "peak memory (MiB)", "GMACs"]
        body = [[i + 1, p["label"], _value(p, "throughput"), _value(p, "latency"), _num(p["achieved_gflop_s"]),
                 _value(p, "memory"), _num(p["macs"], ".4g", 1e-9)] for i, (_, p) in enumerate(speed.iterrows())]
        return ["### Ranked by throughput", "", "No accuracy in this group (a speed-only run).", ""] + \
            _table(header, body) + [""]

    def per(value: float, cost: float) -> float:
        return value / cost if cost and cost > 0 and not math.isnan(cost) else np.nan

    acc = acc.assign(acc_per_ms=[per(a * 100, c) for a, c in zip(acc["top1_acc"], acc["latency_bs1_ms"])],
                     acc_per_mib=[per(a * 100, c) for a, c in zip(acc["top1_acc"], acc["peak_mem_mb"])])
    acc = acc.assign(mem_rank=acc["acc_per_mib"].rank(ascending=False, method="min"))
    acc = acc.sort_values(["acc_per_ms", "top1_acc"], ascending=[False, False], na_position="last")
    header = ["rank", "variant", "top-1 (%)", "latency bs1 (ms)", "top-1 % per ms", "peak memory (MiB)",
              "top-1 % per MiB", "rank by % per MiB", "throughput (img/s)"]
    body = [[i + 1 if not math.isnan(p["acc_per_ms"]) else "–", p["label"], _acc(p), _value(p, "latency"),
             _num(p["acc_per_ms"], ".3g"), _value(p, "memory"), _num(p["acc_per_mib"], ".3g"),
             _num(p["mem_rank"], ".0f"), _value(p, "throughput")] for i, (_, p) in enumerate(acc.iterrows())]
    return ["### Ranked: accuracy per unit of latency and memory", "",
            "Sorted by top-1 accuracy (percentage points) per millisecond of batch-1 latency; the last column "
            "ranks by accuracy per MiB of peak memory instead. Ratios reward small models: read them with "
            "the frontiers above, not instead of them.", ""] + _table(header, body) + [""]


def _cardinality_lines(points: pd.DataFrame) -> List[str]:
    sets = cardinality_sets(points)
    if not sets:
        return []
    lines = ["### Cardinality at equal complexity", "",
             f"Variants sharing depth, stem, layout and input size whose MACs lie within "
             f"{EQUAL_MACS_TOLERANCE:.0%} of each other but differ in cardinality; ratios are relative to the "
             f"first (lowest-cardinality) row.", ""]
    for k, s in enumerate(sets, 1):
        ref = s.iloc[0]

        def ratio(col: str, p: pd.Series, ref: pd.Series = ref) -> str:
            return _num(p[col] / ref[col], ".2f") + "×" if ref[col] and not pd.isna(ref[col]) and \
                not pd.isna(p[col]) else "–"

        has_acc = s["top1_acc"].notna().any()
        header = ["variant", "cardinality", "width d", "params (M)", "GMACs", "MACs vs first"] + \
            (["top-1 (%)"] if has_acc else []) + \
            ["latency bs1 (ms)", "latency ×", "throughput (img/s)", "throughput ×", "peak memory (MiB)"]
        body = [[p["label"], _num(p["cardinality"], ".0f"), _num(p["bottleneck_width"], ".0f"),
                 _num(p["params"], ".4g", 1e-6), _num(p["macs"], ".4g", 1e-9),
                 f"{(p['macs'] / ref['macs'] - 1) * 100:+.1f}%"] + ([_acc(p)] if has_acc else []) +
                [_value(p, "latency"), ratio("latency_bs1_ms", p), _value(p, "throughput"),
                 ratio("throughput_img_s", p), _value(p, "memory")] for _, p in s.iterrows()]
        lines += [f"Set {k}: depth {_num(ref['depth'], '.0f')}, stem {ref['stem']}, layout {ref['layout']}, "
                  f"input {_num(ref['input_size'], '.0f')} px", ""] + _table(header, body) + [""]
    return lines


def _noisy_lines(points: pd.DataFrame) -> List[str]:
    noisy = points[points["latency_bs1_noisy"] | points["throughput_noisy"]]
    if noisy.empty:
        return []
    def batches(p: pd.Series) -> str:
        bs = ([1] if p["latency_bs1_noisy"] else []) + ([int(p["throughput_bs"])] if p["throughput_noisy"] else [])
        bs = list(dict.fromkeys(bs))
        return f"batch {bs[0]}" if len(bs) == 1 else "batches " + ", ".join(map(str, bs))

    names = ", ".join(f"{p['label']} ({batches(p)})" for _, p in noisy.iterrows())
    return [f"**Noisy timings** (IQR / median > 10%, or over 10% of the timed loop's CPU time spent in the "
            f"kernel: `latency_sys_share`; marked \"(noisy)\" in the tables): {names}. "
            "Re-measure on a quieter machine before trusting small differences.", ""]


def _failed_lines(rows: pd.DataFrame) -> List[str]:
    failed = rows[rows["status"] != STATUS_OK]
    if failed.empty:
        return ["## Failed cells", "", "None: every row has status ok.", ""]
    header = ["file", "variant", "cell", "device", "precision", "batch", "status", "error"]
    body = []
    for _, r in failed.iterrows():
        batch = r["batch_size"] if not pd.isna(r["batch_size"]) else r["requested_batch_size"]
        error = "" if pd.isna(r["error"]) else " ".join(str(r["error"]).split())
        body.append([r["source"], r["variant"], f"`{r['cell_id']}`", r["device"], r["precision"], _num(batch, ".0f"),
                     r["status"], error[:160] + ("…" if len(error) > 160 else "")])
    return ["## Failed cells", "", f"{len(failed)} row(s) without status ok; they are in no plot or table above.",
            ""] + _table(header, body) + [""]


def _dataset_warning(points: pd.DataFrame) -> List[str]:
    acc = points[points["top1_acc"].notna()]
    synthetic = acc[acc["synthetic"]]
    lines = []
    if len(synthetic):
        lines.append(f"> **Synthetic data.** {len(synthetic)} of {len(acc)} accuracy value(s) in this report were "
                     "measured on the synthetic dataset (generated images), marked SYNTHETIC. They check the "
                     "training pipeline; they are **not CIFAR-10 accuracies** and say nothing about the models' "
                     "quality.")
        lines.append("")
    datasets = sorted(acc["dataset"].dropna().astype(str).unique())
    if len(datasets) > 1:
        lines += [f"> Accuracies come from different datasets ({', '.join(datasets)}): compare them only within a "
                  "dataset (see the `dataset` of each file).", ""]
    return lines


# --------------------------------------------------------------------------- the report


def _accuracy_label(points: pd.DataFrame) -> str:
    datasets = sorted(points.loc[points["top1_acc"].notna(), "dataset"].dropna().astype(str).unique())
    base = METRICS["top1"].label
    if datasets == ["synthetic"]:
        return base[:-1] + ", SYNTHETIC data, not CIFAR-10)"
    if datasets:
        return base[:-1] + f", {', '.join(datasets)})"
    return base


def _figures_for(group: Group, fr: Frontier, out_dir: str) -> Optional[str]:
    from bench.analysis import plots

    if fr.points.empty:
        return None
    x, y = METRICS[fr.pair.x], METRICS[fr.pair.y]
    pts = fr.points
    data = pd.DataFrame({"x": pts[x.column] * x.scale, "y": pts[y.column] * y.scale, "front": pts["front"],
                         "family": pts["family"], "cardinality": pts["cardinality"], "params": pts["params"]})
    labels = pts["label"].astype(str)
    if "top1" in (fr.pair.x, fr.pair.y) and pts["synthetic"].any() and not pts["synthetic"].all():
        labels = labels + np.where(pts["synthetic"], " (synthetic)", "")
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


def _curve_figures(group: Group, out_dir: str) -> List[Tuple[str, str]]:
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


def build_report(rows: pd.DataFrame, sources: List[Source], out_dir: str) -> Tuple[str, Dict[str, Any]]:
    """Write the figures for loaded results into ``out_dir``; return (Markdown text, facts for tests)."""
    as_read = rows  # the environment table counts each file's rows as they are on disk
    rows, copies = drop_copies(rows)
    groups = assign_groups(rows)
    ok = rows[rows["status"] == STATUS_OK]
    points = cell_points(ok)
    title = ", ".join(s.name for s in sources)
    lines = [f"# Benchmark report: {title}", "",
             "Generated by `benchmark.py report` from " + ", ".join(f"`{s.path}`" for s in sources) + ". "
             "Only rows with status ok are plotted; each point is one measured cell. Timings from different "
             "devices or precisions are kept in separate sections and never mixed on one frontier.", ""]
    lines += _dataset_warning(points)
    if copies:
        lines += [f"{copies} row(s) repeated another file's row exactly (same run and values) and were counted "
                  "once.", ""]
    lines += _environment_lines(sources, as_read)
    facts: Dict[str, Any] = {"groups": {}, "figures": []}
    for group in groups:
        group.points = points[points["group"] == group.slug].reset_index(drop=True)
        group.rows = ok[ok["group"] == group.slug]
        if group.points.empty:
            lines += [f"## {group.title}", "", "No ok rows for this device and precision.", ""]
            continue
        pairs = pairs_for(group.points)
        acc_note = "" if pairs is ACCURACY_PAIRS else \
            " No accuracy was measured here (a speed-only run), so the plots set speed and memory against complexity." \
            if pairs is SPEED_PAIRS else \
            " Only some points have an accuracy, so speed and memory are also set against complexity."
        lines += [f"## {group.title}", "",
                  f"{len(group.points)} point(s) from " + ", ".join(f"`{s}`" for s in group.points["source"].unique())
                  + f"; figures prefixed `{group.slug}-`.{acc_note}", ""]
        lines += _noisy_lines(group.points)
        fronts = {}
        for pair in pairs:
            fr = frontier(group.points, pair)
            fronts[pair.name] = fr
            figure = _figures_for(group, fr, out_dir)
            if figure:
                facts["figures"].append(figure)
            lines += _pair_lines(group, fr, figure)
        curves = _curve_figures(group, out_dir)
        if curves:
            lines += ["### Batch-size curves", ""]
            for name, what in curves:
                facts["figures"].append(name)
                lines += [f"![{what}, {group.title}]({name}.png)", "",
                          f"Figure: [`{name}.png`]({name}.png), [`{name}.svg`]({name}.svg)", ""]
        lines += _ranked_lines(group.points)
        lines += _cardinality_lines(group.points)
        facts["groups"][group.slug] = {"title": group.title, "points": group.points, "frontiers": fronts}
    lines += space_report.section(rows, [s.sidecar for s in sources], out_dir)  # sampled cells only
    lines += _failed_lines(rows)
    from bench.analysis.profile_report import profile_lines  # RUN.profile.csv beside RUN.csv, if any
    lines += profile_lines([s.path for s in sources], out_dir)
    lines += ["## How to read this report", "",
              "- A point is on a Pareto frontier when no other point of the same section is at least as good on "
              "both axes and better on one. Exact ties are all kept.",
              "- Latency is the median forward time at batch 1; throughput and memory come from the largest batch "
              "each cell measured (shown as @bsN).",
              "- Colour: family (ResNet / ResNeXt); marker: cardinality; marker size: parameters.",
              "- Details: `docs/reports.md`.", ""]
    return "\n".join(lines), facts


def _write_text_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".md", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _prepare_out_dir(out_dir: str) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir}: exists and is not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out_dir}: cannot create the folder: {e.strerror}") from None


def write_report(csv_paths: List[str], out_dir: str) -> str:
    """Figures and ``report.md`` for the result CSVs in ``out_dir``; returns the report.md path.

    Raises :class:`UserError` for unusable input (missing file or columns, no ok rows)."""
    if not csv_paths:
        raise UserError("report: no result CSV given")
    rows, sources = load_results(csv_paths)  # every input validated before the output folder is touched
    _prepare_out_dir(out_dir)
    text, _ = build_report(rows, sources, out_dir)
    path = os.path.join(out_dir, "report.md")
    _write_text_atomic(path, text)
    return path


# --------------------------------------------------------------------------- CLI


def default_out_dir(csv_paths: Sequence[str]) -> str:
    return os.path.join("plots", os.path.splitext(os.path.basename(csv_paths[0]))[0])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", nargs="+", help="result CSV(s); several are combined, kept apart by device/precision")
    # SUPPRESS: the default depends on the CSV, so the help says it rather than "(default: None)"
    parser.add_argument("--out", default=argparse.SUPPRESS,
                        help="output folder (default: plots/<stem of the first CSV>/)")


def run(args: argparse.Namespace) -> int:
    out_dir = getattr(args, "out", None) or default_out_dir(args.csv)
    path = write_report(list(args.csv), out_dir)
    print(f"wrote plots and report to {path}")
    return 0
