"""``benchmark.py merge``: combine the outputs of shards (or of separate runs) into one CSV.

Rows are copied byte for byte, grouped by cell, in the grid's order where a
grid is known (cells of no known grid by cell id), and the inputs are read in
the order of their paths, so the same inputs given in any order give the
same files. A cell id that two inputs hold with different settings is an
error: ids are hashes of the settings, so the inputs come from incompatible
harness versions or were edited. So are different exact metrics (params,
MACs, ... follow from the settings). The same cell held twice with the same
settings and counts (shards that overlapped, a cell run again elsewhere) is
kept once: its ok attempt, else the latest run's (run ids start with their
start time); when the attempts' measurements (timings, memory, accuracy)
differ, merge says so, naming the cells. Cells of the grid that no input
holds are listed, and the exit code is 1, so a pipeline notices an
unfinished sweep; the merged file is written all the same.

The CSV and the sidecar are written to temporary files first and renamed
only when both are down, so a full disk leaves an existing ``--out`` as it
was (one-line error, exit 2).

The grid comes from ``--grid`` (expanded with the same ``--quick``,
``--device`` and ``--data-root`` as the shards) or else from the inputs'
sidecars, which each hold the whole grid.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from bench.errors import UserError, os_error_text
from bench.results.files import (Line, OutputLock, check_writable, cut_write_rows, json_bytes, read_lines,
                                 read_sidecar, sidecar_path, write_files_atomic)
from bench.results.schema import COLUMNS, SCHEMA_VERSION, STATUS_OK
from bench.results.validate import check_lines

# Row columns that follow from a cell's settings: two inputs disagreeing on one
# of these for the same cell id hold different cells (threads and the device
# name are properties of the machine, not of the cell).
SETTING_COLUMNS = ("variant", "preset", "family", "block", "depth", "blocks", "cardinality", "bottleneck_width",
                   "width_multiplier", "stem", "layout", "num_classes", "input_size", "device", "precision",
                   "memory_format", "compile", "requested_batch_size")
# Columns that follow exactly from a cell's settings (the analytic counts): two attempts at one cell that
# disagree on one were counted by different code or edited, and neither can be preferred.
EXACT_COLUMNS = ("params", "macs", "flops", "activations", "feature_dim", "groups", "stage_channels",
                 "stage_strides")
MAX_LISTED = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="CSV", help="result CSVs to combine, e.g. out/*.csv")
    parser.add_argument("--out", required=True, help="merged CSV to write (its sidecar NAME.json beside it)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out (and its sidecar)")
    parser.add_argument("--grid", default=None,
                        help="grid the inputs were run from, to list missing cells (default: their sidecars' grid)")
    parser.add_argument("--quick", action="store_true", help="with --grid: expand it as a --quick run did")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="with --grid: the --device the shards were run with")
    parser.add_argument("--data-root", default=None, help="with --grid: the --data-root the shards were run with")


@dataclass
class _Attempt:
    source: str
    lines: List[Line]

    @property
    def ok(self) -> bool:
        return all(line.fields[_COL["status"]] == STATUS_OK for line in self.lines)

    def preference(self) -> Tuple[bool, str, bytes]:
        """The larger is kept: an ok attempt, then the latest run, then (a tie) the bytes; never the input order."""
        return self.ok, self.lines[0].fields[_COL["run_id"]], b"".join(line.raw for line in self.lines)


_COL = {name: i for i, name in enumerate(COLUMNS)}


@dataclass
class MergeResult:
    out: str
    cells: int = 0
    rows: int = 0
    duplicates: List[str] = field(default_factory=list)  # ids held twice with the same settings
    differing: List[str] = field(default_factory=list)  # of those, ids whose attempts' measurements differ
    missing: List[Dict[str, Any]] = field(default_factory=list)  # grid cells no input holds
    failed: int = 0
    expected: Optional[int] = None


def merge_files(inputs: List[str], out: str, grid_cells: Optional[List[Dict[str, Any]]] = None,
                grid_meta: Optional[Dict[str, Any]] = None, force: bool = False) -> MergeResult:
    """Merge ``inputs`` into ``out`` (and its sidecar); :class:`UserError` on conflicting cells.

    ``out`` is written under the same lock a run takes, so a merge never
    replaces a file a run is appending to; an existing ``out`` is replaced
    only with ``force``.
    """
    _check_paths(inputs, out, force)
    with OutputLock(out):
        return _merge_locked(sorted(inputs), out, grid_cells, grid_meta)


def _merge_locked(inputs: List[str], out: str, grid_cells: Optional[List[Dict[str, Any]]],
                  grid_meta: Optional[Dict[str, Any]]) -> MergeResult:
    sidecars = {path: read_sidecar(path) for path in inputs}
    known_cells = _known_cells(sidecars)
    attempts: Dict[str, _Attempt] = {}
    order: List[str] = []
    result = MergeResult(out)
    header_raw = b""
    for path in inputs:
        raw, lines = _read_input(path)
        header_raw = header_raw or raw
        _add_attempts(path, lines, attempts, order, result)

    expected = grid_cells if grid_cells is not None else _expected_from_sidecars(known_cells, sidecars)
    rank = {c["cell_id"]: i for i, c in enumerate(expected or [])}
    order.sort(key=lambda cid: (rank.get(cid, len(rank)), "" if cid in rank else cid))  # unknown: by id

    body = _merged_body(header_raw, order, attempts, result)
    if expected is not None:
        result.expected = len(expected)
        result.missing = [c for c in expected if c["cell_id"] not in attempts]
    meta = _merged_sidecar(inputs, sidecars, known_cells, grid_meta, result)
    try:
        write_files_atomic({out: body, sidecar_path(out): json_bytes(meta)})
    except OSError as e:
        raise UserError(f"--out {out}: cannot write the merge: {os_error_text(e)}; nothing was replaced") from None
    return result


def _known_cells(sidecars: Dict[str, Optional[Dict[str, Any]]]) -> Dict[str, Tuple[str, Dict[str, Any]]]:
    """id -> (sidecar path, cell dict) over every input's sidecar; refused when two disagree on a cell."""
    known_cells: Dict[str, Tuple[str, Dict[str, Any]]] = {}
    for path, meta in sidecars.items():
        for cid, cell in _sidecar_cells(meta).items():
            if cid in known_cells and _identity(known_cells[cid][1]) != _identity(cell):
                raise UserError(f"cell {cid} has different settings in {known_cells[cid][0]} and "
                                f"{sidecar_path(path)}: the inputs come from different harness versions or were "
                                f"edited; merge them separately")
            known_cells.setdefault(cid, (sidecar_path(path), cell))
    return known_cells


