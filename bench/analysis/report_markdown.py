"""Report Markdown: the sections of ``report.md``, rendered from the point tables of
:mod:`bench.analysis.report_points`. Pure text; figures are made by :mod:`bench.analysis.report_figures`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from bench.analysis.report_points import (EQUAL_MACS_TOLERANCE, METRICS, MINIMIZE, AccuracyComparison, AccuracyTests,
                                          Frontier, Group, Pair, Source, TrendComparison, cardinality_sets,
                                          headline_points, plain)
from bench.results.files import sidecar_path
from bench.results.schema import STATUS_OK
from bench.results.sidecar import Sidecar

# --------------------------------------------------------------------------- Markdown helpers


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def num_text(value: Any, fmt: str = ".4g", scale: float = 1.0) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else format(v * scale, fmt)


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def acc_text(p: pd.Series) -> str:
    """Accuracy in %, with the seed spread and visible chance-level and synthetic marks."""
    text = num_text(p["top1_acc"], ".2f", 100)
    if text != "–" and not pd.isna(p.get("top1_acc_std")):
        text += f" ± {num_text(p['top1_acc_std'], '.2f', 100)}"
    if text != "–" and p.get("near_chance", False):
        text += " (CHANCE)"
    if text != "–" and p["synthetic"]:
        text += " (SYNTHETIC)"
    return text


def seeds_text(p: pd.Series) -> str:
    """Accuracy as mean ± std (n seeds), in %, with the chance and synthetic marks."""
    text = acc_text(p)
    n = p.get("n_seeds")
    return text if text == "–" or pd.isna(n) else text.replace(" (", f" (n={int(n)}) (", 1) \
        if " (" in text else f"{text} (n={int(n)})"


def file_text(p: pd.Series) -> str:
    """The file a point came from; ``speed + train`` for a point joined on variant_id."""
    joined = p.get("acc_source")
    return f"{p['source']} + {joined}" if joined and joined != p["source"] else str(p["source"])


def value_text(p: pd.Series, key: str) -> str:
    m = METRICS[key]
    if key == "top1":
        return acc_text(p)
    text = num_text(p[m.column], m.fmt, m.scale)
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


def environment_lines(sources: List[Source], rows: pd.DataFrame) -> List[str]:
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
                col.append("–" if value in (None, "", "– / –") else plain(value))
            # the CSV's own facts, for this run's rows when the file holds several runs
            part = mine[mine["run_id"].astype(str) == str(run.get("run_id"))] if several else mine
            devices = "; ".join(sorted({f"{a} ({b})" for a, b in zip(part["device_name"].astype(str),
                                                                      part["device"].astype(str))})) or "–"
            threads = ", ".join(plain(v) for v in sorted(part["threads"].dropna().unique())) or "–"
            counts = f"{int((part['status'] == STATUS_OK).sum())} / {len(part)}"
            columns.append(col + [devices, threads, counts])
    labels = [label for label, _ in _ENV_FACTS] + ["devices in the CSV", "threads in the CSV", "rows (ok / all)"]
    facts = [[label] + [c[i] for c in columns] for i, label in enumerate(labels)]
    facts = [f for f in facts if any(v != "–" for v in f[1:])]  # no sidecar anywhere: skip empty rows
    lines = ["## Environment", ""] + md_table(header, facts)
    return lines + ([""] + notes if notes else []) + [""]


def pair_lines(group: Group, fr: Frontier, figure: Optional[str]) -> List[str]:
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
    body = [[p["label"], f"`{p['cell_id']}`", value_text(p, fr.pair.x), value_text(p, fr.pair.y), p["family"],
             num_text(p["cardinality"], ".0f")] + [value_text(p, k) for k in extra] + [file_text(p)]
            for _, p in front.iterrows()]
    lines += [_frontier_heading(group, fr.pair), "",
              f"{len(front)} of {len(fr.points)} point(s) on the frontier "
              f"({'lower' if x.sense == MINIMIZE else 'higher'} {x.short} and "
              f"{'lower' if y.sense == MINIMIZE else 'higher'} {y.short} are better).", ""]
    lines += md_table(header, body) + [""]
    return lines + tied_lines(group, fr)


def tied_lines(group: Group, fr: Frontier) -> List[str]:
    """The points off the frontier but within noise of it (accuracy pairs only)."""
    tied = fr.points[fr.points["tied"]] if "tied" in fr.points else fr.points.iloc[:0]
    if tied.empty:
        return []
    x, y = METRICS[fr.pair.x], METRICS[fr.pair.y]
    tied = tied.sort_values([x.column, y.column])
    header = ["variant", "cell", x.short, y.short, "family", "cardinality", "behind the frontier by", "file"]
    body = [[p["label"], f"`{p['cell_id']}`", value_text(p, fr.pair.x), value_text(p, fr.pair.y), p["family"],
             num_text(p["cardinality"], ".0f"), p["tied_note"], file_text(p)] for _, p in tied.iterrows()]
    return [f"#### Tied with the frontier: {y.short} vs {x.short} — `{group.slug}`", "",
            f"{len(tied)} point(s) off the frontier whose accuracy is not significantly below that of any point "
            "dominating them (seed spread plus the test set's sampling error, alpha 0.05): within noise, they may "
            "be on it.",
            ""] + md_table(header, body) + [""]


def ranked_lines(points: pd.DataFrame) -> List[str]:
    acc = points[points["top1_acc"].notna()]
    if acc.empty:
        speed = points[points["throughput_img_s"].notna()].sort_values("throughput_img_s", ascending=False)
        if speed.empty:
            return []
        header = ["rank", "variant", "throughput (img/s)", "latency bs1 (ms)", "achieved GFLOP/s",
                  "peak memory (MiB)", "GMACs"]
        body = [[i + 1, p["label"], value_text(p, "throughput"), value_text(p, "latency"),
                 num_text(p["achieved_gflop_s"]), value_text(p, "memory"), num_text(p["macs"], ".4g", 1e-9)]
                for i, (_, p) in enumerate(speed.iterrows())]
        return ["### Ranked by throughput", "", "No accuracy in this group (a speed-only run).", ""] + \
            md_table(header, body) + [""]

    def per(value: float, cost: float) -> float:
        return value / cost if cost and cost > 0 and not math.isnan(cost) else np.nan

    acc = acc.assign(acc_per_ms=[per(a * 100, c) for a, c in zip(acc["top1_acc"], acc["latency_bs1_ms"])],
                     acc_per_mib=[per(a * 100, c) for a, c in zip(acc["top1_acc"], acc["peak_mem_mb"])])
    acc = acc.assign(mem_rank=acc["acc_per_mib"].rank(ascending=False, method="min"))
    acc = acc.sort_values(["acc_per_ms", "top1_acc"], ascending=[False, False], na_position="last")
    header = ["rank", "variant", "top-1 (%)", "latency bs1 (ms)", "top-1 % per ms", "peak memory (MiB)",
              "top-1 % per MiB", "rank by % per MiB", "throughput (img/s)"]
    body = [[i + 1 if not math.isnan(p["acc_per_ms"]) else "–", p["label"], acc_text(p), value_text(p, "latency"),
             num_text(p["acc_per_ms"], ".3g"), value_text(p, "memory"), num_text(p["acc_per_mib"], ".3g"),
             num_text(p["mem_rank"], ".0f"), value_text(p, "throughput")] for i, (_, p) in enumerate(acc.iterrows())]
    return ["### Ranked: accuracy per unit of latency and memory", "",
            "Sorted by top-1 accuracy (percentage points) per millisecond of batch-1 latency; the last column "
            "ranks by accuracy per MiB of peak memory instead. Ratios reward small models: read them with "
            "the frontiers above, not instead of them.", ""] + md_table(header, body) + [""]


def cardinality_lines(points: pd.DataFrame) -> List[str]:
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
            return num_text(p[col] / ref[col], ".2f") + "×" if ref[col] and not pd.isna(ref[col]) and \
                not pd.isna(p[col]) else "–"

        has_acc = s["top1_acc"].notna().any()
        header = ["variant", "cardinality", "width d", "params (M)", "GMACs", "MACs vs first"] + \
            (["top-1 (%)"] if has_acc else []) + \
            ["latency bs1 (ms)", "latency ×", "throughput (img/s)", "throughput ×", "peak memory (MiB)"]
        body = [[p["label"], num_text(p["cardinality"], ".0f"), num_text(p["bottleneck_width"], ".0f"),
                 num_text(p["params"], ".4g", 1e-6), num_text(p["macs"], ".4g", 1e-9),
                 f"{(p['macs'] / ref['macs'] - 1) * 100:+.1f}%"] + ([acc_text(p)] if has_acc else []) +
                [value_text(p, "latency"), ratio("latency_bs1_ms", p), value_text(p, "throughput"),
                 ratio("throughput_img_s", p), value_text(p, "memory")] for _, p in s.iterrows()]
        lines += [f"Set {k}: depth {num_text(ref['depth'], '.0f')}, stem {ref['stem']}, layout {ref['layout']}, "
                  f"input {num_text(ref['input_size'], '.0f')} px", ""] + md_table(header, body) + [""]
    return lines


def noisy_lines(points: pd.DataFrame) -> List[str]:
    noisy = points[points["latency_bs1_noisy"] | points["throughput_noisy"]]
    if noisy.empty:
        return sys_share_lines(points)

    def batches(p: pd.Series) -> str:
        bs = ([1] if p["latency_bs1_noisy"] else []) + ([int(p["throughput_bs"])] if p["throughput_noisy"] else [])
        bs = list(dict.fromkeys(bs))
        return f"batch {bs[0]}" if len(bs) == 1 else "batches " + ", ".join(map(str, bs))

    names = ", ".join(f"{p['label']} ({batches(p)})" for _, p in noisy.iterrows())
    return [f"**Noisy timings** (IQR / median > 10%, or over 10% of the timed loop's CPU time spent in the "
            f"kernel: `latency_sys_share`; marked \"(noisy)\" in the tables): {names}. "
            "Re-measure on a quieter machine before trusting small differences.", ""] + sys_share_lines(points)


SYS_SHARE_LIMIT = 0.10  # a timed loop spending more than this in the kernel shared the machine


def sys_share_lines(points: pd.DataFrame) -> List[str]:
    """Timings whose loop spent over 10% of its time in the kernel (files from runners that record it)."""
    columns = [(c, what) for c, what in (("latency_sys_share", "forward"), ("train_step_sys_share", "train step"))
               if c in points]
    flagged = []
    for _, p in points.iterrows():
        high = [f"{what} {p[c]:.0%}" for c, what in columns if not pd.isna(p[c]) and p[c] > SYS_SHARE_LIMIT]
        if high:
            flagged.append(f"{p['label']} ({', '.join(high)})")
    if not flagged:
        return []
    return [f"**System time** above {SYS_SHARE_LIMIT:.0%} of a timed loop, as with a noisy row (other processes "
            f"or paging competed for the CPU): {', '.join(flagged)}. Treat these timings like noisy ones.", ""]


def failed_lines(rows: pd.DataFrame) -> List[str]:
    failed = rows[rows["status"] != STATUS_OK]
    if failed.empty:
        return ["## Failed cells", "", "None: every row has status ok.", ""]
    header = ["file", "variant", "cell", "device", "precision", "batch", "status", "error"]
    body = []
    for _, r in failed.iterrows():
        batch = r["batch_size"] if not pd.isna(r["batch_size"]) else r["requested_batch_size"]
        error = "" if pd.isna(r["error"]) else " ".join(str(r["error"]).split())
        body.append([r["source"], r["variant"], f"`{r['cell_id']}`", r["device"], r["precision"],
                     num_text(batch, ".0f"), r["status"], error[:160] + ("…" if len(error) > 160 else "")])
    return ["## Failed cells", "", f"{len(failed)} row(s) without status ok; they are in no plot or table above.",
            ""] + md_table(header, body) + [""]


def dataset_warning(points: pd.DataFrame) -> List[str]:
    acc = points[points["top1_acc"].notna()]
    synthetic = acc[acc["synthetic"]]
    lines = []
    if len(synthetic):
        lines.append(f"> **Synthetic data.** {len(synthetic)} of {len(acc)} accuracy value(s) in this report were "
                     "measured on the synthetic dataset (generated images), marked SYNTHETIC. They check the "
                     "training pipeline; they are **not CIFAR-10 accuracies** and say nothing about the models' "
                     "quality.")
        lines.append("")
    chance = acc[acc["near_chance"]] if "near_chance" in acc else acc.iloc[:0]
    if len(chance):
        which = "; ".join(f"{p['label']} {num_text(p['top1_acc'], '.2f', 100)}% ({p['chance_note']})"
                          for _, p in chance.iterrows())
        lines += [f"> **Chance-level accuracy.** {len(chance)} of {len(acc)} accuracy value(s) cannot be told apart "
                  f"from guessing (1 / number of classes; 10% on CIFAR-10) and are marked CHANCE: {which}. The "
                  "training was too short to learn anything measurable; do not compare these values.", ""]
    datasets = sorted(acc["dataset"].dropna().astype(str).unique())
    if len(datasets) > 1:
        lines += [f"> Accuracies come from different datasets ({', '.join(datasets)}): compare them only within a "
                  "dataset (see the `dataset` of each file).", ""]
    return lines


def join_lines(points: pd.DataFrame, notes: Sequence[str] = ()) -> List[str]:
    """Which points took their accuracy from another file's training rows (joined on variant_id)."""
    joined = points[points["acc_from"].astype(bool)] if "acc_from" in points else points.iloc[:0]
    lines = []
    if len(joined):
        which = ", ".join(f"{p['label']} (timed in `{p['source']}` `{p['cell_id']}`, trained in {p['acc_from']})"
                          for _, p in joined.iterrows())
        lines += [f"**Joined on variant_id:** {len(joined)} point(s) combine a speed row with the training row "
                  f"of the same architecture from another cell: {which}.", ""]
    if notes:
        lines += ["**Not joined:** " + "; ".join(notes) + ".", ""]
    return lines


