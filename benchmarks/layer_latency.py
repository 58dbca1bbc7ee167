"""Per-layer latency table: build it, time the variants end to end, and evaluate the predictor held out.

Three steps, each resumable (rows are appended; what is present is skipped),
each under ``--max-seconds`` so a step fits a quiet-machine window::

    python -m benchmarks.layer_latency table --batch 1 32      # time every distinct shape in isolation
    python -m benchmarks.layer_latency e2e --batch 1 32        # time every variant, 60 interleaved rounds
    python -m benchmarks.layer_latency layout --batch 1 32     # the study pair's convs: NCHW and blocked
    python -m benchmarks.layer_latency evaluate                # error table + the C=1 vs C=32 breakdown

The variants are the committed space (grids/space-cpu-speed.yaml, 48) plus
the study's C=1 and C=32 pair (the first two cells of grids/study-cpu-speed.yaml),
fp32, 2 threads, contiguous. Everything lands in ``--dir`` (default
results/layer-latency/): table.csv (+ table.json: fingerprints and build
times), inventory.csv, e2e.csv (+ e2e.json), layout.csv, evaluation.md/.csv, why.csv.
The timing steps must run on a quiet machine; ``evaluate`` reads CSVs only.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from bench.analysis import layer_predict as lp
from bench.analysis.latency_model import design_matrix, fit_least_squares
from bench.errors import UserError
from bench.grid import load_grid
from bench.results.files import read_sidecar, sidecar_path, write_bytes_atomic, write_json_atomic
from bench.results.fingerprint import fingerprint, fingerprint_id
from models import model_complexity
from models.layers import census, distinct_layers, inventory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.dirname(lp.DEFAULT_TABLE)
SPACE_GRID = "grids/space-cpu-speed.yaml"
STUDY_GRID = "grids/study-cpu-speed.yaml"
THREADS = 2
# The harness's own speed runs of these variants, timed on a quiet machine (`import` takes them as e2e.csv).
RUNS = ("results/studies/space-cpu/speed.csv", "results/studies/cpu-cardinality/speed.csv")
E2E_EXTRA = ("variant", "cardinality", "macs", "params", "activations", "n_layers", "ms_iqr", "rounds",
             "others_share_max", "samples_ms")


def variants() -> List:
    """(variant_id, variant name, ModelConfig, cardinality) of the space and the study pair, deduplicated."""
    cells = load_grid(os.path.join(ROOT, SPACE_GRID)).cells + load_grid(os.path.join(ROOT, STUDY_GRID)).cells[:2]
    seen: Dict[str, Tuple[str, str, object, int]] = {}
    for cell in cells:
        seen.setdefault(cell.variant_id, (cell.variant_id, cell.variant, cell.model, cell.model.cardinality))
    return list(seen.values())


def study_pair() -> List[str]:
    return [c.variant_id for c in load_grid(os.path.join(ROOT, STUDY_GRID)).cells[:2]]


def this_machine() -> Tuple[dict, str]:
    from bench.run import environment

    fp = fingerprint({"software": environment.software(), "cpu": environment.cpu_info(), "gpus": []}, "cpu")
    return fp, fingerprint_id(fp)


def _record(path: str, fp: dict, fid: str, entry: dict) -> None:
    side = read_sidecar(path) or {}
    side.setdefault("fingerprints", {})[fid] = fp
    side.setdefault("builds", []).append(entry)
    write_json_atomic(sidecar_path(path), side)


def write_inventory(folder: str) -> None:
    lines = ["variant_id,variant,shape,count,macs"]
    for vid, name, config, _ in variants():
        for layer, count in inventory(config).layers:
            lines.append(f"{vid},{name},{layer.shape},{count},{layer.macs}")
    write_bytes_atomic(os.path.join(folder, "inventory.csv"), ("\n".join(lines) + "\n").encode())


# ------------------------------------------------------------------------------------------ timing steps
def suspects(folder: str, batch: int, factor: float = 1.8) -> List[str]:
    """Shapes whose entry disagrees with what their family's neighbours predict for them by over ``factor``
    (a round-by-round stall that even the fastest round did not escape): worth timing again."""
    fp, fid = this_machine()
    path = os.path.join(folder, "table.csv")
    if not os.path.exists(path):
        return []
    table = lp.load_table(path, fp, fid)
    spec = (batch, "fp32", "contiguous", THREADS)
    entries, index = table.entries.get(spec, {}), table.index(spec)
    out = []
    for shape, (ms, macs) in entries.items():
        if shape in lp.OVERHEAD_ROWS.values():
            continue
        guess = lp.interpolate(index, shape, macs // batch, batch, exclude={shape})
        if guess == guess and not 1 / factor < ms / guess < factor:
            out.append(shape)
    return out


def build(folder: str, batches: Sequence[int], rounds: int, block_ms: float, max_seconds: float,
          retime: object = False) -> int:
    """Time the missing shapes; ``retime``: also the suspects (True) or every shape ("all")."""
    from bench.measure import allocator
    from bench.measure.layer_table import TableSpec, build_table

    allocator.ensure("tuned")
    fp, fid = this_machine()
    configs = [v[2] for v in variants()]
    print(census(configs).describe())
    layers = distinct_layers(configs)
    path = os.path.join(folder, "table.csv")
    deadline = time.monotonic() + max_seconds
    left = 0
    for batch in batches:
        start = time.perf_counter()
        again = (suspects(folder, batch) if retime != "all" else [layer.shape for layer in layers]) if retime else []
        if retime:
            print(f"batch {batch}: timing {len(again)} shape(s) again")
        left = build_table(path, layers, TableSpec(batch, "fp32", "contiguous", THREADS, fid), rounds, block_ms,
                           deadline=deadline, progress=print, retime=again)
        _record(path, fp, fid, {"step": "retime" if retime else "table", "batch_size": batch,
                                "wall_s": round(time.perf_counter() - start, 2), "rounds": rounds,
                                "block_ms": block_ms, "shapes_left": left, "retimed": len(again)})
        if left:
            break
    print(f"{path}: {'complete' if not left else f'{left} shape(s) left: run the same command again'}")
    return 0


def time_layout(folder: str, batches: Sequence[int], rounds: int, block_ms: float) -> int:
    """The study pair's convolutions as the model calls them (NCHW) and in oneDNN's blocked layout, side by
    side: layout.csv, two rows per shape; a batch already there for this machine is skipped."""
    from bench.measure import allocator
    from bench.measure.layer_table import TableSpec, append_rows, read_keys, time_layouts

    allocator.ensure("tuned")
    fp, fid = this_machine()
    path = os.path.join(folder, "layout.csv")
    present = {(key[1], key[5]) for key in read_keys(path)}
    ids = set(study_pair())
    pair = {v[0]: v[2] for v in variants() if v[0] in ids}
    layers = distinct_layers(list(pair.values()))
    for batch in batches:
        if (batch, fid) in present:
            continue
        start = time.perf_counter()
        rows = time_layouts(layers, TableSpec(batch, "fp32", "contiguous", THREADS, fid), rounds, block_ms)
        append_rows(path, rows)
        _record(path, fp, fid, {"step": "layout", "batch_size": batch, "rounds": rounds, "block_ms": block_ms,
                                "wall_s": round(time.perf_counter() - start, 2), "shapes": len(rows) // 2})
        print(f"batch {batch}: {len(rows) // 2} conv shapes in both layouts in {time.perf_counter() - start:.1f} s")
    return 0


def time_variants(folder: str, batches: Sequence[int], rounds: int, block_ms: float, max_seconds: float) -> int:
    """Every variant at each batch in interleaved rounds (shuffled order per round); a batch's rows are
    appended once all its rounds are done, a batch already in e2e.csv for this machine is skipped."""
    import torch

    from bench.measure import allocator
    from bench.measure.layer_table import append_rows
    from bench.measure.numerics import numeric_settings
    from bench.measure.timing import PerfCounterTimer, timed_loop
    from models import build_model

    allocator.ensure("tuned")
    fp, fid = this_machine()
    path = os.path.join(folder, "e2e.csv")
    done = {(s[0], vid) for s, ms in (lp.read_e2e(path, fid) if os.path.exists(path) else {}).items() for vid in ms}
    todo = variants()
    deadline = time.monotonic() + max_seconds
    for batch in batches:
        if all((batch, v[0]) in done for v in todo):
            continue
        start = time.perf_counter()
        with numeric_settings("cpu", threads=THREADS), torch.inference_mode():
            fns = {}
            for vid, _, config, _ in todo:
                model = build_model(config).eval()
                x = torch.randn(batch, 3, config.input_size, config.input_size)
                fns[vid] = (lambda m=model, x=x: m(x))
            for fn in fns.values():
                for _ in range(3):
                    fn()
            samples: Dict[str, List[float]] = {vid: [] for vid in fns}
            others: Dict[str, float] = {vid: 0.0 for vid in fns}
            order, rng = list(fns), random.Random(batch)
            for _ in range(rounds):
                rng.shuffle(order)
                for vid in order:
                    loop = timed_loop(fns[vid], PerfCounterTimer(), 0, 1, min_block_ms=block_ms)
                    samples[vid].append(loop.samples[0])
                    others[vid] = max(others[vid], loop.others_share or 0.0)
        rows = [_e2e_row(v, batch, fid, samples[v[0]], others[v[0]]) for v in todo]
        append_rows(path, rows, columns=lp.E2E_COLUMNS + E2E_EXTRA)
        _record(path, fp, fid, {"step": "e2e", "batch_size": batch, "wall_s": round(time.perf_counter() - start, 2),
                                "rounds": rounds, "block_ms": block_ms, "variants": len(todo)})
        print(f"batch {batch}: {len(todo)} variants x {rounds} rounds in {time.perf_counter() - start:.1f} s")
        if time.monotonic() > deadline:
            break
    return 0


def _e2e_row(v, batch: int, fid: str, samples: List[float], others: float) -> dict:
    vid, name, config, card = v
    c = model_complexity(config)
    q = statistics.quantiles(samples, n=4)
    return {"variant_id": vid, "batch_size": batch, "precision": "fp32", "memory_format": "contiguous",
            "threads": THREADS, "fingerprint_id": fid, "ms_median": statistics.median(samples), "variant": name,
            "cardinality": card, "macs": c.macs, "params": c.params, "activations": c.acts,
            "n_layers": inventory(config).n_layers, "ms_iqr": q[2] - q[0], "rounds": len(samples),
            "others_share_max": round(others, 4), "samples_ms": " ".join(f"{s:.6g}" for s in samples)}


def import_runs(folder: str, sources: Sequence[str], batches: Sequence[int]) -> int:
    """e2e.csv rows from the harness's own result files (``benchmark.py`` speed runs of these variants):
    fp32, contiguous, 2-thread rows at the batch sizes asked for, keyed by the fingerprint their sidecar
    records. The latency is the run's ``latency_ms_median``; its raw samples come along."""
    import pandas as pd

    from bench.analysis.latency_model import run_fingerprints

    known = {v[0]: v for v in variants()}
    rows, seen = [], set()
    for source in sources:
        source = os.path.join(ROOT, source)
        prints = run_fingerprints(read_sidecar(source), "cpu")
        if len(prints) != 1:
            raise UserError(f"{source}: expected the sidecar of one machine, found {len(prints)} fingerprints")
        fid = fingerprint_id(prints[0])
        runs = pd.read_csv(source)
        runs = runs[(runs["status"] == "ok") & (runs["threads"] == THREADS) & (runs["precision"] == "fp32")
                    & (runs["memory_format"] == "contiguous") & runs["variant_id"].isin(list(known))
                    & runs["batch_size"].isin(list(batches))]
        for r in runs.itertuples():
            if (r.variant_id, r.batch_size) in seen:  # a variant in two runs: the first source's row
                continue
            seen.add((r.variant_id, r.batch_size))
            samples = [float(v) for v in str(r.latency_samples_ms).replace(";", " ").split()] or \
                [r.latency_ms_median]
            row = _e2e_row(known[r.variant_id], int(r.batch_size), fid, samples, float("nan"))
            rows.append(dict(row, ms_median=float(r.latency_ms_median), source=os.path.relpath(source, ROOT)))
    from bench.measure.layer_table import append_rows

    path = os.path.join(folder, "e2e.csv")
    if os.path.exists(path):
        raise UserError(f"{path}: exists; move it away to import again")
    append_rows(path, rows, columns=lp.E2E_COLUMNS + E2E_EXTRA + ("source",))
    print(f"{path}: {len(rows)} rows from {', '.join(sources)}")
    return 0


