"""Where the time goes, from profile CSVs: per-class tables, share charts, a roofline, one sentence each.

Reads ``*.profile.csv`` files only (pandas, matplotlib; no torch). For each
variant x batch size x phase group (inference; the training step), the
operator classes' time share is set beside their MAC share, the MAC-carrying
classes are placed on a roofline (achieved GFLOP/s against MACs per byte,
under the device's measured peak and bandwidth), and one sentence names the
class whose time share and MAC share differ most. A second sentence places
each MAC-carrying class that takes a real share of the time on that roofline:
left of the ridge it is memory-bound in the roofline's terms, right of it
compute-bound, and in both cases the share of the roof it reaches is given, so
no explanation says more than the measurements beside it.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Sequence, Tuple

import pandas as pd

from bench.errors import UserError
from bench.results.profile_schema import OP_CLASSES, PROFILE_COLUMNS, profile_path

GROUP_PHASES = {"inference": ("inference",), "train step": ("train_forward", "train_backward", "train_optimizer")}
_NUMERIC = ("ms", "macs", "bytes", "batch_size", "measured_ms_median", "unprofiled_ms_median", "profiled_ms_total",
            "agreement",
            "profiler_overhead", "peak_gflop_s", "bandwidth_gb_s")
_KEYS = ["cell_id", "variant", "device", "precision", "batch_size"]


def load_profiles(paths: Sequence[str]) -> pd.DataFrame:
    """Profile rows of every file; a file of the wrong shape is a one-line ``UserError``."""
    frames = []
    for path in paths:
        try:
            df = pd.read_csv(path, dtype={"cell_id": str, "run_id": str, "variant_id": str})
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise UserError(f"{path}: cannot read a profile CSV: {' '.join(str(e).split())[:200]}") from None
        missing = [c for c in PROFILE_COLUMNS if c not in df.columns]
        if missing:
            raise UserError(f"{path}: {missing[0]}: column missing; expected a profile CSV "
                            f"(written by profile: true or benchmark.py profile)")
        for col in _NUMERIC:
            values = pd.to_numeric(df[col], errors="coerce")
            bad = values.isna() & df[col].notna()
            if bad.any():
                raise UserError(f"{path}: {col}: expected a number, got {df[col][bad].iloc[0]!r} "
                                f"(row {int(bad.idxmax()) + 2})")
            df[col] = values
        df["source"] = path
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=PROFILE_COLUMNS + ["source"])
    return latest_runs(pd.concat(frames, ignore_index=True))


def latest_runs(df: pd.DataFrame) -> pd.DataFrame:
    """A cell profiled by several runs (a retried cell) keeps only its last run's rows."""
    if df.empty or df["run_id"].isna().all():
        return df
    last = df.groupby("cell_id")["run_id"].transform(lambda s: s.dropna().max() if s.notna().any() else None)
    return df[(df["run_id"] == last) | last.isna()].reset_index(drop=True)


def class_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One phase group of one cell and batch size, summed over stages (and phases) per operator class."""
    batch = rows["batch_size"].iloc[0]
    t = rows.groupby("op_class", sort=False)[["ms", "macs", "bytes"]].sum()
    t = t.reindex([c for c in OP_CLASSES if c in t.index])
    t["time_share"] = t["ms"] / t["ms"].sum() if t["ms"].sum() else float("nan")
    t["mac_share"] = t["macs"] / t["macs"].sum() if t["macs"].sum() else float("nan")
    t["intensity"] = (t["macs"] * batch / t["bytes"]).where(t["bytes"] > 0)
    t["gflop_s"] = (2 * t["macs"] * batch / (t["ms"] / 1e3) / 1e9).where((t["macs"] > 0) & (t["ms"] > 0))
    return t


def stage_table(rows: pd.DataFrame) -> pd.DataFrame:
    t = rows.groupby("stage", sort=False)[["ms", "macs"]].sum()
    t["time_share"] = t["ms"] / t["ms"].sum()
    t["mac_share"] = t["macs"] / t["macs"].sum() if t["macs"].sum() else float("nan")
    return t


def _pct(value: float, other: float) -> str:
    """A share as a percentage, with a decimal where whole numbers would hide the difference."""
    a, b = f"{value:.0%}", f"{other:.0%}"
    return f"{value:.1%}" if a == b else a


def largest_gap(table: pd.DataFrame) -> Optional[str]:
    """'grouped conv 3x3: 21% of MACs, 48% of time': the class whose time share most exceeds its MAC share.

    The question a profile answers is where time goes that the MACs do not explain, so the slow side of
    the gap is named (a class that is cheap for its MACs, such as dense 1x1 convs, is its mirror image).
    """
    t = table.dropna(subset=["time_share", "mac_share"])
    if t.empty:
        return None
    excess = t["time_share"] - t["mac_share"]
    cls = max(t.index, key=lambda c: round(excess[c], 9))
    time, macs = t.loc[cls, "time_share"], t.loc[cls, "mac_share"]
    return f"{cls}: {_pct(macs, time)} of MACs, {_pct(time, macs)} of time"


ROOFLINE_MIN_TIME_SHARE = 0.05  # classes below this share of the time are not worth a roofline clause
NEAR_RIDGE = 0.10  # "just left/right of the ridge" within this relative distance


def ridge(peak: float, bandwidth: float) -> float:
    """The roofline's ridge in MACs per byte: where 2 FLOPs per MAC x bandwidth reaches the peak."""
    return peak / (2 * bandwidth)