def headline_lines(points: pd.DataFrame) -> List[str]:
    """One row per variant with accuracy: the numbers a summary quotes."""
    acc = headline_points(points)
    if acc.empty:
        return []

    def at_batch(value: float, batch: float, fmt: str) -> str:
        text = num_text(value, fmt)
        return text if text == "–" else f"{text} @bs{int(batch)}"

    header = ["variant", "top-1 (%) mean ± std (n seeds)", "MMACs", "params (k)", "latency bs1 (ms)",
              "throughput (img/s)", "train step (ms)", "peak memory (MiB)"]
    has_train_mem = acc["train_peak_mem_mb"].notna().any() if "train_peak_mem_mb" in acc else False
    header += ["train peak memory (MiB)"] if has_train_mem else []
    body = [[p["label"], seeds_text(p), num_text(p["macs"], ".4g", 1e-6), num_text(p["params"], ".4g", 1e-3),
             value_text(p, "latency"), value_text(p, "throughput"),
             at_batch(p["train_step_ms"], p["train_step_bs"], ".4g") + (" (noisy)" if p["train_step_noisy"] else ""),
             value_text(p, "memory")] + ([at_batch(p["train_peak_mem_mb"], p["train_step_bs"], ".4g")]
                                         if has_train_mem else [])
            for _, p in acc.iterrows()]
    lines = ["### Headline: accuracy, cost and speed per variant", "",
             "Best accuracy first. Latency at batch 1; throughput, train step and memory at the largest batch "
             "measured (@bsN). Generated from the rows above; paste it as it is.", ""] + md_table(header, body) + [""]
    return lines