def _read_input(path: str) -> Tuple[bytes, List[Line]]:
    """An input's raw header and its valid rows, an unfinished write at its end left out."""
    parsed = read_lines(path)
    if parsed is None or not parsed.header:
        raise UserError(f"{path}: empty results file")
    if parsed.header != COLUMNS:
        raise UserError(f"{path}: its columns differ from this version's; merge files of one harness version")
    lines = parsed.lines
    if parsed.partial_tail:
        cut = cut_write_rows(parsed)
        lines = lines[:len(lines) - cut]
        print(f"warning: {path}: ignoring an unfinished write at its end (its run was killed mid-write; "
              f"resuming that run repairs the file)", file=sys.stderr)
    check_lines(path, parsed.header, lines)  # 'abc', inf or a copied row: refused, as every reader does
    return parsed.header_raw, lines


def _add_attempts(path: str, lines: List[Line], attempts: Dict[str, _Attempt], order: List[str],
                  result: MergeResult) -> None:
    """Add an input's cells; a cell seen before is kept once (its ok attempt, else the first)."""
    for cid, cell_lines in _group_by_cell(lines).items():
        new = _Attempt(path, cell_lines)
        old = attempts.get(cid)
        if old is None:
            attempts[cid] = new
            order.append(cid)
            continue
        conflict = _setting_conflict(old, new)
        if conflict:
            raise UserError(f"cell {cid} has different settings in {old.source} and {path} ({conflict}); "
                            f"the inputs come from different harness versions or were edited")
        conflict = _exact_conflict(old, new)
        if conflict:
            raise UserError(f"cell {cid} has different counts in {old.source} and {path} ({conflict}); counts "
                            f"follow from the settings, so one file was edited or counted by another version")
        result.duplicates.append(f"{cid} ({old.source}, {path})")
        if [line.raw for line in old.lines] != [line.raw for line in new.lines] and cid not in result.differing:
            result.differing.append(cid)
        if new.preference() > old.preference():
            attempts[cid] = new


