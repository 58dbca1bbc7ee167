"""The grouped-convolution microbenchmark's CSV, read back: a table and the sentence its numbers support.

``benchmarks/grouped_conv.py`` writes the CSV (the 3x3 convolution alone at the
CPU study's shapes, GFLOP/s against channels per group d); this module reads
it (pandas only, no torch) so that the study report can quote it:
:func:`sentence` returns one paragraph whose every number and every comparison
("rises with d", "right of the ridge") is computed from the file.
"""
from __future__ import annotations

from typing import List, Optional

import pandas as pd

from bench.errors import UserError

COLUMNS = ["sweep", "stage", "channels", "spatial", "groups", "d", "batch_size", "threads", "macs", "bytes",
           "arithmetic_intensity", "ms_best", "ms_median", "round_spread", "noisy", "rounds", "gflop_s", "peak_gflop_s",
           "bandwidth_gb_s", "ridge_macs_per_byte", "roof_gflop_s", "roof_share", "vector_lanes_fp32",
           "vector_isa", "torch_cpu_capability"]
_TEXT = ("sweep", "stage", "vector_isa", "torch_cpu_capability")


def read(path: str) -> pd.DataFrame:
    """The microbenchmark's rows; a missing file, column or number is a one-line ``UserError``."""
    try:
        df = pd.read_csv(path, comment="#", dtype={c: str for c in _TEXT})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the grouped-conv CSV: {' '.join(str(e).split())[:200]}") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: {missing[0]}: column missing; expected benchmarks/grouped_conv.py's CSV")
    if df.empty:
        raise UserError(f"{path}: no rows")
    for col in COLUMNS:
        if col in _TEXT:
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() | (values < 0)
        if bad.any():
            raise UserError(f"{path}: {col}: expected a non-negative number, got {df[col][bad].iloc[0]!r} "
                            f"(row {int(bad.idxmax()) + 2})")
        df[col] = values
    return df


def summary_lines(path: str) -> List[str]:
    """A fixed-width table per sweep and batch size: d, groups, MACs, intensity, ms, GFLOP/s, roof share."""
    df = read(path)
    lines = []
    for (sweep, stage, batch), part in df.groupby(["sweep", "stage", "batch_size"], sort=False):
        part = part.sort_values("d")
        lines += [f"{sweep} sweep, {stage} ({_where(part)}), batch {int(batch)}:",
                  f"{'d':>4s} {'groups':>6s} {'channels':>8s} {'MACs/image':>11s} {'MACs/byte':>9s} "
                  f"{'best ms':>9s} {'spread':>6s} {'GFLOP/s':>8s} {'of roof':>7s}  side of ridge"]
        for r in part.itertuples():
            side = "right" if r.arithmetic_intensity > r.ridge_macs_per_byte else "left"
            lines.append(f"{int(r.d):4d} {int(r.groups):6d} {int(r.channels):8d} {int(r.macs):11,d} "
                         f"{r.arithmetic_intensity:9.3g} {r.ms_best:9.4g} {r.round_spread:6.1%} "
                         f"{r.gflop_s:8.3g} {r.roof_share:7.1%}  {side}")
        lines.append("")
    return lines[:-1]


def _where(part: pd.DataFrame) -> str:
    r = part.iloc[0]
    if part["channels"].nunique() == 1:
        return f"{int(r.channels)} channels at {int(r.spatial)}x{int(r.spatial)}"
    return f"fixed MACs {int(r.macs):,} per image at {int(r.spatial)}x{int(r.spatial)}"