# ------------------------------------------------------------------------------------------ evaluation
def baselines(points, folds: np.ndarray) -> Dict[str, np.ndarray]:
    """Held-out predictions (same folds) of the log-linear latency model, a MACs-only power law, a constant."""
    y = np.log(points["ms"].to_numpy(dtype=float))
    levels = sorted(points["group"].unique(), key=float)
    x_full = design_matrix(points, levels)
    x_macs = np.column_stack([np.ones(len(y)), np.log(points["macs"].to_numpy(dtype=float))])
    out = {name: np.full(len(y), np.nan) for name in ("log-linear", "MACs-only", "constant")}
    for f in np.unique(folds):
        test, train = folds == f, folds != f
        for name, x in (("log-linear", x_full), ("MACs-only", x_macs)):
            out[name][test] = np.exp(x[test] @ fit_least_squares(x[train], y[train]))
        out["constant"][test] = float(np.exp(np.median(y[train])))
    return out


def evaluate(folder: str) -> int:
    import pandas as pd

    fp, fid = this_machine()
    # each statistic of the end-to-end rounds is predicted from the same statistic of the shapes' rounds
    tables = {stat: lp.load_table(os.path.join(folder, "table.csv"), fp, fid, stat) for stat in ("median", "min")}
    table = tables[lp.TABLE_STATISTIC]
    inventories = lp.read_inventories(os.path.join(folder, "inventory.csv"))
    e2e_path = os.path.join(folder, "e2e.csv")
    e2e = pd.read_csv(e2e_path)
    e2e = e2e[e2e["fingerprint_id"] == fid]
    rows, summary = [], []
    runs = [(stat, spec, m) for stat in ("median", "min")
            for spec, m in sorted(lp.read_e2e(e2e_path, fid, stat).items())]
    for stat, spec, measured in runs:
        held = lp.evaluate(tables[stat], inventories, measured, spec)
        points = e2e[e2e["batch_size"] == spec[0]].set_index("variant_id").loc[held.variants]
        points = pd.DataFrame({"ms": held.measured, "macs": points["macs"].to_numpy(),
                               "activations": points["activations"].to_numpy(),
                               "params": points["params"].to_numpy(),
                               "group": points["cardinality"].astype(int).astype(str).to_numpy()})
        base = baselines(points, lp.folds_of(held.variants))
        needed = np.array(held.interpolated_layers) > 0
        methods = {"layer table (all shapes in table)": held.in_table,
                   "layer table (own shapes interpolated)": held.interpolated, **base}
        for name, pred in methods.items():
            for subset, mask in (("all", np.ones(len(pred), bool)), ("needed interpolation", needed)):
                if subset != "all" and not name.startswith("layer table (own"):
                    continue
                ape = lp.percentage_errors(pred[mask], held.measured[mask])
                summary.append({"batch": spec[0], "measured": stat, "method": name, "variants": subset,
                                "n": len(ape),
                                "median_%": 100 * np.median(ape), "p90_%": 100 * np.percentile(ape, 90)})
        for i, vid in enumerate(held.variants):
            rows.append({"batch_size": spec[0], "measured": stat, "variant_id": vid, "measured_ms": held.measured[i],
                         "table_sum_ms": held.sums[i].ms, "pred_in_table_ms": held.in_table[i],
                         "pred_interpolated_ms": held.interpolated[i],
                         "interpolated_layers": held.interpolated_layers[i],
                         **{f"pred_{k}_ms": v[i] for k, v in base.items()}})
        oh = held.overhead
        summary_note = (f"batch {spec[0]} (fitted on measured {stat}s): fitted per-layer overhead "
                        f"{oh.per_layer_ms * 1e3:.2f} us, per-call "
                        f"{oh.per_call_ms:.3f} ms; measured nn.Module call "
                        f"{tables[stat].overhead_ms(spec, 'call') * 1e3:.2f} us, cheapest op "
                        f"{tables[stat].overhead_ms(spec, 'op') * 1e3:.2f} us")
        summary.append({"batch": spec[0], "method": "note: " + summary_note})
    pd.DataFrame(rows).to_csv(os.path.join(folder, "evaluation.csv"), index=False, float_format="%.6g")
    text = evaluation_markdown(summary, folder)
    text += why(folder, table, inventories, e2e)
    write_bytes_atomic(os.path.join(folder, "evaluation.md"), text.encode())
    if os.path.abspath(folder) == os.path.join(ROOT, DEFAULT_DIR):  # the committed evaluation: docs follow it
        replace_block(os.path.join(ROOT, DOCS), "evaluation", docs_block(text))
        replace_block(os.path.join(ROOT, "README.md"), "layer-errors", readme_table(parse_summary(text)))
    print(text)
    return 0