def comparison_lines(tests: AccuracyTests) -> List[str]:
    """The declared family's table: every pair it names, its test, interval, raw and Holm-adjusted p."""
    if not tests.comparisons:
        return [] if not tests.notes else [f"Declared comparison family: {tests.family.text} "
                                           f"({tests.family.origin}); no pair of this section's points falls in "
                                           "it.", ""] + _note_lines(tests.notes)
    header = ["comparison", "declared as", "difference (pp)", "95% CI (pp)", "p", "Holm p", "verdict", "test"]
    body = [[f"{c.second} − {c.first}", c.kind, f"{c.difference * 100:+.2f}", _interval_text(c),
             _p_cell(c.p_value, c.p_floor), _p_cell(c.holm_p, c.p_floor, c.p_value),
             "–" if c.p_value is None else "significant" if c.significant else "within noise", c.test]
            for c in tests.comparisons]
    tested = sum(c.p_value is not None for c in tests.comparisons)
    return [f"Accuracy differences over the declared comparison family: **{tests.family.text}** "
            f"({tests.family.origin}), {len(tests.comparisons)} pair(s), {tested} testable. Each pair is tested "
            "image by image where both points have per-image records on the same test set (paired bootstrap "
            "over images and seeds; McNemar exact for one seed each), otherwise by Welch t on the seed means "
            "with the test set's sampling error added (two-proportion z for one seed). Significant when the "
            "Holm-adjusted p over the family's testable pairs is below 0.05. See `docs/reports.md`.", ""] + \
        md_table(header, body) + [""] + _note_lines(tests.notes)