def roofline_sentence(table: pd.DataFrame, peak: Optional[float], bandwidth: Optional[float]) -> Optional[str]:
    """Where each MAC-carrying class with >= 5% of the time sits against the probed roof, from the numbers.

    'grouped conv 3x3: 1.59 MACs/byte, right of the ridge (1.51): compute-bound in the roofline's terms, but
    reaching 9.1% of the 97.4 GFLOP/s peak'. None without a probed roof or such a class.
    """
    if not peak or not bandwidth or pd.isna(peak) or pd.isna(bandwidth):
        return None
    t = table.dropna(subset=["gflop_s", "intensity"])
    t = t[(t["macs"] > 0) & (t["time_share"] >= ROOFLINE_MIN_TIME_SHARE)]
    if t.empty:
        return None
    knee = ridge(peak, bandwidth)
    clauses = []
    for cls, r in t.iterrows():
        # within 10% of the ridge the side rests on the probe's precision: say so
        near = "just " if abs(r["intensity"] / knee - 1) < NEAR_RIDGE else ""
        if r["intensity"] > knee:
            side = (f"{near}right of the ridge: compute-bound in the roofline's terms, but reaching "
                    f"{r['gflop_s'] / peak:.1%} of the {peak:.3g} GFLOP/s peak")
        else:
            roof = 2 * r["intensity"] * bandwidth
            side = (f"{near}left of the ridge: memory-bound in the roofline's terms, reaching "
                    f"{r['gflop_s'] / roof:.1%} of the {roof:.3g} GFLOP/s its bytes allow at {bandwidth:.3g} GB/s")
        clauses.append(f"{cls} at {r['intensity']:.3g} MACs/byte, {side}")
    return f"Roofline (ridge at {knee:.3g} MACs/byte): " + "; ".join(clauses)


def groups(df: pd.DataFrame) -> List[Tuple[Tuple, str, pd.DataFrame]]:
    """(cell key, phase group, rows) for every profiled cell x batch size x phase group, in file order."""
    out = []
    for key, rows in df.groupby(_KEYS, sort=False, dropna=False):
        for group, phases in GROUP_PHASES.items():
            part = rows[rows["phase"].isin(phases)]
            if not part.empty:
                out.append((key, group, part))
    return out


def agreement_line(rows: pd.DataFrame) -> str:
    r = rows.iloc[0]
    time_source = "CUDA kernel time" if r["time_source"] == "cuda_kernel" else "operator CPU time"
    text = (f"profiled {r['profiled_ms_total']:.4g} ms of {time_source} per iteration over "
            f"{int(r['profiled_iterations'])} iterations; profiler overhead {r['profiler_overhead']:+.0%} on wall time")
    if pd.notna(r["unprofiled_ms_median"]):
        text += f"; unprofiled iterations beside it {r['unprofiled_ms_median']:.4g} ms"
    if pd.notna(r["measured_ms_median"]):
        text += f"; timed median {r['measured_ms_median']:.4g} ms (ratio {r['agreement']:.2f})"
    note = r.get("agreement_note")
    if isinstance(note, str) and note:
        text += f". {note[0].upper()}{note[1:]}"
    return text + "."