# ------------------------------------------------------------------------------------------ generated docs
DOCS = "docs/layer-latency.md"
README_METHODS = (("layer table (all shapes in table)", "all", "layer table"),
                  ("layer table (own shapes interpolated)", "needed interpolation",
                   "layer table, each variant's own shapes interpolated (the {n} variants that have any)"),
                  ("log-linear", "all", "log-linear model (log MACs, activations, params, groups)"),
                  ("MACs-only", "all", "MACs-only power law"), ("constant", "all", "constant"))


def parse_summary(text: str) -> List[dict]:
    """The rows of evaluation.md's error table."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].isdigit():
            rows.append(dict(zip(("batch", "measured", "method", "variants", "n", "median", "p90"), cells)))
    return rows


def readme_table(rows: List[dict]) -> str:
    """The README's error table: held-out median / p90 error against the measured medians, per method."""
    medians = [r for r in rows if r["measured"] == "median"]
    cell = {(r["batch"], r["method"], r["variants"]): f"{r['median']} / {r['p90']}" for r in medians}
    counts = {(r["method"], r["variants"]): r["n"] for r in medians}
    batches = sorted({r["batch"] for r in rows}, key=int)
    n = {r["batch"]: r["n"] for r in rows if r["measured"] == "median" and r["variants"] == "all"}
    lines = ["| predictor (held out, 5-fold) | " + " | ".join(f"batch {b} ({n[b]} variants): median / p90"
                                                           for b in batches) + " |",
             "|---|" + "---:|" * len(batches)]
    for method, subset, label in README_METHODS:
        label = label.format(n=counts.get((method, subset), "?"))
        lines.append(f"| {label} | " + " | ".join(cell.get((b, method, subset), "-") for b in batches) + " |")
    return "\n".join(lines) + "\n"