def _interval_text(c: AccuracyComparison) -> str:
    return "–" if c.low is None or c.high is None else f"{c.low * 100:+.2f} to {c.high * 100:+.2f}"


def _note_lines(notes: Sequence[str]) -> List[str]:
    return ["Not tested or not paired: " + "; ".join(dict.fromkeys(notes)) + ".", ""] if notes else []


def findings_lines(points: pd.DataFrame, tests: AccuracyTests, alpha: float = 0.05,
                   limitations: Sequence[str] = ()) -> List[str]:
    """The findings: one sentence per significant declared difference and per declared trend test, each
    generated from its test and naming it, then what the tests do not support. Paste them as they are."""
    if not tests.comparisons and not tests.trends:
        return []
    schedule = _schedule_text(headline_points(points))
    size = len([c for c in tests.comparisons if c.p_value is not None])
    declared = len(tests.comparisons)
    counted = f"{size} declared pair{'s' if size != 1 else ''}" if size == declared else \
        f"{size} testable of {declared} declared pairs"
    family = f"the {counted} ({tests.family.text})"
    with_acc = len(headline_points(points))
    if with_acc < len(points):  # the family is all the declared pairs these points form, not the grid's
        family += f" that the {with_acc} of {len(points)} variants with an accuracy form"
    lines = ["### Findings", "",
             f"Generated by `report` from the tests below ({tests.family.origin}); each sentence names its "
             "test. Quote them, do not rewrite them.", ""]
    for c in tests.comparisons:
        if c.significant:
            lines.append("- " + _difference_sentence(c, schedule, family))
    close = [c for c in tests.comparisons if c.p_value is not None and not c.significant and c.p_value < alpha]
    if close:
        lines.append("- Not significant after Holm over " + family + ", although each test alone gives p < "
                     f"{alpha:g}: " + "; ".join(f"{_lead_text(c)} (p = {c.p_value:.2g}, Holm-adjusted "
                                                f"{c.holm_p:.2g})" for c in close) + ".")
    quiet = [c for c in tests.comparisons if c.p_value is not None and c.p_value >= alpha]
    if quiet:
        lines.append(f"- Within noise (p ≥ {alpha:g} before any adjustment): {len(quiet)} of the {size} pairs.")
    if not any(c.significant for c in tests.comparisons) and size:
        lines.append(f"- No declared pair differs significantly {schedule}.")
    lines += ["- " + _trend_sentence(t, schedule, len(tests.trends)) for t in tests.trends]
    declared = [c for c in tests.family.contrasts if c.get("setting") and len(c.get("values") or []) >= 3]
    if not tests.trends and declared:
        names = "; ".join(f"{c['setting']} ({', '.join(plain(v) for v in c['values'])})" for c in declared)
        lines.append(f"- The declared trend test over {names} could not be run on this section's points (the notes "
                     "below the comparison table say why), so this report makes no claim that a setting buys "
                     "accuracy, only the pairwise differences above.")
    elif not tests.trends:
        lines.append("- No trend test was declared (a `compare:` setting with 3 or more values), so this report "
                     "makes no claim that a setting buys accuracy, only the pairwise differences above.")
    lines += [f"- Limitation: {text.strip().rstrip('.')}." for text in limitations]
    return lines + [""]