def format_class_table(table: pd.DataFrame) -> List[str]:
    lines = ["| operator class | ms | time share | MACs/image | MAC share | MACs/byte | GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for cls, r in table.iterrows():
        lines.append(f"| {cls} | {r['ms']:.3g} | {r['time_share']:.1%} | {int(r['macs']):,} | "
                     f"{r['mac_share']:.1%} | {_num(r['intensity'])} | {_num(r['gflop_s'])} |")
    return lines


def _num(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.3g}"


def _slug(*parts: object) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")


# ------------------------------------------------------------------ figures
def share_chart(table: pd.DataFrame, title: str, out_base: str) -> List[str]:
    """Time share beside MAC share, one pair of bars per operator class."""
    from bench.analysis.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(8, 3.6))
    y = range(len(table))
    ax.barh([i - 0.2 for i in y], table["time_share"] * 100, height=0.4, color="#d62728", label="time share")
    ax.barh([i + 0.2 for i in y], table["mac_share"].fillna(0) * 100, height=0.4, color="#1f77b4", label="MAC share")
    ax.set_yticks(list(y))
    ax.set_yticklabels(table.index)
    ax.invert_yaxis()
    ax.set_xlabel("% of the phase's profiled time / of its MACs")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out_base)


def roofline_chart(table: pd.DataFrame, peak: Optional[float], bandwidth: Optional[float], title: str,
                   out_base: str) -> List[str]:
    """Achieved GFLOP/s against MACs per byte for the MAC-carrying classes, under the measured roof."""
    import numpy as np

    from bench.analysis.plots import plt, save_figure

    points = table.dropna(subset=["gflop_s", "intensity"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = np.logspace(np.log10(max(points["intensity"].min() / 3, 1e-2)), np.log10(points["intensity"].max() * 3), 100) \
        if not points.empty else np.logspace(-1, 3, 100)
    if peak and bandwidth:  # FLOP/byte = 2 x MACs/byte
        ax.plot(xs, np.minimum(peak, 2 * xs * bandwidth), "k--", lw=1,
                label=f"roof: {peak:.3g} GFLOP/s matmul peak, {bandwidth:.3g} GB/s copy")
    for cls, r in points.iterrows():
        ax.scatter(r["intensity"], r["gflop_s"], s=60, label=f"{cls} ({r['time_share']:.0%} of time)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity, MACs per byte moved (analytic)")
    ax.set_ylabel("achieved GFLOP/s (2 FLOPs per MAC)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, out_base)


# ------------------------------------------------------------------ report
def profile_lines(csv_paths: Sequence[str], out_dir: str) -> List[str]:
    """The report's profile section for the ``*.profile.csv`` beside ``csv_paths`` (none: no lines)."""
    paths = [p for p in (profile_path(c) for c in csv_paths) if os.path.isfile(p)]
    if not paths:
        return []
    return render(load_profiles(paths), out_dir, paths)


def render(df: pd.DataFrame, out_dir: str, paths: Sequence[str]) -> List[str]:
    """Markdown (and figures in ``out_dir``) for loaded profile rows."""
    lines = ["## Where the time goes (profile)", "",
             "From " + ", ".join(f"`{p}`" for p in paths) + ": torch.profiler over extra untimed iterations, "
             "time attributed to operator classes (per stage in the CSV), set beside the analytic MACs. Shares are "
             "fairly robust to a loaded machine; absolute ms and GFLOP/s are not. Classes without MACs (batch "
             "norm, ReLU, adds, pooling) are absent from the roofline.", ""]
    for key, group, rows in groups(df):
        cell_id, variant, device, precision, batch = key
        table = class_table(rows)
        title = f"{variant}, batch {int(batch)}, {device} {precision}, {group}"
        gap = largest_gap(table)
        lines += [f"### {title}", ""]
        if gap:
            lines += [f"Largest gap: {gap}.", ""]
        r = rows.iloc[0]
        roof = roofline_sentence(table, r["peak_gflop_s"], r["bandwidth_gb_s"])
        if roof:
            lines += [f"{roof}.", ""]
        lines += [agreement_line(rows), ""]
        lines += format_class_table(table) + [""]
        base = _slug("profile", variant, f"bs{int(batch)}", device, precision, group)
        share_chart(table, f"time share vs MAC share: {title}", os.path.join(out_dir, base + "-shares"))
        roofline_chart(table, r["peak_gflop_s"], r["bandwidth_gb_s"], f"roofline: {title}",
                       os.path.join(out_dir, base + "-roofline"))
        lines += [f"![time share vs MAC share, {title}]({base}-shares.png)", "",
                  f"![roofline, {title}]({base}-roofline.png)", ""]
    return lines