def docs_block(evaluation: str) -> str:
    """evaluation.md as docs/layer-latency.md carries it: without its title, headings one level down."""
    body = evaluation.split("\n", 1)[1].lstrip("\n")
    body = "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())
    return "(generated from results/layer-latency/evaluation.md by `python -m benchmarks.layer_latency evaluate`)\n\n" \
        + body.rstrip("\n") + "\n"


EVALUATE_COMMAND = "python -m benchmarks.layer_latency evaluate"


def replace_block(path: str, name: str, content: str) -> None:
    """Put ``content`` in the generated section ``name`` of ``path`` (``bench.results.schema``'s markers)."""
    from bench.results.schema import fill_sections

    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        text = fill_sections(text, {name: content.rstrip("\n")}, command=EVALUATE_COMMAND)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    write_bytes_atomic(path, text.encode())


def _costs(folder: str) -> str:
    def wall(name: str, steps: Sequence[str]) -> Dict[int, float]:
        out: Dict[int, float] = {}
        for b in (read_sidecar(os.path.join(folder, name)) or {}).get("builds", []):
            if b.get("step") in steps:
                out[b["batch_size"]] = out.get(b["batch_size"], 0.0) + b["wall_s"]
        return out
    table = wall("table.csv", ("table", "retime"))
    e2e = wall("e2e.csv", ("e2e",))
    return "\n".join(f"- batch {b}: building the table took {table[b]:.0f} s; timing every variant end to end in "
                     f"interleaved rounds took {e2e[b]:.0f} s" if b in e2e else
                     f"- batch {b}: building the table took {table[b]:.0f} s" for b in sorted(table)) + "\n"