def _schedule_text(acc: pd.DataFrame) -> str:
    epochs = sorted({plain(e) for e in acc["epochs"].dropna()})
    images = sorted({f"{int(n):,}" for n in acc["test_images"].dropna()})
    when = f"after {' or '.join(epochs)} epoch{'s' if epochs != ['1'] else ''}" if epochs else "at the end"
    return when + (f" on {' or '.join(images)} test images" if images else "")


def _p_is(p: float, floor: float, raw: Optional[float] = None) -> str:
    """'= 0.031', or '≤ 0.0002' where the test's p (``raw``, else ``p``) is at the smallest it can give: a
    bootstrap of 10,000 resamples cannot say less than 2/10,001, and its Holm adjustment inherits that."""
    at_floor = floor > 0 and (p if raw is None else raw) <= floor * (1 + 1e-9)
    return f"{'≤' if at_floor else '='} {p:.2g}"


def _p_cell(p: Optional[float], floor: float, raw: Optional[float] = None) -> str:
    if p is None or p != p:
        return num_text(p, ".2g")
    text = _p_is(p, floor, raw)
    return text[2:] if text.startswith("=") else text


def _lead_text(c: AccuracyComparison) -> str:
    lead, behind = (c.second, c.first) if c.difference >= 0 else (c.first, c.second)
    ci = "" if c.low is None else \
        f", 95% CI {_oriented(c, c.low, c.high)}"
    return f"{lead} led {behind} by {abs(c.difference) * 100:.2f} pp{ci}"