def _expected_from_sidecars(known_cells: Dict[str, Tuple[str, Dict[str, Any]]],
                            sidecars: Dict[str, Optional[Dict[str, Any]]]) -> Optional[List[Dict[str, Any]]]:
    """The cells the inputs' grids hold, in grid order (None when no sidecar names any)."""
    if not known_cells:
        return None
    expected = [cell for _, cell in sorted(known_cells.values(), key=lambda sc: sc[1].get("index", 0))]
    # Only the grids the inputs were asked to run count as expected.
    grid_ids = {c["cell_id"] for meta in sidecars.values() if meta
                for c in (meta.get("grid") or {}).get("cells", [])}
    return [c for c in expected if c["cell_id"] in grid_ids]


def _merged_body(header_raw: bytes, order: List[str], attempts: Dict[str, _Attempt], result: MergeResult) -> bytes:
    """The merged CSV's bytes, cells in ``order``; counts the rows, cells and failed cells into ``result``."""
    body = [header_raw]
    for cid in order:
        body.extend(line.raw for line in attempts[cid].lines)
        result.rows += len(attempts[cid].lines)
        result.failed += not attempts[cid].ok
    result.cells = len(order)
    return b"".join(body)


def _check_paths(inputs: List[str], out: str, force: bool = False) -> None:
    if not out.endswith(".csv"):
        raise UserError(f"--out {out}: expected a path ending in .csv")
    seen = set()
    for path in inputs:
        if os.path.isdir(path):
            raise UserError(f"{path}: is a folder; expected result CSVs (e.g. {os.path.join(path, '*.csv')})")
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such results file")
        real = os.path.realpath(path)
        if real == os.path.realpath(out):
            raise UserError(f"--out {out} is also one of the inputs; write the merge elsewhere")
        if real in seen:
            raise UserError(f"{path}: given twice")
        seen.add(real)
    existing = [p for p in (out, sidecar_path(out)) if os.path.exists(p)]
    if existing and not force:
        raise UserError(f"--out {existing[0]}: exists; pass --force to replace it (or choose another --out)")
    check_writable(out)


def _group_by_cell(lines: List[Line]) -> Dict[str, List[Line]]:
    groups: Dict[str, List[Line]] = {}
    for line in lines:
        groups.setdefault(line.fields[_COL["cell_id"]], []).append(line)
    return groups


def _setting_conflict(a: _Attempt, b: _Attempt) -> str:
    """The first setting column on which two attempts at one cell id disagree ('' if none)."""
    for name in SETTING_COLUMNS:
        i = _COL[name]
        if name == "requested_batch_size":
            va = sorted({ln.fields[i] for ln in a.lines if ln.fields[i]})
            vb = sorted({ln.fields[i] for ln in b.lines if ln.fields[i]})
            if va and vb and va != vb:
                return f"{name}: {','.join(va)} vs {','.join(vb)}"
            continue
        va, vb = a.lines[0].fields[i], b.lines[0].fields[i]
        if va != vb:
            return f"{name}: {va!r} vs {vb!r}"
    return ""