def evaluation_markdown(summary: List[dict], folder: str) -> str:
    lines = ["# Layer-table latency predictor: held-out evaluation", "",
             "Generated by `python -m benchmarks.layer_latency evaluate` from table.csv, inventory.csv and e2e.csv. "
             "Absolute percentage error of each method's held-out prediction (5-fold over variants, the same folds "
             "for every method) against the measured median; 'own shapes interpolated' predicts each variant with "
             "the shapes no other variant has removed from the table. 'measured' is the statistic of each variant's "
             "interleaved rounds predicted: their median (what the harness reports, and what `--dry-run --predict` "
             "predicts) or their fastest round (the time without other processes' stalls), each from the same "
             "statistic of the shapes' rounds in the table.", "",
             "| batch | measured | method | variants | n | median | p90 |", "|---:|---|---|---|---:|---:|---:|"]
    notes = []
    for s in summary:
        if s["method"].startswith("note: "):
            notes.append("- " + s["method"][6:])
            continue
        lines.append(f"| {s['batch']} | {s['measured']} | {s['method']} | {s['variants']} | {s['n']} | "
                     f"{s['median_%']:.1f}% | {s['p90_%']:.1f}% |")
    return "\n".join(lines + ["", "Overheads:", *notes, "", "Cost:", _costs(folder)])