def _oriented(c: AccuracyComparison, low: float, high: float) -> str:
    lo, hi = (low, high) if c.difference >= 0 else (-high, -low)
    return f"{lo * 100:.2f} to {hi * 100:.2f} pp"


def _difference_sentence(c: AccuracyComparison, schedule: str, family: str) -> str:
    seeds = ""
    if c.seeds_ahead:
        ahead, matched = c.seeds_ahead
        ahead = ahead if c.difference >= 0 else matched - ahead
        seeds = f", ahead in {ahead} of {matched} seeds"
    return (f"{schedule[0].upper() + schedule[1:]}, {_lead_text(c)}{seeds} ({c.test}; "
            f"Holm-adjusted p {_p_is(c.holm_p, c.p_floor, c.p_value)} over {family}).")


def _trend_sentence(t: TrendComparison, schedule: str, n_trends: int) -> str:
    r = t.result
    unit = "per doubling" if r.log2 else f"per unit of {r.setting}"
    levels = ", ".join(plain(v) for v in r.levels)
    means = ", ".join(f"{m * 100:.2f}" for m in r.means)
    shape = "rising at every step" if r.monotone and r.slope > 0 else "falling at every step" if r.monotone \
        else "not monotone"
    stats = (f"slope {r.slope * 100:+.2f} pp {unit}, 95% CI {r.low * 100:+.2f} to {r.high * 100:+.2f}, "
             f"{r.test_name} p {_p_is(r.p_value, r.p_floor)} (Holm-adjusted {_p_cell(t.holm_p, r.p_floor, r.p_value)} "
             f"over {n_trends} declared trend test{'s' if n_trends > 1 else ''}); {r.detail}; "
             f"level means {means}% "
             f"({shape}; {', '.join(t.labels)})")
    if t.significant and r.monotone:
        direction = "rose" if r.slope > 0 else "fell"
        return (f"{schedule[0].upper() + schedule[1:]}, accuracy {direction} with {r.setting} at every step "
                f"({levels}): {stats}.")
    if t.significant:
        sign = "positive" if r.slope > 0 else "negative"
        return (f"{schedule[0].upper() + schedule[1:]}, the trend of accuracy over {r.setting} ({levels}) was "
                f"{sign}, but not at every step, so it supports no step-by-step gain: {stats}.")
    return f"No trend claim over {r.setting} ({levels}) {schedule}: {stats}."