def sentence(path: str, batch_size: Optional[int] = None, study_d: int = 4) -> str:
    """What the microbenchmark shows, from its numbers.

    Speaks of the fixed-channels sweep at its widest stage, at ``batch_size``
    (default: the largest measured), and of ``study_d`` (the C=32 network's
    channels per group at that stage); then of the fixed-MACs sweep at the
    same batch. Every comparison is made here, from the file: a claim the
    numbers do not support is not made (e.g. "rises with d" only when it does
    at every doubling).
    """
    df = read(path)
    fixed = df[df["sweep"] == "channels"]
    if fixed.empty:
        raise UserError(f"{path}: no rows of the channels sweep")
    fixed = fixed[fixed["channels"] == fixed["channels"].max()]
    batches = sorted(int(b) for b in fixed["batch_size"].unique())
    batch = batches[-1] if batch_size is None else batch_size
    part = fixed[fixed["batch_size"] == batch].sort_values("d")
    if part.empty:
        raise UserError(f"{path}: no channels-sweep rows at batch {batch} (measured: {batches})")
    first = part.iloc[0]
    lanes, peak, ridge = int(first.vector_lanes_fp32), first.peak_gflop_s, first.ridge_macs_per_byte
    gf = dict(zip(part["d"].astype(int), part["gflop_s"]))
    ds = sorted(gf)
    text = (f"The 3x3 convolution alone (`grouped_conv.csv`: fp32, {int(first.threads)} thread(s), "
            f"{first.vector_isa} with {lanes} fp32 lanes; {_where(part)}, batch {batch}) runs at "
            + ", ".join(f"{gf[d]:.3g}" for d in ds) + " GFLOP/s for d = " + ", ".join(map(str, ds))
            + " channels per group")
    text += "; " + _trend(gf, ds)
    if study_d in gf and ds[-1] != study_d:
        text += (f"; at d = {study_d} (the C=32 network at this stage) it reaches {gf[study_d] / gf[ds[-1]]:.0%} "
                 f"of d = {ds[-1]}'s rate")
    text += ". " + _lanes(gf, lanes) + " " + _roofline(part, peak, ridge) + _caveats(part)
    macs = df[(df["sweep"] == "macs") & (df["batch_size"] == batch)].sort_values("d")
    if len(macs) >= 2:
        lo, hi = macs.iloc[0], macs.iloc[-1]
        text += (f" At fixed MACs ({int(lo.macs):,} per image, {int(lo.spatial)}x{int(lo.spatial)}), "
                 f"d = {int(lo.d)} ({int(lo.channels)} channels) takes {lo.ms_best:.3g} ms and d = {int(hi.d)} "
                 f"({int(hi.channels)} channels) {hi.ms_best:.3g} ms: {lo.ms_best / hi.ms_best:.1f}x the time "
                 "for the same MACs.")
    return text


def _caveats(part: pd.DataFrame) -> str:
    """What makes the numbers above rough: noisy shapes."""
    out = []
    noisy = int(part["noisy"].sum())
    if noisy:
        out.append(f"{noisy} of these {len(part)} shapes were noisy (their round medians spread by more than 10%): "
                   "each rate is the quickest of its samples, not a typical one")
    return (" " + "; ".join(out)[0].upper() + "; ".join(out)[1:] + ".") if out else ""


def _trend(gf: dict, ds: List[int]) -> str:
    falls = [(a, b) for a, b in zip(ds, ds[1:]) if gf[b] <= gf[a]]
    if not falls:
        return f"the rate rises at every doubling of d, {gf[ds[-1]] / gf[ds[0]]:.1f}x from d = {ds[0]} to {ds[-1]}"
    best = max(ds, key=lambda d: gf[d])
    where = ", ".join(f"d = {a} -> {b} ({gf[a]:.3g} -> {gf[b]:.3g})" for a, b in falls)
    return f"the rate is not monotone in d: it falls at {where} and is highest at d = {best}"


def _lanes(gf: dict, lanes: int) -> str:
    below = [gf[d] for d in gf if d < lanes]
    above = [gf[d] for d in gf if d >= lanes]
    if not below or not above:
        return f"Every d measured is on one side of the {lanes}-lane vector width."
    if max(below) < min(above):
        return (f"Every d below the {lanes}-lane vector width runs slower (at most {max(below):.3g} GFLOP/s) "
                f"than every d at or above it (at least {min(above):.3g}).")
    return (f"The {lanes}-lane vector width does not split the rates: d < {lanes} reach up to {max(below):.3g} "
            f"GFLOP/s, d >= {lanes} as little as {min(above):.3g}.")


def _roofline(part: pd.DataFrame, peak: float, ridge: float) -> str:
    over = part[part["roof_share"] > 1]
    if len(over):  # a roof below a measured rate is no ceiling: no position under it means anything
        fast = over.loc[over["gflop_s"].idxmax()]
        return (f"The roof (a matmul probe, {peak:.3g} GFLOP/s) is below the {fast.gflop_s:.3g} GFLOP/s that "
                f"d = {int(fast.d)} reached ({len(over)} of these {len(part)} shapes above it), so it is no "
                "ceiling for this convolution here and this run places no shape on the roofline.")
    right = part[part["arithmetic_intensity"] > part["ridge_macs_per_byte"]]
    left = part[part["arithmetic_intensity"] <= part["ridge_macs_per_byte"]]
    out = []
    if len(right):
        out.append(f"{_ds(right)} sit right of the probed ridge ({ridge:.3g} MACs/byte at a {peak:.3g} GFLOP/s "
                   f"peak): compute-bound in the roofline's terms, yet reaching "
                   f"{_share_range(right)} of the roof")
    if len(left):
        out.append(f"{_ds(left)} sit left of it: memory-bound in the roofline's terms, reaching "
                   f"{_share_range(left)} of the bandwidth roof")
    return "; ".join(out) + "."


def _ds(rows: pd.DataFrame) -> str:
    ds = [str(int(d)) for d in rows["d"]]
    return "d = " + ", ".join(ds)


def _share_range(rows: pd.DataFrame) -> str:
    lo, hi = rows["roof_share"].min(), rows["roof_share"].max()
    return f"{lo:.0%}" if f"{lo:.0%}" == f"{hi:.0%}" else f"{lo:.0%}-{hi:.0%}"