PROFILE = "results/studies/cpu-cardinality/profile/pair.profile.csv"
MICRO = "results/studies/cpu-cardinality/grouped_conv.csv"  # benchmarks/grouped_conv.py's 3x3 sweep


def op_class(shape: str) -> str:
    """The profile's operator class of a shape (bench.measure.profile names them so)."""
    s = lp.Shape.parse(shape)
    if s.kind == "conv":
        if s.kernel == 1:
            return "conv 1x1"
        return ("grouped" if s.groups > 1 else "dense") + f" conv {s.kernel}x{s.kernel}"
    return {"bn": "batch norm", "relu": "ReLU", "add": "residual add", "maxpool": "pooling", "avgpool": "pooling",
            "linear": "linear"}.get(s.kind, "other")


def micro_agreement(df, path: str = os.path.join(ROOT, MICRO)) -> List[str]:
    """The table's rate for the shapes the grouped-convolution microbenchmark also timed, beside its rate
    (both from the median round, so the same statistic), and whether both put the grouped shapes below the
    dense ones. ``df``: why.csv's rows (shape, batch_size, gflop_s)."""
    import pandas as pd

    if not os.path.exists(path):
        return []
    micro = pd.read_csv(path, comment="#")
    micro = micro[micro["threads"] == THREADS]
    rates = {(f"conv k3 s1 g{r.groups} c{r.channels}>{r.channels} h{r.spatial}", int(r.batch_size)):
             r.gflop_s * r.ms_best / r.ms_median for r in micro.itertuples()}
    both = [(r.shape, int(r.batch_size), r.gflop_s, rates[(r.shape, int(r.batch_size))])
            for r in df.drop_duplicates(["shape", "batch_size"]).itertuples() if (r.shape, int(r.batch_size)) in rates]
    if not both:
        return []
    ratios = [mine / theirs for _, _, mine, theirs in both]
    orders = []
    for b in sorted({b for _, b, _, _ in both}):
        grouped = [(m, t) for shape, bb, m, t in both if bb == b and lp.Shape.parse(shape).groups > 1]
        dense = [(m, t) for shape, bb, m, t in both if bb == b and lp.Shape.parse(shape).groups == 1]
        if grouped and dense:
            orders.append(all(max(g[i] for g in grouped) < min(d[i] for d in dense) for i in (0, 1)))
    order = ("" if not orders else " In both, every grouped shape runs slower than every dense shape of its batch."
             if all(orders) else " They disagree on which shapes run slowest.")
    return ["", f"Against the grouped-convolution microbenchmark ({MICRO}, the 3x3 convolution alone, median "
            f"round; timed in another session, so the rates compare loosely): the {len(both)} shape(s) of this "
            "pair it also timed run at "
            + "; ".join(f"{shape} at batch {b}: {mine:.1f} GFLOP/s in the table, {theirs:.1f} there"
                        for shape, b, mine, theirs in both)
            + f" (the table's rate is {min(ratios):.2f}-{max(ratios):.2f}x the microbenchmark's)." + order]


def layout_share(rows, inventory) -> Tuple[float, float]:
    """(ms of the variant's convolutions as the model calls them, ms of the same in the blocked layout),
    one batch's layout.csv rows (shape -> (nchw ms, blocked ms)) over ``inventory``'s conv counts."""
    nchw = blocked = 0.0
    for shape, count, _ in inventory:
        if shape in rows:
            nchw, blocked = nchw + count * rows[shape][0], blocked + count * rows[shape][1]
    return nchw, blocked