def _exact_conflict(a: _Attempt, b: _Attempt) -> str:
    """The first exact-metric column on which two attempts at one cell disagree ('' if none)."""
    for name in EXACT_COLUMNS:
        i = _COL[name]
        va = sorted({ln.fields[i] for ln in a.lines if ln.fields[i]})
        vb = sorted({ln.fields[i] for ln in b.lines if ln.fields[i]})
        if va and vb and va != vb:
            return f"{name}: {','.join(va)[:40]} vs {','.join(vb)[:40]}"
    return ""


def _sidecar_cells(meta: Optional[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    if not meta:
        return {}
    cells = dict(meta.get("cells") or {})
    for c in (meta.get("grid") or {}).get("cells", []):
        cells.setdefault(c["cell_id"], c)
    return cells


def _identity(cell: Dict[str, Any]) -> str:
    """What a cell id stands for, without where the data lives."""
    settings = dict(cell.get("settings") or {})
    if isinstance(settings.get("train"), dict):
        settings["train"] = {k: v for k, v in settings["train"].items() if k != "data_root"}
    model = {k: v for k, v in (cell.get("model") or {}).items() if k != "name"}
    return json.dumps({"model": model, "settings": settings, "pretrained": cell.get("pretrained"),
                       "freeze_backbone": cell.get("freeze_backbone")}, sort_keys=True, default=str)


def _merged_sidecar(inputs: List[str], sidecars: Dict[str, Optional[Dict[str, Any]]],
                    known_cells: Dict[str, Tuple[str, Dict[str, Any]]], grid_meta: Optional[Dict[str, Any]],
                    result: MergeResult) -> Dict[str, Any]:
    runs = []
    for path, meta in sidecars.items():
        for run in (meta or {}).get("runs") or ([meta] if meta else []):
            runs.append({**run, "source": path})
    first = next((m for m in sidecars.values() if m), {}) or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "merged",
        "merged_from": [{"csv": p, "sidecar": sidecar_path(p) if sidecars[p] else None} for p in inputs],
        "run_id": first.get("run_id"),
        "quick": first.get("quick"),
        "grid": grid_meta or first.get("grid"),
        "environment": first.get("environment"),
        "runs": runs,
        "cells": {cid: cell for cid, (_, cell) in known_cells.items()},
        "missing_cells": [c["cell_id"] for c in result.missing],
    }


def run(args: argparse.Namespace) -> int:
    grid_cells = grid_meta = None
    if args.grid:
        from bench.grid import load_grid

        grid = load_grid(args.grid, quick=args.quick, device=args.device, data_root=args.data_root)
        grid_meta = grid.to_dict()
        grid_cells = grid_meta["cells"]
    result = merge_files(list(args.inputs), args.out, grid_cells, grid_meta, force=args.force)
    print(f"merged {len(args.inputs)} file(s): {result.cells} cell(s), {result.rows} row(s) -> {result.out}")
    if result.duplicates:
        print(f"{len(result.duplicates)} cell(s) were in more than one input with the same settings; kept one "
              f"(its ok attempt if any, else the latest run's): " + "; ".join(result.duplicates[:MAX_LISTED]),
              file=sys.stderr)
    if result.differing:
        print(f"{len(result.differing)} of them hold different measurements (timings, memory, accuracy) in their "
              f"inputs; only the kept attempt is in {result.out}: " + ", ".join(result.differing[:MAX_LISTED]),
              file=sys.stderr)
    if result.failed:
        print(f"{result.failed} cell(s) have a failed status (run those shards again with --retry-failed)",
              file=sys.stderr)
    if result.expected is None:
        print("no grid known (no sidecars, no --grid): missing cells not checked", file=sys.stderr)
        return 0
    if result.missing:
        listed = ", ".join(f"{c['cell_id']} {c.get('variant', '')}".strip() for c in result.missing[:MAX_LISTED])
        more = f" and {len(result.missing) - MAX_LISTED} more" if len(result.missing) > MAX_LISTED else ""
        print(f"incomplete: {len(result.missing)} of {result.expected} grid cell(s) are in no input: "
              f"{listed}{more}", file=sys.stderr)
        return 1
    print(f"complete: all {result.expected} grid cell(s) present")
    return 0