def layout_section(path: str, fid: str, inventories, names) -> List[str]:
    """How much of the convolutions' time is layout conversion, from the side-by-side layout.csv."""
    if not os.path.exists(path):
        return []
    by: Dict[int, Dict[str, Dict[str, float]]] = {}
    for line, row in enumerate(lp._read_csv(path, lp.TABLE_COLUMNS), start=2):
        if row["fingerprint_id"] == fid:
            by.setdefault(int(row["batch_size"]), {}).setdefault(row["shape"], {})[row["memory_format"]] = \
                lp._field(path, line, row, "ms_median", float)
    lines = ["", "Layout conversions inside the convolutions (layout.csv: each conv of the pair timed as the model "
             "calls it, NCHW, and with its input and weights already in oneDNN's blocked layout, in the same "
             "interleaved rounds; medians):", ""]
    for batch, shapes in sorted(by.items()):
        rows = {s: (v["contiguous"], v["blocked"]) for s, v in shapes.items() if {"contiguous", "blocked"} <= set(v)}
        slower = sorted(s for s, (nchw, blocked) in rows.items() if blocked > nchw)
        grouped = sum(lp.Shape.parse(s).groups > 1 for s in slower)
        lines.append(f"- batch {batch}: {len(slower)} of {len(rows)} conv shapes ran slower already blocked than "
                     f"as called ({grouped} of them grouped)" + (f": {', '.join(slower)}" if slower else "") + ".")
        for vid in study_pair():
            nchw, blocked = layout_share(rows, inventories[vid])
            if nchw > 0:
                lines.append(f"- {names[vid]} at batch {batch}: its convolutions take {nchw:.2f} ms as called, "
                             f"{blocked:.2f} ms already blocked: the conversions are "
                             f"{(nchw - blocked) / nchw:.0%} of the convolutions' time"
                             + (" (negative: the blocked layout was slower)" if blocked > nchw else "") + ".")
    return lines


def _ranking_sentence(vid: str, name: str, mine, theirs) -> str:
    """Whether the table and the profile put the operator classes in the same order of time."""
    top = [c for c in mine.sort_values("ms", ascending=False).index if c in theirs.index][:3]
    order = list(theirs.loc[top].sort_values("ms", ascending=False).index)
    if order == top:
        return f"{name}: the table and the profile rank the top {len(top)} classes the same ({', '.join(top)})."
    return (f"{name}: the table ranks the top classes {', '.join(top)}, the profile {', '.join(order)} "
            "(they disagree on the order).")


def profile_agreement(df, names) -> List[str]:
    """Each operator class's share of the time, from the table and from the committed profile (batch 1)."""
    import pandas as pd

    path = os.path.join(ROOT, PROFILE)
    if not os.path.exists(path):
        return []
    prof = pd.read_csv(path)
    prof = prof[(prof["batch_size"] == 1) & (prof["phase"] == "inference")]
    lines = ["", f"Operator-class shares at batch 1: the table (2 threads) against the profile in {PROFILE} "
             f"(threads {', '.join(map(str, sorted(prof['threads'].unique())))}):", "",
             "| variant | class | table share | profile share | table GFLOP/s | profile GFLOP/s |",
             "|---|---|---:|---:|---:|---:|"]
    ranking = []
    for vid, part in df[df["batch_size"] == 1].groupby("variant_id", sort=False):
        mine = part.assign(cls=part["shape"].map(op_class)).groupby("cls")[["ms", "macs"]].sum()
        theirs = prof[prof["variant_id"] == vid].groupby("op_class")[["ms", "macs"]].sum()
        if theirs.empty:
            continue
        ranking.append(_ranking_sentence(vid, names[vid], mine, theirs))
        for cls in mine.sort_values("ms", ascending=False).index:
            t = theirs.loc[cls] if cls in theirs.index else None
            g = 2 * mine.loc[cls, "macs"] / (mine.loc[cls, "ms"] * 1e6) if mine.loc[cls, "macs"] else float("nan")
            pg = (2 * t["macs"] / (t["ms"] * 1e6) if t is not None and t["macs"] else float("nan"))
            lines.append(f"| {names[vid]} | {cls} | {mine.loc[cls, 'ms'] / mine['ms'].sum():.1%} | "
                         + (f"{t['ms'] / theirs['ms'].sum():.1%}" if t is not None else "-")
                         + f" | {g:.1f} | {pg:.1f} |")
    return lines + [""] + ranking


def why(folder: str, table, inventories, e2e) -> str:
    """Per-shape breakdown of the study's C=1 and C=32 pair, and the sentence naming what costs beyond its MACs."""
    import pandas as pd

    out, text = [], ["", "## Where the time goes: the study's C=1 vs C=32 pair", ""]
    for vid in study_pair():
        for batch in sorted(e2e["batch_size"].unique()):
            spec = (int(batch), "fp32", "contiguous", THREADS)
            layers = inventories[vid]
            s = lp.layer_sum(table, layers, spec)
            for shape, count, macs in layers:
                ms = s.per_shape[shape] * count
                out.append({"variant_id": vid, "batch_size": int(batch), "shape": shape, "count": count,
                            "macs": macs * count * int(batch), "ms": ms,
                            "gflop_s": 2 * macs * count * int(batch) / (ms * 1e6) if macs else float("nan")})
    # a shape can sit in several blocks (the inventory lists it per block): one row per shape
    df = pd.DataFrame(out).groupby(["variant_id", "batch_size", "shape"], sort=False, as_index=False)[
        ["count", "macs", "ms"]].sum()
    df["gflop_s"] = np.where(df["macs"] > 0, 2 * df["macs"] / (df["ms"] * 1e6), np.nan)
    df.to_csv(os.path.join(folder, "why.csv"), index=False, float_format="%.6g")
    measured = e2e.set_index(["variant_id", "batch_size"])["ms_median"]
    names = e2e.drop_duplicates("variant_id").set_index("variant_id")["variant"]
    for (vid, batch), part in df.groupby(["variant_id", "batch_size"], sort=False):
        total, macs = part["ms"].sum(), part["macs"].sum()
        part = part.assign(time_share=part["ms"] / total, mac_share=part["macs"] / macs)
        part = part.assign(excess=part["time_share"] - part["mac_share"]).sort_values("excess", ascending=False)
        text.append(f"### {names[vid]} at batch {batch}: table sum {total:.2f} ms, measured "
                    f"{measured[(vid, batch)]:.2f} ms")
        text += ["", "| shape | count | ms | time share | MAC share | GFLOP/s |", "|---|---:|---:|---:|---:|---:|"]
        for r in part.head(8).itertuples():
            text.append(f"| {r.shape} | {r.count} | {r.ms:.3f} | {r.time_share:.1%} | {r.mac_share:.1%} | "
                        f"{r.gflop_s:.1f} |")
        top = part.head(3)
        text += ["", "Costing most beyond their MAC share (time share minus MAC share): " + "; ".join(
            f"{r.shape} ({r.time_share:.0%} of the time for {r.mac_share:.0%} of the MACs"
            + (f", {r.gflop_s:.1f} GFLOP/s" if r.gflop_s == r.gflop_s else "") + ")" for r in top.itertuples())
            + ".", ""]
    text += profile_agreement(df, names)
    text += micro_agreement(df)
    text += layout_section(os.path.join(folder, "layout.csv"), table.fingerprint_id, inventories, names)
    return "\n".join(text) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("inventory", "table", "retime", "e2e", "layout", "import", "evaluate"))
    parser.add_argument("--runs", nargs="+", default=list(RUNS), help="import: harness result CSVs to take "
                        "the end-to-end latencies from")
    parser.add_argument("--dir", default=os.path.join(ROOT, DEFAULT_DIR))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (table 9, e2e 60, layout 15)")
    parser.add_argument("--block-ms", type=float, default=None, help="shortest timed block (table 2, e2e 20)")
    parser.add_argument("--all", action="store_true", help="retime: every shape, not just the suspects")
    parser.add_argument("--max-seconds", type=float, default=420.0, help="stop after the chunk that passes this")
    args = parser.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    try:
        write_inventory(args.dir)
        if args.step == "table":
            return build(args.dir, args.batch, args.rounds or 9, args.block_ms or 2.0, args.max_seconds)
        if args.step == "retime":
            return build(args.dir, args.batch, args.rounds or 9, args.block_ms or 2.0, args.max_seconds,
                         retime="all" if args.all else True)
        if args.step == "e2e":
            return time_variants(args.dir, args.batch, args.rounds or 60, args.block_ms or 20.0, args.max_seconds)
        if args.step == "layout":
            return time_layout(args.dir, args.batch, args.rounds or 15, args.block_ms or 2.0)
        if args.step == "import":
            return import_runs(args.dir, args.runs, args.batch)
        if args.step == "evaluate":
            return evaluate(args.dir)
        print(census([v[2] for v in variants()]).describe())
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
